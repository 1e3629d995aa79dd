package main

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
)

// Targets that trace, themselves or their children: debuggers, strace,
// test harnesses, crash reporters. A child memtrap does not follow is not
// traced by it and can be traced by the target; a followed child (or a
// vfork child, which memtrap traces as a thread of its parent) that hands
// itself to another tracer is let go with a note.

// TestTargetTracesChild: a C program whose child asks to be traced
// (PTRACE_TRACEME) and one that seizes its child (PTRACE_SEIZE), the child
// then calling readv, which memtrap's syscall filter stops: the program's
// output and status are as without memtrap, and its writes reported. Also
// after the program executed itself ("exec"): the watch re-armed in the
// new image takes a SECCOMP_RET_TRACE filter, whose children memtrap keeps
// traced; the one that is to be traced is let go first, with a note
// (before: its PTRACE_TRACEME failed with EPERM, and the seize hung).
func TestTargetTracesChild(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/ptracer.c", "-O0")
	for _, mode := range []string{"traceme", "seize", "exec traceme", "exec seize"} {
		want := native(t, prog, strings.Fields(mode)...)
		if want.code != 0 || !strings.HasSuffix(want.stdout, "child exited 7\n") {
			t.Fatalf("native %s: %q exit %d", mode, want.stdout, want.code)
		}
		for _, engine := range engines(t, "page", "hw") {
			for _, follow := range []bool{false, true} {
				args := []string{"run", "--engine", engine, "--format", "json", "--backtrace", "0", "--symbol", "value"}
				name := fmt.Sprintf("%s %s", mode, engine)
				if follow {
					args = append(args, "--follow-forks")
					name += " --follow-forks"
				}
				r := memtrap(t, append(append(args, "--", prog), strings.Fields(mode)...)...)
				if r.code != 0 || r.stdout != want.stdout {
					t.Errorf("%s: %q exit %d, want %q exit 0; stderr %s", name, r.stdout, r.code, want.stdout, tail(r.stderr))
					continue
				}
				var got []string
				for _, w := range writes(parseEvents(t, r.stderr)) {
					got = append(got, w.New)
				}
				wantWrites := "[0x1 0x2 0x3]"
				if strings.HasPrefix(mode, "exec") {
					wantWrites = "[0x9 0x1 0x2 0x3]"
				}
				if fmt.Sprint(got) != wantWrites {
					t.Errorf("%s: writes %v, want %s", name, got, wantWrites)
				}
				gaveUp := strings.Contains(r.stderr, "memtrap lets it go, its watch disarmed")
				if gaveUp != follow {
					t.Errorf("%s: note of the child let go: %v, want %v; stderr %s", name, gaveUp, follow, tail(r.stderr))
				}
				keptGone := strings.Contains(r.stderr, "memtrap, which kept it traced for the syscall filter it added after an execve, lets it go")
				if want := strings.HasPrefix(mode, "exec") && !follow; keptGone != want {
					t.Errorf("%s: note of the kept child let go: %v, want %v; stderr %s", name, keptGone, want, tail(r.stderr))
				}
			}
		}
	}
}

// TestDebuggersUnder: strace and gdb run their programs under memtrap as
// without it (before: PTRACE_TRACEME failed with EPERM). gdb's inferior is
// a vfork child of gdb that writes environ, the word watched, after its
// PTRACE_TRACEME: let go, with the page engine's pages unprotected until it
// executes the shell.
func TestDebuggersUnder(t *testing.T) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Fatal("strace is not installed (make deps installs it)")
	}
	gdb, err := exec.LookPath("gdb")
	if err != nil {
		t.Fatal("gdb is not installed (make deps installs it)")
	}
	for _, engine := range engines(t, "page", "hw") {
		for _, follow := range []bool{false, true} {
			args := []string{"run", "--engine", engine, "--format", "json", "--backtrace", "0", "--symbol", "environ"}
			name := engine
			if follow {
				args = append(args, "--follow-forks")
				name += " --follow-forks"
			}
			r := memtrap(t, append(args, "--", strace, "-f", "-o", "/dev/null", "/bin/true")...)
			if r.code != 0 || strings.Contains(r.stderr, "strace:") {
				t.Errorf("strace, %s: exit %d; stderr %s", name, r.code, tail(r.stderr))
			}
			r = memtrap(t, append(args, "--", gdb, "-nx", "-batch", "-ex", "run", "--args", "/bin/true")...)
			if r.code != 0 || !strings.Contains(r.stdout, "exited normally") {
				t.Errorf("gdb, %s: %q exit %d; stderr %s", name, r.stdout, r.code, tail(r.stderr))
			}
			if !strings.Contains(r.stderr, "(a vfork child of") {
				t.Errorf("gdb, %s: no note of its vfork child let go: %s", name, tail(r.stderr))
			}
		}
		// Started by a shell that executes bash: environ is watched
		// again in bash's image, with a SECCOMP_RET_TRACE filter whose
		// children memtrap keeps traced; strace's and gdb's children ask
		// to be traced and are let go (before: EPERM).
		script := fmt.Sprintf("%s -f -o /dev/null /bin/true && %s -nx -batch -ex run --args /bin/true", strace, gdb)
		r := memtrap(t, "run", "--engine", engine, "--format", "json", "--backtrace", "0", "--symbol", "environ", "--", "/bin/sh", "-c", "exec bash -c '"+script+"'")
		if r.code != 0 || strings.Contains(r.stderr, "strace:") || !strings.Contains(r.stdout, "exited normally") {
			t.Errorf("strace and gdb after an execve, %s: %q exit %d; stderr %s", engine, r.stdout, r.code, tail(r.stderr))
		}
	}
}

