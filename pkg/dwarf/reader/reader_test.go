package reader

import (
	"bytes"
	"errors"
	"testing"
)

func TestFixedWidth(t *testing.T) {
	r := New([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 'h', 'i', 0, 0xaa})
	if v := r.U8(); v != 1 {
		t.Errorf("U8 = %#x", v)
	}
	if v := r.U16(); v != 0x0302 {
		t.Errorf("U16 = %#x", v)
	}
	if v := r.U32(); v != 0x07060504 {
		t.Errorf("U32 = %#x", v)
	}
	if v := r.U64(); v != 0x0f0e0d0c0b0a0908 {
		t.Errorf("U64 = %#x", v)
	}
	if s := r.CString(); string(s) != "hi" || r.Off() != 18 || r.Len() != 1 {
		t.Errorf("CString = %q, at %d with %d left", s, r.Off(), r.Len())
	}
	if rest := r.Rest(); !bytes.Equal(rest, []byte{0xaa}) || r.Off() != 18 {
		t.Errorf("Rest = % x, consumed to %d", rest, r.Off())
	}
	if r.Err() != nil {
		t.Fatal(r.Err())
	}
}

func TestLEB128(t *testing.T) {
	r := New([]byte{0x80, 0x01, 0x7f, 0xaa})
	if v := r.ULEB128(); v != 128 {
		t.Errorf("ULEB128 = %d", v)
	}
	if v := r.SLEB128(); v != -1 || r.Off() != 3 {
		t.Errorf("SLEB128 = %d, at %d", v, r.Off())
	}
	r = New([]byte{0x80, 0x80})
	if r.ULEB128(); !errors.Is(r.Err(), ErrTruncated) {
		t.Errorf("unterminated uleb: err %v", r.Err())
	}
	r = New([]byte{0xff})
	if r.SLEB128(); !errors.Is(r.Err(), ErrTruncated) {
		t.Errorf("unterminated sleb: err %v", r.Err())
	}
}

// TestSticky: after the first failure every read gives zero, the cause
// stays the first one, and the cursor is at the end.
func TestSticky(t *testing.T) {
	other := errors.New("other")
	for _, tc := range []struct {
		name string
		read func(r *Reader)
	}{
		{"U8", func(r *Reader) { r.U8() }},
		{"U16", func(r *Reader) { r.U16() }},
		{"U32", func(r *Reader) { r.U32() }},
		{"U64", func(r *Reader) { r.U64() }},
		{"Bytes", func(r *Reader) { r.Bytes(9) }},
		{"Bytes huge", func(r *Reader) { r.Bytes(^uint64(0)) }},
		{"CString", func(r *Reader) { r.CString() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New([]byte{1})
			r.U8()
			tc.read(&r)
			if !errors.Is(r.Err(), ErrTruncated) || r.Len() != 0 {
				t.Fatalf("err %v with %d left, want ErrTruncated at the end", r.Err(), r.Len())
			}
			r.Fail(other)
			if r.U8() != 0 || r.U64() != 0 || r.ULEB128() != 0 || r.SLEB128() != 0 || r.Bytes(0) != nil || r.CString() != nil {
				t.Error("a failed reader read something")
			}
			if !errors.Is(r.Err(), ErrTruncated) {
				t.Errorf("err %v, want the first cause kept", r.Err())
			}
		})
	}
}

func TestAt(t *testing.T) {
	b := []byte{1, 2, 3}
	if r := At(b, 2); r.U8() != 3 || r.Err() != nil {
		t.Errorf("At(b, 2) read %v", r.Err())
	}
	if r := At(b, 3); r.Len() != 0 || r.Err() != nil {
		t.Errorf("At(b, 3): %d left, err %v; want the end, no error", r.Len(), r.Err())
	}
	for _, off := range []uint64{4, 1 << 40, ^uint64(0)} {
		if r := At(b, off); !errors.Is(r.Err(), ErrTruncated) {
			t.Errorf("At(b, %#x): err %v, want ErrTruncated", off, r.Err())
		}
	}
	// Bytes does not let an append run into what follows.
	r := New(b)
	p := r.Bytes(1)
	_ = append(p, 0xee)
	if b[1] != 2 {
		t.Error("an append to Bytes overwrote the data")
	}
}

// FuzzReader reads arbitrary bytes as a mix of fields, steered by the
// data itself: nothing may panic or read past the end.
func FuzzReader(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, []byte{0, 1, 2, 3, 4, 5, 6, 7})
	f.Add(bytes.Repeat([]byte{0xff}, 40), []byte{4, 4, 5})
	f.Fuzz(func(t *testing.T, data, program []byte) {
		r := New(data)
		for _, op := range program {
			before := r.Off()
			switch op % 8 {
			case 0:
				r.U8()
			case 1:
				r.U16()
			case 2:
				r.U32()
			case 3:
				r.U64()
			case 4:
				r.ULEB128()
			case 5:
				r.SLEB128()
			case 6:
				r.CString()
			case 7:
				r.Bytes(uint64(op) >> 3)
			}
			if r.Off() < before || r.Off() > len(data) {
				t.Fatalf("cursor moved from %d to %d of %d", before, r.Off(), len(data))
			}
		}
	})
}
