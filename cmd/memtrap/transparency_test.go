package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memtrap/memtrap/internal/fixture"
)

// Each test here runs a target alone and under memtrap and requires the
// same output and status, and the exact events expected.

func TestOwnSignals(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/signals.c", "-O0")
	want := native(t, prog, "20000")
	if want.stdout != "guard faults caught 3, usr1 5, value 20000\n" {
		t.Fatalf("native run: %q", want.stdout)
	}
	for _, engine := range engines(t, "page", "hw", "fast") {
		r := memtrap(t, "run", "--engine", engine, "--format", "json", "--backtrace", "6", "--symbol", "value", "--", prog, "20000")
		if r.stdout != want.stdout || r.code != want.code {
			t.Fatalf("%s: %q (exit %d), want %q; stderr tail %s", engine, r.stdout, r.code, want.stdout, tail(r.stderr))
		}
		ws := writes(parseEvents(t, r.stderr))
		// 20000 stores in main, 5 in the SIGUSR1 handler.
		byFunc := map[string]int{}
		for _, w := range ws {
			byFunc[writer(w)]++
			if writer(w) == "on_usr1" {
				// The frames below a signal handler are the
				// interrupted code: raise, called from main.
				var below []string
				for _, f := range w.Backtrace[1:] {
					below = append(below, f.Func)
				}
				if !strings.Contains(strings.Join(below, " "), "main") {
					t.Fatalf("%s: handler's backtrace %v does not reach main", engine, below)
				}
			}
		}
		if len(ws) != 20005 || byFunc["main"] != 20000 || byFunc["on_usr1"] != 5 {
			t.Fatalf("%s: %d writes by %v", engine, len(ws), byFunc)
		}
	}
}

func TestForkChild(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/fork.c", "-O0")
	want := native(t, prog)
	for _, engine := range engines(t, "page", "hw", "fast") {
		r := memtrap(t, "run", "--engine", engine, "--format", "json", "--symbol", "value", "--", prog)
		if r.stdout != want.stdout || r.code != want.code {
			t.Fatalf("%s: %q exit %d, want %q; stderr %s", engine, r.stdout, r.code, want.stdout, r.stderr)
		}
		ws := writes(parseEvents(t, r.stderr))
		// The parent's two stores; the child goes its own way untraced.
		if len(ws) != 2 || ws[0].New != "0x1" || ws[1].New != "0x4" {
			t.Fatalf("%s: writes %+v", engine, ws)
		}
		if engine == "fast" {
			continue // it does not follow forks
		}

		// --follow-forks: the child's two stores too, with its pid, and
		// one sequence of numbers across both processes.
		r = memtrap(t, "run", "--follow-forks", "--engine", engine, "--format", "json", "--symbol", "value", "--", prog)
		if r.stdout != want.stdout || r.code != want.code {
			t.Fatalf("%s --follow-forks: %q exit %d, want %q; stderr %s", engine, r.stdout, r.code, want.stdout, r.stderr)
		}
		ws = writes(parseEvents(t, r.stderr))
		if len(ws) != 4 {
			t.Fatalf("%s --follow-forks: writes %+v", engine, ws)
		}
		parent, child := ws[0].Pid, ws[1].Pid
		for i, w := range []struct {
			pid      int
			old, new string
			fn       string
		}{{parent, "0x0", "0x1", "main"}, {child, "0x1", "0x2", "main"}, {child, "0x2", "0x3", "main"}, {parent, "0x1", "0x4", "main"}} {
			if ws[i].Seq != i+1 || ws[i].Pid != w.pid || ws[i].Old != w.old || ws[i].New != w.new || writer(ws[i]) != w.fn {
				t.Errorf("%s --follow-forks: write %d %+v, want pid %d %s -> %s", engine, i+1, ws[i], w.pid, w.old, w.new)
			}
		}
		if parent == child {
			t.Errorf("%s --follow-forks: child writes carry the parent's pid %d", engine, parent)
		}
	}
}

