package unwind

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fixtureDir holds the programs and recordings made for this test binary.
var fixtureDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "memtrap-unwind-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fixtureDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Builds of testdata/stack.c, named by how their frames can be unwound.
const (
	stackCFI        = "stack-cfi"        // .eh_frame with .eh_frame_hdr, no frame pointers
	stackNoHdr      = "stack-nohdr"      // .eh_frame without .eh_frame_hdr
	stackDebugFrame = "stack-debugframe" // .debug_frame only (crt files keep .eh_frame)
	stackFP         = "stack-fp"         // no CFI for our code: frame pointers only

	cfiAsm = "cfi-asm" // testdata/cfi.s, linked static at 0x401000, never run
)

var fixtureFlags = map[string][]string{
	stackCFI:        {"-O2", "-fomit-frame-pointer", "testdata/stack.c"},
	stackNoHdr:      {"-O2", "-fomit-frame-pointer", "-Wl,--no-eh-frame-hdr", "testdata/stack.c"},
	stackDebugFrame: {"-O2", "-fomit-frame-pointer", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-g", "testdata/stack.c"},
	stackFP:         {"-O2", "-fno-omit-frame-pointer", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-DFRAME_POINTERS", "testdata/stack.c"},
	cfiAsm:          {"-nostdlib", "-no-pie", "-static", "-Wl,-e,selfloop", "-Wl,--build-id=none", "testdata/cfi.s"},
}

var fixtures struct {
	sync.Mutex
	done map[string]error
}

// once runs build for name the first time it is asked for and remembers
// the outcome.
func once(t testing.TB, name string, build func() error) {
	t.Helper()
	fixtures.Lock()
	defer fixtures.Unlock()
	if fixtures.done == nil {
		fixtures.done = make(map[string]error)
	}
	err, ok := fixtures.done[name]
	if !ok {
		err = build()
		fixtures.done[name] = err
	}
	if err != nil {
		t.Fatal(err)
	}
}

// fixture builds a test program once per test binary. A
// missing or failing gcc fails the test: these tests must not pass vacuously.
func fixture(t testing.TB, name string) string {
	t.Helper()
	out := filepath.Join(fixtureDir, name)
	once(t, name, func() error {
		args := append([]string{"-Wall", "-o", out}, fixtureFlags[name]...)
		if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("gcc %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		return nil
	})
	return out
}

// record runs a build of stack.c in mode and returns its recording.
func record(t testing.TB, name, mode string) *recording {
	t.Helper()
	bin := fixture(t, name)
	out := filepath.Join(fixtureDir, name+"."+mode+".rec")
	once(t, out, func() error {
		if b, err := exec.Command(bin, mode, out).CombinedOutput(); err != nil {
			return fmt.Errorf("%s %s: %v\n%s", bin, mode, err, b)
		}
		return nil
	})
	rec, err := loadRecording(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rec.close)
	return rec
}
