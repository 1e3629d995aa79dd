package unwind

import (
	"fmt"

	"github.com/memtrap/memtrap/pkg/dwarf/reader"
)

// Pointer encodings (DW_EH_PE_*), from the LSB's "Exception Frames" and
// gcc's unwind-pe.h. The low nibble is the format, bits 4-6 the base the
// value is relative to, and bit 7 an extra indirection.
const (
	peAbsptr  = 0x00
	peULEB128 = 0x01
	peUdata2  = 0x02
	peUdata4  = 0x03
	peUdata8  = 0x04
	peSLEB128 = 0x09
	peSdata2  = 0x0a
	peSdata4  = 0x0b
	peSdata8  = 0x0c

	pePCRel   = 0x10
	peTextRel = 0x20
	peDataRel = 0x30
	peFuncRel = 0x40
	peAligned = 0x50

	peIndirect = 0x80
	peOmit     = 0xff
)

// ptrBases are the addresses the relative pointer encodings count from.
// pc is the link-time address of the reader's data[0]; the field's own
// address is pc+r.Off() when it is read.
type ptrBases struct {
	pc   uint64
	text uint64
	data uint64
	fn   uint64
}

// readPointer reads a value in encoding enc. It reports indirect when the
// value is the address of the pointer rather than the pointer: callers that
// need the target read it from the file themselves.
func readPointer(r *reader.Reader, enc byte, b *ptrBases) (v uint64, indirect bool) {
	if enc == peOmit {
		return 0, false
	}
	here := b.pc + uint64(r.Off())
	switch enc & 0x0f {
	case peAbsptr, peUdata8:
		v = r.U64()
	case peULEB128:
		v = r.ULEB128()
	case peUdata2:
		v = uint64(r.U16())
	case peUdata4:
		v = uint64(r.U32())
	case peSLEB128:
		v = uint64(r.SLEB128())
	case peSdata2:
		v = uint64(int64(int16(r.U16())))
	case peSdata4:
		v = uint64(int64(int32(r.U32())))
	case peSdata8:
		v = r.U64()
	default:
		r.Fail(fmt.Errorf("pointer encoding %#x: unknown format", enc))
		return 0, false
	}
	switch enc & 0x70 {
	case 0:
	case pePCRel:
		v += here
	case peTextRel:
		v += b.text
	case peDataRel:
		v += b.data
	case peFuncRel:
		v += b.fn
	default:
		// DW_EH_PE_aligned would need the field padded to 8 bytes before
		// it is read; no x86-64 toolchain emits it.
		r.Fail(fmt.Errorf("pointer encoding %#x: unsupported base", enc))
		return 0, false
	}
	return v, enc&peIndirect != 0
}

// pointerSize is the fixed size of encoding enc, or 0 when it is variable
// (LEB128) or unknown.
func pointerSize(enc byte) int {
	switch enc & 0x0f {
	case peAbsptr, peUdata8, peSdata8:
		return 8
	case peUdata4, peSdata4:
		return 4
	case peUdata2, peSdata2:
		return 2
	}
	return 0
}