func TestGroupStop(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/stopcont.c", "-O0")
	cmd := exec.Command(memtrapBin, "run", "--engine", "page", "--format", "json", "--symbol", "value", "--", prog)
	out, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 4)
	go func() {
		rd := bufio.NewReader(out)
		for {
			l, err := rd.ReadString('\n')
			if err != nil {
				close(lines)
				return
			}
			lines <- l
		}
	}()
	if l := <-lines; l != "stopping\n" {
		t.Fatalf("target said %q", l)
	}
	pid := 0
	for i := 0; i < 200 && pid == 0; i++ {
		pid = childOf(cmd.Process.Pid)
		time.Sleep(5 * time.Millisecond)
	}
	// The target must really be stopped, as it would be without memtrap
	// (ps shows 't', traced, rather than 'T': the group-stop is held with
	// PTRACE_LISTEN).
	time.Sleep(200 * time.Millisecond)
	if s := state(pid); s != "T" && s != "t" {
		t.Fatalf("target state %q, want stopped", s)
	}
	select {
	case l := <-lines:
		t.Fatalf("target ran on while stopped: %q", l)
	case <-time.After(100 * time.Millisecond):
	}
	syscall.Kill(pid, syscall.SIGCONT)
	if l := <-lines; l != "continued\n" {
		t.Fatalf("after SIGCONT the target said %q", l)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("memtrap: %v; stderr %s", err, stderr.String())
	}
	ws := writes(parseEvents(t, stderr.String()))
	if len(ws) != 2 || ws[1].New != "0x2" {
		t.Fatalf("writes %+v", ws)
	}
}

func state(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	return s[i+2 : i+3]
}

func TestGoAtomics(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/atomics.go")
	want := native(t, prog)
	if want.stdout != "10000\n" {
		t.Fatalf("native: %q", want.stdout)
	}
	for _, engine := range engines(t, "page", "hw", "fast") {
		// The fast engine: Go's runtime sets its SIGSEGV handler after
		// the agent's, and must get its own back when it reads it.
		r := memtrap(t, "run", "--engine", engine, "--format", "json", "--backtrace", "2", "--symbol", "main.counter", "--", prog)
		if r.stdout != want.stdout || r.code != 0 {
			t.Fatalf("%s: %q exit %d; stderr %s", engine, r.stdout, r.code, tail(r.stderr))
		}
		ws := writes(parseEvents(t, r.stderr))
		if len(ws) != 10000 {
			t.Fatalf("%s: %d writes, want 10000", engine, len(ws))
		}
		if f := ws[0].Backtrace[0]; f.Func != "main.worker" || !strings.HasSuffix(f.File, "atomics.go") ||
			f.Line != lineOf(t, "cmd/memtrap/testdata/atomics.go", "atomic.AddInt64(&counter, 1)") {
			t.Fatalf("%s: frame 0 %+v", engine, f)
		}
		if engine == "hw" {
			// Debug registers trap after the store; another thread's
			// store may land before the trap is read, so values are
			// not checked here (gdb's hardware watchpoints share this).
			continue
		}
		seen := map[string]bool{}
		for _, w := range ws {
			seen[w.New] = true
		}
		for i := 1; i <= 10000; i++ {
			if !seen[fmt.Sprintf("%#x", i)] {
				t.Fatalf("%s: no write of %d", engine, i)
			}
		}
	}
}

// TestKernelWrites: with --kernel-writes, read(2) into a watched buffer
// succeeds as without memtrap and is reported as a kernel write.
func TestKernelWrites(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/kread.c", "-O0")
	want := native(t, prog)
	if want.stdout != "read 5 bytes: Hello, fstat 0\n" {
		t.Fatalf("native: %q", want.stdout)
	}
	for _, engine := range []string{"page", "fast"} {
		r := memtrap(t, "run", "--kernel-writes", "--engine", engine, "--format", "json", "--symbol", "buf", "--symbol", "st", "--", prog)
		if r.stdout != want.stdout || r.code != 0 {
			t.Fatalf("%s: %q exit %d; stderr %s", engine, r.stdout, r.code, r.stderr)
		}
		ws := writes(parseEvents(t, r.stderr))
		if len(ws) != 3 || ws[0].Syscall != "read" || ws[0].By != "kernel" || ws[0].Size != 5 || ws[0].New != "0x6f6c6c6568" ||
			writer(ws[0]) != "read" || len(ws[0].Backtrace) < 2 || ws[0].Backtrace[1].Func != "main" ||
			ws[1].Region != "st" || ws[1].By != "kernel" || !strings.Contains(ws[1].Syscall, "stat") ||
			ws[2].By != "user" || ws[2].New != "0x48" {
			t.Fatalf("%s: writes %+v", engine, ws)
		}
		// Turned off, the kernel's write fails as the kernel sees the page.
		r = memtrap(t, "run", "--kernel-writes=false", "--engine", engine, "--format", "json", "--symbol", "buf", "--", prog)
		if !strings.HasPrefix(r.stdout, "read -1 bytes") {
			t.Fatalf("%s, with --kernel-writes=false: %q", engine, r.stdout)
		}
	}
}

