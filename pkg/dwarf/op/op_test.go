package op

import (
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/memtrap/memtrap/pkg/dwarf/leb128"
)

// DWARF numbers of the registers the tests use.
const (
	rax = 0
	rbx = 3
	rsi = 4
	rdi = 5
	rbp = 6
	rsp = 7
	rip = 16

	allRegs = 1<<NumRegs - 1
)

var errUnmapped = errors.New("unmapped")

// wordMem is a sparse memory of 8-byte words.
type wordMem map[uint64]uint64

func (m wordMem) ReadUint(addr uint64, size int) (uint64, error) {
	var v uint64
	for i := range size {
		a := addr + uint64(i)
		w, ok := m[a&^7]
		if !ok {
			return 0, errUnmapped
		}
		v |= uint64(byte(w>>(8*(a&7)))) << (8 * i)
	}
	return v, nil
}

func uleb(v uint64) []byte       { return leb128.AppendUnsigned(nil, v) }
func sleb(v int64) []byte        { return leb128.AppendSigned(nil, v) }
func u16le(v uint16) []byte      { return binary.LittleEndian.AppendUint16(nil, v) }
func u32le(v uint32) []byte      { return binary.LittleEndian.AppendUint32(nil, v) }
func u64le(v uint64) []byte      { return binary.LittleEndian.AppendUint64(nil, v) }
func cat(parts ...[]byte) []byte { return slices.Concat(parts...) }

// pltExpr is the CFA rule GNU ld gives PLT entries: rsp+8, and 8 more once
// the entry's push has run (at offset 11 of each 16-byte entry).
var pltExpr = []byte{Breg0 + rsp, 8, Breg0 + rip, 0, Lit0 + 15, And, Lit0 + 11, Ge, Lit0 + 3, Shl, Plus}

