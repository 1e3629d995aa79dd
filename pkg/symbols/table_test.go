package symbols

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"github.com/memtrap/memtrap/pkg/procmaps"
	"io"
	"io/fs"
	"os"
	"sync"
	"testing"
)

func TestLoadBias(t *testing.T) {
	const base = 0x7f0012340000
	pie := []elf.ProgHeader{
		{Type: elf.PT_LOAD, Off: 0, Vaddr: 0, Filesz: 0x738, Memsz: 0x738},
		{Type: elf.PT_LOAD, Off: 0x1000, Vaddr: 0x1000, Filesz: 0x279, Memsz: 0x279},
		{Type: elf.PT_LOAD, Off: 0x2dd0, Vaddr: 0x3dd0, Filesz: 0x270, Memsz: 0x300},
	}
	tests := []struct {
		name   string
		typ    elf.Type
		loads  []elf.ProgHeader
		maps   []procmaps.Mapping
		want   uint64
		wantOK bool
	}{
		{
			name:  "pie",
			typ:   elf.ET_DYN,
			loads: pie,
			maps: []procmaps.Mapping{
				{Start: base, End: base + 0x1000, Offset: 0},
				{Start: base + 0x1000, End: base + 0x2000, Offset: 0x1000},
				{Start: base + 0x3000, End: base + 0x5000, Offset: 0x2000},
			},
			want: base, wantOK: true,
		},
		{
			name:  "non-PIE executable is never moved",
			typ:   elf.ET_EXEC,
			loads: []elf.ProgHeader{{Type: elf.PT_LOAD, Vaddr: 0x400000, Filesz: 0x610}},
			maps:  []procmaps.Mapping{{Start: 0x400000, End: 0x401000}},
			want:  0, wantOK: true,
		},
		{
			name:  "prelinked: first segment not at vaddr 0",
			typ:   elf.ET_DYN,
			loads: []elf.ProgHeader{{Type: elf.PT_LOAD, Off: 0, Vaddr: 0x30000000, Filesz: 0x2000}},
			maps:  []procmaps.Mapping{{Start: base, End: base + 0x2000, Offset: 0}},
			want:  base - 0x30000000, wantOK: true,
		},
		{
			name:  "first segment starts mid-page in file and memory",
			typ:   elf.ET_DYN,
			loads: []elf.ProgHeader{{Type: elf.PT_LOAD, Off: 0x1200, Vaddr: 0x11200, Filesz: 0x900}},
			maps:  []procmaps.Mapping{{Start: base + 0x11000, End: base + 0x12000, Offset: 0x1000}},
			want:  base, wantOK: true,
		},
		{
			name: "segments share file page 0: the lowest mapping is the first",
			typ:  elf.ET_DYN,
			loads: []elf.ProgHeader{
				{Type: elf.PT_LOAD, Off: 0, Vaddr: 0, Filesz: 0x800},
				{Type: elf.PT_LOAD, Off: 0x800, Vaddr: 0x1800, Filesz: 0x100},
			},
			// Out of order on purpose: the rule must not depend on it.
			maps: []procmaps.Mapping{
				{Start: base + 0x1000, End: base + 0x2000, Offset: 0},
				{Start: base, End: base + 0x1000, Offset: 0},
			},
			want: base, wantOK: true,
		},
		{
			name:  "first segment unmapped: placed by the data segment",
			typ:   elf.ET_DYN,
			loads: pie,
			maps:  []procmaps.Mapping{{Start: base + 0x3000, End: base + 0x5000, Offset: 0x2000}},
			want:  base, wantOK: true,
		},
		{
			name:   "no PT_LOAD",
			typ:    elf.ET_DYN,
			maps:   []procmaps.Mapping{{Start: base, End: base + 0x1000}},
			wantOK: false,
		},
		{
			name:   "no mapping inside any segment",
			typ:    elf.ET_DYN,
			loads:  pie,
			maps:   []procmaps.Mapping{{Start: base, End: base + 0x1000, Offset: 0x9000}},
			wantOK: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := loadBias(tt.typ, tt.loads, tt.maps)
			if ok != tt.wantOK || (ok && got != tt.want) {
				t.Fatalf("loadBias = %#x, %v; want %#x, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// TestFixtureTable checks a Table over synthetic mappings of each kind of
// ELF file against nm's view of the same file.
func TestFixtureTable(t *testing.T) {
	tests := []struct {
		fixture  string
		base     uint64 // load bias to place the file at
		wantBias uint64
		fn, data string // a function and a data object it defines
	}{
		{progPIE, 0x555555554000, 0x555555554000, "main", "counter"},
		{progNoPIE, 0x555555554000, 0, "main", "counter"},
		{libDemo, 0x7f1234500000, 0x7f1234500000, "lib_func", "lib_counter"},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			path := program(t, tt.fixture)
			nm := nmSymbols(t, path)
			maps := layout(t, path, tt.base)
			tab := NewTable(maps, Options{})
			defer tab.Close()

			fn, data := nm[tt.fn], nm[tt.data]
			if fn.size <= 5 || data.size == 0 {
				t.Fatalf("nm: %s %+v, %s %+v: fixture lacks sizes", tt.fn, fn, tt.data, data)
			}
			f, bias, mpath, ok := tab.ModuleAt(tt.wantBias + fn.addr)
			if !ok || f == nil || bias != tt.wantBias || mpath != path {
				t.Fatalf("ModuleAt = %v, %#x, %q, %v; want bias %#x in %s", f != nil, bias, mpath, ok, tt.wantBias, path)
			}

			for _, name := range []string{tt.fn, tt.data} {
				s, err := tab.Resolve(name)
				if err != nil {
					t.Fatal(err)
				}
				want := Symbol{Name: name, Addr: tt.wantBias + nm[name].addr, Size: nm[name].size, Module: path}
				if s != want {
					t.Errorf("Resolve(%q) = %+v, want %+v", name, s, want)
				}
			}

			lookups := []struct {
				pc   uint64
				want Location
			}{
				{tt.wantBias + fn.addr + 5, Location{Func: tt.fn, Offset: 5, Module: path, ModuleBase: tt.wantBias}},
				{tt.wantBias + fn.addr, Location{Func: tt.fn, Offset: 0, Module: path, ModuleBase: tt.wantBias}},
				{tt.wantBias + fn.addr + fn.size - 1, Location{Func: tt.fn, Offset: fn.size - 1, Module: path, ModuleBase: tt.wantBias}},
				{tt.wantBias + data.addr + 2, Location{Func: tt.data, Offset: 2, Module: path, ModuleBase: tt.wantBias}},
				// The ELF header is in the first mapping but in no symbol.
				{maps[0].Start + 1, Location{Func: "", Offset: maps[0].Start + 1 - tt.wantBias, Module: path, ModuleBase: tt.wantBias}},
			}
			for _, l := range lookups {
				got, ok := tab.Lookup(l.pc)
				if !ok || got != l.want {
					t.Errorf("Lookup(%#x) = %+v, %v; want %+v", l.pc, got, ok, l.want)
				}
			}
		})
	}
}

// TestLookupProg checks the finer points of Lookup on the PIE fixture.
func TestLookupProg(t *testing.T) {
	const base = 0x555555554000
	path := program(t, progPIE)
	nm := nmSymbols(t, path)
	maps := layout(t, path, base)
	last := maps[len(maps)-1]
	if last.Path != "" {
		t.Fatalf("fixture has no anonymous .bss mapping: %+v", maps)
	}
	// A heap right after the .bss, and the rest of a typical process.
	maps = append(maps,
		procmaps.Mapping{Start: last.End, End: last.End + 0x21000, Path: "[heap]"},
		procmaps.Mapping{Start: 0x7ffff7fb0000, End: 0x7ffff7fb4000}, // anonymous, alone
		procmaps.Mapping{Start: 0x7ffffffde000, End: 0x7ffffffff000, Path: "[stack]"},
	)
	tab := NewTable(maps, Options{})
	defer tab.Close()

	scratchEnd := base + nm["scratch"].addr + nm["scratch"].size
	tests := []struct {
		name string
		pc   uint64
		want Location
		ok   bool
	}{
		{"alias: global without underscores wins", base + nm["bump"].addr + 3,
			Location{Func: "bump", Offset: 3, Module: path, ModuleBase: base}, true},
		{"size 0 covers up to the next symbol", base + nm["zero_sized"].addr + 7,
			Location{Func: "zero_sized", Offset: 7, Module: path, ModuleBase: base}, true},
		{"object in file-backed .bss", base + nm["buffer"].addr + 63,
			Location{Func: "buffer", Offset: 63, Module: path, ModuleBase: base}, true},
		{"object in anonymous .bss", base + nm["scratch"].addr + 0x3000,
			Location{Func: "scratch", Offset: 0x3000, Module: path, ModuleBase: base}, true},
		{"end of .bss image", scratchEnd - 1,
			Location{Func: "scratch", Offset: nm["scratch"].size - 1, Module: path, ModuleBase: base}, true},
		{"heap", last.End + 8, Location{}, false},
		{"lone anonymous mapping", 0x7ffff7fb0010, Location{}, false},
		{"stack", 0x7fffffffe000, Location{}, false},
		{"unmapped", 0x1000, Location{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tab.Lookup(tt.pc)
			if ok != tt.ok || got != tt.want {
				t.Fatalf("Lookup(%#x) = %+v, %v; want %+v, %v", tt.pc, got, ok, tt.want, tt.ok)
			}
		})
	}

	// The anonymous mapping past the image is not the module's.
	bssAnon := procmaps.Mapping{Start: last.Start, End: last.End + 0x10000}
	maps2 := append(append([]procmaps.Mapping(nil), maps[:len(maps)-4]...), bssAnon)
	tab.Update(maps2)
	if loc, ok := tab.Lookup(last.End + 0x100); ok {
		t.Errorf("Lookup past the .bss image = %+v, want not found", loc)
	}
	if loc, ok := tab.Lookup(base + nm["scratch"].addr); !ok || loc.Func != "scratch" {
		t.Errorf("Lookup(scratch) after Update = %+v, %v", loc, ok)
	}
}

func TestLookupDoesNotAllocate(t *testing.T) {
	const base = 0x555555554000
	path := program(t, progPIE)
	nm := nmSymbols(t, path)
	tab := NewTable(layout(t, path, base), Options{})
	defer tab.Close()
	pc := base + nm["main"].addr + 9
	if _, ok := tab.Lookup(pc); !ok {
		t.Fatal("main not found")
	}
	if n := testing.AllocsPerRun(1000, func() { tab.Lookup(pc) }); n != 0 {
		t.Fatalf("Lookup allocates %v times", n)
	}
}

// countingOpener opens files and counts opens and closes.
type countingOpener struct {
	opens  map[string]int
	closes int
}

type countedFile struct {
	*os.File
	o *countingOpener
}

func (f countedFile) Close() error { f.o.closes++; return f.File.Close() }

func (o *countingOpener) open(path string) (io.ReaderAt, error) {
	o.opens[path]++
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return countedFile{f, o}, nil
}

func TestLazyLoadAndUpdate(t *testing.T) {
	exe, lib := program(t, progPIE), program(t, libDemo)
	exeMaps := layout(t, exe, 0x555555554000)
	libMaps := layout(t, lib, 0x7f1234500000)
	o := &countingOpener{opens: make(map[string]int)}
	tab := NewTable(exeMaps, Options{Open: o.open})
	if len(o.opens) != 0 {
		t.Fatalf("NewTable opened %v", o.opens)
	}
	main, err := tab.Resolve("main")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tab.Resolve("lib_func"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lib_func before dlopen: %v, want ErrNotFound", err)
	}
	for range 3 {
		tab.Lookup(main.Addr)
	}
	if o.opens[exe] != 1 {
		t.Fatalf("exe opened %d times, want 1", o.opens[exe])
	}

	// dlopen: the library appears; the executable is not read again.
	tab.Update(append(append([]procmaps.Mapping(nil), exeMaps...), libMaps...))
	if o.opens[lib] != 0 {
		t.Fatalf("Update opened the library")
	}
	lf, err := tab.Resolve("lib_func")
	if err != nil {
		t.Fatal(err)
	}
	if loc, ok := tab.Lookup(lf.Addr + 1); !ok || loc.Func != "lib_func" || loc.Module != lib {
		t.Fatalf("Lookup(lib_func+1) = %+v, %v", loc, ok)
	}
	if loc, ok := tab.Lookup(main.Addr); !ok || loc.Func != "main" {
		t.Fatalf("Lookup(main) after Update = %+v, %v", loc, ok)
	}
	if o.opens[exe] != 1 || o.opens[lib] != 1 {
		t.Fatalf("opens = %v, want one each", o.opens)
	}

	// dlclose: its addresses are no longer its own, but its file stays open
	// for ModuleAt callers until Close.
	tab.Update(exeMaps)
	if loc, ok := tab.Lookup(lf.Addr); ok {
		t.Fatalf("Lookup in unmapped library = %+v", loc)
	}
	if o.closes != 0 {
		t.Fatalf("%d files closed before Close", o.closes)
	}
	if err := tab.Close(); err != nil {
		t.Fatal(err)
	}
	if o.closes != 2 {
		t.Fatalf("Close closed %d files, want 2", o.closes)
	}
	if _, err := tab.Resolve("main"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Resolve after Close: %v", err)
	}
	if _, ok := tab.Lookup(main.Addr); ok {
		t.Fatal("Lookup after Close succeeded")
	}
}

func TestUnreadableModules(t *testing.T) {
	exe := program(t, progPIE)
	good, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	badShoff := bytes.Clone(good)
	binary.LittleEndian.PutUint64(badShoff[0x28:], 1<<62) // e_shoff
	hugeShnum := bytes.Clone(good)
	binary.LittleEndian.PutUint16(hugeShnum[0x3c:], 0xfeff) // e_shnum

	tests := []struct {
		name string
		data []byte // nil: open fails
	}{
		{"cannot open", nil},
		{"empty", []byte{}},
		{"not ELF", []byte("#!/bin/sh\necho hello\n")},
		{"ELF header only", good[:64]},
		{"truncated", good[:len(good)/2]},
		{"section headers out of file", badShoff},
		{"too many section headers", hugeShnum},
	}
	const base = 0x7f0000000000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const path = "/usr/lib/libgone.so.1 (deleted)"
			maps := []procmaps.Mapping{
				{Start: base, End: base + 0x1000, Offset: 0, Path: path},
				{Start: base + 0x1000, End: base + 0x3000, Offset: 0x1000, Path: path},
			}
			tab := NewTable(maps, Options{Open: func(string) (io.ReaderAt, error) {
				if tt.data == nil {
					return nil, fs.ErrNotExist
				}
				return bytes.NewReader(tt.data), nil
			}})
			defer tab.Close()
			loc, ok := tab.Lookup(base + 0x1234)
			// Truncated files may keep their program headers; either way
			// the module is named and the bias is the mapping's.
			want := Location{Func: "", Offset: 0x1234, Module: path, ModuleBase: base}
			if !ok || loc != want {
				t.Fatalf("Lookup = %+v, %v; want %+v", loc, ok, want)
			}
			if _, _, p, _ := tab.ModuleAt(base + 0x1234); p != path {
				t.Fatalf("ModuleAt path = %q", p)
			}
			_, err := tab.Resolve("libgone:main")
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("Resolve = %v, want ErrNotFound", err)
			}
			if tt.data == nil && !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Resolve = %v, want the open error too", err)
			}
		})
	}
}

