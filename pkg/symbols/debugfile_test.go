package symbols

import (
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
)

func TestParseBuildIDNote(t *testing.T) {
	le := binary.LittleEndian
	note := func(name string, typ uint32, desc []byte, align int) []byte {
		pad := func(b []byte) []byte {
			for len(b)%align != 0 {
				b = append(b, 0)
			}
			return b
		}
		b := le.AppendUint32(nil, uint32(len(name)))
		b = le.AppendUint32(b, uint32(len(desc)))
		b = le.AppendUint32(b, typ)
		b = pad(append(b, name...))
		return pad(append(b, desc...))
	}
	id := []byte{0xf3, 0x04, 0x66, 0x68, 0x7d}
	tests := []struct {
		name  string
		data  []byte
		align uint64
		want  []byte
	}{
		{"alone", note("GNU\x00", 3, id, 4), 4, id},
		{"after an ABI tag", append(note("GNU\x00", 1, []byte{0, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0}, 4), note("GNU\x00", 3, id, 4)...), 4, id},
		{"8-aligned", append(note("GNU\x00", 5, []byte{1, 2, 3}, 8), note("GNU\x00", 3, id, 8)...), 8, id},
		{"Go's build ID is not GNU's", note("Go\x00\x00", 4, []byte("abc"), 4), 4, nil},
		{"wrong type", note("GNU\x00", 1, id, 4), 4, nil},
		{"name not NUL-terminated", note("GNU", 3, id, 4), 4, nil},
		{"descriptor overruns", note("GNU\x00", 3, id, 4)[:16], 4, nil},
		{"huge sizes", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 3, 0, 0, 0}, 4, nil},
		{"empty", nil, 4, nil},
	}
	for _, tt := range tests {
		if got := parseBuildIDNote(tt.data, tt.align, le); !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %x, want %x", tt.name, got, tt.want)
		}
	}
}

func TestParseDebugLink(t *testing.T) {
	le := binary.LittleEndian
	tests := []struct {
		name string
		data []byte
		want string
		crc  uint32
		ok   bool
	}{
		{"padded", []byte("prog.debug\x00\x00\x78\x56\x34\x12"), "prog.debug", 0x12345678, true},
		{"name of 3: one NUL", []byte("abc\x00\x01\x00\x00\x00"), "abc", 1, true},
		{"name of 4: four NULs", []byte("abcd\x00\x00\x00\x00\x02\x00\x00\x00"), "abcd", 2, true},
		{"no CRC", []byte("prog.debug\x00\x00"), "", 0, false},
		{"no NUL", []byte("prog.debug"), "", 0, false},
		{"empty name", []byte("\x00\x00\x00\x00\x01\x00\x00\x00"), "", 0, false},
		{"a path", []byte("../../etc/x\x00\x01\x00\x00\x00"), "", 0, false},
		{"dot-dot", []byte("..\x00\x00\x01\x00\x00\x00"), "", 0, false},
	}
	for _, tt := range tests {
		name, crc, ok := parseDebugLink(tt.data, le)
		if name != tt.want || crc != tt.crc || ok != tt.ok {
			t.Errorf("%s: got %q, %#x, %v; want %q, %#x, %v", tt.name, name, crc, ok, tt.want, tt.crc, tt.ok)
		}
	}
}

// debugSplit is a stripped program and its debug file, made as
// distributions make them.
type debugSplit struct {
	orig     string // the unstripped program
	stripped string // strip --strip-debug --strip-unneeded: .dynsym only
	debug    string // objcopy --only-keep-debug
	buildID  string // hex
}

func splitDebug(t *testing.T, dir string) debugSplit {
	t.Helper()
	orig := program(t, dbgPIE)
	s := debugSplit{
		orig:     orig,
		stripped: filepath.Join(dir, "bin", "prog"),
		debug:    filepath.Join(dir, "prog.debug"),
	}
	place(t, onlyDebug(t, "prog.debug", orig), s.debug)
	place(t, fixture.Recipe{
		Name:   "prog",
		Inputs: []string{orig},
		Steps:  [][]string{{"strip", "--strip-debug", "--strip-unneeded", "-o", "{out}", "{in0}"}},
	}.Build(t), s.stripped)
	f, err := elf.Open(s.stripped)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.SectionByType(elf.SHT_SYMTAB) != nil || hasDWARF(f) {
		t.Fatalf("%s still has a .symtab or DWARF", s.stripped)
	}
	id := buildID(f)
	if len(id) < 2 {
		t.Fatalf("%s has no build ID", s.stripped)
	}
	s.buildID = hex.EncodeToString(id)
	return s
}

