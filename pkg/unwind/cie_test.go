package unwind

import (
	"strings"
	"testing"
)

func TestCIEAugmentations(t *testing.T) {
	for _, tc := range []struct {
		name    string
		aug     string
		augData []byte
		signal  bool
		fdeEnc  byte
		err     string
	}{
		{"zR", "zR", []byte{pePCRel | peSdata4}, false, pePCRel | peSdata4, ""},
		// C++: personality through the GOT, LSDA pointer in each FDE.
		{"zPLR", "zPLR", cat([]byte{peIndirect | pePCRel | peSdata4}, u32le(0x100), []byte{pePCRel | peSdata4, pePCRel | peSdata4}), false, pePCRel | peSdata4, ""},
		{"zRS", "zRS", []byte{pePCRel | peSdata4}, true, pePCRel | peSdata4, ""},
		{"zSR", "zSR", []byte{peUdata8}, true, peUdata8, ""},
		{"zR with udata4", "zR", []byte{peUdata4}, false, peUdata4, ""},
		{"z with a letter we do not know", "zRX", []byte{peUdata8, 0xee, 0xee}, false, peUdata8, ""},
		{"zB (AArch64 BTI)", "zBR", []byte{pePCRel | peSdata4}, false, pePCRel | peSdata4, ""},
		{"no augmentation", "", nil, false, peAbsptr, ""},
		{"unknown without z", "X", nil, false, 0, "unsupported"},
		{"augmentation data too long", "zR", nil, false, 0, "truncated"},
		{"bad FDE encoding", "zR", []byte{0x07}, false, 0, "unsupported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &ehBuilder{addr: 0x10000}
			var cieOff uint64
			if tc.name == "augmentation data too long" {
				body := cat([]byte{1}, []byte("zR\x00"), uleb(1), sleb(-8), []byte{16}, uleb(200), []byte{0x1b})
				cieOff = b.entry(0, body)
			} else {
				cieOff = b.cieAug(tc.aug, tc.augData, cieX86)
			}
			s := b.section()
			c, err := s.cieAt(cieOff)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.aug != tc.aug || c.signal != tc.signal || c.fdeEnc != tc.fdeEnc ||
				c.codeAlign != 1 || c.dataAlign != -8 || c.raReg != 16 {
				t.Errorf("CIE %+v", c)
			}
			if string(c.initial[:len(cieX86)]) != string(cieX86) {
				t.Errorf("initial instructions % x, want % x...", c.initial, cieX86)
			}
			c2, _ := s.cieAt(cieOff)
			if c2 != c {
				t.Error("CIE parsed twice: not cached")
			}
		})
	}
}

// TestFDEWithLSDA checks that an FDE under a 'z' CIE skips its
// augmentation data (the LSDA pointer of C++ code).
func TestFDEWithLSDA(t *testing.T) {
	b := &ehBuilder{addr: 0x10000}
	c := b.cieAug("zPLR", cat([]byte{peIndirect | pePCRel | peSdata4}, u32le(0x100), []byte{pePCRel | peSdata4, pePCRel | peSdata4}), cieX86)
	off := uint64(len(b.buf))
	pcField := b.addr + off + 8
	lo := uint64(0x2000)
	body := cat(u32le(uint32(int32(lo-pcField))), u32le(0x40), uleb(4), u32le(0x1234), []byte{cfaAdvanceLoc | 1, cfaDefCFAOffset}, uleb(16))
	b.entry(uint32(off+4-c), body)
	s := b.section()
	if err := s.buildIndex(); err != nil {
		t.Fatal(err)
	}
	f, err := s.find(lo + 1)
	if err != nil {
		t.Fatal(err)
	}
	var m machine
	if err := m.rowFor(s, &f, lo+1); err != nil {
		t.Fatal(err)
	}
	if got, _ := cell(&m.row, "CFA", 16); got != "rsp+16" {
		t.Errorf("CFA %s, want rsp+16", got)
	}
}

func TestDebugFrameFraming(t *testing.T) {
	lo := uint64(0x401000)
	t.Run("version 4, 4-byte addresses", func(t *testing.T) {
		b := &ehBuilder{debug: true}
		c := b.entry(0xffffffff, cat([]byte{4, 0, 4, 0}, uleb(1), sleb(-8), uleb(16), cieX86))
		off := b.entry(uint32(c), cat(u32le(uint32(lo)), u32le(0x10), []byte{cfaAdvanceLoc | 4, cfaDefCFAOffset}, uleb(16)))
		s := b.section()
		checkCFAAt(t, s, off, lo, lo+4, "rsp+16")
	})
	t.Run("version 4 with segments", func(t *testing.T) {
		b := &ehBuilder{debug: true}
		c := b.entry(0xffffffff, cat([]byte{4, 0, 8, 2}, uleb(1), sleb(-8), uleb(16)))
		s := b.section()
		if _, err := s.cieAt(c); err == nil || !strings.Contains(err.Error(), "segment") {
			t.Errorf("err = %v, want a segment selector error", err)
		}
	})
	t.Run("64-bit DWARF", func(t *testing.T) {
		var buf []byte
		cieBody := cat(u64le(^uint64(0)), []byte{3, 0}, uleb(1), sleb(-8), uleb(16), cieX86)
		buf = cat(buf, u32le(0xffffffff), u64le(uint64(len(cieBody))), cieBody)
		off := uint64(len(buf))
		fdeBody := cat(u64le(0), u64le(lo), u64le(0x10), []byte{cfaAdvanceLoc | 2, cfaDefCFAOffset}, uleb(24))
		buf = cat(buf, u32le(0xffffffff), u64le(uint64(len(fdeBody))), fdeBody)
		s := &cfiSection{name: ".debug_frame", data: buf}
		checkCFAAt(t, s, off, lo, lo+2, "rsp+24")
	})
	t.Run("version 3 return column is ULEB128", func(t *testing.T) {
		b := &ehBuilder{debug: true}
		c := b.entry(0xffffffff, cat([]byte{3, 0}, uleb(1), sleb(-8), uleb(130)))
		s := b.section()
		cie, err := s.cieAt(c)
		if err != nil || cie.raReg != 130 {
			t.Errorf("CIE %+v, %v; want return column 130", cie, err)
		}
	})
	t.Run("CIE id 0 is an FDE pointing at offset 0", func(t *testing.T) {
		b := &ehBuilder{debug: true}
		c := b.cie(cieX86)
		off := b.fde(c, lo, 0x10, nil)
		if c != 0 {
			t.Fatal("CIE not at 0")
		}
		s := b.section()
		if f, err := s.fdeAt(off); err != nil || f.lo != lo {
			t.Errorf("FDE %+v, %v", f, err)
		}
	})
}