// TestDefaultOpener covers the default opener: inode preference, Root
// fallback, and refusal of non-regular files.
func TestDefaultOpener(t *testing.T) {
	exe := program(t, progPIE)
	maps := layout(t, exe, 0x555555554000)
	nm := nmSymbols(t, exe)
	pc := 0x555555554000 + nm["main"].addr

	t.Run("root fallback", func(t *testing.T) {
		moved := make([]procmaps.Mapping, len(maps))
		for i, m := range maps {
			if m.Path != "" {
				m.Path = "/inside/prog-pie"
			}
			moved[i] = m
		}
		root := t.TempDir()
		if err := os.MkdirAll(root+"/inside", 0o755); err != nil {
			t.Fatal(err)
		}
		// A hard link keeps the inode the mappings name.
		if err := os.Link(exe, root+"/inside/prog-pie"); err != nil {
			t.Fatal(err)
		}
		tab := NewTable(moved, Options{Root: root})
		defer tab.Close()
		if loc, ok := tab.Lookup(pc); !ok || loc.Func != "main" || loc.Module != "/inside/prog-pie" {
			t.Fatalf("Lookup = %+v, %v", loc, ok)
		}
	})
	t.Run("device is not opened", func(t *testing.T) {
		dev := []procmaps.Mapping{{Start: 0x7f0000000000, End: 0x7f0000001000, Path: "/dev/zero"}}
		tab := NewTable(dev, Options{})
		defer tab.Close()
		if loc, ok := tab.Lookup(0x7f0000000010); !ok || loc.Func != "" || loc.Module != "/dev/zero" {
			t.Fatalf("Lookup = %+v, %v", loc, ok)
		}
		if tab.objects[objKey{path: "/dev/zero"}].err == nil {
			t.Fatal("/dev/zero was accepted")
		}
	})
}

