package symbols

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
)

// Fixtures with debugging information, built from testdata/debug.c,
// testdata/names.cc and testdata/goprog.
const (
	dbgPIE     = "debug-pie"        // gcc -g (DWARF 5), PIE
	dbgDWARF4  = "debug-dwarf4"     // gcc -gdwarf-4, non-PIE
	dbgDWARF5  = "debug-dwarf5"     // gcc -gdwarf-5, non-PIE
	dbgO2      = "debug-O2"         // optimized: views, is_stmt 0, discriminators
	dbgZlib    = "debug-zlib"       // SHF_COMPRESSED debug sections
	dbgZlibGNU = "debug-zlib-gnu"   // .zdebug_* sections
	dbgStrip4  = "debug-dwarf4-x"   // dbgDWARF4 without local symbols
	dbgStrip5  = "debug-dwarf5-x"   // dbgDWARF5 without local symbols
	namesCxx   = "names-cxx"        // g++ -g (DWARF 5), PIE
	namesCxx4  = "names-cxx-dwarf4" // g++ -gdwarf-4
	goProg     = "goprog"           // go build, default flags
)

var (
	debugDWARF4 = compile("debug.c", "-gdwarf-4", "-O0", "-gz=none", "-no-pie", "-fno-pie")
	debugDWARF5 = compile("debug.c", "-gdwarf-5", "-O0", "-gz=none", "-no-pie", "-fno-pie")
)

var dwarfRecipes = map[string]recipe{
	dbgPIE:     compile("debug.c", "-g", "-O0", "-gz=none", "-pie", "-fPIE"),
	dbgDWARF4:  debugDWARF4,
	dbgDWARF5:  debugDWARF5,
	dbgO2:      compile("debug.c", "-g", "-O2", "-gz=none"),
	dbgZlib:    compile("debug.c", "-g", "-O0", "-gz=zlib"),
	dbgZlibGNU: compile("debug.c", "-g", "-O0", "-gz=zlib-gnu"),
	dbgStrip4:  withoutLocals(dbgDWARF4, debugDWARF4),
	dbgStrip5:  withoutLocals(dbgDWARF5, debugDWARF5),
	namesCxx:   compile("names.cc", "-g", "-O0", "-gz=none"),
	namesCxx4:  compile("names.cc", "-gdwarf-4", "-O0", "-gz=none"),
	goProg:     compile("goprog/main.go"),
}

// withoutLocals copies the fixture from, built by r, without the symbols
// of its statics, keeping its DWARF (strip --discard-all would drop that
// too).
func withoutLocals(from string, r recipe) recipe {
	return func(t testing.TB, name string) fixture.Recipe {
		objcopy := []string{"objcopy"}
		for _, s := range []string{"backup", "grid", "calls.0", "helper"} {
			objcopy = append(objcopy, "--strip-symbol="+s)
		}
		return fixture.Recipe{
			Name:   name,
			Inputs: []string{r(t, from).Build(t)},
			Steps:  [][]string{append(objcopy, "{in0}", "{out}")},
		}
	}
}

// srcPos is a source position as addr2line prints it; the zero value is
// "unknown".
type srcPos struct {
	File string
	Line int
}

// addr2line asks binutils' addr2line where each link-time address of path
// is. Line 0 and "?" are unknown, as is "??".
func addr2line(t testing.TB, path string, pcs []uint64) []srcPos {
	t.Helper()
	var out []srcPos
	const chunk = 2000
	for len(pcs) > 0 {
		n := min(len(pcs), chunk)
		args := []string{"-e", path}
		for _, pc := range pcs[:n] {
			args = append(args, fmt.Sprintf("%#x", pc))
		}
		pcs = pcs[n:]
		b, err := exec.Command("addr2line", args...).Output()
		if err != nil {
			t.Fatalf("addr2line: %v", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			s := sc.Text()
			if i := strings.Index(s, " (discriminator "); i >= 0 {
				s = s[:i]
			}
			i := strings.LastIndexByte(s, ':')
			if i < 0 {
				t.Fatalf("addr2line printed %q", sc.Text())
			}
			line, err := strconv.Atoi(s[i+1:])
			if err != nil || line == 0 || s[:i] == "??" {
				out = append(out, srcPos{})
				continue
			}
			out = append(out, srcPos{s[:i], line})
		}
	}
	return out
}

// textRange returns the link-time bounds of path's .text.
func textRange(t testing.TB, path string) (lo, hi uint64) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := f.Section(".text")
	if s == nil {
		t.Fatalf("%s has no .text", path)
	}
	return s.Addr, s.Addr + s.Size
}

// runFixture runs a fixture program and returns its standard output.
func runFixture(t testing.TB, path string, args ...string) string {
	t.Helper()
	out, err := exec.Command(path, args...).Output()
	if err != nil {
		t.Fatalf("%s %v: %v", path, args, err)
	}
	return string(out)
}

// printedVars parses "name 0xADDR SIZE" lines, as the fixtures print them.
func printedVars(t testing.TB, out string) map[string]Symbol {
	t.Helper()
	vars := make(map[string]Symbol)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var name string
		var s Symbol
		if _, err := fmt.Sscanf(l, "%s 0x%x %d", &name, &s.Addr, &s.Size); err != nil {
			t.Fatalf("fixture printed %q: %v", l, err)
		}
		vars[name] = s
	}
	return vars
}
