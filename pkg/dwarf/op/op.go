package op

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/memtrap/memtrap/pkg/dwarf/reader"
)

// DW_OP_* opcodes (DWARF 5, section 7.7.1), and the GNU extension that gcc
// emits before DWARF 5.
const (
	Addr          = 0x03
	Deref         = 0x06
	Const1u       = 0x08
	Const1s       = 0x09
	Const2u       = 0x0a
	Const2s       = 0x0b
	Const4u       = 0x0c
	Const4s       = 0x0d
	Const8u       = 0x0e
	Const8s       = 0x0f
	Constu        = 0x10
	Consts        = 0x11
	Dup           = 0x12
	Drop          = 0x13
	Over          = 0x14
	Pick          = 0x15
	Swap          = 0x16
	Rot           = 0x17
	Abs           = 0x19
	And           = 0x1a
	Div           = 0x1b
	Minus         = 0x1c
	Mod           = 0x1d
	Mul           = 0x1e
	Neg           = 0x1f
	Not           = 0x20
	Or            = 0x21
	Plus          = 0x22
	PlusUconst    = 0x23
	Shl           = 0x24
	Shr           = 0x25
	Shra          = 0x26
	Xor           = 0x27
	Bra           = 0x28
	Eq            = 0x29
	Ge            = 0x2a
	Gt            = 0x2b
	Le            = 0x2c
	Lt            = 0x2d
	Ne            = 0x2e
	Skip          = 0x2f
	Lit0          = 0x30
	Lit31         = 0x4f
	Reg0          = 0x50
	Reg31         = 0x6f
	Breg0         = 0x70
	Breg31        = 0x8f
	Regx          = 0x90
	Fbreg         = 0x91
	Bregx         = 0x92
	Piece         = 0x93
	DerefSize     = 0x94
	Nop           = 0x96
	CallFrameCFA  = 0x9c
	ImplicitValue = 0x9e
	StackValue    = 0x9f
	EntryValue    = 0xa3
	GNUEntryValue = 0xf3
)

const (
	// NumRegs is how many registers an Env holds: the x86-64 general
	// registers and the return address column (DWARF 0 to 16).
	NumRegs = 17
	// MaxStack is the depth of the evaluation stack.
	MaxStack = 64
	// MaxSteps bounds the operations one evaluation runs.
	MaxSteps = 10000
)

var (
	// ErrStack reports a stack underflow or overflow, or an expression
	// that leaves nothing to use.
	ErrStack = errors.New("DWARF expression stack underflow or overflow")
	// ErrSteps reports an evaluation stopped after MaxSteps operations.
	ErrSteps = errors.New("DWARF expression runs too long")
	// ErrUnavailable reports something the Env does not have: a register
	// not known in the frame, the CFA, the frame base, or memory.
	ErrUnavailable = errors.New("unavailable")
	// ErrUnsupported reports an operation this package does not evaluate.
	ErrUnsupported = errors.New("unsupported")
)

// unsupportedError is an operation Eval does not evaluate, and
// unrecoveredError a register the frame does not vouch for. A backtrace
// meets both in optimized code's parameters at every trapped write: their
// text is made only when asked for.
type unsupportedError struct {
	op byte
	at int
}

func (e *unsupportedError) Error() string {
	return fmt.Sprintf("DWARF expression opcode %#x at %d: %v", e.op, e.at, ErrUnsupported)
}

func (e *unsupportedError) Unwrap() error { return ErrUnsupported }

// Refused reports whether Eval refuses expr whatever its Env: its first
// operation is one this package does not evaluate (DW_OP_entry_value, as
// optimizing compilers describe a parameter's value on entry). A caller
// that evaluates one expression at every trapped write can check once.
func Refused(expr []byte) bool {
	_, err := Eval(expr, &Env{})
	u, ok := err.(*unsupportedError)
	return ok && u.at == 0
}

type unrecoveredError struct{ reg uint64 }

func (e *unrecoveredError) Error() string {
	return fmt.Sprintf("DW_OP_breg%d: register not recovered: %v", e.reg, ErrUnavailable)
}

func (e *unrecoveredError) Unwrap() error { return ErrUnavailable }

// Memory reads the target's memory for DW_OP_deref and DW_OP_deref_size.
type Memory interface {
	// ReadUint reads size bytes (1 to 8) at addr as a little-endian
	// number.
	ReadUint(addr uint64, size int) (uint64, error)
}

