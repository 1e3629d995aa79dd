package symbols

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
)

// withSection returns a copy of the file at path whose section name is
// changed by patch, which gets the section's bytes as stored and its
// header.
func withSection(t testing.TB, path, name string, patch func(b []byte, s *elf.Section)) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Section(name)
	if s == nil || s.Type == elf.SHT_NOBITS {
		t.Fatalf("%s has no %s", path, name)
	}
	patch(b[s.Offset:s.Offset+s.FileSize], s)
	return b
}

// TestMalformedDWARF: damaged DWARF costs source lines, kept as an error
// on the module, but never symbols, and never a panic.
func TestMalformedDWARF(t *testing.T) {
	const base = 0x555555554000
	path := program(t, dbgPIE)
	zpath := program(t, dbgZlib)
	nm := nmSymbols(t, path)
	tests := []struct {
		name      string
		file      []byte
		wantErr   string // in ModuleErr
		someLines bool   // other units may still give lines
		varsLost  bool   // .debug_info is unreadable too
	}{
		{
			name: "line table of an unknown version",
			file: withSection(t, path, ".debug_line", func(b []byte, _ *elf.Section) {
				binary.LittleEndian.PutUint16(b[4:], 99)
			}),
			wantErr: "line table",
		},
		{
			name: "line table longer than its section",
			file: withSection(t, path, ".debug_line", func(b []byte, _ *elf.Section) {
				binary.LittleEndian.PutUint32(b[0:], 0xfffffff0-1)
			}),
			wantErr: "line table",
		},
		{
			name: "info unit of an unknown version",
			file: withSection(t, path, ".debug_info", func(b []byte, _ *elf.Section) {
				binary.LittleEndian.PutUint16(b[4:], 99)
			}),
			wantErr:  "DWARF",
			varsLost: true,
		},
		{
			name: "abbreviations overwritten",
			file: withSection(t, path, ".debug_abbrev", func(b []byte, _ *elf.Section) {
				for i := range b {
					b[i] = 0xff
				}
			}),
			wantErr:  "abbreviation",
			varsLost: true,
		},
		{
			name: "compressed section claiming a terabyte",
			file: withSection(t, zpath, ".debug_info", func(b []byte, s *elf.Section) {
				if s.Flags&elf.SHF_COMPRESSED == 0 {
					t.Fatal(".debug_info is not compressed")
				}
				binary.LittleEndian.PutUint64(b[8:], 1<<40) // Elf64_Chdr.ch_size
			}),
			wantErr:  "inflates",
			varsLost: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := NewTable(layout(t, path, base), Options{
				Open:      func(string) (io.ReaderAt, error) { return bytes.NewReader(tt.file), nil },
				DebugDirs: []string{},
			})
			defer tab.Close()
			for _, fn := range []string{"main", "worker", "helper"} {
				pc := base + nm[fn].addr + 4
				loc, ok := tab.Lookup(pc)
				if !ok || loc.Func != fn || loc.Offset != 4 {
					t.Errorf("Lookup(%s+4) = %+v, %v", fn, loc, ok)
				}
				if loc.Line != 0 && !tt.someLines {
					t.Errorf("Lookup(%s+4) = %+v: a line from damaged DWARF", fn, loc)
				}
			}
			err := tab.ModuleErr(base + nm["main"].addr)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ModuleErr = %v, want one mentioning %q", err, tt.wantErr)
			}
			if _, err := tab.Resolve("main"); err != nil {
				t.Errorf("Resolve(main) = %v", err)
			}
			sym, err := tab.Resolve("session.token")
			if tt.varsLost && !errors.Is(err, ErrNotFound) {
				t.Errorf("Resolve(session.token) = %+v, %v; want not found", sym, err)
			}
			if !tt.varsLost && (err != nil || sym.Addr != base+nm["session"].addr+40) {
				t.Errorf("Resolve(session.token) = %+v, %v; want it from .debug_info", sym, err)
			}
		})
	}
}

// FuzzDWARF overwrites one debug section of a real program with the fuzzer's
// bytes, keeping the ELF file itself valid, so that the fuzzer exercises
// debug/dwarf and this package's use of it. Nothing may panic.
func FuzzDWARF(f *testing.F) {
	const base = 0x555555554000
	path := program(f, dbgPIE)
	orig, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	ef, err := elf.NewFile(bytes.NewReader(orig))
	if err != nil {
		f.Fatal(err)
	}
	var secs []*elf.Section
	for _, s := range ef.Sections {
		if strings.HasPrefix(s.Name, ".debug_") {
			secs = append(secs, s)
			b, err := s.Data()
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(len(secs)-1), b)
			if len(b) > 8 {
				f.Add(uint8(len(secs)-1), b[:len(b)/2])
				flipped := bytes.Clone(b)
				flipped[4] ^= 0xff
				f.Add(uint8(len(secs)-1), flipped)
			}
		}
	}
	if len(secs) < 5 {
		f.Fatalf("%s has only %d debug sections", path, len(secs))
	}
	nm := nmSymbols(f, path)
	maps := layout(f, path, base)
	pcs := []uint64{base + nm["main"].addr, base + nm["worker"].addr + 7, base + nm["helper"].addr + 3, maps[0].Start}

	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		s := secs[int(which)%len(secs)]
		file := bytes.Clone(orig)
		copy(file[s.Offset:s.Offset+s.FileSize], data)
		tab := NewTable(maps, Options{
			Open:      func(string) (io.ReaderAt, error) { return bytes.NewReader(file), nil },
			DebugDirs: []string{},
		})
		for _, pc := range pcs {
			if loc, ok := tab.Lookup(pc); !ok || (pc != maps[0].Start && loc.Func == "") {
				t.Fatalf("Lookup(%#x) = %+v, %v: symbols lost to damaged DWARF", pc, loc, ok)
			}
		}
		tab.ModuleErr(pcs[0])
		for _, expr := range []string{"session.token", "session.pair.b", "worker::calls", "grid", "nosuch", "session.nosuch"} {
			tab.Resolve(expr)
		}
		if err := tab.Close(); err != nil {
			t.Fatal(err)
		}
	})
}
