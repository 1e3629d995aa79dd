package unwind

import (
	"testing"

	"github.com/memtrap/memtrap/pkg/dwarf/reader"
)

func TestPointerEncodings(t *testing.T) {
	b := ptrBases{pc: 0x1000, text: 0x2000, data: 0x3000, fn: 0x4000}
	for _, tc := range []struct {
		name     string
		enc      byte
		in       []byte
		want     uint64
		indirect bool
		err      bool
	}{
		{"absptr", peAbsptr, u64le(0x1122334455667788), 0x1122334455667788, false, false},
		{"udata2", peUdata2, u16le(0xfffe), 0xfffe, false, false},
		{"sdata2", peSdata2, u16le(0xfffe), ^uint64(1), false, false},
		{"udata4", peUdata4, u32le(0xfffffff0), 0xfffffff0, false, false},
		{"sdata4", peSdata4, u32le(0xfffffff0), ^uint64(15), false, false},
		{"udata8", peUdata8, u64le(5), 5, false, false},
		{"sdata8", peSdata8, u64le(^uint64(0)), ^uint64(0), false, false},
		{"uleb128", peULEB128, uleb(300), 300, false, false},
		{"sleb128", peSLEB128, sleb(-300), ^uint64(299), false, false},
		// pcrel counts from the field: the reader sits 2 bytes in.
		{"pcrel|sdata4", pePCRel | peSdata4, u32le(uint32(0xfffffff0)), 0x1002 - 16, false, false},
		{"textrel|udata4", peTextRel | peUdata4, u32le(8), 0x2008, false, false},
		{"datarel|sdata4", peDataRel | peSdata4, u32le(uint32(0xfffffffc)), 0x2ffc, false, false},
		{"funcrel|udata2", peFuncRel | peUdata2, u16le(2), 0x4002, false, false},
		{"indirect|pcrel|sdata4", peIndirect | pePCRel | peSdata4, u32le(0x10), 0x1012, true, false},
		{"omit", peOmit, nil, 0, false, false},
		{"aligned", peAligned | peAbsptr, u64le(1), 0, false, true},
		{"unknown format", 0x05, u32le(1), 0, false, true},
		{"truncated", peUdata4, []byte{1, 2}, 0, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := reader.At(append([]byte{0xee, 0xee}, tc.in...), 2)
			got, ind := readPointer(&r, tc.enc, &b)
			if (r.Err() != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", r.Err(), tc.err)
			}
			if tc.err {
				return
			}
			if got != tc.want || ind != tc.indirect {
				t.Errorf("= %#x indirect %v, want %#x %v", got, ind, tc.want, tc.indirect)
			}
			if r.Len() != 0 {
				t.Errorf("consumed %d of %d bytes", r.Off()-2, len(tc.in))
			}
		})
	}
}