// TestEvalValue runs the arithmetic of CFA rules: what an expression leaves
// on top of the stack.
func TestEvalValue(t *testing.T) {
	var regs [NumRegs]uint64
	regs[rsp] = 0x7000
	regs[rbp] = 0x7100
	mem := wordMem{0x7100: 0x1234, 0x7108: 0xffeeddccbbaa9988}
	env := Env{Regs: regs, Valid: allRegs, Bias: 0x10000, Mem: mem}
	for _, tc := range []struct {
		name string
		expr []byte
		push bool // push 0x500 first, as for DW_CFA_expression
		want uint64
		err  string
	}{
		{"lit", []byte{Lit0 + 31}, false, 31, ""},
		{"breg", []byte{Breg0 + rbp, 0x78}, false, 0x7100 - 8, ""},
		{"bregx", cat([]byte{Bregx}, uleb(rsp), sleb(-16)), false, 0x7000 - 16, ""},
		{"deref", []byte{Breg0 + rbp, 0, Deref}, false, 0x1234, ""},
		{"deref_size", []byte{Breg0 + rbp, 8, DerefSize, 2}, false, 0x9988, ""},
		{"glibc DRAP", []byte{Breg0 + rbp, 8, Deref}, false, 0xffeeddccbbaa9988, ""},
		{"pushed CFA", []byte{PlusUconst, 0x10}, true, 0x510, ""},
		{"pushed CFA alone", nil, true, 0x500, ""},
		{"addr is biased", cat([]byte{Addr}, u64le(0x40)), false, 0x10040, ""},
		{"consts", cat([]byte{Const1s, 0xff, Const2s}, u16le(0xfffe), []byte{Plus}), false, ^uint64(2), ""},
		{"const4s const8s", cat([]byte{Const4s}, u32le(0xfffffffe), []byte{Const8s}, u64le(3), []byte{Plus}), false, 1, ""},
		{"constu", cat([]byte{Const1u, 0xff, Const2u}, u16le(2), []byte{Const4u}, u32le(3), []byte{Const8u}, u64le(4), []byte{Plus, Plus, Plus}), false, 0xff + 9, ""},
		{"const leb", cat([]byte{Constu}, uleb(1000), []byte{Consts}, sleb(-1), []byte{Mul}), false, ^uint64(999), ""},
		{"minus", []byte{Lit0 + 3, Lit0 + 5, Minus}, false, ^uint64(1), ""},
		{"div signed", []byte{Lit0 + 7, Neg, Lit0 + 2, Div}, false, ^uint64(2), ""},
		{"div by -1", []byte{Lit0 + 7, Lit0 + 1, Neg, Div}, false, ^uint64(6), ""},
		{"mod", []byte{Lit0 + 7, Lit0 + 3, Mod}, false, 1, ""},
		{"shifts", []byte{Lit0 + 1, Lit0 + 4, Shl, Lit0 + 1, Shr, Neg, Lit0 + 1, Shra}, false, ^uint64(3), ""},
		{"shifts by 64 or more", cat([]byte{Lit0 + 1, Lit0 + 1, Neg, Shl, Lit0 + 1, Neg, Const1u, 64, Shr, Plus, Lit0 + 2, Neg, Const1u, 70, Shra, Plus}), false, ^uint64(0), ""},
		{"bit ops", []byte{Lit0 + 12, Lit0 + 10, And, Lit0 + 1, Or, Lit0 + 3, Xor, Not}, false, ^uint64(10), ""},
		{"abs", []byte{Lit0 + 9, Neg, Abs}, false, 9, ""},
		{"compare signed", []byte{Lit0 + 1, Neg, Lit0 + 1, Lt}, false, 1, ""},
		{"compares", []byte{Lit0 + 2, Lit0 + 2, Eq, Lit0 + 2, Lit0 + 3, Ne, Plus, Lit0 + 3, Lit0 + 2, Gt, Plus, Lit0 + 2, Lit0 + 2, Le, Plus}, false, 4, ""},
		{"stack ops", []byte{Lit0 + 1, Lit0 + 2, Lit0 + 3, Rot, Swap, Over, Pick, 1, Dup, Drop, Minus, Plus, Plus}, false, 2, ""},
		{"rot", []byte{Lit0 + 1, Lit0 + 2, Lit0 + 3, Rot, Drop, Drop}, false, 2, ""},
		{"skip", cat([]byte{Skip}, u16le(1), []byte{Lit0 + 1, Lit0 + 2}), false, 2, ""},
		{"bra taken", cat([]byte{Lit0 + 1, Bra}, u16le(1), []byte{Lit0 + 7, Lit0 + 2}), false, 2, ""},
		{"bra not taken", cat([]byte{Lit0 + 4, Lit0, Bra}, u16le(1), []byte{Lit0 + 7}), false, 7, ""},
		{"nop", []byte{Nop, Lit0 + 1}, false, 1, ""},
		{"loop forever", cat([]byte{Skip}, u16le(0xfffd)), false, 0, "too long"},
		{"branch out of range", cat([]byte{Skip}, u16le(100)), false, 0, "out of range"},
		{"branch before the start", cat([]byte{Lit0, Skip}, u16le(0xfff0)), false, 0, "out of range"},
		{"underflow", []byte{Plus}, false, 0, "stack"},
		{"nothing left", []byte{Lit0, Drop}, false, 0, "stack"},
		{"overflow", slices.Repeat([]byte{Lit0}, MaxStack+1), false, 0, "stack"},
		{"pick too deep", []byte{Lit0, Pick, 1}, false, 0, "stack"},
		{"unreadable", []byte{Lit0, Deref}, false, 0, "DW_OP_deref of 0x0"},
		{"bad deref_size", []byte{Lit0, DerefSize, 9}, false, 0, "bad size"},
		{"div by zero", []byte{Lit0 + 1, Lit0, Div}, false, 0, "by zero"},
		{"mod by zero", []byte{Lit0 + 1, Lit0, Mod}, false, 0, "by zero"},
		// The CFA is not there to be had inside a CFA rule.
		{"unsupported", []byte{CallFrameCFA}, false, 0, "unsupported"},
		{"entry_value", []byte{EntryValue, 1, Reg0 + rdi, StackValue}, false, 0, "unsupported"},
		{"truncated", []byte{Const4u, 1}, false, 0, "truncated"},
		{"truncated branch", []byte{Skip, 1}, false, 0, "truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var push []uint64
			if tc.push {
				push = []uint64{0x500}
			}
			r, err := Eval(tc.expr, &env, push...)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("= %+v, %v; want an error mentioning %q", r, err, tc.err)
				}
				return
			}
			if err != nil || r.Kind != InMemory || r.Value != tc.want || r.PieceSize != 0 {
				t.Errorf("= %+v, %v; want %#x on the stack", r, err, tc.want)
			}
		})
	}

	t.Run("unrecovered register", func(t *testing.T) {
		env := Env{Regs: regs, Valid: allRegs &^ (1 << rbp), Mem: mem}
		if _, err := Eval([]byte{Breg0 + rbp, 0}, &env); !errors.Is(err, ErrUnavailable) {
			t.Errorf("breg of an unrecovered register: err %v, want ErrUnavailable", err)
		}
	})
	t.Run("no memory", func(t *testing.T) {
		env := Env{Regs: regs, Valid: allRegs}
		if _, err := Eval([]byte{Breg0 + rbp, 0, Deref}, &env); !errors.Is(err, ErrUnavailable) {
			t.Errorf("deref without memory: err %v, want ErrUnavailable", err)
		}
	})
	t.Run("too many pushed", func(t *testing.T) {
		if _, err := Eval(nil, &env, make([]uint64, MaxStack+1)...); !errors.Is(err, ErrStack) {
			t.Errorf("err %v, want ErrStack", err)
		}
	})
}

