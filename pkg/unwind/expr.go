package unwind

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/memtrap/memtrap/pkg/dwarf/reader"
)

// DW_OP_* opcodes of the DWARF expressions found in x86-64 CFI: gcc's
// DW_CFA_def_cfa_expression for realigned stacks and PLT entries, glibc's
// hand-written signal trampoline rules, and the arithmetic around them.
const (
	opAddr       = 0x03
	opDeref      = 0x06
	opConst1u    = 0x08
	opConst1s    = 0x09
	opConst2u    = 0x0a
	opConst2s    = 0x0b
	opConst4u    = 0x0c
	opConst4s    = 0x0d
	opConst8u    = 0x0e
	opConst8s    = 0x0f
	opConstu     = 0x10
	opConsts     = 0x11
	opDup        = 0x12
	opDrop       = 0x13
	opOver       = 0x14
	opPick       = 0x15
	opSwap       = 0x16
	opRot        = 0x17
	opAbs        = 0x19
	opAnd        = 0x1a
	opDiv        = 0x1b
	opMinus      = 0x1c
	opMod        = 0x1d
	opMul        = 0x1e
	opNeg        = 0x1f
	opNot        = 0x20
	opOr         = 0x21
	opPlus       = 0x22
	opPlusUconst = 0x23
	opShl        = 0x24
	opShr        = 0x25
	opShra       = 0x26
	opXor        = 0x27
	opBra        = 0x28
	opEq         = 0x29
	opGe         = 0x2a
	opGt         = 0x2b
	opLe         = 0x2c
	opLt         = 0x2d
	opNe         = 0x2e
	opSkip       = 0x2f
	opLit0       = 0x30
	opLit31      = 0x4f
	opBreg0      = 0x70
	opBreg31     = 0x8f
	opBregx      = 0x92
	opDerefSize  = 0x94
	opNop        = 0x96
)

const (
	exprStackSize = 64
	// exprMaxSteps bounds the work of one expression: branches can loop.
	exprMaxSteps = 10000
)

var (
	errExprStack = errors.New("DWARF expression stack underflow or overflow")
	errExprSteps = errors.New("DWARF expression runs too long")
)

// exprEnv is what an expression can see: the frame's registers, and the
// target's memory through the walker.
type exprEnv struct {
	regs  Regs // by value: a pointer would make callers' registers escape
	valid regMask
	bias  uint64 // added to DW_OP_addr operands, which are link-time
	mem   wordReader
}

// wordReader reads a little-endian value of 1 to 8 bytes from the target.
type wordReader interface {
	readWord(addr uint64, size int) (uint64, error)
}

