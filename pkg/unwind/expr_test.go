package unwind

import (
	"strings"
	"testing"
)

// fakeMem is a sparse memory of 8-byte words.
type fakeMem map[uint64]uint64

func (m fakeMem) ReadMemory(addr uint64, p []byte) error {
	for i := range p {
		a := addr + uint64(i)
		w, ok := m[a&^7]
		if !ok {
			return errUnreadable
		}
		p[i] = byte(w >> (8 * (a & 7)))
	}
	return nil
}

func (m fakeMem) readWord(addr uint64, size int) (uint64, error) {
	var b [8]byte
	if err := m.ReadMemory(addr, b[:size]); err != nil {
		return 0, err
	}
	return le64(b[:size]), nil
}

// pltExpr is the CFA rule GNU ld gives PLT entries: rsp+8, and 8 more once
// the entry's push has run (at offset 11 of each 16-byte entry).
var pltExpr = []byte{opBreg0 + regRSP, 8, opBreg0 + regRIP, 0, opLit0 + 15, opAnd, opLit0 + 11, opGe, opLit0 + 3, opShl, opPlus}

func TestEval(t *testing.T) {
	var regs Regs
	regs[regRSP] = 0x7000
	regs[regRBP] = 0x7100
	mem := fakeMem{0x7100: 0x1234, 0x7108: 0xffeeddccbbaa9988}
	env := exprEnv{regs: regs, valid: allRegs, bias: 0x10000, mem: mem}
	for _, tc := range []struct {
		name string
		expr []byte
		push bool // push 0x500 first, as for DW_CFA_expression
		want uint64
		err  string
	}{
		{"lit", []byte{opLit0 + 31}, false, 31, ""},
		{"breg", []byte{opBreg0 + regRBP, 0x78}, false, 0x7100 - 8, ""},
		{"bregx", cat([]byte{opBregx}, uleb(regRSP), sleb(-16)), false, 0x7000 - 16, ""},
		{"deref", []byte{opBreg0 + regRBP, 0, opDeref}, false, 0x1234, ""},
		{"deref_size", []byte{opBreg0 + regRBP, 8, opDerefSize, 2}, false, 0x9988, ""},
		{"glibc DRAP", []byte{opBreg0 + regRBP, 8, opDeref}, false, 0xffeeddccbbaa9988, ""},
		{"pushed CFA", []byte{opPlusUconst, 0x10}, true, 0x510, ""},
		{"addr is biased", cat([]byte{opAddr}, u64le(0x40)), false, 0x10040, ""},
		{"consts", cat([]byte{opConst1s, 0xff, opConst2s}, u16le(0xfffe), []byte{opPlus}), false, ^uint64(2), ""},
		{"constu", cat([]byte{opConst1u, 0xff, opConst2u}, u16le(2), []byte{opConst4u}, u32le(3), []byte{opConst8u}, u64le(4), []byte{opPlus, opPlus, opPlus}), false, 0xff + 9, ""},
		{"const leb", cat([]byte{opConstu}, uleb(1000), []byte{opConsts}, sleb(-1), []byte{opMul}), false, ^uint64(999), ""},
		{"minus", []byte{opLit0 + 3, opLit0 + 5, opMinus}, false, ^uint64(1), ""},
		{"div signed", []byte{opLit0 + 7, opNeg, opLit0 + 2, opDiv}, false, ^uint64(2), ""},
		{"mod", []byte{opLit0 + 7, opLit0 + 3, opMod}, false, 1, ""},
		{"shifts", []byte{opLit0 + 1, opLit0 + 4, opShl, opLit0 + 1, opShr, opNeg, opLit0 + 1, opShra}, false, ^uint64(3), ""},
		{"bit ops", []byte{opLit0 + 12, opLit0 + 10, opAnd, opLit0 + 1, opOr, opLit0 + 3, opXor, opNot}, false, ^uint64(10), ""},
		{"abs", []byte{opLit0 + 9, opNeg, opAbs}, false, 9, ""},
		{"compare signed", []byte{opLit0 + 1, opNeg, opLit0 + 1, opLt}, false, 1, ""},
		{"compares", []byte{opLit0 + 2, opLit0 + 2, opEq, opLit0 + 2, opLit0 + 3, opNe, opPlus, opLit0 + 3, opLit0 + 2, opGt, opPlus, opLit0 + 2, opLit0 + 2, opLe, opPlus}, false, 4, ""},
		{"stack ops", []byte{opLit0 + 1, opLit0 + 2, opLit0 + 3, opRot, opSwap, opOver, opPick, 1, opDup, opDrop, opMinus, opPlus, opPlus}, false, 2, ""},
		{"rot", []byte{opLit0 + 1, opLit0 + 2, opLit0 + 3, opRot, opDrop, opDrop}, false, 2, ""},
		{"skip", cat([]byte{opSkip}, u16le(1), []byte{opLit0 + 1, opLit0 + 2}), false, 2, ""},
		{"bra taken", cat([]byte{opLit0 + 1, opBra}, u16le(1), []byte{opLit0 + 7, opLit0 + 2}), false, 2, ""},
		{"bra not taken", cat([]byte{opLit0 + 4, opLit0, opBra}, u16le(1), []byte{opLit0 + 7}), false, 7, ""},
		{"nop", []byte{opNop, opLit0 + 1}, false, 1, ""},
		{"loop forever", cat([]byte{opSkip}, u16le(0xfffd)), false, 0, "too long"},
		{"branch out of range", cat([]byte{opSkip}, u16le(100)), false, 0, "out of range"},
		{"underflow", []byte{opPlus}, false, 0, "stack"},
		{"empty", nil, false, 0, "stack"},
		{"overflow", bytesRepeat(opLit0, exprStackSize+1), false, 0, "stack"},
		{"unreadable", []byte{opLit0, opDeref}, false, 0, "DW_OP_deref of 0x0"},
		{"bad deref_size", []byte{opLit0, opDerefSize, 9}, false, 0, "bad size"},
		{"div by zero", []byte{opLit0 + 1, opLit0, opDiv}, false, 0, "by zero"},
		{"unsupported", []byte{0x9c}, false, 0, "unsupported"},
		{"truncated", []byte{opConst4u, 1}, false, 0, "truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := eval(tc.expr, &env, 0x500, tc.push)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("= %#x, %v; want an error mentioning %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("= %#x, %v; want %#x", got, err, tc.want)
			}
		})
	}

	t.Run("unrecovered register", func(t *testing.T) {
		env := exprEnv{regs: regs, valid: allRegs &^ (1 << regRBP), mem: mem}
		if _, err := eval([]byte{opBreg0 + regRBP, 0}, &env, 0, false); err == nil {
			t.Error("breg of an unrecovered register evaluated")
		}
	})
}

func TestEvalPLT(t *testing.T) {
	for off := uint64(0); off < 16; off++ {
		regs := Regs{regRSP: 0x7000, regRIP: 0x401020 + off}
		env := exprEnv{regs: regs, valid: allRegs, mem: fakeMem{}}
		got, err := eval(pltExpr, &env, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		want := uint64(0x7008)
		if off >= 11 {
			want += 8
		}
		if got != want {
			t.Errorf("PLT entry offset %d: CFA %#x, want %#x", off, got, want)
		}
	}
}