func checkCFAAt(t *testing.T, s *cfiSection, off, lo, pc uint64, want string) {
	t.Helper()
	f, err := s.fdeAt(off)
	if err != nil {
		t.Fatal(err)
	}
	if f.lo != lo || f.hi != lo+0x10 {
		t.Errorf("FDE [%#x, %#x), want [%#x, %#x)", f.lo, f.hi, lo, lo+0x10)
	}
	if err := s.buildIndex(); err != nil {
		t.Fatal(err)
	}
	if g, err := s.find(pc); err != nil || g.off != off {
		t.Errorf("find(%#x) = FDE %#x, %v; want %#x", pc, g.off, err, off)
	}
	var m machine
	if err := m.rowFor(s, &f, pc); err != nil {
		t.Fatal(err)
	}
	if got, _ := cell(&m.row, "CFA", 16); got != want {
		t.Errorf("CFA at %#x = %s, want %s", pc, got, want)
	}
}

// TestEHFrameHdr builds .eh_frame with a matching .eh_frame_hdr and checks
// lookups through the table against lookups through the sorted index.
func TestEHFrameHdr(t *testing.T) {
	const ehAddr, hdrAddr = 0x20000, 0x1f000
	b := &ehBuilder{addr: ehAddr}
	c := b.cie(cieX86)
	type span struct{ lo, size, off uint64 }
	var spans []span
	for i, lo := range []uint64{0x1000, 0x1040, 0x1100, 0x1200, 0x1300} {
		size := uint64(0x40)
		if i == 2 {
			size = 0 // a discarded function's FDE
		}
		spans = append(spans, span{lo, size, b.fde(c, lo, size, []byte{cfaAdvanceLoc | byte(i+1), cfaDefCFAOffset, byte(16 * (i + 1))})})
	}
	b.buf = append(b.buf, 0, 0, 0, 0) // terminator
	hdr := cat([]byte{1, pePCRel | peSdata4, peUdata4, peDataRel | peSdata4})
	hdr = cat(hdr, u32le(uint32(int32(ehAddr-(hdrAddr+4)))), u32le(uint32(len(spans))))
	for _, sp := range spans {
		hdr = cat(hdr, u32le(uint32(int32(sp.lo-hdrAddr))), u32le(uint32(int32(ehAddr+sp.off-hdrAddr))))
	}
	h, gotEH, err := parseEHFrameHdr(hdr, hdrAddr)
	if err != nil || h == nil || gotEH != ehAddr || h.count != len(spans) {
		t.Fatalf("parseEHFrameHdr = %+v, %#x, %v", h, gotEH, err)
	}
	withHdr := b.section()
	withHdr.hdr = h
	indexed := b.section()
	if err := indexed.buildIndex(); err != nil {
		t.Fatal(err)
	}
	if len(indexed.index) != len(spans)-1 {
		t.Errorf("index has %d FDEs, want %d (the empty one dropped)", len(indexed.index), len(spans)-1)
	}
	for pc := uint64(0xf00); pc < 0x1400; pc += 4 {
		var want uint64
		found := false
		for _, sp := range spans {
			if pc >= sp.lo && pc < sp.lo+sp.size {
				want, found = sp.off, true
			}
		}
		for _, s := range []*cfiSection{withHdr, indexed} {
			f, err := s.find(pc)
			if found != (err == nil) || (found && f.off != want) {
				t.Errorf("hdr %v: find(%#x) = FDE %#x, %v; want %#x found %v", s.hdr != nil, pc, f.off, err, want, found)
			}
		}
	}

	for _, bad := range []struct {
		name string
		hdr  []byte
	}{
		{"version 2", cat([]byte{2}, hdr[1:])},
		{"truncated", hdr[:3]},
		{"more entries than bytes", cat(hdr[:8], u32le(1000), hdr[12:])},
	} {
		if _, _, err := parseEHFrameHdr(bad.hdr, hdrAddr); err == nil {
			t.Errorf("%s: parsed", bad.name)
		}
	}
	// A table in a variable-length encoding cannot be searched: no table.
	if h, a, err := parseEHFrameHdr(cat([]byte{1, pePCRel | peSdata4, peUdata4, peULEB128}, hdr[4:]), hdrAddr); err != nil || h != nil || a != ehAddr {
		t.Errorf("ULEB128 table: %+v, %#x, %v; want no table", h, a, err)
	}
}