func TestVDSOOfThisProcess(t *testing.T) {
	maps, err := procmaps.Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	read := func(addr uint64, p []byte) error {
		_, err := mem.ReadAt(p, int64(addr))
		return err
	}
	tab := NewTable(maps, Options{ReadMemory: read})
	defer tab.Close()
	s, err := tab.Resolve("[vdso]:__vdso_clock_gettime")
	if err != nil {
		t.Fatal(err)
	}
	if s.Module != "[vdso]" || s.Size == 0 {
		t.Fatalf("Resolve = %+v", s)
	}
	loc, ok := tab.Lookup(s.Addr + 1)
	// The weak alias clock_gettime shares the address; global wins.
	if !ok || loc.Func != "__vdso_clock_gettime" || loc.Offset != 1 || loc.Module != "[vdso]" {
		t.Fatalf("Lookup(__vdso_clock_gettime+1) = %+v, %v", loc, ok)
	}
	var vdso procmaps.Mapping
	for _, m := range maps {
		if m.Path == "[vdso]" {
			vdso = m
		}
	}
	if loc.ModuleBase != vdso.Start {
		t.Errorf("vDSO bias %#x, mapping at %#x", loc.ModuleBase, vdso.Start)
	}

	// Without a memory reader the vDSO is a module with no symbols.
	bare := NewTable(maps, Options{})
	defer bare.Close()
	if loc, ok := bare.Lookup(s.Addr); !ok || loc.Func != "" || loc.Module != "[vdso]" {
		t.Fatalf("Lookup without ReadMemory = %+v, %v", loc, ok)
	}
}

// TestConcurrentUse runs lookups, resolutions and updates at once; run it
// with -race.
func TestConcurrentUse(t *testing.T) {
	exe, lib := program(t, progPIE), program(t, libDemo)
	exeMaps := layout(t, exe, 0x555555554000)
	both := append(append([]procmaps.Mapping(nil), exeMaps...), layout(t, lib, 0x7f1234500000)...)
	nm := nmSymbols(t, exe)
	pc := 0x555555554000 + nm["main"].addr + 1
	tab := NewTable(exeMaps, Options{})
	defer tab.Close()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 200 {
				switch (i + j) % 3 {
				case 0:
					if loc, ok := tab.Lookup(pc); !ok || loc.Func != "main" {
						t.Errorf("Lookup = %+v, %v", loc, ok)
						return
					}
				case 1:
					if _, err := tab.Resolve("counter"); err != nil {
						t.Error(err)
						return
					}
				case 2:
					tab.ModuleAt(pc)
				}
			}
		})
	}
	wg.Go(func() {
		for j := range 100 {
			if j%2 == 0 {
				tab.Update(both)
			} else {
				tab.Update(exeMaps)
			}
		}
	})
	wg.Wait()
}
