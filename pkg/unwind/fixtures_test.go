package unwind

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
)

// Builds of testdata/stack.c, named by how their frames can be unwound.
// The names are the files' names too: recording.funcName knows the
// program's own frames by the "stack-" prefix.
const (
	stackCFI        = "stack-cfi"        // .eh_frame with .eh_frame_hdr, no frame pointers
	stackNoHdr      = "stack-nohdr"      // .eh_frame without .eh_frame_hdr
	stackDebugFrame = "stack-debugframe" // .debug_frame only (crt files keep .eh_frame)
	stackFP         = "stack-fp"         // no CFI for our code: frame pointers only

	cfiAsm = "cfi-asm" // testdata/cfi.s, linked static at 0x401000, never run
)

const (
	stackSrc = "pkg/unwind/testdata/stack.c"
	cfiSrc   = "pkg/unwind/testdata/cfi.s"
)

var recipes = map[string]fixture.Recipe{
	stackCFI:        fixture.Compile(stackCFI, stackSrc, "-Wall", "-O2", "-fomit-frame-pointer"),
	stackNoHdr:      fixture.Compile(stackNoHdr, stackSrc, "-Wall", "-O2", "-fomit-frame-pointer", "-Wl,--no-eh-frame-hdr"),
	stackDebugFrame: fixture.Compile(stackDebugFrame, stackSrc, "-Wall", "-O2", "-fomit-frame-pointer", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-g"),
	stackFP:         fixture.Compile(stackFP, stackSrc, "-Wall", "-O2", "-fno-omit-frame-pointer", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-DFRAME_POINTERS"),
	cfiAsm:          fixture.Compile(cfiAsm, cfiSrc, "-Wall", "-nostdlib", "-no-pie", "-static", "-Wl,-e,selfloop", "-Wl,--build-id=none"),
}

// program builds a test program (once: internal/fixture caches it by
// content, commands and tool versions) and returns its path. A missing or
// failing gcc fails the test: these tests must not pass vacuously.
func program(t testing.TB, name string) string {
	t.Helper()
	r, ok := recipes[name]
	if !ok {
		t.Fatalf("no fixture %q", name)
	}
	return r.Build(t)
}

// record runs a build of stack.c in mode and returns its recording. Each
// call records a run of its own: a recording is of the machine's libc and
// kernel as they are, not something to cache.
func record(t testing.TB, name, mode string) *recording {
	t.Helper()
	bin := program(t, name)
	out := filepath.Join(t.TempDir(), name+"."+mode+".rec")
	if b, err := exec.Command(bin, mode, out).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, mode, err, b)
	}
	rec, err := loadRecording(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rec.close)
	return rec
}