// TestSigsetjmpOnWatchedPage: the target's SIGSEGV handler survives trapped
// writes made while SIGSEGV is blocked, and its saved signal mask (written
// by the kernel) reaches its jmp_buf.
func TestSigsetjmpOnWatchedPage(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/sigjmp.c", "-O0")
	want := native(t, prog)
	for _, engine := range []string{"page", "fast"} {
		r := memtrap(t, "run", "--kernel-writes", "--engine", engine, "--format", "json", "--symbol", "value", "--", prog)
		if r.stdout != want.stdout || r.code != want.code {
			t.Fatalf("%s: %q exit %d, want %q; stderr %s", engine, r.stdout, r.code, want.stdout, tail(r.stderr))
		}
	}
}

// TestPendingSymbol: a symbol of a library loaded later with dlopen stays
// pending and is armed when the library is mapped.
func TestPendingSymbol(t *testing.T) {
	lib := fixture.Build(t, "cmd/memtrap/testdata/plugin.c", "-O0", "-shared", "-fPIC")
	libPath := filepath.Join(t.TempDir(), "libplugin.so")
	if b, err := os.ReadFile(lib); err != nil || os.WriteFile(libPath, b, 0o755) != nil {
		t.Fatal(err)
	}
	prog := fixture.Build(t, "cmd/memtrap/testdata/dlmain.c", "-O0", "-ldl")
	want := native(t, prog, libPath)
	if want.stdout != "counter 5\n" {
		t.Fatalf("native: %q %q", want.stdout, want.stderr)
	}
	for _, args := range [][]string{
		{"--symbol", "libplugin.so:plugin_counter"},
		{"--pending", "--symbol", "plugin_counter"},
	} {
		a := append(append([]string{"run", "--format", "json"}, args...), "--", prog, libPath)
		r := memtrap(t, a...)
		if r.stdout != want.stdout || r.code != 0 {
			t.Fatalf("%v: %q exit %d; stderr %s", args, r.stdout, r.code, r.stderr)
		}
		evs := parseEvents(t, r.stderr)
		ws := writes(evs)
		if len(ws) != 5 || writer(ws[0]) != "plugin_bump" || ws[4].New != "0x5" {
			t.Fatalf("%v: writes %+v", args, ws)
		}
		if !strings.Contains(r.stderr, "pending symbol") {
			t.Fatalf("%v: no note of the pending symbol being armed: %s", args, r.stderr)
		}
	}
	// With a global of the program watched from the start as well, the
	// first filter's windows once covered the program only: the library,
	// mapped far from it, took a second filter whose calls need a tracer,
	// so a child forked after the dlopen stayed traced by memtrap and its
	// PTRACE_TRACEME failed (EPERM).
	want = native(t, prog, libPath, "child")
	if want.stdout != "counter 5\ntraceme ok\n" || want.code != 0 {
		t.Fatalf("native: %q exit %d %q", want.stdout, want.code, want.stderr)
	}
	r := memtrap(t, "run", "--format", "json", "--symbol", "loaded", "--symbol", "libplugin.so:plugin_counter", "--", prog, libPath, "child")
	if r.stdout != want.stdout || r.code != 0 {
		t.Fatalf("exe and library symbol, child: %q exit %d; stderr %s", r.stdout, r.code, tail(r.stderr))
	}
	ws := writes(parseEvents(t, r.stderr))
	if len(ws) != 6 || ws[0].Region != "loaded" || ws[0].New != "0x1" || writer(ws[1]) != "plugin_bump" || ws[5].New != "0x5" {
		t.Fatalf("exe and library symbol: writes %+v", ws)
	}
}

// TestJava: a JVM (threads, JIT, implicit null checks through its own
// SIGSEGV handler) runs under memtrap with a region armed, with the same
// output and exit status.
func TestJava(t *testing.T) {
	javac, err := exec.LookPath("javac")
	if err != nil {
		t.Fatal("javac not found: scripts/deps installs a JDK (make test runs it)")
	}
	dir := t.TempDir()
	if out, err := exec.Command(javac, "-d", dir, filepath.Join(fixture.Root(), "cmd/memtrap/testdata/java/Hello.java")).CombinedOutput(); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	want := native(t, "java", "-cp", dir, "Hello")
	if want.code != 7 || want.stdout != "sum 23999980 npe 1000\n" {
		t.Fatalf("native: %q exit %d", want.stdout, want.code)
	}
	for _, engine := range engines(t, "page", "hw", "fast") {
		r := memtrap(t, "run", "--engine", engine, "--format", "json", "--symbol", "environ", "--", "java", "-cp", dir, "Hello")
		if r.stdout != want.stdout || r.code != want.code {
			t.Fatalf("%s: %q exit %d, want %q %d; stderr %s", engine, r.stdout, r.code, want.stdout, want.code, tail(r.stderr))
		}
		if end := last(t, parseEvents(t, r.stderr)); end.Event != "exit" || *end.Code != 7 {
			t.Fatalf("%s: last event %+v", engine, end)
		}
	}
}

