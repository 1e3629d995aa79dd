package symbols

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// fixtureDir holds the programs built for this test binary.
var fixtureDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "memtrap-symbols-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fixtureDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var fixtures struct {
	sync.Mutex
	built map[string]error
}

// Fixture names, as files in fixtureDir.
const (
	progPIE   = "prog-pie"
	progNoPIE = "prog-nopie"
	libDemo   = "libdemo.so.1"
)

var fixtureFlags = map[string][]string{
	progPIE:   {"-O0", "-pie", "-fPIE", "testdata/prog.c"},
	progNoPIE: {"-O0", "-no-pie", "-fno-pie", "testdata/prog.c"},
	libDemo:   {"-O0", "-shared", "-fPIC", "testdata/lib.c"},
}

// fixture builds a test program once per test binary and returns its path.
// A missing or failing gcc fails the test: these tests must not pass vacuously.
func fixture(t testing.TB, name string) string {
	t.Helper()
	return buildFixture(t, name, func(out string) error {
		return command("gcc", append([]string{"-o", out}, fixtureFlags[name]...)...)
	})
}

// buildFixture runs build once per test binary to make the file name in
// fixtureDir, and returns its path. A failure fails every test asking.
func buildFixture(t testing.TB, name string, build func(out string) error) string {
	t.Helper()
	fixtures.Lock()
	defer fixtures.Unlock()
	if fixtures.built == nil {
		fixtures.built = make(map[string]error)
	}
	out := filepath.Join(fixtureDir, name)
	err, done := fixtures.built[name]
	if !done {
		err = build(out)
		fixtures.built[name] = err
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// command runs a build tool, returning its output in the error.
func command(name string, args ...string) error {
	if b, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, b)
	}
	return nil
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
func layout(t testing.TB, path string, base uint64) []tracer.Mapping {
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
	var maps []tracer.Mapping
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
		maps = append(maps, tracer.Mapping{Start: start, End: fileEnd, Prot: prot,
			Offset: pageDown(p.Off), Dev: "fe:00", Inode: st.Ino, Path: path})
		if memEnd > fileEnd {
			maps = append(maps, tracer.Mapping{Start: fileEnd, End: memEnd, Prot: prot})
		}
	}
	if len(maps) == 0 {
		t.Fatalf("%s has no PT_LOAD", path)
	}
	return maps
}
