package unwind

import (
	"strings"
	"testing"

	"github.com/memtrap/memtrap/pkg/dwarf/op"
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

// TestCFIValue checks what the unwinder makes of package op's results: a
// CFA rule's value is what it leaves on the stack, read through the
// walker's memory, and nothing else will do. The evaluator's own tests
// are in pkg/dwarf/op.
func TestCFIValue(t *testing.T) {
	w := &walker{u: New(noModules{}), mem: fakeMem{0x7100: 0x1234, 0x7108: 0xffeeddccbbaa9988}}
	env := op.Env{Regs: Regs{regRBP: 0x7100, regRSP: 0x7000}, Valid: uint32(AllRegs &^ (1 << regRBX)), Mem: w}
	for _, tc := range []struct {
		name string
		expr []byte
		push []uint64
		want uint64
		err  string
	}{
		{"deref through the walker", []byte{op.Breg0 + regRBP, 0, op.Deref}, nil, 0x1234, ""},
		{"deref_size through the walker", []byte{op.Breg0 + regRBP, 8, op.DerefSize, 2}, nil, 0x9988, ""},
		{"pushed CFA", []byte{op.PlusUconst, 0x10}, []uint64{0x500}, 0x510, ""},
		{"unreadable", []byte{op.Lit0, op.Deref}, nil, 0, "DW_OP_deref of 0x0"},
		{"empty", nil, nil, 0, "stack"},
		{"register location", []byte{op.Reg0 + regRBP}, nil, 0, "register location, not a value on the stack"},
		{"stack value", []byte{op.Lit0, op.StackValue}, nil, 0, "stack value, not a value on the stack"},
		{"piece", []byte{op.Breg0 + regRSP, 0, op.Piece, 8}, nil, 0, "not a value on the stack"},
		// DWARF does not allow the CFA inside CFI.
		{"call_frame_cfa", []byte{op.CallFrameCFA}, nil, 0, "unsupported"},
		{"unrecovered register", []byte{op.Breg0 + regRBX, 0}, nil, 0, "not recovered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := cfiValue(tc.expr, &env, tc.push...)
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
}