// TestExec: after execve the --symbol is resolved and armed again in the
// new image (page and hw engines; the fast engine stops watching, and
// says so).
func TestExec(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/reexec.c", "-O0")
	want := native(t, prog)
	for _, engine := range engines(t, "page", "hw") {
		r := memtrap(t, "run", "--engine", engine, "--format", "json", "--symbol", "value", "--", prog)
		if r.stdout != want.stdout || r.code != 0 {
			t.Fatalf("%s: %q exit %d; stderr %s", engine, r.stdout, r.code, r.stderr)
		}
		ws := writes(parseEvents(t, r.stderr))
		if len(ws) != 3 || ws[0].New != "0x1" || ws[1].New != "0x2" || ws[2].New != "0x3" || ws[1].Old != "0x0" {
			t.Fatalf("%s: writes %+v", engine, ws)
		}
		if !strings.Contains(r.stderr, "called execve") || !strings.Contains(r.stderr, "new image") {
			t.Fatalf("%s: no exec notes: %s", engine, r.stderr)
		}
	}
	// The fast engine's agent goes with the old image: the new one runs
	// as without memtrap (its filter's traps are for the old code), and
	// memtrap says that nothing more is watched.
	r := memtrap(t, "run", "--engine", "fast", "--format", "json", "--symbol", "value", "--", prog)
	if r.stdout != want.stdout || r.code != 0 {
		t.Fatalf("fast: %q exit %d; stderr %s", r.stdout, r.code, r.stderr)
	}
	if ws := writes(parseEvents(t, r.stderr)); len(ws) != 1 || ws[0].New != "0x1" || strings.Count(r.stderr, "calls execve") != 1 {
		t.Fatalf("fast: writes %+v; stderr %s", ws, r.stderr)
	}
}

// lineOf is the 1-based line of the first line of src containing s.
func lineOf(t *testing.T, src, s string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixture.Root(), src))
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			return i + 1
		}
	}
	t.Fatalf("%s has no %q", src, s)
	return 0
}

// TestOptimizedMemsetBacktrace: glibc's memset (no frame pointer) writes;
// CFI unwinding shows memset, then the caller with file:line, then its
// callers, in order.
func TestOptimizedMemsetBacktrace(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/memset.c", "-O2", "-g", "-fomit-frame-pointer")
	want := native(t, prog)
	r := memtrap(t, "run", "--format", "json", "--symbol", "buf", "--", prog)
	if r.stdout != want.stdout || r.code != 0 {
		t.Fatalf("%q exit %d; stderr %s", r.stdout, r.code, tail(r.stderr))
	}
	ws := writes(parseEvents(t, r.stderr))
	if len(ws) == 0 {
		t.Fatal("no writes")
	}
	covered := map[uint64]bool{}
	for _, w := range ws {
		// glibc's vector stores overlap at the tail: count bytes once.
		for i := uint64(0); i < w.Size; i++ {
			covered[w.Offset+i] = true
		}
		bt := w.Backtrace
		if len(bt) < 4 || !strings.Contains(bt[0].Func, "memset") || bt[1].Func != "clear_record" ||
			bt[2].Func != "process" || bt[3].Func != "main" {
			t.Fatalf("backtrace %+v", bt)
		}
		if !strings.HasSuffix(bt[1].File, "testdata/memset.c") || bt[1].Line != lineOf(t, "cmd/memtrap/testdata/memset.c", "memset(p, c, n)") {
			t.Fatalf("clear_record frame at %s:%d", bt[1].File, bt[1].Line)
		}
	}
	for i := uint64(0); i < 200; i++ {
		if !covered[i] {
			t.Fatalf("byte %d of buf not reported written", i)
		}
	}
	if len(covered) != 200 {
		t.Fatalf("memset reported on %d bytes of buf, want 200", len(covered))
	}
}

// TestCppMethod: a C++ method's frame reads as gdb shows it.
func TestCppMethod(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/method.cc", "-O0", "-g")
	r := memtrap(t, "run", "--format", "json", "--symbol", "account", "--", prog)
	if r.stdout != "60\n" || r.code != 0 {
		t.Fatalf("%q exit %d; stderr %s", r.stdout, r.code, r.stderr)
	}
	ws := writes(parseEvents(t, r.stderr))
	if len(ws) != 3 || writer(ws[0]) != "ns::Account::deposit(int)" || ws[2].New != "0x3c" {
		t.Fatalf("writes %+v", ws)
	}
	if ws[0].Backtrace[0].Line != lineOf(t, "cmd/memtrap/testdata/method.cc", "balance += amount") {
		t.Fatalf("frame 0 at line %d", ws[0].Backtrace[0].Line)
	}
}