func TestEvalPLT(t *testing.T) {
	for off := uint64(0); off < 16; off++ {
		regs := [NumRegs]uint64{rsp: 0x7000, rip: 0x401020 + off}
		env := Env{Regs: regs, Valid: allRegs, Mem: wordMem{}}
		r, err := Eval(pltExpr, &env)
		if err != nil {
			t.Fatal(err)
		}
		want := uint64(0x7008)
		if off >= 11 {
			want += 8
		}
		if r.Kind != InMemory || r.Value != want {
			t.Errorf("PLT entry offset %d: CFA %+v, want %#x", off, r, want)
		}
	}
}

// TestEvalLocation runs the locations compilers give variables, good and
// hostile: where the object is, or an error.
func TestEvalLocation(t *testing.T) {
	env := Env{
		Regs:  [NumRegs]uint64{rax: 0x1100, rdi: 0xdeadbeefcafe, rbp: 0x1800, rbx: 7},
		Valid: 1<<rax | 1<<rdi | 1<<rbp,
		CFA:   0x1900, HasCFA: true,
		FrameBase: 0x1900, HasFrameBase: true,
		Bias: 0x100,
		Mem:  wordMem{0x1100: 0x0706050403020100},
	}
	mem := func(a uint64) Result { return Result{Kind: InMemory, Value: a} }
	reg := func(n uint64) Result { return Result{Kind: InRegister, Reg: n} }
	for _, c := range []struct {
		name string
		expr []byte
		want Result
		err  error // nil: any error will do when want is the zero Result
	}{
		{"empty", nil, Result{Kind: Empty}, nil},
		{"reg5", []byte{Reg0 + rdi}, reg(rdi), nil},
		{"regx 5", []byte{Regx, 5}, reg(rdi), nil},
		// Whether the frame vouches for a register is the caller's to ask.
		{"reg3 not vouched for", []byte{Reg0 + rbx}, reg(rbx), nil},
		{"reg xmm0", []byte{Reg0 + 17}, reg(17), nil},
		{"regx huge", cat([]byte{Regx}, uleb(1<<40)), reg(1 << 16), nil},
		{"fbreg -24", []byte{Fbreg, 0x68}, mem(0x1900 - 24), nil},
		{"call_frame_cfa", []byte{CallFrameCFA}, mem(0x1900), nil},
		{"breg6 +8", []byte{Breg0 + rbp, 0x08}, mem(0x1808), nil},
		{"bregx 6 -1", []byte{Bregx, 6, 0x7f}, mem(0x17ff), nil},
		{"breg3 not vouched for", []byte{Breg0 + rbx, 0}, Result{}, ErrUnavailable},
		{"addr", cat([]byte{Addr}, u64le(0x1000)), mem(0x1100), nil},
		{"lit stack_value", []byte{Lit0 + 5, StackValue}, Result{Kind: IsValue, Value: 5}, nil},
		{"const1s stack_value", []byte{Const1s, 0xff, StackValue}, Result{Kind: IsValue, Value: ^uint64(0)}, nil},
		{"const4u plus_uconst", []byte{Const4u, 1, 0, 0, 0, PlusUconst, 0x10, StackValue}, Result{Kind: IsValue, Value: 17}, nil},
		{"breg4 -99 stack_value (rsi invalid)", []byte{Breg0 + rsi, 0x9d, 0x7f, StackValue}, Result{}, ErrUnavailable},
		{"breg0 deref_size", []byte{Breg0 + rax, 0, DerefSize, 2, PlusUconst, 0x10, StackValue}, Result{Kind: IsValue, Value: 0x110}, nil},
		{"breg0 deref", []byte{Breg0 + rax, 0, Deref}, mem(0x0706050403020100), nil},
		{"implicit_value", []byte{ImplicitValue, 4, 1, 2, 3, 4}, Result{Kind: IsImplicit, Bytes: []byte{1, 2, 3, 4}}, nil},
		{"implicit_value truncated", []byte{ImplicitValue, 9, 1, 2}, Result{}, nil},
		{"implicit_value not last", []byte{ImplicitValue, 1, 1, Nop}, Result{}, nil},
		{"entry_value", []byte{EntryValue, 1, Reg0 + rdi, StackValue}, Result{}, ErrUnsupported},
		{"GNU_entry_value", []byte{GNUEntryValue, 1, Reg0 + rdi, StackValue}, Result{}, ErrUnsupported},
		{"reg5 piece 8", []byte{Reg0 + rdi, Piece, 8}, Result{Kind: InRegister, Reg: rdi, PieceSize: 8}, nil},
		{"reg5 piece 4 of 8", []byte{Reg0 + rdi, Piece, 4, Reg0 + rsi, Piece, 4}, Result{Kind: InRegister, Reg: rdi, PieceSize: 4}, nil},
		{"fbreg piece", []byte{Fbreg, 0x70, Piece, 4}, Result{Kind: InMemory, Value: 0x1900 - 16, PieceSize: 4}, nil},
		{"empty piece", []byte{Piece, 4, Reg0 + rdi, Piece, 4}, Result{Kind: Empty, PieceSize: 4}, nil},
		{"piece 0", []byte{Reg0 + rdi, Piece, 0}, Result{}, nil},
		{"truncated addr", []byte{Addr, 1, 2}, Result{}, nil},
		{"truncated sleb", []byte{Fbreg, 0x80, 0x80}, Result{}, nil},
		{"pop empty", []byte{Plus}, Result{}, ErrStack},
		{"stack_value empty", []byte{StackValue}, Result{}, ErrStack},
		{"stack_value not last", []byte{Lit0, StackValue, Lit0}, Result{}, nil},
		{"reg then op", []byte{Reg0 + rdi, Lit0}, Result{}, nil},
		{"reg after a push", []byte{Lit0, Reg0 + rdi}, Result{}, nil},
		{"unknown op", []byte{0xff}, Result{}, ErrUnsupported},
		{"skip (branch) forever", []byte{Skip, 0xfd, 0xff}, Result{}, ErrSteps},
		// A ULEB128 longer than 64 bits keeps its low bits: the
		// constant is all ones, an address nothing maps.
		{"overlong uleb", append(append([]byte{Constu}, slices.Repeat([]byte{0xff}, 20)...), 0), mem(^uint64(0)), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Eval(c.expr, &env)
			if c.want.Kind == Empty && c.want.PieceSize == 0 && c.name != "empty" {
				if err == nil || (c.err != nil && !errors.Is(err, c.err)) {
					t.Fatalf("Eval(% x) = %+v, %v; want an error (%v)", c.expr, got, err, c.err)
				}
				return
			}
			if err != nil || got.Kind != c.want.Kind || got.Value != c.want.Value || got.Reg != c.want.Reg ||
				got.PieceSize != c.want.PieceSize || !slices.Equal(got.Bytes, c.want.Bytes) {
				t.Errorf("Eval(% x) = %+v, %v; want %+v", c.expr, got, err, c.want)
			}
		})
	}
	// The stack is bounded.
	deep := slices.Repeat([]byte{Lit0}, MaxStack+1)
	if r, err := Eval(append(deep, StackValue), &env); !errors.Is(err, ErrStack) {
		t.Errorf("%d pushes evaluated to %+v, %v", len(deep), r, err)
	}
	// So are the steps.
	nops := slices.Repeat([]byte{Nop}, MaxSteps+1)
	if r, err := Eval(append(nops, Lit0, StackValue), &env); !errors.Is(err, ErrSteps) {
		t.Errorf("%d nops evaluated to %+v, %v", len(nops), r, err)
	}
}

