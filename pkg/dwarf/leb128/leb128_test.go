package leb128

import (
	"bytes"
	"math"
	"testing"
)

func TestDecode(t *testing.T) {
	// Examples from DWARF 5, section 7.6, and the 64-bit edges.
	for _, tc := range []struct {
		in []byte
		u  uint64
		s  int64
	}{
		{[]byte{2}, 2, 2},
		{[]byte{0x7f}, 127, -1},
		{[]byte{0x80, 1}, 128, 128},
		{[]byte{0x81, 0x7f}, 16257, -127},
		{[]byte{0x80, 0x7f}, 16256, -128},
		{[]byte{0xe4, 0x00}, 100, 100},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, ^uint64(0), -1},
		{[]byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f}, 1 << 63, -1 << 63},
		// Bits past 64 are dropped, the encoding still consumed.
		{[]byte{0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, 1, 1},
	} {
		in := append(tc.in, 0xaa)
		if got, n := DecodeUnsigned(in); got != tc.u || n != len(tc.in) {
			t.Errorf("DecodeUnsigned(% x) = %#x (consumed %d), want %#x (%d)", tc.in, got, n, tc.u, len(tc.in))
		}
		if got, n := DecodeSigned(in); got != tc.s || n != len(tc.in) {
			t.Errorf("DecodeSigned(% x) = %d (consumed %d), want %d (%d)", tc.in, got, n, tc.s, len(tc.in))
		}
	}
	for _, in := range [][]byte{nil, {0x80}, {0x80, 0x80}, bytes.Repeat([]byte{0xff}, 30)} {
		if v, n := DecodeUnsigned(in); v != 0 || n != 0 {
			t.Errorf("DecodeUnsigned(% x) = %#x, %d; want 0, 0 (unterminated)", in, v, n)
		}
		if v, n := DecodeSigned(in); v != 0 || n != 0 {
			t.Errorf("DecodeSigned(% x) = %d, %d; want 0, 0 (unterminated)", in, v, n)
		}
	}
}

func TestEncode(t *testing.T) {
	for _, tc := range []struct {
		u    uint64
		want []byte
	}{
		{0, []byte{0}}, {2, []byte{2}}, {127, []byte{0x7f}}, {128, []byte{0x80, 1}},
		{16256, []byte{0x80, 0x7f}}, {^uint64(0), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
	} {
		if got := AppendUnsigned(nil, tc.u); !bytes.Equal(got, tc.want) {
			t.Errorf("AppendUnsigned(%#x) = % x, want % x", tc.u, got, tc.want)
		}
	}
	for _, tc := range []struct {
		s    int64
		want []byte
	}{
		{0, []byte{0}}, {2, []byte{2}}, {-1, []byte{0x7f}}, {63, []byte{0x3f}}, {64, []byte{0xc0, 0}},
		{-64, []byte{0x40}}, {-65, []byte{0xbf, 0x7f}}, {-128, []byte{0x80, 0x7f}},
		{math.MinInt64, []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f}},
	} {
		if got := AppendSigned(nil, tc.s); !bytes.Equal(got, tc.want) {
			t.Errorf("AppendSigned(%d) = % x, want % x", tc.s, got, tc.want)
		}
	}
}

// FuzzLEB128 decodes arbitrary bytes, and checks that every number
// survives a round trip through its encoding.
func FuzzLEB128(f *testing.F) {
	f.Add([]byte{0x80, 0x7f}, uint64(300), int64(-300))
	f.Add(bytes.Repeat([]byte{0x80}, 20), ^uint64(0), int64(math.MinInt64))
	f.Fuzz(func(t *testing.T, b []byte, u uint64, s int64) {
		if _, n := DecodeUnsigned(b); n < 0 || n > len(b) {
			t.Fatalf("DecodeUnsigned(% x) consumed %d", b, n)
		}
		if _, n := DecodeSigned(b); n < 0 || n > len(b) {
			t.Fatalf("DecodeSigned(% x) consumed %d", b, n)
		}
		enc := AppendUnsigned(nil, u)
		if got, n := DecodeUnsigned(enc); got != u || n != len(enc) {
			t.Fatalf("%#x: encoded % x, decoded %#x (%d bytes)", u, enc, got, n)
		}
		enc = AppendSigned(nil, s)
		if got, n := DecodeSigned(enc); got != s || n != len(enc) {
			t.Fatalf("%d: encoded % x, decoded %d (%d bytes)", s, enc, got, n)
		}
	})
}