// onlyDebug is the debug file of the program at path, as distributions
// make it: objcopy --only-keep-debug.
func onlyDebug(t *testing.T, name, path string) string {
	return fixture.Recipe{
		Name:   name,
		Inputs: []string{path},
		Steps:  [][]string{{"objcopy", "--only-keep-debug", "{in0}", "{out}"}},
	}.Build(t)
}

// place copies file to path, making directories.
func place(t *testing.T, file, path string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSeparateDebugFile strips a program, puts its debug file where a
// distribution would, and checks that symbols and lines come back: the
// same as nm and addr2line give for the unstripped program.
func TestSeparateDebugFile(t *testing.T) {
	const base = 0x555555554000
	tests := []struct {
		name string
		// setup arranges the module and its debug file under dir and
		// returns the module's path and the DebugDirs to use.
		setup func(t *testing.T, dir string, s debugSplit) (module string, dirs []string)
		found bool
	}{
		{
			name: "by build ID",
			setup: func(t *testing.T, dir string, s debugSplit) (string, []string) {
				root := filepath.Join(dir, "debug")
				place(t, s.debug, filepath.Join(root, ".build-id", s.buildID[:2], s.buildID[2:]+".debug"))
				return s.stripped, []string{filepath.Join(dir, "elsewhere"), root}
			},
			found: true,
		},
		{
			name: "by debug link, beside the module",
			setup: func(t *testing.T, dir string, s debugSplit) (string, []string) {
				mod := linked(t, s, dir)
				place(t, s.debug, filepath.Join(filepath.Dir(mod), "prog.debug"))
				return mod, []string{}
			},
			found: true,
		},
		{
			name: "by debug link, in .debug",
			setup: func(t *testing.T, dir string, s debugSplit) (string, []string) {
				mod := linked(t, s, dir)
				place(t, s.debug, filepath.Join(filepath.Dir(mod), ".debug", "prog.debug"))
				return mod, []string{}
			},
			found: true,
		},
		{
			name: "by debug link, under a debug directory",
			setup: func(t *testing.T, dir string, s debugSplit) (string, []string) {
				mod := linked(t, s, dir)
				root := filepath.Join(dir, "debug")
				place(t, s.debug, filepath.Join(root, filepath.Dir(mod), "prog.debug"))
				return mod, []string{root}
			},
			found: true,
		},
		{
			name: "debug link with a wrong CRC",
			setup: func(t *testing.T, dir string, s debugSplit) (string, []string) {
				mod := linked(t, s, dir)
				p := filepath.Join(filepath.Dir(mod), "prog.debug")
				place(t, s.debug, p)
				f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.Write([]byte{0})
				f.Close()
				return mod, []string{}
			},
		},
		{
			name: "another build's debug file under this build ID",
			setup: func(t *testing.T, dir string, s debugSplit) (string, []string) {
				root := filepath.Join(dir, "debug")
				other := onlyDebug(t, "other.debug", program(t, dbgZlib))
				place(t, other, filepath.Join(root, ".build-id", s.buildID[:2], s.buildID[2:]+".debug"))
				return s.stripped, []string{root}
			},
		},
		{
			name: "no debug directories",
			setup: func(t *testing.T, dir string, s debugSplit) (string, []string) {
				place(t, s.debug, filepath.Join(dir, "debug", ".build-id", s.buildID[:2], s.buildID[2:]+".debug"))
				return s.stripped, []string{}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := splitDebug(t, dir)
			mod, dirs := tt.setup(t, dir, s)
			nm := nmSymbols(t, s.orig)
			tab := NewTable(layout(t, mod, base), Options{DebugDirs: dirs})
			defer tab.Close()

			// helper and worker are local to the program: only the
			// debug file's .symtab names them.
			var pcs []uint64
			for _, fn := range []string{"helper", "worker", "main"} {
				for off := uint64(0); off < nm[fn].size; off += 5 {
					pcs = append(pcs, nm[fn].addr+off)
				}
			}
			want := addr2line(t, s.orig, pcs)
			for i, pc := range pcs {
				loc, ok := tab.Lookup(base + pc)
				if !ok || loc.Module != mod {
					t.Fatalf("Lookup(%#x) = %+v, %v", base+pc, loc, ok)
				}
				if !tt.found {
					if loc.Line != 0 || loc.Func == "helper" {
						t.Fatalf("Lookup(%#x) = %+v: used a debug file it should not", base+pc, loc)
					}
					continue
				}
				if got := (srcPos{loc.File, loc.Line}); got != want[i] {
					t.Errorf("Lookup(%#x) = %s:%d; addr2line on the original says %s:%d", pc, got.File, got.Line, want[i].File, want[i].Line)
				}
				if fn := tab.mustFunc(t, base+pc); nm[fn].addr+loc.Offset != pc {
					t.Errorf("Lookup(%#x) = %s+%#x; nm says %s is at %#x", pc, fn, loc.Offset, fn, nm[fn].addr)
				}
			}
			if !tt.found {
				return
			}
			if err := tab.ModuleErr(base + pcs[0]); err != nil {
				t.Errorf("ModuleErr = %v", err)
			}
			if s, err := tab.Resolve("helper"); err != nil || s.Addr != base+nm["helper"].addr {
				t.Errorf("Resolve(helper) = %+v, %v", s, err)
			}
			if s, err := tab.Resolve("session.token"); err != nil || s.Addr != base+nm["session"].addr+40 || s.Size != 8 {
				t.Errorf("Resolve(session.token) = %+v, %v", s, err)
			}
			// The unwinder still gets the mapped file, with its .eh_frame.
			f, _, path, ok := tab.ModuleAt(base + pcs[0])
			if !ok || path != mod || f.Section(".eh_frame") == nil || f.Section(".eh_frame").Type == elf.SHT_NOBITS {
				t.Errorf("ModuleAt = %v, %q, %v; want %s with its .eh_frame", f != nil, path, ok, mod)
			}
		})
	}
}

// mustFunc is Lookup's Func at pc.
func (t *Table) mustFunc(tb testing.TB, pc uint64) string {
	tb.Helper()
	loc, ok := t.Lookup(pc)
	if !ok {
		tb.Fatalf("Lookup(%#x): not found", pc)
	}
	return loc.Func
}

// linked makes a copy of the stripped program without a build ID (so
// only the debug link can find its debug file) in a directory of its own,
// linked to prog.debug.
func linked(t *testing.T, s debugSplit, dir string) string {
	t.Helper()
	mod := filepath.Join(dir, "linked", "prog")
	place(t, fixture.Recipe{
		Name:   "prog",
		Inputs: []string{s.stripped, s.debug},
		// The link names the debug file by its base name, prog.debug.
		Steps: [][]string{{"objcopy", "--remove-section=.note.gnu.build-id", "--add-gnu-debuglink={in1}", "{in0}", "{out}"}},
	}.Build(t), mod)
	return mod
}

// TestStripDebugOnly: a program that keeps its .symtab but not its DWARF
// gets its lines from the debug file.
func TestStripDebugOnly(t *testing.T) {
	const base = 0x555555554000
	dir := t.TempDir()
	s := splitDebug(t, dir)
	mod := filepath.Join(dir, "prog-g")
	place(t, fixture.Recipe{
		Name:   "prog-g",
		Inputs: []string{s.orig},
		Steps:  [][]string{{"strip", "--strip-debug", "-o", "{out}", "{in0}"}},
	}.Build(t), mod)
	root := filepath.Join(dir, "debug")
	place(t, s.debug, filepath.Join(root, ".build-id", s.buildID[:2], s.buildID[2:]+".debug"))
	nm := nmSymbols(t, s.orig)
	pc := nm["helper"].addr + 4
	want := addr2line(t, s.orig, []uint64{pc})[0]
	for _, dirs := range [][]string{{root}, {}} {
		tab := NewTable(layout(t, mod, base), Options{DebugDirs: dirs})
		loc, _ := tab.Lookup(base + pc)
		tab.Close()
		if len(dirs) == 0 {
			want = srcPos{}
		}
		if loc.Func != "helper" || (srcPos{loc.File, loc.Line}) != want || want.Line == 0 && len(dirs) > 0 {
			t.Errorf("DebugDirs %q: Lookup(helper+4) = %+v; want helper at %v", dirs, loc, want)
		}
	}
}