func TestReadFunc(t *testing.T) {
	f := ReadFunc(func(addr uint64, p []byte) error {
		if addr != 0x1000 {
			return errUnmapped
		}
		for i := range p {
			p[i] = byte(i + 1)
		}
		return nil
	})
	if v, err := f.ReadUint(0x1000, 3); v != 0x030201 || err != nil {
		t.Errorf("ReadUint(0x1000, 3) = %#x, %v", v, err)
	}
	if _, err := f.ReadUint(0x2000, 8); !errors.Is(err, errUnmapped) {
		t.Errorf("ReadUint of unmapped memory: %v", err)
	}
	for _, size := range []int{0, 9, -1} {
		if _, err := f.ReadUint(0x1000, size); err == nil {
			t.Errorf("ReadUint of %d bytes: no error", size)
		}
	}
	if _, err := ReadFunc(nil).ReadUint(0x1000, 8); !errors.Is(err, ErrUnavailable) {
		t.Errorf("nil ReadFunc: %v, want ErrUnavailable", err)
	}
}

// FuzzEval evaluates arbitrary bytes, with and without a pushed value,
// over an Env that knows everything and one that knows nothing. Nothing
// may panic, and a result must be one the package documents.
func FuzzEval(f *testing.F) {
	f.Add(pltExpr, uint64(0x401020))
	f.Add([]byte{Breg0 + rbp, 8, Deref, Piece, 8}, uint64(0))
	f.Add([]byte{Skip, 0xfd, 0xff}, uint64(1))
	f.Add([]byte{ImplicitValue, 4, 1, 2, 3, 4}, uint64(2))
	f.Add([]byte{Lit0 + 1, Bra, 1, 0, Lit0 + 7, Lit0 + 2, StackValue}, uint64(3))
	f.Fuzz(func(t *testing.T, expr []byte, v uint64) {
		full := Env{Valid: ^uint32(0), HasCFA: true, CFA: v, HasFrameBase: true, FrameBase: v, Mem: wordMem{v &^ 7: v}}
		for i := range full.Regs {
			full.Regs[i] = v + uint64(i)
		}
		for _, env := range []*Env{&full, {}} {
			for _, push := range [][]uint64{nil, {v}} {
				r, err := Eval(expr, env, push...)
				if err != nil {
					continue
				}
				if r.Kind > IsImplicit || (r.Kind == IsImplicit) != (r.Bytes != nil) {
					t.Fatalf("Eval(% x) = %+v", expr, r)
				}
			}
		}
	})
}

// TestRefused: an expression whose first operation is not evaluated is
// refused whatever the frame; one that fails only for want of a register
// or memory, or fails later, is not.
func TestRefused(t *testing.T) {
	for _, c := range []struct {
		expr []byte
		want bool
	}{
		{[]byte{EntryValue, 1, Reg0 + rdi, StackValue}, true},
		{[]byte{GNUEntryValue, 1, Reg0 + rdi, StackValue}, true},
		{[]byte{Breg0 + rbp, 0}, false},
		{[]byte{Lit0, EntryValue, 1, Reg0, StackValue}, false},
		{[]byte{Reg0 + rdi}, false},
		{nil, false},
	} {
		if got := Refused(c.expr); got != c.want {
			t.Errorf("Refused(% x) = %v, want %v", c.expr, got, c.want)
		}
		env := Env{Valid: ^uint32(0), HasCFA: true, CFA: 0x1000, HasFrameBase: true}
		if _, err := Eval(c.expr, &env); c.want && !errors.Is(err, ErrUnsupported) {
			t.Errorf("Eval(% x) over a full frame: %v, want ErrUnsupported", c.expr, err)
		}
	}
}
