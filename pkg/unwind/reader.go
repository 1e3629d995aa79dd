package unwind

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// errTruncated reports a read past the end of a CFI entry or expression.
var errTruncated = errors.New("truncated")

// reader decodes little-endian DWARF data from a byte slice. The first
// failure is sticky: later reads return zero and err keeps the first cause, so
// a decoding loop checks err once per step rather than after every field.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.off = len(r.b)
}

func (r *reader) left() int { return len(r.b) - r.off }

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > r.left() {
		r.fail(errTruncated)
		return nil
	}
	p := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return p
}

func (r *reader) u8() uint8 {
	p := r.take(1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (r *reader) u16() uint16 {
	p := r.take(2)
	if p == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(p)
}

func (r *reader) u32() uint32 {
	p := r.take(4)
	if p == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(p)
}

func (r *reader) u64() uint64 {
	p := r.take(8)
	if p == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(p)
}

// uleb reads an unsigned LEB128 number. Bits past the 64th are dropped, as
// every consumer does; the encoding itself is still consumed.
func (r *reader) uleb() uint64 {
	var v uint64
	var shift uint
	for r.err == nil {
		if r.off >= len(r.b) {
			r.fail(errTruncated)
			return 0
		}
		c := r.b[r.off]
		r.off++
		if shift < 64 {
			v |= uint64(c&0x7f) << shift
		}
		shift += 7
		if c&0x80 == 0 {
			return v
		}
	}
	return 0
}

func (r *reader) sleb() int64 {
	var v int64
	var shift uint
	for r.err == nil {
		if r.off >= len(r.b) {
			r.fail(errTruncated)
			return 0
		}
		c := r.b[r.off]
		r.off++
		if shift < 64 {
			v |= int64(c&0x7f) << shift
		}
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v
		}
	}
	return 0
}

// cstring reads a NUL-terminated string without copying it.
func (r *reader) cstring() []byte {
	if r.err != nil {
		return nil
	}
	for i := r.off; i < len(r.b); i++ {
		if r.b[i] == 0 {
			s := r.b[r.off:i:i]
			r.off = i + 1
			return s
		}
	}
	r.fail(errTruncated)
	return nil
}

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
// pc is the link-time address of r.b[0]; the field's own address is
// pc+r.off when it is read.
type ptrBases struct {
	pc   uint64
	text uint64
	data uint64
	fn   uint64
}

// pointer reads a value in encoding enc. It reports indirect when the value
// is the address of the pointer rather than the pointer: callers that need
// the target read it from the file themselves.
func (r *reader) pointer(enc byte, b *ptrBases) (v uint64, indirect bool) {
	if enc == peOmit {
		return 0, false
	}
	here := b.pc + uint64(r.off)
	switch enc & 0x0f {
	case peAbsptr, peUdata8:
		v = r.u64()
	case peULEB128:
		v = r.uleb()
	case peUdata2:
		v = uint64(r.u16())
	case peUdata4:
		v = uint64(r.u32())
	case peSLEB128:
		v = uint64(r.sleb())
	case peSdata2:
		v = uint64(int64(int16(r.u16())))
	case peSdata4:
		v = uint64(int64(int32(r.u32())))
	case peSdata8:
		v = r.u64()
	default:
		r.fail(fmt.Errorf("pointer encoding %#x: unknown format", enc))
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
		r.fail(fmt.Errorf("pointer encoding %#x: unsupported base", enc))
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
