package symbols

import (
	"bufio"
	"bytes"
	"debug/elf"
	"github.com/memtrap/memtrap/pkg/procmaps"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
	"golang.org/x/sys/unix"
)

// Fixture names. They are the files' names too, which tests of module
// names rely on.
const (
	progPIE   = "prog-pie"
	progNoPIE = "prog-nopie"
	libDemo   = "libdemo.so.1"
)

// A recipe says how to build the fixture name. It may build on another
// fixture, so it is made when asked for.
type recipe func(t testing.TB, name string) fixture.Recipe

// compile compiles src, a file in testdata, with flags.
func compile(src string, flags ...string) recipe {
	return func(_ testing.TB, name string) fixture.Recipe {
		return fixture.Compile(name, "pkg/symbols/testdata/"+src, flags...)
	}
}

// recipes are the programs these tests read, by name; dwarfRecipes adds
// those with debugging information.
var recipes = map[string]recipe{
	progPIE:   compile("prog.c", "-O0", "-pie", "-fPIE"),
	progNoPIE: compile("prog.c", "-O0", "-no-pie", "-fno-pie"),
	libDemo:   compile("lib.c", "-O0", "-shared", "-fPIC"),
}

// program builds the fixture name (once: internal/fixture caches it by
// content, commands and tool versions) and returns its path. A missing or
// failing tool fails the test: these tests must not pass vacuously.
func program(t testing.TB, name string) string {
	t.Helper()
	r, ok := recipes[name]
	if !ok {
		r, ok = dwarfRecipes[name]
	}
	if !ok {
		t.Fatalf("no fixture %q", name)
	}
	return r(t, name).Build(t)
}

// nmSym is a symbol as binutils' nm reports it, independently of debug/elf.
type nmSym struct {
	addr, size uint64
	kind       byte
}

// nmSymbols runs "nm -S --defined-only" on path. Of several symbols of one
// name the first is kept.
func nmSymbols(t testing.TB, path string) map[string]nmSym {
	t.Helper()
	out, err := exec.Command("nm", "-S", "--defined-only", path).Output()
	if err != nil {
		t.Fatalf("nm %s: %v", path, err)
	}
	syms := make(map[string]nmSym)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		var s nmSym
		var name string
		switch len(f) {
		case 3: // address type name
			name, s.kind = f[2], f[1][0]
		case 4: // address size type name
			name, s.kind = f[3], f[2][0]
			if s.size, err = strconv.ParseUint(f[1], 16, 64); err != nil {
				t.Fatalf("nm line %q: %v", sc.Text(), err)
			}
		default:
			continue
		}
		if s.addr, err = strconv.ParseUint(f[0], 16, 64); err != nil {
			t.Fatalf("nm line %q: %v", sc.Text(), err)
		}
		if _, dup := syms[name]; !dup {
			syms[name] = s
		}
	}
	return syms
}

// layout returns the mappings the kernel would make for path loaded with
// bias base (ignored for ET_EXEC): one per PT_LOAD for its file pages, and an
// anonymous one for .bss pages past them.
func layout(t testing.TB, path string, base uint64) []procmaps.Mapping {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Type == elf.ET_EXEC {
		base = 0
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	var maps []procmaps.Mapping
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD {
			continue
		}
		var prot int
		if p.Flags&elf.PF_R != 0 {
			prot |= unix.PROT_READ
		}
		if p.Flags&elf.PF_W != 0 {
			prot |= unix.PROT_WRITE
		}
		if p.Flags&elf.PF_X != 0 {
			prot |= unix.PROT_EXEC
		}
		start := base + pageDown(p.Vaddr)
		fileEnd := base + pageUp(p.Vaddr+p.Filesz)
		memEnd := base + pageUp(p.Vaddr+p.Memsz)
		maps = append(maps, procmaps.Mapping{Start: start, End: fileEnd, Prot: prot,
			Offset: pageDown(p.Off), Dev: "fe:00", Inode: st.Ino, Path: path})
		if memEnd > fileEnd {
			maps = append(maps, procmaps.Mapping{Start: fileEnd, End: memEnd, Prot: prot})
		}
	}
	if len(maps) == 0 {
		t.Fatalf("%s has no PT_LOAD", path)
	}
	return maps
}
