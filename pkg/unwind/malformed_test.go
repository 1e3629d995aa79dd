package unwind

import (
	"bytes"
	"debug/elf"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/memtrap/memtrap/pkg/dwarf/op"
	"github.com/memtrap/memtrap/pkg/dwarf/reader"
)

// ehFrameOf returns the .eh_frame bytes and address of an ELF file.
func ehFrameOf(t testing.TB, path string) ([]byte, uint64) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := f.Section(".eh_frame")
	if s == nil {
		t.Fatalf("%s: no .eh_frame", path)
	}
	data, err := s.Data()
	if err != nil {
		t.Fatal(err)
	}
	return data, s.Addr
}

// exercise indexes a section and runs every FDE's program at a few PCs,
// as an unwind would. It must not panic whatever the bytes.
func exercise(s *cfiSection, pcs ...uint64) error {
	err := s.buildIndex()
	var m machine
	for _, sp := range s.index {
		f, ferr := s.fdeAt(sp.off)
		if ferr != nil {
			continue
		}
		for _, pc := range append(pcs, f.lo, f.hi-1, f.lo+(f.hi-f.lo)/2) {
			if g, ferr := s.find(pc); ferr == nil {
				m.rowFor(s, &g, pc)
			}
		}
	}
	return err
}

func TestTruncatedEHFrame(t *testing.T) {
	data, addr := ehFrameOf(t, program(t, stackCFI))
	// Where entries end: a cut there is a well-formed, shorter section.
	ends := map[int]bool{0: true}
	full := &cfiSection{data: data, addr: addr, eh: true}
	for off := uint64(0); off < uint64(len(data)); {
		e, err := full.entryAt(off)
		if err != nil {
			t.Fatal(err)
		}
		off = e.next
		ends[int(off)] = true
	}
	for n := 0; n <= len(data); n++ {
		s := &cfiSection{name: ".eh_frame", data: data[:n], addr: addr, eh: true}
		err := exercise(s)
		if ends[n] != (err == nil) {
			t.Errorf("cut at %d (an entry boundary: %v): err = %v", n, ends[n], err)
		}
		if err != nil && !errors.Is(err, reader.ErrTruncated) && n > 0 {
			t.Errorf("cut at %d: err = %v, want reader.ErrTruncated", n, err)
		}
	}
}

func TestGarbageEHFrame(t *testing.T) {
	data, addr := ehFrameOf(t, program(t, stackCFI))
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		b := bytes.Clone(data)
		switch i % 3 {
		case 0: // flip a few bytes
			for range 1 + rng.IntN(8) {
				b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
			}
		case 1: // random bytes
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
		case 2: // a huge length
			copy(b[rng.IntN(len(b)-8):], []byte{0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff})
		}
		for _, eh := range []bool{true, false} {
			exercise(&cfiSection{name: "garbage", data: b, addr: addr, eh: eh}, addr, 0x1000)
		}
		if _, _, err := parseEHFrameHdr(b, addr); err == nil && i%3 == 1 && b[0] != 1 {
			t.Errorf("random .eh_frame_hdr with version %d parsed", b[0])
		}
	}
}

// TestCorruptModule unwinds a real recording whose program's .eh_frame has
// been overwritten with garbage: the walk may end early but must not panic,
// and frame 0 is always reported.
func TestCorruptModule(t *testing.T) {
	rec := record(t, stackCFI, "call")
	bin := program(t, stackCFI)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	eh := f.Section(".eh_frame")
	hdr := f.Section(".eh_frame_hdr")
	f.Close()
	orig, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 50 {
		b := bytes.Clone(orig)
		sec := eh
		if i%2 == 1 {
			sec = hdr
		}
		for j := sec.Offset; j < sec.Offset+sec.Size; j++ {
			if rng.IntN(8) == 0 {
				b[j] = byte(rng.Uint32())
			}
		}
		path := filepath.Join(t.TempDir(), "corrupt")
		if err := os.WriteFile(path, b, 0o755); err != nil {
			t.Fatal(err)
		}
		cf, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		mods := &swapModules{rec: rec, path: bin, f: cf}
		frames := New(mods).Unwind(rec.regs, rec, 64)
		if len(frames) == 0 || frames[0].PC != rec.regs[regRIP] {
			t.Errorf("corruption %d: frames %+v", i, frames)
		}
		cf.Close()
	}
}

// swapModules serves a recording's modules, with one file replaced.
type swapModules struct {
	rec  *recording
	path string
	f    *elf.File
}

func (m *swapModules) ModuleAt(pc uint64) (*elf.File, uint64, string, bool) {
	f, bias, path, ok := m.rec.ModuleAt(pc)
	if ok && path == m.path {
		f = m.f
	}
	return f, bias, path, ok
}

func FuzzParseEHFrame(f *testing.F) {
	b := &ehBuilder{addr: 0x1000}
	c := b.cie(cieX86)
	b.fde(c, 0x2000, 0x40, cat([]byte{cfaAdvanceLoc | 1, cfaDefCFAOffset}, uleb(16), []byte{cfaOffset | regRBX}, uleb(2),
		[]byte{cfaRememberState, cfaAdvanceLoc | 1, cfaDefCFAExpr, 2, op.Breg0 + regRSP, 8, cfaRestoreState}))
	f.Add(b.buf, uint64(0x2001))
	f.Add(b.buf, uint64(0x2003))
	d := &ehBuilder{debug: true}
	d.fde(d.cie(cieX86), 0x2000, 0x40, []byte{cfaAdvanceLoc | 2, cfaDefCFAOffset, 16})
	f.Add(d.buf, uint64(0x2002))
	if data, err := os.ReadFile(libcPath); err == nil {
		if ef, err := elf.NewFile(bytes.NewReader(data)); err == nil {
			if s := ef.Section(".eh_frame"); s != nil {
				if sd, err := s.Data(); err == nil && len(sd) > 1024 {
					f.Add(sd[:1024], s.Addr+0x100)
				}
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, pc uint64) {
		for _, eh := range []bool{true, false} {
			s := &cfiSection{name: "fuzz", data: data, addr: 0x1000, eh: eh}
			exercise(s, pc)
			// Walk a frame through whatever FDE covers pc.
			if fd, err := s.find(pc); err == nil {
				w := &walker{u: New(noModules{}), mem: fakeMem{0x7000: 0x7100, 0x7008: 0x401000}}
				pr := &pcRow{fd: fd, sec: s}
				pr.rowErr = w.m.rowFor(s, &pr.fd, pc)
				pr.row = w.m.row
				w.cfiStep(pr, 0, &Regs{regRSP: 0x7000, regRBP: 0x7000, regRIP: pc}, AllRegs)
			}
		}
		// The same bytes as .eh_frame_hdr over themselves as .eh_frame.
		if h, _, err := parseEHFrameHdr(data, 0x1000); err == nil && h != nil {
			s := &cfiSection{name: "fuzz", data: data, addr: 0x1000, eh: true, hdr: h}
			if fd, err := s.find(pc); err == nil {
				var m machine
				m.rowFor(s, &fd, pc)
			}
		}
	})
}