// TestDWARFSymbols: --symbol takes a struct member from DWARF (its type's
// size as the length) and module:name.
func TestDWARFSymbols(t *testing.T) {
	prog := fixture.Build(t, "examples/stomp.c", "-O0", "-g", "-fno-omit-frame-pointer")
	r := memtrap(t, "run", "--format", "json", "--symbol", "session.token", "--", prog)
	evs := parseEvents(t, r.stderr)
	ws := writes(evs)
	if r.code != 3 || len(ws) != 7 || ws[0].Region != "session.token" || ws[0].Size != 8 || writer(ws[0]) != "issue_token" {
		t.Fatalf("exit %d, writes %+v", r.code, ws)
	}
	r = memtrap(t, "run", "--format", "json", "--symbol", "libc.so.6:environ", "--", prog)
	if r.code != 3 || parseEvents(t, r.stderr)[0].Event != "watch" {
		t.Fatalf("libc.so.6:environ: exit %d, %s", r.code, r.stderr)
	}
}

// TestSigtrapHandlerSurvives: memtrap's own traps (debug registers, the
// single-stepper) taken while the target blocks SIGTRAP make the kernel
// reset the target's SIGTRAP handler; memtrap puts it back, and also knows
// a handler installed after arming.
func TestSigtrapHandlerSurvives(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/trapblock.c", "-O0")
	want := native(t, prog)
	if want.stdout != "value 3, handler ran 3 times, SIGTRAP unblocked\n" {
		t.Fatalf("native: %q", want.stdout)
	}
	modes := [][]string{{"--engine", "page", "--completer", "step"}}
	if hwWorks(t) {
		modes = append(modes, []string{"--engine", "hw"})
	}
	for _, args := range modes {
		r := memtrap(t, append(append([]string{"run", "--format", "json"}, args...), "--symbol", "value", "--", prog)...)
		if r.stdout != want.stdout || r.code != want.code {
			t.Fatalf("%v: %q exit %d; stderr %s", args, r.stdout, r.code, r.stderr)
		}
		ws := writes(parseEvents(t, r.stderr))
		if len(ws) != 3 || ws[2].New != "0x3" || writer(ws[0]) != "main" {
			t.Fatalf("%v: writes %+v", args, ws)
		}
	}
	if !hwWorks(t) {
		return
	}
	// Attached on the hw engine, the guard's own rt_sigaction (putting
	// the handler back) must not be stopped by the kernel's gate of the
	// target's calls: its SIGSTOP would reach the target.
	target, in, rd := startWaiting(t, prog)
	mt, mrd, evs := attachJSON(t, target.Process.Pid, "--engine", "hw", "--backtrace", "0", "--symbol", "value")
	io.WriteString(in, "go\n")
	done := make(chan string, 1)
	go func() { l, _ := rd.ReadString('\n'); done <- l }()
	select {
	case l := <-done:
		if l != want.stdout {
			t.Fatalf("attached: %q, want %q", l, want.stdout)
		}
	case <-time.After(20 * time.Second):
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", target.Process.Pid))
		t.Fatalf("attached: the target did not finish: %s", st)
	}
	rest, _ := readAll(mrd)
	evs = append(evs, parseEvents(t, rest)...)
	mt.Wait()
	if err := target.Wait(); err != nil {
		t.Fatalf("target: %v", err)
	}
	if ws := writes(evs); len(ws) != 3 || ws[2].New != "0x3" {
		t.Fatalf("attached: writes %+v", ws)
	}
}

// TestFollowManyForks: --follow-forks over 50 children, launched (every
// write of every process, once) and attached then detached half-way (the
// target and its children finish untraced and unharmed).
func TestFollowManyForks(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/forker.c", "-O0")
	for _, engine := range engines(t, "page", "hw") {
		cmd := exec.Command(memtrapBin, "run", "--engine", engine, "--backtrace", "0", "--format", "json", "--follow-forks", "--symbol", "value", "--", prog)
		cmd.Stdin = strings.NewReader("go\n")
		r := runCmd(t, cmd)
		if r.stdout != "ready\ndone 49\n" || r.code != 0 {
			t.Fatalf("%s: %q exit %d; stderr %s", engine, r.stdout, r.code, tail(r.stderr))
		}
		byPid := map[int]int{}
		for _, w := range writes(parseEvents(t, r.stderr)) {
			byPid[w.Pid]++
		}
		parent := 0
		for pid, n := range byPid {
			switch n {
			case 50:
				parent = pid
			case 2:
			default:
				t.Errorf("%s: process %d made %d writes", engine, pid, n)
			}
		}
		if parent == 0 || len(byPid) != 51 {
			t.Errorf("%s: writes by process: %v", engine, byPid)
		}
	}

	target := exec.Command(prog)
	in, _ := target.StdinPipe()
	out, _ := target.StdoutPipe()
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(out)
	if l, _ := rd.ReadString('\n'); l != "ready\n" {
		target.Process.Kill()
		t.Fatalf("target said %q", l)
	}
	mt, mrd, evs := attachJSON(t, target.Process.Pid, "--follow-forks", "--backtrace", "0", "--symbol", "value")
	io.WriteString(in, "go\n")
	for len(writes(evs)) < 20 {
		l, err := mrd.ReadString('\n')
		if err != nil {
			t.Fatalf("memtrap output ended: %v", err)
		}
		evs = append(evs, parseEvents(t, l)...)
	}
	mt.Process.Signal(syscall.SIGINT)
	rest, _ := readAll(mrd)
	evs = append(evs, parseEvents(t, rest)...)
	if err := mt.Wait(); err != nil {
		t.Fatalf("memtrap: %v", err)
	}
	if end := last(t, evs); end.Event != "detach" {
		t.Fatalf("last event %+v", end)
	}
	done, _ := io.ReadAll(rd)
	if err := target.Wait(); err != nil || string(done) != "done 49\n" {
		t.Fatalf("target after detach: %v, %q", err, done)
	}
}