// eval evaluates a DWARF expression and returns the value on top of its
// stack. With push set, initial is pushed first, as DWARF requires for
// DW_CFA_expression and DW_CFA_val_expression (the CFA).
func eval(expr []byte, env *exprEnv, initial uint64, push bool) (uint64, error) {
	var st [exprStackSize]uint64
	n := 0
	if push {
		st[0] = initial
		n = 1
	}
	r := reader.New(expr)
	for steps := 0; r.Len() > 0; steps++ {
		if steps >= exprMaxSteps {
			return 0, errExprSteps
		}
		at := r.Off()
		op := r.U8()
		// need returns false when fewer than k operands are on the stack;
		// room when there is no room to push.
		need := func(k int) bool { return n >= k }
		room := n < exprStackSize
		var v uint64
		pushes := true
		switch {
		case op >= opLit0 && op <= opLit31:
			v = uint64(op - opLit0)
		case op >= opBreg0 && op <= opBreg31:
			reg := uint64(op - opBreg0)
			off := r.SLEB128()
			if !env.valid.has(reg) {
				return 0, fmt.Errorf("DW_OP_breg%d: register not recovered", reg)
			}
			v = env.regs[reg] + uint64(off)
		case op == opBregx:
			reg := r.ULEB128()
			off := r.SLEB128()
			if !env.valid.has(reg) {
				return 0, fmt.Errorf("DW_OP_bregx %d: register not recovered", reg)
			}
			v = env.regs[reg] + uint64(off)
		case op == opAddr:
			v = r.U64() + env.bias
		case op == opConst1u:
			v = uint64(r.U8())
		case op == opConst1s:
			v = uint64(int64(int8(r.U8())))
		case op == opConst2u:
			v = uint64(r.U16())
		case op == opConst2s:
			v = uint64(int64(int16(r.U16())))
		case op == opConst4u:
			v = uint64(r.U32())
		case op == opConst4s:
			v = uint64(int64(int32(r.U32())))
		case op == opConst8u, op == opConst8s:
			v = r.U64()
		case op == opConstu:
			v = r.ULEB128()
		case op == opConsts:
			v = uint64(r.SLEB128())
		case op == opDup:
			if !need(1) {
				return 0, errExprStack
			}
			v = st[n-1]
		case op == opOver:
			if !need(2) {
				return 0, errExprStack
			}
			v = st[n-2]
		case op == opPick:
			i := int(r.U8())
			if !need(i + 1) {
				return 0, errExprStack
			}
			v = st[n-1-i]
		case op == opDrop:
			if !need(1) {
				return 0, errExprStack
			}
			n--
			pushes = false
		case op == opSwap:
			if !need(2) {
				return 0, errExprStack
			}
			st[n-1], st[n-2] = st[n-2], st[n-1]
			pushes = false
		case op == opRot:
			if !need(3) {
				return 0, errExprStack
			}
			// The top entry becomes the second, the second the third, and
			// the third the top.
			st[n-1], st[n-2], st[n-3] = st[n-3], st[n-1], st[n-2]
			pushes = false
		case op == opDeref, op == opDerefSize:
			size := 8
			if op == opDerefSize {
				size = int(r.U8())
				if size < 1 || size > 8 {
					return 0, fmt.Errorf("DW_OP_deref_size %d at %d: bad size", size, at)
				}
			}
			if !need(1) {
				return 0, errExprStack
			}
			x, err := env.mem.readWord(st[n-1], size)
			if err != nil {
				return 0, fmt.Errorf("DW_OP_deref of %#x: %w", st[n-1], err)
			}
			st[n-1] = x
			pushes = false
		case op == opAbs, op == opNeg, op == opNot, op == opPlusUconst:
			var k uint64
			if op == opPlusUconst {
				k = r.ULEB128()
			}
			if !need(1) {
				return 0, errExprStack
			}
			x := st[n-1]
			switch op {
			case opAbs:
				if int64(x) < 0 {
					x = -x
				}
			case opNeg:
				x = -x
			case opNot:
				x = ^x
			case opPlusUconst:
				x += k
			}
			st[n-1] = x
			pushes = false
		case op >= opAnd && op <= opXor, op >= opEq && op <= opNe:
			// The unary operators in this range were taken above.
			if !need(2) {
				return 0, errExprStack
			}
			// b is the top of the stack, a the entry below it: "a op b".
			a, b := st[n-2], st[n-1]
			x, err := binaryOp(op, a, b)
			if err != nil {
				return 0, err
			}
			n--
			st[n-1] = x
			pushes = false
		case op == opSkip, op == opBra:
			off := int(int16(r.U16()))
			pushes = false
			if op == opBra {
				if !need(1) {
					return 0, errExprStack
				}
				n--
				if st[n] == 0 {
					break
				}
			}
			to := r.Off() + off
			if to < 0 || to > len(expr) {
				return 0, fmt.Errorf("DWARF expression branch at %d to %d: out of range", at, to)
			}
			r = reader.At(expr, uint64(to))
		case op == opNop:
			pushes = false
		default:
			return 0, fmt.Errorf("DWARF expression opcode %#x at %d: unsupported", op, at)
		}
		if r.Err() != nil {
			return 0, fmt.Errorf("DWARF expression: %w", r.Err())
		}
		if pushes {
			if !room {
				return 0, errExprStack
			}
			st[n] = v
			n++
		}
	}
	if n == 0 {
		return 0, errExprStack
	}
	return st[n-1], nil
}

// binaryOp applies a two-operand DW_OP. Comparisons and division are
// signed, as DWARF's generic type is on a two's complement machine.
func binaryOp(op byte, a, b uint64) (uint64, error) {
	bool2 := func(c bool) uint64 {
		if c {
			return 1
		}
		return 0
	}
	switch op {
	case opAnd:
		return a & b, nil
	case opOr:
		return a | b, nil
	case opXor:
		return a ^ b, nil
	case opPlus:
		return a + b, nil
	case opMinus:
		return a - b, nil
	case opMul:
		return a * b, nil
	case opDiv:
		if b == 0 {
			return 0, errors.New("DW_OP_div by zero")
		}
		if int64(b) == -1 {
			return -a, nil
		}
		return uint64(int64(a) / int64(b)), nil
	case opMod:
		if b == 0 {
			return 0, errors.New("DW_OP_mod by zero")
		}
		return a % b, nil
	case opShl:
		if b >= 64 {
			return 0, nil
		}
		return a << b, nil
	case opShr:
		if b >= 64 {
			return 0, nil
		}
		return a >> b, nil
	case opShra:
		if b >= 64 {
			b = 63
		}
		return uint64(int64(a) >> b), nil
	case opEq:
		return bool2(a == b), nil
	case opNe:
		return bool2(a != b), nil
	case opGe:
		return bool2(int64(a) >= int64(b)), nil
	case opGt:
		return bool2(int64(a) > int64(b)), nil
	case opLe:
		return bool2(int64(a) <= int64(b)), nil
	case opLt:
		return bool2(int64(a) < int64(b)), nil
	}
	return 0, fmt.Errorf("DWARF expression opcode %#x: not a binary operator", op)
}

// le64 decodes the low size bytes of p as a little-endian number.
func le64(p []byte) uint64 {
	var b [8]byte
	copy(b[:], p)
	return binary.LittleEndian.Uint64(b[:])
}
