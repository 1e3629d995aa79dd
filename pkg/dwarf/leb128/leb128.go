// Package leb128 encodes and decodes the variable-length numbers of DWARF
// (section 7.6 of DWARF 5): seven bits a byte, least significant first, the
// top bit set on every byte but the last.
//
// Decoding never panics and never allocates. A number longer than 64 bits
// is decoded to its low 64 bits and consumed whole, as every consumer of
// DWARF does: compilers pad LEB128 fields to a fixed width with 0x80 bytes.
// The functions hold no state and are safe for concurrent use.
package leb128

// DecodeUnsigned decodes the unsigned LEB128 number at the start of p and
// returns it with the number of bytes it takes, or 0, 0 when p ends before
// the number does.
func DecodeUnsigned(p []byte) (v uint64, n int) {
	var shift uint
	for i, c := range p {
		if shift < 64 {
			v |= uint64(c&0x7f) << shift
		}
		shift += 7
		if c&0x80 == 0 {
			return v, i + 1
		}
	}
	return 0, 0
}

// DecodeSigned decodes the signed LEB128 number at the start of p and
// returns it with the number of bytes it takes, or 0, 0 when p ends before
// the number does.
func DecodeSigned(p []byte) (v int64, n int) {
	var shift uint
	for i, c := range p {
		if shift < 64 {
			v |= int64(c&0x7f) << shift
		}
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v, i + 1
		}
	}
	return 0, 0
}

// AppendUnsigned appends the shortest unsigned LEB128 encoding of v to b.
func AppendUnsigned(b []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// AppendSigned appends the shortest signed LEB128 encoding of v to b.
func AppendSigned(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
