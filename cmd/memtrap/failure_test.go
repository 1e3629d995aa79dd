package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memtrap/memtrap/internal/fixture"
)

// targetState is what memtrap may change in a target and must give back:
// its mappings and their protections, its signal actions and mask, its
// tracer, and the bytes of its code (breakpoints).
func targetState(t *testing.T, pid int) string {
	t.Helper()
	maps := mapsOf(t, pid)
	var b strings.Builder
	b.WriteString(maps)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		for _, k := range []string{"SigBlk:", "SigIgn:", "SigCgt:", "TracerPid:"} {
			if strings.HasPrefix(l, k) {
				b.WriteString(l + "\n")
			}
		}
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	for _, l := range strings.Split(maps, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || !strings.Contains(f[1], "x") || strings.HasSuffix(l, "[vsyscall]") {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		a, _ := strconv.ParseUint(lo, 16, 64)
		z, _ := strconv.ParseUint(hi, 16, 64)
		code := make([]byte, z-a)
		if _, err := mem.ReadAt(code, int64(a)); err != nil {
			fmt.Fprintf(&b, "%s: unreadable: %v\n", f[0], err)
			continue
		}
		fmt.Fprintf(&b, "%s: %x\n", f[0], crc(code))
	}
	return b.String()
}

func crc(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return h
}

// TestArmFailures makes each change memtrap makes to an attached target
// fail in turn (MEMTRAP_FAIL_AT), until arming gets through: every time,
// memtrap says what failed in one line and exits 1, and the target is as
// it was (mappings, protections, code bytes, signal actions, untraced),
// and runs on (#12, part 4). Page and hw engines, and --heap's
// breakpoints and code page.
func TestArmFailures(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/victim.c", "-O0", "-g")
	// --heap's breakpoints are int3s in attach mode (uprobes would leave
	// the kernel's "[uprobes]" page behind).
	modes := [][]string{{"--engine", "page", "--symbol", "ticks"}, {"--heap", "size=40"}}
	if hwWorks(t) {
		modes = append(modes, []string{"--engine", "hw", "--symbol", "ticks"})
	}
	target, output := startReady(t, prog, "1000000")
	pid := target.Process.Pid
	time.Sleep(20 * time.Millisecond)
	before := targetState(t, pid)
	for _, mode := range modes {
		armed, after := false, 0
		// Every change up to arming's end, then a few made while
		// watching (a write's, a breakpoint's).
		for n := 1; n <= 80 && after < 6; n++ {
			if armed {
				after++
			}
			cmd := exec.Command(memtrapBin, append([]string{"attach", fmt.Sprint(pid), "--backtrace", "0"}, mode...)...)
			cmd.Env = append(os.Environ(), fmt.Sprintf("MEMTRAP_FAIL_AT=%d", n))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(300 * time.Millisecond):
				// Watching, the failure still to come (at the detach)
				// or never.
				cmd.Process.Signal(syscall.SIGINT)
				<-done
			}
			msg := strings.TrimSpace(stderr.String())
			if strings.Contains(msg, "memtrap: watching") {
				armed = true // this failure came while watching, if at all
			}
			if !armed && (cmd.ProcessState.ExitCode() != 1 || strings.Contains(msg, "\n") ||
				!strings.Contains(msg, "injected failure (MEMTRAP_FAIL_AT="+fmt.Sprint(n)+")")) {
				t.Errorf("%v, failing change %d: exit %d, stderr %q: want 1 and one line saying what failed", mode, n, cmd.ProcessState.ExitCode(), msg)
			}
			time.Sleep(20 * time.Millisecond) // the target runs a little: a trap left armed would fire
			if syscall.Kill(pid, 0) != nil || strings.Contains(procStatus(pid), "State:\tZ") {
				t.Fatalf("%v, failing change %d: the target died (stderr %q)", mode, n, msg)
			}
			if now := targetState(t, pid); now != before {
				t.Fatalf("%v, failing change %d (stderr %q): the target changed:\n%s", mode, n, msg, diffLines(before, now))
			}
		}
		if !armed {
			t.Errorf("%v: arming never got through", mode)
		}
	}
	if err := target.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("the target is gone: %v", err)
	}
	lines := output()
	for i, l := range lines {
		if l != fmt.Sprintf("tick %d\n", i+1) {
			t.Fatalf("target output line %d: %q", i+1, l)
		}
	}
}

// diffLines lists the lines of b not in a and of a not in b.
func diffLines(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ia, ib := in(a), in(b)
	var out strings.Builder
	for _, l := range strings.Split(a, "\n") {
		if !ib[l] {
			out.WriteString("- " + l + "\n")
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if !ia[l] {
			out.WriteString("+ " + l + "\n")
		}
	}
	return out.String()
}

func procStatus(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	return string(b)
}