// TestShellChild: `sh -c PROG` vforks and executes PROG. That child
// inherited memtrap's syscall filter, so its syscalls must keep working
// (it used to be let go, and readv and recvmsg, which the filter always
// stops, failed with ENOSYS); and with --follow-forks its new image is
// watched, its writes symbolized against its own program.
func TestShellChild(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/kall.c", "-O0")
	want := native(t, prog)
	shell := prog + "; echo shell-done"
	r := memtrap(t, "run", "--format", "json", "--symbol", "environ", "--", "/bin/sh", "-c", shell)
	if r.stdout != want.stdout+"shell-done\n" || r.code != 0 {
		t.Fatalf("sh -c: %q exit %d, want %q; stderr %s", r.stdout, r.code, want.stdout+"shell-done\n", tail(r.stderr))
	}

	r = memtrap(t, "run", "--format", "json", "--backtrace", "2", "--follow-forks", "--pending", "--symbol", "box", "--", "/bin/sh", "-c", shell)
	if r.stdout != want.stdout+"shell-done\n" || r.code != 0 {
		t.Fatalf("sh -c, followed: %q exit %d; stderr %s", r.stdout, r.code, tail(r.stderr))
	}
	evs := parseEvents(t, r.stderr)
	checkKall(t, evs)
	root := 0
	for _, e := range evs {
		if e.Event == "watch" {
			root = e.Pid
		}
	}
	for _, w := range writes(evs) {
		inProg := false
		for _, f := range w.Backtrace {
			inProg = inProg || f.Module == prog && f.Func == "main"
		}
		if root == 0 || w.Pid == root || !inProg {
			t.Fatalf("write by pid %d (the shell is %d), frames %+v: want the child, called from main in %s", w.Pid, root, w.Backtrace, prog)
		}
	}
}

// TestFollowForkThenExec: the first process forks a child that writes the
// watched counter 2000 times, and executes a new image meanwhile, which
// writes it 5 times. The new image runs to its entry point while the child
// traps away: its stops must wait for the main loop, not be taken (and
// mishandled) by the run to the entry point. Every write is reported once,
// by the right process.
func TestFollowForkThenExec(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/forkexec.c", "-O0")
	const want = "execd counter 5, child reaped status 3\n"
	if r := native(t, prog); r.stdout != want {
		t.Fatalf("native: %q", r.stdout)
	}
	for i := 0; i < 3; i++ {
		r := memtrap(t, "run", "--format", "json", "--backtrace", "0", "--follow-forks", "--symbol", "counter", "--", prog)
		if r.stdout != want || r.code != 0 {
			t.Fatalf("%q exit %d; stderr %s", r.stdout, r.code, tail(r.stderr))
		}
		evs := parseEvents(t, r.stderr)
		root := evs[0].Pid
		last := map[bool]uint64{}
		n := map[bool]int{}
		for _, w := range writes(evs) {
			var v uint64
			fmt.Sscanf(w.New, "0x%x", &v)
			child := w.Pid != root
			if v != last[child]+1 {
				t.Fatalf("run %d: write %+v after %d (child %v): missed or doubled", i, w, last[child], child)
			}
			last[child] = v
			n[child]++
		}
		if n[true] != 2000 || n[false] != 5 {
			t.Fatalf("run %d: %d writes by the child, %d by the new image; want 2000 and 5", i, n[true], n[false])
		}
	}
}

