package agent

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/memtrap/memtrap/internal/fixture"
)

// cc is the C compiler the tests build with (scripts/deps installs gcc).
func cc(t *testing.T) string {
	t.Helper()
	c := os.Getenv("CC")
	if c == "" {
		c = "gcc"
	}
	if _, err := exec.LookPath(c); err != nil {
		t.Fatalf("%s not found: scripts/deps installs gcc (make test runs it)", c)
	}
	return c
}

// TestBlob: the committed blob is what csrc builds to, with the compiler
// that built it (agent.bin.compiler); another compiler may make other
// bytes, which is no fault of the blob.
func TestBlob(t *testing.T) {
	c := cc(t)
	want, err := os.ReadFile("agent.bin.compiler")
	if err != nil {
		t.Fatal(err)
	}
	have, err := exec.Command(c, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if first := strings.SplitN(string(have), "\n", 2)[0] + "\n"; first != string(want) {
		t.Skipf("agent.bin was built by %q, this machine has %q: its bytes cannot be compared", strings.TrimSpace(string(want)), strings.TrimSpace(first))
	}
	dir := t.TempDir()
	cmd := exec.Command("csrc/build.sh", dir)
	cmd.Env = append(os.Environ(), "CC="+c)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, out)
	}
	built, err := os.ReadFile(filepath.Join(dir, "agent.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(built, Blob()) {
		t.Fatalf("agent.bin (%d bytes) is not what csrc/agent.c builds to (%d bytes): run make agent and commit it", len(Blob()), len(built))
	}
	if _, err := EntryPoints(); err != nil {
		t.Fatal(err)
	}
}

