package unwind

import (
	"encoding/binary"

	"github.com/memtrap/memtrap/pkg/dwarf/leb128"
)

// ehBuilder assembles .eh_frame and .debug_frame sections for tests of
// what compilers rarely or never emit.
type ehBuilder struct {
	buf   []byte
	addr  uint64 // link-time address of buf[0]
	debug bool   // .debug_frame framing
}

func uleb(v uint64) []byte { return leb128.AppendUnsigned(nil, v) }
func sleb(v int64) []byte  { return leb128.AppendSigned(nil, v) }

func u16le(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func u32le(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func u64le(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// entry appends one entry whose body follows the id field, padded with
// DW_CFA_nop to a multiple of 8, and returns its offset.
func (b *ehBuilder) entry(id uint32, body []byte) uint64 {
	off := uint64(len(b.buf))
	for (8+len(body))%8 != 0 {
		body = append(body, cfaNop)
	}
	b.buf = append(b.buf, u32le(uint32(4+len(body)))...)
	b.buf = append(b.buf, u32le(id)...)
	b.buf = append(b.buf, body...)
	return off
}

// cie appends a CIE with augmentation "zR" (or "" for .debug_frame),
// FDE encoding pcrel|sdata4, code alignment 1, data alignment -8 and
// return address column 16.
func (b *ehBuilder) cie(insns []byte) uint64 {
	if b.debug {
		return b.entry(0xffffffff, cat([]byte{3, 0}, uleb(1), sleb(-8), uleb(16), insns))
	}
	return b.cieAug("zR", []byte{pePCRel | peSdata4}, insns)
}

// cieAug appends an .eh_frame CIE with any augmentation and data.
func (b *ehBuilder) cieAug(aug string, augData []byte, insns []byte) uint64 {
	body := cat([]byte{1}, []byte(aug), []byte{0}, uleb(1), sleb(-8), []byte{16})
	if len(aug) > 0 && aug[0] == 'z' {
		body = cat(body, uleb(uint64(len(augData))), augData)
	}
	return b.entry(0, cat(body, insns))
}

// fde appends an FDE for [lo, lo+size) under the CIE at cieOff.
func (b *ehBuilder) fde(cieOff, lo, size uint64, insns []byte) uint64 {
	off := uint64(len(b.buf))
	if b.debug {
		return b.entry(uint32(cieOff), cat(u64le(lo), u64le(size), insns))
	}
	idField := off + 4
	pcField := b.addr + off + 8
	return b.entry(uint32(idField-cieOff), cat(u32le(uint32(int32(lo-pcField))), u32le(uint32(size)), uleb(0), insns))
}

func (b *ehBuilder) section() *cfiSection {
	s := &cfiSection{name: ".eh_frame", data: b.buf, addr: b.addr, eh: !b.debug}
	if b.debug {
		s.name = ".debug_frame"
	}
	return s
}