// TestPidNamespaceCrash: the init of a PID namespace dies of SIGSEGV, as
// the kernel lets it when it is not traced (before: memtrap kept it traced
// and its fault repeated forever).
func TestPidNamespaceCrash(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/pidns.c", "-O0")
	want := native(t, prog, "initcrash")
	if want.code == 3 {
		t.Skipf("no new PID namespace here (unshare needs root): %s", want.stderr)
	}
	if want.code != 0 || want.stdout != "init killed by signal 11\n" {
		t.Fatalf("native: %q exit %d", want.stdout, want.code)
	}
	for _, engine := range engines(t, "page", "hw") {
		r := memtrap(t, "run", "--engine", engine, "--format", "json", "--backtrace", "0", "--symbol", "value", "--", prog, "initcrash")
		if r.code != 0 || r.stdout != want.stdout {
			t.Errorf("%s: %q exit %d, want %q; stderr %s", engine, r.stdout, r.code, want.stdout, tail(r.stderr))
		}
		if ws := writes(parseEvents(t, r.stderr)); len(ws) != 2 {
			t.Errorf("%s: %d writes, want 2", engine, len(ws))
		}
	}
}

// TestSignalDuringListenerWait: a thread reads into watched memory while
// it is signalled by a handler without SA_RESTART. A read that waited for
// memtrap's syscall listener when the signal came had not started, and
// must not fail with EINTR (reading /dev/zero never does natively); the
// reads are followed all the same (the watched bytes' one change, from
// the first).
func TestSignalDuringListenerWait(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/sigrestart.c", "-O1", "-pthread")
	want := native(t, prog, "1000")
	if want.code != 0 || want.stdout != "reads 1000, EINTR 0, other 0\n" {
		t.Fatalf("native: %q exit %d", want.stdout, want.code)
	}
	for _, engine := range engines(t, "page") {
		r := memtrap(t, "run", "--engine", engine, "--format", "json", "--backtrace", "0", "--symbol", "buf", "--", prog, "1000")
		if r.code != 0 || r.stdout != want.stdout {
			t.Errorf("%s: %q exit %d, want %q; stderr %s", engine, r.stdout, r.code, want.stdout, tail(r.stderr))
		}
		ws := writes(parseEvents(t, r.stderr))
		if len(ws) != 1 || ws[0].By != "kernel" || ws[0].Syscall != "readv" {
			t.Errorf("%s: writes %+v, want the one readv(2)", engine, ws)
		}
	}
}

// TestOwnListener: a program installing a seccomp filter with a listener
// of its own (a container runtime's seccomp agent), itself or in a child.
// The kernel allows one listener per filter chain and memtrap's filter
// holds it, so the call fails with EBUSY under memtrap (README, Limits):
// what is tested is that nothing else changes, that the call is not
// stopped or hurt otherwise, and that memtrap says why, once per process:
// under the default engine and the fast one (whose filter has the
// listener too).
func TestOwnListener(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/listener.c", "-O0")
	for _, c := range []struct{ mode, engine string }{{"self", "auto"}, {"child", "auto"}, {"self", "fast"}, {"child", "fast"}} {
		mode := c.mode + " " + c.engine
		if want := native(t, prog, c.mode); want.stdout != "listener ok\n" || want.code != 0 {
			t.Fatalf("native %s: %q exit %d %q", mode, want.stdout, want.code, want.stderr)
		}
		r := memtrap(t, "run", "--engine", c.engine, "--format", "json", "--symbol", "environ", "--", prog, c.mode)
		if r.stdout != "listener Device or resource busy\n" || r.code != 0 {
			t.Fatalf("%s: %q exit %d; stderr %s", mode, r.stdout, r.code, tail(r.stderr))
		}
		if n := strings.Count(r.stderr, "asked for a seccomp listener of its own"); n != 1 {
			t.Fatalf("%s: %d notes of the refused listener, want 1; stderr %s", mode, n, tail(r.stderr))
		}
	}
}