// TestLayout: the Go mirror of agent.h has the C layout, field by field.
func TestLayout(t *testing.T) {
	var a Area
	var r Recipe
	var rec Record
	fields := []struct {
		c     string
		goOff uintptr
	}{
		{"sizeof(struct agent_area)", unsafe.Sizeof(a)},
		{"offsetof(struct agent_area, memfd)", unsafe.Offsetof(a.MemFd)},
		{"offsetof(struct agent_area, npages)", unsafe.Offsetof(a.NPages)},
		{"offsetof(struct agent_area, lock)", unsafe.Offsetof(a.Lock)},
		{"offsetof(struct agent_area, waiting)", unsafe.Offsetof(a.Waiting)},
		{"offsetof(struct agent_area, pages)", unsafe.Offsetof(a.PageList)},
		{"offsetof(struct agent_area, head)", unsafe.Offsetof(a.Head)},
		{"offsetof(struct agent_area, tail)", unsafe.Offsetof(a.Tail)},
		{"offsetof(struct agent_area, misses)", unsafe.Offsetof(a.Misses)},
		{"offsetof(struct agent_area, chained)", unsafe.Offsetof(a.Chained)},
		{"offsetof(struct agent_area, served)", unsafe.Offsetof(a.Served)},
		{"offsetof(struct agent_area, asked)", unsafe.Offsetof(a.Asked)},
		{"offsetof(struct agent_area, pid)", unsafe.Offsetof(a.Pid)},
		{"offsetof(struct agent_area, token)", unsafe.Offsetof(a.Token)},
		{"offsetof(struct agent_area, old)", unsafe.Offsetof(a.Old)},
		{"offsetof(struct agent_area, requests)", unsafe.Offsetof(a.Requests)},
		{"sizeof(struct agent_request)", unsafe.Sizeof(Request{})},
		{"offsetof(struct agent_request, uc)", unsafe.Offsetof(Request{}.UC)},
		{"offsetof(struct agent_request, gsbase)", unsafe.Offsetof(Request{}.GSBase)},
		{"offsetof(struct agent_request, ret)", unsafe.Offsetof(Request{}.Ret)},
		{"offsetof(struct agent_request, nout)", unsafe.Offsetof(Request{}.NOut)},
		{"offsetof(struct agent_request, out)", unsafe.Offsetof(Request{}.Out)},
		{"sizeof(struct agent_bounce)", unsafe.Sizeof(Bounce{})},
		{"offsetof(struct agent_area, oldsys)", unsafe.Offsetof(a.OldSys)},
		{"offsetof(struct agent_area, mpidfd)", unsafe.Offsetof(a.MPidFd)},
		{"offsetof(struct agent_area, gone)", unsafe.Offsetof(a.Gone)},
		{"offsetof(struct agent_area, recipes)", unsafe.Offsetof(a.Recipes)},
		{"offsetof(struct agent_area, ring)", unsafe.Offsetof(a.Records)},
		{"sizeof(struct agent_recipe)", unsafe.Sizeof(r)},
		{"offsetof(struct agent_recipe, disp)", unsafe.Offsetof(r.Disp)},
		{"offsetof(struct agent_recipe, imm)", unsafe.Offsetof(r.Imm)},
		{"sizeof(struct agent_record)", unsafe.Sizeof(rec)},
		{"offsetof(struct agent_record, gregs)", unsafe.Offsetof(rec.GRegs)},
		{"offsetof(struct agent_record, stack)", unsafe.Offsetof(rec.Stack)},
		{"AGENT_DISARMED", Disarmed},
		{"AGENT_DROPPED", Dropped},
		{"AGENT_REDZONE", RedZone},
		{"AGENT_STACK", StackBytes},
		{"AGENT_BOUNCE_SET", BounceSet},
		{"offsetof(struct agent_bounce, flags)", unsafe.Offsetof(Bounce{}.Flags)},
	}
	var src strings.Builder
	src.WriteString("#include <stdio.h>\n#include <stddef.h>\n#include \"" + mustAbs(t, "csrc/agent.h") + "\"\nint main(void) {\n")
	for _, f := range fields {
		fmt.Fprintf(&src, "\tprintf(\"%%zu\\n\", (size_t)%s);\n", f.c)
	}
	src.WriteString("\treturn 0;\n}\n")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "layout.c"), []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc(t), "-o", filepath.Join(dir, "layout"), filepath.Join(dir, "layout.c")).CombinedOutput(); err != nil {
		t.Fatalf("building the layout probe: %v\n%s", err, out)
	}
	out, err := exec.Command(filepath.Join(dir, "layout")).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(string(out))
	if len(got) != len(fields) {
		t.Fatalf("the probe printed %d numbers for %d fields", len(got), len(fields))
	}
	for i, f := range fields {
		if got[i] != fmt.Sprint(f.goOff) {
			t.Errorf("%s: C %s, Go %d", f.c, got[i], f.goOff)
		}
	}
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestHandler runs the committed blob in a process of its own
// (testdata/harness.c): stores of each kind a recipe describes (a register
// through a base register, base+index*scale+disp, an immediate, RIP-
// relative) completed by the agent with no tracer, each with its record
// (old and new value, address, pc, thread, registers, stack); a store with
// no recipe and a fault that is not memtrap's passed on to the process's
// own handler.
func TestHandler(t *testing.T) {
	dir := t.TempDir()
	bin := harness(t)
	blobPath := filepath.Join(dir, "agent.bin")
	if err := os.WriteFile(blobPath, Blob(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, blobPath).CombinedOutput()
	if err != nil || string(out) != harnessWant {
		t.Fatalf("harness: %v\n%s\nwant:\n%s", err, out, harnessWant)
	}
}

// harnessWant is what testdata/harness.c prints when every check holds.
const harnessWant = `8-byte register stores: 1000, last 1000
4-byte base+index*4+8 store: 0x11223344 at +20
1-byte immediate store: 0x5a
RIP-relative store: -2
no recipe: passed on (misses 1, own handler 1)
not memtrap's: passed on (chained 2, own handler 2), value 9
forked child: its pages given back, its store its own (the parent's value 1000, records 1003)
records 1003
`

// harness builds testdata/harness.c with flags; agent.h, which it
// includes, is part of the fixture's key.
func harness(t *testing.T, flags ...string) string {
	t.Helper()
	r := fixture.Compile("harness", "pkg/agent/testdata/harness.c", append([]string{"-O1", "-Wall", "-Werror"}, flags...)...)
	r.Inputs = append(r.Inputs, "pkg/agent/csrc/agent.h")
	return r.Build(t)
}