// TestIOURingNote: io_uring requests are not followed (their buffers are
// named in shared rings, and SQPOLL needs no system call); a target that
// sets up a ring gets one note saying so (whether the kernel lets it or
// not: the call is seen at its entry), under the default engine and the
// fast one.
func TestIOURingNote(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/iouring.c", "-O0")
	want := native(t, prog)
	for _, engine := range []string{"auto", "fast"} {
		r := memtrap(t, "run", "--engine", engine, "--format", "json", "--symbol", "environ", "--", prog)
		if r.stdout != want.stdout || r.code != 0 {
			t.Fatalf("%s: %q exit %d; stderr %s", engine, r.stdout, r.code, r.stderr)
		}
		if n := strings.Count(r.stderr, "uses io_uring, which memtrap does not follow"); n != 1 {
			t.Fatalf("%s: %d io_uring notes, want 1: %s", engine, n, r.stderr)
		}
	}
}

// TestPendingSignals: standard and real-time signals, sent to the process
// and to the thread, pending at once while memtrap completes a trapped
// write (emulated or single-stepped) or delivers another signal through
// its signal-frame path (the alternate stack's last page watched), are all
// delivered, as many as natively, in the kernel's order, each real-time
// signal's values in the order sent; every store of their handlers is
// reported.
func TestPendingSignals(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/sigqueue.c", "-O0", "-pthread")
	const rounds = 40
	want := native(t, prog, fmt.Sprint(rounds))
	first, burst, _ := strings.Cut(want.stdout, "\n")
	if first != fmt.Sprintf("flood: usr1 %d usr2 %d rt0 %d rt1 %d misorder 0", rounds, rounds, 3*rounds, 3*rounds) ||
		!strings.HasPrefix(burst, "burst: order ") || len(burst) != len("burst: order 12345678 misorder 0\n") || want.code != 0 {
		t.Fatalf("native run: %q exit %d", want.stdout, want.code)
	}
	stack := []string{"--symbol", "altstk+61440", "--len", "4096"}
	modes := [][]string{
		{"--engine", "page"},
		{"--engine", "page", "--completer", "step"},
		append([]string{"--engine", "page"}, stack...),
		append([]string{"--engine", "page", "--completer", "step"}, stack...),
		{"--engine", "page", "--kernel-writes=false"},
	}
	if hwWorks(t) {
		modes = append(modes, []string{"--engine", "hw"})
	}
	for _, m := range modes {
		args := append(append([]string{"run", "--format", "json", "--backtrace", "1"}, m...), "--symbol", "value", "--", prog, fmt.Sprint(rounds))
		r := memtrap(t, args...)
		if r.stdout != want.stdout || r.code != want.code {
			t.Fatalf("%v: %q exit %d, want %q; stderr %s", m, r.stdout, r.code, want.stdout, tail(r.stderr))
		}
		// Each handler stores twice: 8 signals a round, and 8 in the burst.
		n := 0
		for _, w := range writes(parseEvents(t, r.stderr)) {
			if w.Region == "value" && writer(w) == "on_sig" {
				n++
			}
		}
		if n != 2*(8*rounds+8) {
			t.Errorf("%v: %d stores of the handlers reported, want %d", m, n, 2*(8*rounds+8))
		}
	}
}

// TestSignalPair: a thread sends SIGUSR1 and then SIGUSR2 to its process,
// whose other thread waits for both, and a thread waits in one sigsuspend
// for both of its own; the second signal arrives while memtrap works on
// the first (asks the thread for its alternate stack), and is delivered
// as natively: in the same wait, nested, with the same masks.
func TestSignalPair(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/sigpair.c", "-O0", "-pthread")
	want := native(t, prog)
	if want.stdout != "pair: usr1 1 usr2 1\nsuspend: handlers 2[12]1[1], blocked again 1\n" || want.code != 0 {
		t.Fatalf("native run: %q exit %d", want.stdout, want.code)
	}
	modes := [][]string{{"--engine", "page"}, {"--engine", "page", "--kernel-writes=false"}}
	if hwWorks(t) {
		modes = append(modes, []string{"--engine", "hw"})
	}
	for _, m := range modes {
		r := memtrap(t, append(append([]string{"run", "--format", "json"}, m...), "--symbol", "value", "--", prog)...)
		if r.stdout != want.stdout || r.code != want.code {
			t.Fatalf("%v: %q exit %d, want %q; stderr %s", m, r.stdout, r.code, want.stdout, tail(r.stderr))
		}
		if ws := writes(parseEvents(t, r.stderr)); len(ws) != 2 || ws[0].New != "0x1" || ws[1].New != "0x2" {
			t.Errorf("%v: writes %+v", m, ws)
		}
	}
}

