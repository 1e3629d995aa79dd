package unwind

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestNoSectionHeaders unwinds a recording with its program's section
// headers removed, as in a core dump's or the vDSO's ELF image: .eh_frame
// must then be found through PT_GNU_EH_FRAME.
func TestNoSectionHeaders(t *testing.T) {
	rec := record(t, stackCFI, "call")
	bin := program(t, stackCFI)
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Clone(b)
	binary.LittleEndian.PutUint64(b[0x28:], 0) // e_shoff
	binary.LittleEndian.PutUint16(b[0x3c:], 0) // e_shnum
	binary.LittleEndian.PutUint16(b[0x3e:], 0) // e_shstrndx
	path := filepath.Join(t.TempDir(), "noshdr")
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.Sections) != 0 {
		t.Fatalf("%d sections left", len(f.Sections))
	}
	m := loadModuleCFI(f)
	if m.err != nil || m.eh == nil || m.eh.hdr == nil {
		t.Fatalf("CFI %+v, want .eh_frame through its header", m)
	}
	want := New(rec).Unwind(rec.regs, rec, 64)
	got := New(&swapModules{rec: rec, path: bin, f: f}).Unwind(rec.regs, rec, 64)
	if !slices.Equal(got, want) {
		t.Errorf("frames\n%+v\nwant\n%+v", got, want)
	}
}

func TestNilModules(t *testing.T) {
	m := byteMem{0x7000: make([]byte, 0x100)}
	m.put64(0x7010, 0)
	m.put64(0x7018, 0x401000)
	frames := New(nil).Unwind(Regs{regRIP: 0x400000, regRSP: 0x7000, regRBP: 0x7010}, m, 8)
	if got := pcs(frames); !slices.Equal(got, []uint64{0x400000, 0x401000}) {
		t.Errorf("PCs %#x", got)
	}
}