// ReadFunc adapts a function that fills p from the target's memory at
// addr to Memory.
type ReadFunc func(addr uint64, p []byte) error

// ReadUint implements Memory.
func (f ReadFunc) ReadUint(addr uint64, size int) (uint64, error) {
	if f == nil {
		return 0, ErrUnavailable
	}
	if size < 1 || size > 8 {
		return 0, fmt.Errorf("read of %d bytes: not 1 to 8", size)
	}
	var b [8]byte
	if err := f(addr, b[:size]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// Env is what an expression can see of its frame. The zero Env knows
// nothing: no register, no CFA, no frame base, no memory.
type Env struct {
	// Regs are the frame's registers in DWARF numbering: 0 rax, 1 rdx,
	// 2 rcx, 3 rbx, 4 rsi, 5 rdi, 6 rbp, 7 rsp, 8-15 r8-r15, 16 the return
	// address column (the frame's pc).
	Regs [NumRegs]uint64
	// Valid has bit i set when Regs[i] is known.
	Valid uint32
	// CFA is the frame's canonical frame address, for
	// DW_OP_call_frame_cfa, when HasCFA.
	CFA    uint64
	HasCFA bool
	// FrameBase is the value of the function's DW_AT_frame_base, for
	// DW_OP_fbreg, when HasFrameBase.
	FrameBase    uint64
	HasFrameBase bool
	// Bias is added to DW_OP_addr operands, which are link-time
	// addresses.
	Bias uint64
	// Mem reads memory; nil when there is none to read.
	Mem Memory
}

// Reg returns register n of the frame, if it is known.
func (e *Env) Reg(n uint64) (uint64, bool) {
	if n >= NumRegs || e.Valid&(1<<n) == 0 {
		return 0, false
	}
	return e.Regs[n], true
}

// Kind says where the object an expression locates is.
type Kind uint8

const (
	// Empty: nowhere; the object is optimized out. An expression with no
	// operations, or a piece with nothing before it.
	Empty Kind = iota
	// InMemory: at address Value. For a CFA rule, Value is the result.
	InMemory
	// InRegister: in register Reg.
	InRegister
	// IsValue: the object's value is Value (DW_OP_stack_value).
	IsValue
	// IsImplicit: the object's bytes are Bytes (DW_OP_implicit_value).
	IsImplicit
)

func (k Kind) String() string {
	switch k {
	case Empty:
		return "empty location"
	case InMemory:
		return "memory location"
	case InRegister:
		return "register location"
	case IsValue:
		return "stack value"
	case IsImplicit:
		return "implicit value"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Result is what an expression evaluates to.
type Result struct {
	Kind  Kind
	Value uint64 // InMemory: the address; IsValue: the value
	Reg   uint64 // InRegister: the DWARF register number
	Bytes []byte // IsImplicit: aliases the expression
	// PieceSize is the byte size of the first piece when the location is
	// composite, 0 when it is not: the rest of the object is elsewhere.
	PieceSize uint64
}

// machine is the state of one evaluation.
type machine struct {
	st [MaxStack]uint64
	n  int
}

func (m *machine) push(v uint64) error {
	if m.n >= MaxStack {
		return ErrStack
	}
	m.st[m.n] = v
	m.n++
	return nil
}

// need reports an error unless k entries are on the stack.
func (m *machine) need(k int) error {
	if m.n < k {
		return ErrStack
	}
	return nil
}

// Eval evaluates expr in env and says what it locates or computes. The
// values of stack are pushed first, bottom to top, as DWARF pushes the CFA
// before a DW_CFA_expression or DW_CFA_val_expression rule.
//
// A location in a register (DW_OP_reg*, DW_OP_regx) must be the whole
// expression or its first piece; DW_OP_stack_value and
// DW_OP_implicit_value must end it.
func Eval(expr []byte, env *Env, stack ...uint64) (Result, error) {
	var m machine
	if len(stack) > MaxStack {
		return Result{}, ErrStack
	}
	m.n = copy(m.st[:], stack)
	if len(expr) == 0 && m.n == 0 {
		return Result{Kind: Empty}, nil
	}
	r := reader.New(expr)
	reg := -1 // the register of a register location, once DW_OP_reg* is read
	for steps := 0; r.Len() > 0; steps++ {
		if steps >= MaxSteps {
			return Result{}, ErrSteps
		}
		at := r.Off()
		op := r.U8()
		if reg >= 0 && op != Piece {
			return Result{}, fmt.Errorf("DW_OP_reg%d at %d: followed by opcode %#x, not a piece", reg, at, op)
		}
		var err error
		switch {
		case op >= Lit0 && op <= Lit31:
			err = m.push(uint64(op - Lit0))
		case op >= Breg0 && op <= Breg31, op == Bregx:
			n := uint64(op - Breg0)
			if op == Bregx {
				n = r.ULEB128()
			}
			off := r.SLEB128()
			v, ok := env.Reg(n)
			if !ok && r.Err() == nil {
				return Result{}, &unrecoveredError{reg: n}
			}
			err = m.push(v + uint64(off))
		case op >= Reg0 && op <= Reg31, op == Regx:
			n := uint64(op - Reg0)
			if op == Regx {
				n = r.ULEB128()
			}
			if m.n != 0 {
				return Result{}, fmt.Errorf("DW_OP_reg%d at %d: not at the start of a location", n, at)
			}
			reg = int(min(n, 1<<16))
		case op == Fbreg:
			off := r.SLEB128()
			if !env.HasFrameBase && r.Err() == nil {
				return Result{}, fmt.Errorf("DW_OP_fbreg at %d: no frame base: %w", at, ErrUnavailable)
			}
			err = m.push(env.FrameBase + uint64(off))
		case op == CallFrameCFA:
			if !env.HasCFA {
				return Result{}, fmt.Errorf("DW_OP_call_frame_cfa at %d: unsupported without a CFA: %w", at, ErrUnavailable)
			}
			err = m.push(env.CFA)
		case op == Addr:
			err = m.push(r.U64() + env.Bias)
		case op == Const1u:
			err = m.push(uint64(r.U8()))
		case op == Const1s:
			err = m.push(uint64(int64(int8(r.U8()))))
		case op == Const2u:
			err = m.push(uint64(r.U16()))
		case op == Const2s:
			err = m.push(uint64(int64(int16(r.U16()))))
		case op == Const4u:
			err = m.push(uint64(r.U32()))
		case op == Const4s:
			err = m.push(uint64(int64(int32(r.U32()))))
		case op == Const8u, op == Const8s:
			err = m.push(r.U64())
		case op == Constu:
			err = m.push(r.ULEB128())
		case op == Consts:
			err = m.push(uint64(r.SLEB128()))
		case op == Dup, op == Over, op == Pick:
			i := 0
			switch op {
			case Over:
				i = 1
			case Pick:
				i = int(r.U8())
			}
			if err = m.need(i + 1); err == nil {
				err = m.push(m.st[m.n-1-i])
			}
		case op == Drop:
			if err = m.need(1); err == nil {
				m.n--
			}
		case op == Swap:
			if err = m.need(2); err == nil {
				m.st[m.n-1], m.st[m.n-2] = m.st[m.n-2], m.st[m.n-1]
			}
		case op == Rot:
			// The top entry becomes the second, the second the third, and
			// the third the top.
			if err = m.need(3); err == nil {
				m.st[m.n-1], m.st[m.n-2], m.st[m.n-3] = m.st[m.n-3], m.st[m.n-1], m.st[m.n-2]
			}
		case op == Deref, op == DerefSize:
			size := 8
			if op == DerefSize {
				size = int(r.U8())
				if (size < 1 || size > 8) && r.Err() == nil {
					return Result{}, fmt.Errorf("DW_OP_deref_size %d at %d: bad size", size, at)
				}
			}
			if r.Err() != nil {
				break
			}
			if err = m.need(1); err != nil {
				break
			}
			a := m.st[m.n-1]
			if env.Mem == nil {
				return Result{}, fmt.Errorf("DW_OP_deref of %#x: no memory: %w", a, ErrUnavailable)
			}
			x, rerr := env.Mem.ReadUint(a, size)
			if rerr != nil {
				return Result{}, fmt.Errorf("DW_OP_deref of %#x: %w", a, rerr)
			}
			m.st[m.n-1] = x
		case op == Abs, op == Neg, op == Not, op == PlusUconst:
			var k uint64
			if op == PlusUconst {
				k = r.ULEB128()
			}
			if err = m.need(1); err != nil {
				break
			}
			x := &m.st[m.n-1]
			switch op {
			case Abs:
				if int64(*x) < 0 {
					*x = -*x
				}
			case Neg:
				*x = -*x
			case Not:
				*x = ^*x
			case PlusUconst:
				*x += k
			}
		case op >= And && op <= Xor, op >= Eq && op <= Ne:
			// The unary operators in this range were taken above.
			if err = m.need(2); err != nil {
				break
			}
			// b is the top of the stack, a the entry below it: "a op b".
			a, b := m.st[m.n-2], m.st[m.n-1]
			x, berr := arith(op, a, b)
			if berr != nil {
				return Result{}, berr
			}
			m.n--
			m.st[m.n-1] = x
		case op == Skip, op == Bra:
			off := int(int16(r.U16()))
			if r.Err() != nil {
				break
			}
			if op == Bra {
				if err = m.need(1); err != nil {
					break
				}
				m.n--
				if m.st[m.n] == 0 {
					break
				}
			}
			to := r.Off() + off
			if to < 0 || to > len(expr) {
				return Result{}, fmt.Errorf("DWARF expression branch at %d to %d: out of range", at, to)
			}
			r = reader.At(expr, uint64(to))
		case op == Nop:
		case op == Piece:
			size := r.ULEB128()
			if r.Err() != nil {
				break
			}
			if size == 0 {
				return Result{}, fmt.Errorf("DW_OP_piece at %d: size 0", at)
			}
			res := m.location(reg)
			res.PieceSize = size
			return res, nil
		case op == StackValue:
			if err = m.need(1); err != nil {
				break
			}
			if r.Len() != 0 {
				return Result{}, fmt.Errorf("DW_OP_stack_value at %d: not the last operation", at)
			}
			return Result{Kind: IsValue, Value: m.st[m.n-1]}, nil
		case op == ImplicitValue:
			b := r.Bytes(r.ULEB128())
			if r.Err() != nil {
				break
			}
			if r.Len() != 0 {
				return Result{}, fmt.Errorf("DW_OP_implicit_value at %d: not the last operation", at)
			}
			return Result{Kind: IsImplicit, Bytes: b}, nil
		default:
			return Result{}, &unsupportedError{op: op, at: at}
		}
		if r.Err() != nil {
			return Result{}, fmt.Errorf("DWARF expression: %w", r.Err())
		}
		if err != nil {
			return Result{}, err
		}
	}
	if reg < 0 && m.n == 0 {
		return Result{}, ErrStack
	}
	return m.location(reg), nil
}

// location is the location the machine's state describes: register reg
// (if not negative), else the address on top of the stack, else nowhere.
func (m *machine) location(reg int) Result {
	switch {
	case reg >= 0:
		return Result{Kind: InRegister, Reg: uint64(reg)}
	case m.n > 0:
		return Result{Kind: InMemory, Value: m.st[m.n-1]}
	}
	return Result{Kind: Empty}
}

// arith applies a two-operand DW_OP. Comparisons and division are
// signed, as DWARF's generic type is on a two's complement machine.
func arith(op byte, a, b uint64) (uint64, error) {
	bool2 := func(c bool) uint64 {
		if c {
			return 1
		}
		return 0
	}
	switch op {
	case And:
		return a & b, nil
	case Or:
		return a | b, nil
	case Xor:
		return a ^ b, nil
	case Plus:
		return a + b, nil
	case Minus:
		return a - b, nil
	case Mul:
		return a * b, nil
	case Div:
		if b == 0 {
			return 0, errors.New("DW_OP_div by zero")
		}
		if int64(b) == -1 {
			return -a, nil
		}
		return uint64(int64(a) / int64(b)), nil
	case Mod:
		if b == 0 {
			return 0, errors.New("DW_OP_mod by zero")
		}
		return a % b, nil
	case Shl:
		if b >= 64 {
			return 0, nil
		}
		return a << b, nil
	case Shr:
		if b >= 64 {
			return 0, nil
		}
		return a >> b, nil
	case Shra:
		if b >= 64 {
			b = 63
		}
		return uint64(int64(a) >> b), nil
	case Eq:
		return bool2(a == b), nil
	case Ne:
		return bool2(a != b), nil
	case Ge:
		return bool2(int64(a) >= int64(b)), nil
	case Gt:
		return bool2(int64(a) > int64(b)), nil
	case Le:
		return bool2(int64(a) <= int64(b)), nil
	case Lt:
		return bool2(int64(a) < int64(b)), nil
	}
	return 0, fmt.Errorf("DWARF expression opcode %#x: not a binary operator", op)
}
