package main

import (
	"context"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/memtrap/memtrap/internal/fixture"
	"github.com/memtrap/memtrap/pkg/tracer"
)

// hwWorks tells whether this machine's debug registers fire. Where they do
// not (some hypervisors accept DR7 and never trap), the hw engine cannot
// be tested, and TestEngineChoice checks that memtrap says so instead of
// losing writes.
func hwWorks(t *testing.T) bool {
	t.Helper()
	err := tracer.CheckDebugRegisters()
	if err != nil && !errors.Is(err, tracer.ErrDebugRegsDead) {
		t.Fatalf("checking the debug registers, as root: %v", err)
	}
	return err == nil
}

// engines is list without "hw" where the debug registers do not fire.
func engines(t *testing.T, list ...string) []string {
	t.Helper()
	if hwWorks(t) {
		return list
	}
	t.Logf("debug registers do not fire on this machine: the hw engine's cases are left out")
	return slices.DeleteFunc(slices.Clone(list), func(e string) bool { return e == "hw" })
}

// TestEngineChoice: auto takes the debug registers for a small region
// where they fire, and the fast engine where they do not or for a region
// they cannot take, without a word; the page engine for what the fast
// engine does not do (more pages than its agent arms, --completer step);
// --engine hw on a machine whose debug registers never fire is refused in
// one line (it would report nothing), and the target is not started.
func TestEngineChoice(t *testing.T) {
	prog := fixture.Build(t, "examples/stomp.c", "-O0", "-g", "-fno-omit-frame-pointer")
	for _, c := range []struct {
		args   []string
		engine string
	}{
		{[]string{"--symbol", "session", "--len", "64"}, "fast"},
		{[]string{"--symbol", "session", "--len", "64", "--completer", "step"}, "page"},
		{[]string{"--symbol", "session", "--len", "64", "--engine", "page"}, "page"},
	} {
		r := memtrap(t, append(append([]string{"run", "--backtrace", "0"}, c.args...), "--", prog)...)
		if r.code != 3 || !strings.Contains(r.stderr, "(engine "+c.engine+")") {
			t.Fatalf("%v: exit %d, want the %s engine: %s", c.args, r.code, c.engine, r.stderr)
		}
	}
	big := fixture.Build(t, "cmd/memtrap/testdata/bigbuf.c", "-O1", "-DPAGES=1100")
	want := native(t, big)
	r := memtrap(t, "run", "--backtrace", "0", "--symbol", "big", "--", big)
	if r.stdout != want.stdout || r.code != 0 || !strings.Contains(r.stderr, "(engine page)") || !strings.Contains(r.stderr, "2199 writes reported") {
		t.Fatalf("auto, 1100 pages: %q exit %d; stderr %s", r.stdout, r.code, tail(r.stderr))
	}
	auto := memtrap(t, "run", "--backtrace", "0", "--symbol", "session.token", "--", prog)
	hw := memtrap(t, "run", "--backtrace", "0", "--engine", "hw", "--symbol", "session.token", "--", prog)
	if hwWorks(t) {
		if !strings.HasPrefix(auto.stderr, "memtrap: watching session.token") || !strings.Contains(auto.stderr, "(engine hw)") {
			t.Fatalf("auto, 8 bytes: %s", auto.stderr)
		}
		if hw.code != 3 || !strings.Contains(hw.stderr, "(engine hw)") {
			t.Fatalf("--engine hw: exit %d, %s", hw.code, hw.stderr)
		}
		return
	}
	if auto.code != 3 || !strings.HasPrefix(auto.stderr, "memtrap: watching session.token") || !strings.Contains(auto.stderr, "(engine fast)") || !strings.Contains(auto.stderr, "7 writes reported") {
		t.Fatalf("auto, 8 bytes, dead debug registers: exit %d, %s", auto.code, auto.stderr)
	}
	if hw.code != 1 || hw.stdout != "" || strings.Count(hw.stderr, "\n") != 1 || !strings.Contains(hw.stderr, "hardware watchpoints do not fire on this machine") {
		t.Fatalf("--engine hw, dead debug registers: exit %d, stdout %q, stderr %q", hw.code, hw.stdout, hw.stderr)
	}
}

// TestICEBP: a debug exception that comes with DR6 empty (a hypervisor
// sometimes hands a debug-register hit over so: SIGTRAP, TRAP_BRKPT) is
// memtrap's, but the target's own ICEBP, which raises the same, still
// reaches the target's handler, each time.
func TestICEBP(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/icebp.c", "-O0")
	// Some hypervisors hand the guest an ICEBP's debug exception as a
	// fault, at the instruction itself: the program then traps there for
	// ever, natively, and there is nothing to compare memtrap with.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := exec.CommandContext(ctx, prog).Run(); ctx.Err() != nil {
		t.Skipf("this machine re-executes ICEBP (int1) instead of stepping past it: the program loops natively (%v)", err)
	}
	want := native(t, prog)
	if want.stdout != "traps=3 val=30\n" {
		t.Fatalf("native run: %q", want.stdout)
	}
	engines := []string{"page"}
	if hwWorks(t) {
		engines = append(engines, "hw")
	}
	for _, e := range engines {
		r := memtrap(t, "run", "--engine", e, "--format", "json", "--backtrace", "0", "--symbol", "val", "--", prog)
		if r.stdout != want.stdout || r.code != 0 || len(writes(parseEvents(t, r.stderr))) != 6 {
			t.Errorf("%s: output %q code %d, %d writes; want %q, 0, 6", e, r.stdout, r.code, len(writes(parseEvents(t, r.stderr))), want.stdout)
		}
	}
}
