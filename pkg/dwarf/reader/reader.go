// Package reader decodes the little-endian data of DWARF and ELF sections
// (CFI entries, location lists, expressions) from a byte slice.
//
// A [Reader] is a cursor over a slice it does not copy: what it returns
// aliases the slice, which must outlive those results. Its first failure
// is sticky: later reads return zero values, [Reader.Err] keeps the first
// cause, and the cursor sits at the end. So a decoding loop checks the
// error once per entry rather than after every field. A Reader is a small
// value, made without allocating and meant to be copied to save a
// position; it is not safe for concurrent use, but any number of Readers
// may read one slice at once.
package reader

import (
	"encoding/binary"
	"errors"

	"github.com/memtrap/memtrap/pkg/dwarf/leb128"
)

// ErrTruncated reports a read past the end of the data.
var ErrTruncated = errors.New("truncated")

// Reader reads b from a cursor. The zero Reader reads an empty slice.
type Reader struct {
	b   []byte
	off int
	err error
}

// New returns a Reader at the start of b.
func New(b []byte) Reader { return Reader{b: b} }

// At returns a Reader at offset off of b. Past the end, it has failed
// with ErrTruncated.
func At(b []byte, off uint64) Reader {
	r := Reader{b: b}
	if off > uint64(len(b)) {
		r.Fail(ErrTruncated)
		return r
	}
	r.off = int(off)
	return r
}

// Err returns the first failure, nil if there was none.
func (r *Reader) Err() error { return r.err }

// Fail records err as the reader's failure, unless it has one already,
// and moves the cursor to the end.
func (r *Reader) Fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.off = len(r.b)
}

// Off is the offset in the slice of the next byte to read.
func (r *Reader) Off() int { return r.off }

// Len is the number of bytes left to read.
func (r *Reader) Len() int { return len(r.b) - r.off }

// Rest returns the bytes left to read, without consuming them.
func (r *Reader) Rest() []byte { return r.b[r.off:len(r.b):len(r.b)] }

// Bytes consumes the next n bytes and returns them, capped so that an
// append to them cannot overwrite what follows.
func (r *Reader) Bytes(n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(r.Len()) {
		r.Fail(ErrTruncated)
		return nil
	}
	end := r.off + int(n)
	p := r.b[r.off:end:end]
	r.off = end
	return p
}

// U8 reads a byte.
func (r *Reader) U8() uint8 {
	if p := r.Bytes(1); p != nil {
		return p[0]
	}
	return 0
}

// U16 reads a 2-byte little-endian number.
func (r *Reader) U16() uint16 {
	if p := r.Bytes(2); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

// U32 reads a 4-byte little-endian number.
func (r *Reader) U32() uint32 {
	if p := r.Bytes(4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

// U64 reads an 8-byte little-endian number.
func (r *Reader) U64() uint64 {
	if p := r.Bytes(8); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

// ULEB128 reads an unsigned LEB128 number; bits past the 64th are dropped
// (see package leb128).
func (r *Reader) ULEB128() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := leb128.DecodeUnsigned(r.b[r.off:])
	if n == 0 {
		r.Fail(ErrTruncated)
		return 0
	}
	r.off += n
	return v
}

// SLEB128 reads a signed LEB128 number.
func (r *Reader) SLEB128() int64 {
	if r.err != nil {
		return 0
	}
	v, n := leb128.DecodeSigned(r.b[r.off:])
	if n == 0 {
		r.Fail(ErrTruncated)
		return 0
	}
	r.off += n
	return v
}

// CString reads a NUL-terminated string and returns it without the NUL,
// uncopied.
func (r *Reader) CString() []byte {
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
	r.Fail(ErrTruncated)
	return nil
}
