package unwind

import (
	"encoding/binary"
	"fmt"

	"github.com/memtrap/memtrap/pkg/dwarf/op"
)

// cfiValue evaluates the DWARF expression of a CFA rule
// (DW_CFA_def_cfa_expression, DW_CFA_expression, DW_CFA_val_expression)
// with package op, pushing stack first. Its value is what it leaves on top
// of the stack: a location in a register, a piece or an implicit value is
// not one. The env carries no CFA and no frame base, which DWARF does not
// allow in CFI.
func cfiValue(expr []byte, env *op.Env, stack ...uint64) (uint64, error) {
	r, err := op.Eval(expr, env, stack...)
	if err != nil {
		return 0, err
	}
	if r.Kind != op.InMemory || r.PieceSize != 0 {
		return 0, fmt.Errorf("CFA rule gives a %s, not a value on the stack: %w", r.Kind, op.ErrStack)
	}
	return r.Value, nil
}

// le64 decodes the low size bytes of p as a little-endian number.
func le64(p []byte) uint64 {
	var b [8]byte
	copy(b[:], p)
	return binary.LittleEndian.Uint64(b[:])
}