// TestTargetLeavesChildren: a target that exits leaving a child and a
// daemon running ends the run, as natively, with its output and status;
// the two go on untraced (memtrap traced them only for the syscall filter
// they inherited). With --follow-forks, the run ends when the last
// followed process has exited, every write of each reported.
func TestTargetLeavesChildren(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/orphan.c", "-O0")
	for _, engine := range engines(t, "page", "hw") {
		r := memtrap(t, "run", "--engine", engine, "--format", "json", "--symbol", "value", "--", prog, "spin")
		var child, daemon int
		n, _ := fmt.Sscanf(r.stdout, "child %d daemon %d\n", &child, &daemon)
		for _, pid := range []int{child, daemon} {
			if pid > 0 {
				t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
			}
		}
		if n != 2 || r.code != 0 {
			t.Fatalf("%s: %q exit %d; stderr %s", engine, r.stdout, r.code, tail(r.stderr))
		}
		for _, pid := range []int{child, daemon} {
			if tp, err := tracerPid(pid); err != nil || tp != 0 {
				t.Errorf("%s: process %d left running: tracer %d (%v), want none", engine, pid, tp, err)
			}
		}
		evs := parseEvents(t, r.stderr)
		if ws := writes(evs); len(ws) != 2 || ws[0].New != "0x1" || ws[1].New != "0x2" {
			t.Errorf("%s: writes %+v", engine, ws)
		}
		if strings.Contains(r.stderr, "ENOSYS") {
			t.Errorf("%s: children left with a syscall filter no one answers: %s", engine, tail(r.stderr))
		}

		// Once memtrap has ended, the daemon's calls that memtrap's
		// syscall filter stops still run (its keeper answers them).
		late := filepath.Join(t.TempDir(), "late")
		r = memtrap(t, "run", "--engine", engine, "--format", "json", "--symbol", "value", "--", prog, "late", late)
		if n, _ := fmt.Sscanf(r.stdout, "child %d daemon %d\n", &child, &daemon); n != 2 || r.code != 0 {
			t.Fatalf("%s late: %q exit %d; stderr %s", engine, r.stdout, r.code, tail(r.stderr))
		}
		var got []byte
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if got, _ = os.ReadFile(late); strings.HasSuffix(string(got), "\n") {
				break
			}
		}
		if string(got) != "readv 16 ok\n" {
			t.Errorf("%s: the daemon's readv after memtrap ended: %q, want \"readv 16 ok\"", engine, got)
		}

		// memtrap killed (MEMTRAP_DIE_AT_NOTIFY, a testing aid) just
		// after its listener received the daemon's readv, before it
		// answered: the keeper answers that call too (the ledger of
		// received calls), and the daemon's readv runs.
		held := filepath.Join(t.TempDir(), "held")
		t.Cleanup(func() { killByArg(held) })
		cmd := exec.Command(memtrapBin, "run", "--engine", engine, "--format", "json", "--symbol", "value", "--", prog, "held", held)
		cmd.Env = append(os.Environ(), "MEMTRAP_DIE_AT_NOTIFY=1")
		if r := runCmd(t, cmd); r.code != -1 { // killed by a signal
			t.Fatalf("%s held: memtrap did not die at the daemon's readv: exit %d; stderr %s", engine, r.code, tail(r.stderr))
		}
		got = nil
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if got, _ = os.ReadFile(held); strings.HasSuffix(string(got), "\n") {
				break
			}
		}
		if string(got) != "readv 16 ok\n" {
			t.Errorf("%s: the daemon's readv that memtrap received as it died: %q, want \"readv 16 ok\" (it waits for an answer)", engine, got)
		}

		r = memtrap(t, "run", "--engine", engine, "--format", "json", "--follow-forks", "--symbol", "value", "--", prog, "brief")
		if n, _ := fmt.Sscanf(r.stdout, "child %d daemon %d\n", &child, &daemon); n != 2 || r.code != 0 {
			t.Fatalf("%s --follow-forks: %q exit %d; stderr %s", engine, r.stdout, r.code, tail(r.stderr))
		}
		byPid := map[int]int{}
		for _, w := range writes(parseEvents(t, r.stderr)) {
			byPid[w.Pid]++
		}
		if len(byPid) != 3 || byPid[child] != 1 || byPid[daemon] != 1 {
			t.Errorf("%s --follow-forks: writes by pid %v, want 2 by the target, 1 by %d and 1 by %d", engine, byPid, child, daemon)
		}
		for _, pid := range []int{child, daemon} {
			if !strings.Contains(r.stderr, fmt.Sprintf("process %d exited (status 0)", pid)) {
				t.Errorf("%s --follow-forks: no exit of %d reported: %s", engine, pid, tail(r.stderr))
			}
		}
	}
}

// killByArg kills every process with arg in its command line (a test's
// own leftovers: the path of a temporary file).
func killByArg(arg string) {
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline")); err == nil && bytes.Contains(b, []byte(arg)) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
