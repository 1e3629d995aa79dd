package main

import (
	"debug/elf"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
)

// TestIndexCache: the DWARF indexes memtrap keeps between runs go to
// $XDG_CACHE_HOME/memtrap, named by build ID, and a run that reads them
// reports what the run that wrote them did.
func TestIndexCache(t *testing.T) {
	prog := fixture.Build(t, "examples/stomp.c", "-O0", "-g", "-fno-omit-frame-pointer")
	f, err := elf.Open(prog)
	if err != nil {
		t.Fatal(err)
	}
	sec := f.Section(".note.gnu.build-id")
	if sec == nil {
		t.Skip("the compiler gives no build ID")
	}
	note, err := sec.Data()
	f.Close()
	if err != nil || len(note) < 16+20 {
		t.Fatalf("build ID note: %v", err)
	}
	id := hex.EncodeToString(note[16:])
	home := t.TempDir()
	want := native(t, prog)
	var reports []string
	for range 2 {
		cmd := exec.Command(memtrapBin, "run", "--format", "json", "--symbol", "session+8", "--len", "8", "--", prog)
		cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+home)
		r := runCmd(t, cmd)
		if r.stdout != want.stdout || r.code != want.code {
			t.Fatalf("output %q code %d, native %q %d; stderr %s", r.stdout, r.code, want.stdout, want.code, tail(r.stderr))
		}
		var b strings.Builder
		for _, w := range writes(parseEvents(t, r.stderr)) {
			for _, fr := range w.Backtrace {
				// Addresses move from run to run; the rest does not.
				fmt.Fprintf(&b, "%s+%d %s:%d (", fr.Func, fr.Offset, fr.File, fr.Line)
				for _, a := range fr.Args {
					fmt.Fprintf(&b, "%s known %v, ", a.Name, a.Value != "")
				}
				b.WriteString(") | ")
			}
			b.WriteString("\n")
		}
		reports = append(reports, b.String())
	}
	if !strings.Contains(reports[0], "issue_token+") || !strings.Contains(reports[0], "stomp.c:") || !strings.Contains(reports[0], "(token known true") {
		t.Fatalf("backtraces without functions or lines:\n%s", reports[0])
	}
	if reports[1] != reports[0] {
		t.Errorf("with the cache:\n%s\nwithout:\n%s", reports[1], reports[0])
	}
	ents, err := os.ReadDir(filepath.Join(home, "memtrap"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	for _, n := range []string{id + ".lines", id + ".funcs"} {
		if !slices.Contains(names, n) {
			t.Errorf("cache holds %q, not %s", names, n)
		}
	}
}
