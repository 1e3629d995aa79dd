package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memtrap/memtrap/internal/fixture"
)

var memtrapBin string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "cmd/memtrap tests: not running as root; attach tests need ptrace rights")
	}
	dir, err := os.MkdirTemp("", "memtrap-bin")
	if err != nil {
		panic(err)
	}
	memtrapBin = filepath.Join(dir, "memtrap")
	// The DWARF indexes memtrap keeps between runs go here, not in the
	// user's cache.
	os.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	if out, err := exec.Command("go", "build", "-o", memtrapBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building memtrap: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// memtrap runs the real binary, as a user would.
func memtrap(t *testing.T, args ...string) result {
	t.Helper()
	return runCmd(t, exec.Command(memtrapBin, args...))
}

// native runs a program alone, for comparison.
func native(t *testing.T, prog string, args ...string) result {
	t.Helper()
	return runCmd(t, exec.Command(prog, args...))
}

// cmdTimeout bounds one command of a test: a hung memtrap fails its test
// with what it printed, instead of holding the whole run until go test's
// own timeout.
const cmdTimeout = 3 * time.Minute

func runCmd(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.WaitDelay = 5 * time.Second // a process left holding the pipes
	if err := cmd.Start(); err != nil {
		t.Fatalf("running %s: %v", cmd.Path, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(cmdTimeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s %v did not finish in %v; stderr: %s", cmd.Path, cmd.Args[1:], cmdTimeout, tail(e.String()))
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %s: %v", cmd.Path, err)
	}
	return result{o.String(), e.String(), code}
}

type frame struct {
	PC     string `json:"pc"`
	Func   string `json:"func"`
	Offset uint64 `json:"offset"`
	Module string `json:"module"`
	File   string `json:"file"`
	Line   int    `json:"line"`
	Args   []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"args"`
}

type event struct {
	Event     string  `json:"event"`
	Schema    int     `json:"schema"`
	Seq       int     `json:"seq"`
	Pid       int     `json:"pid"`
	Tid       int     `json:"tid"`
	Addr      string  `json:"addr"`
	Size      uint64  `json:"size"`
	Region    string  `json:"region"`
	Offset    uint64  `json:"offset"`
	Block     int     `json:"block"`
	Kind      string  `json:"kind"`
	Fn        string  `json:"fn"`
	Message   string  `json:"message"`
	From      string  `json:"from"`
	Old       string  `json:"old"`
	New       string  `json:"new"`
	PC        string  `json:"pc"`
	Insn      string  `json:"insn"`
	Exact     bool    `json:"exact"`
	By        string  `json:"by"`
	Syscall   string  `json:"syscall"`
	How       string  `json:"how"`
	Backtrace []frame `json:"backtrace"`
	Code      *int    `json:"code"`
	Signal    *int    `json:"signal"`
	Writes    int     `json:"writes"`
	Faults    int     `json:"faults"`
}

func parseEvents(t *testing.T, s string) []event {
	t.Helper()
	var evs []event
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		var ev event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("not JSON: %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

func writes(evs []event) []event {
	var out []event
	for _, e := range evs {
		if e.Event == "write" {
			out = append(out, e)
		}
	}
	return out
}

func last(t *testing.T, evs []event) event {
	t.Helper()
	if len(evs) == 0 {
		t.Fatal("no events")
	}
	return evs[len(evs)-1]
}

func writer(e event) string {
	if len(e.Backtrace) == 0 {
		return ""
	}
	return e.Backtrace[0].Func
}

// TestStompDemo is the README's demo: both writers of the token, with
// their values, and the program's own output and status unchanged.
func TestStompDemo(t *testing.T) {
	prog := fixture.Build(t, "examples/stomp.c", "-O0", "-g", "-fno-omit-frame-pointer")
	want := native(t, prog)
	if want.code != 3 {
		t.Fatalf("the demo should corrupt its token and exit 3, got %d", want.code)
	}
	r := memtrap(t, "run", "--format", "json", "--symbol", "session+8", "--len", "8", "--", prog)
	if r.stdout != want.stdout || r.code != want.code {
		t.Fatalf("target output/status changed under memtrap: %q %d, want %q %d\nstderr: %s", r.stdout, r.code, want.stdout, want.code, r.stderr)
	}
	evs := parseEvents(t, r.stderr)
	if evs[0].Event != "watch" || evs[0].Schema != 1 {
		t.Errorf("first event %+v: want the watch event, schema 1", evs[0])
	}
	ws := writes(evs)
	// issue_token stores the token once; set_user("administrator") copies
	// 14 bytes into an 8-byte field: bytes 8..13 land in the token, one
	// byte store each.
	if len(ws) != 7 {
		t.Fatalf("got %d writes, want 7:\n%s", len(ws), r.stderr)
	}
	if writer(ws[0]) != "issue_token" || ws[0].Old != "0x0" || ws[0].New != "0x5ec0de5ec0de" || ws[0].Size != 8 || ws[0].Offset != 0 {
		t.Errorf("first write: %+v", ws[0])
	}
	// Frame 0 shows the function's parameter, as gdb's bt does; main's
	// argc is read from its stack frame.
	if a := ws[0].Backtrace[0].Args; len(a) != 1 || a[0].Name != "token" || a[0].Value != "0x5ec0de5ec0de" {
		t.Errorf("issue_token args %+v", a)
	}
	if a := ws[0].Backtrace[1].Args; len(a) != 2 || a[0].Name != "argc" || a[0].Value != "1" {
		t.Errorf("main args %+v", a)
	}
	name := "administrator\x00"
	for i, w := range ws[1:] {
		if writer(w) != "set_user" || w.Size != 1 || w.Offset != uint64(i) {
			t.Errorf("write %d: %+v", i+2, w)
		}
		if want := fmt.Sprintf("%#x", name[8+i]); w.New != want {
			t.Errorf("write %d: new %s, want %s", i+2, w.New, want)
		}
		if len(w.Backtrace) < 2 || w.Backtrace[1].Func != "main" {
			t.Errorf("write %d: backtrace %+v, want set_user <- main", i+2, w.Backtrace)
		}
	}
	end := last(t, evs)
	if end.Event != "exit" || end.Code == nil || *end.Code != 3 || end.Writes != 7 {
		t.Errorf("last event %+v", end)
	}
}

func TestTextReport(t *testing.T) {
	prog := fixture.Build(t, "examples/stomp.c", "-O0", "-g", "-fno-omit-frame-pointer")
	r := memtrap(t, "run", "--symbol", "session+8", "--len", "8", "--", prog)
	for _, want := range []string{
		"#1 tid ", " wrote session.token (session+8+0, 0x", "8 bytes: 0x0 -> 0x5ec0de5ec0de",
		"mov qword ptr [rip+", "#0  issue_token+0x", "main+0x",
		"#7 tid ", "1 byte: 0x5e -> 0x0\n",
		"memtrap: 7 writes reported,", "target exited with status 3",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("text report lacks %q:\n%s", want, r.stderr)
		}
	}
}

// TestSamePage: writes to other data on the watched page are never reported.
func TestSamePage(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/samepage.c", "-O0", "-fno-omit-frame-pointer")
	want := native(t, prog)
	for _, c := range []struct {
		engine string
		faults int
	}{
		{"page", 1010}, // every neighbour write traps, silently (and crt's own bss writes at exit)
		{"hw", 10},     // debug registers never see the neighbour
	} {
		if c.engine == "hw" && !hwWorks(t) {
			continue
		}
		r := memtrap(t, "run", "--engine", c.engine, "--format", "json", "--symbol", "pair", "--len", "8", "--", prog)
		if r.stdout != want.stdout || r.code != 0 {
			t.Fatalf("%s: output %q code %d, want %q 0; stderr %s", c.engine, r.stdout, r.code, want.stdout, r.stderr)
		}
		evs := parseEvents(t, r.stderr)
		ws := writes(evs)
		if len(ws) != 10 {
			t.Fatalf("%s: %d writes reported, want 10", c.engine, len(ws))
		}
		for i, w := range ws {
			if writer(w) != "set_watched" || w.New != fmt.Sprintf("%#x", i*100) || w.Size != 8 || !strings.HasPrefix(w.Insn, "mov qword ptr") {
				t.Errorf("%s: write %d: %+v", c.engine, i, w)
			}
		}
		if end := last(t, evs); end.Faults < c.faults || (c.engine == "hw" && end.Faults != c.faults) {
			t.Errorf("%s: faults %d, want %d", c.engine, end.Faults, c.faults)
		}
	}
}

// TestThreads: 4 threads x N writes, every one reported exactly once, by
// every engine and way of completing a write.
func TestThreads(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/threads.c", "-O0", "-pthread")
	const n = 2000
	want := native(t, prog, fmt.Sprint(n))
	modes := [][]string{
		{"--engine", "page"},
		{"--engine", "page", "--completer", "step"},
		fastArgs,
	}
	if hwWorks(t) {
		modes = append(modes, []string{"--engine", "hw"})
	}
	for _, mode := range modes {
		args := append(append([]string{"run"}, mode...), "--format", "json", "--backtrace", "0", "--symbol", "slots", "--", prog, fmt.Sprint(n))
		r := memtrap(t, args...)
		if r.stdout != want.stdout || r.code != 0 {
			t.Fatalf("%v: output %q code %d, want %q; stderr tail %s", mode, r.stdout, r.code, want.stdout, tail(r.stderr))
		}
		ws := writes(parseEvents(t, r.stderr))
		perSlot := map[uint64]int{}
		last := map[uint64]uint64{}
		for _, w := range ws {
			slot := w.Offset / 8
			perSlot[slot]++
			var v uint64
			fmt.Sscanf(w.New, "0x%x", &v)
			if w.Size != 8 || v != last[slot]+1 {
				t.Fatalf("%v: slot %d: value %d (size %d) after %d: a write was missed, doubled or misattributed", mode, slot, v, w.Size, last[slot])
			}
			last[slot] = v
		}
		for s := uint64(0); s < 4; s++ {
			if perSlot[s] != n {
				t.Errorf("%v: slot %d: %d writes, want %d", mode, s, perSlot[s], n)
			}
		}
	}
}

func tail(s string) string {
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}

func TestWhenValue(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/counter.c", "-O0")
	r := memtrap(t, "run", "--format", "json", "--symbol", "counter", "--when-value", "0x32", "--", prog)
	if r.code != 7 || r.stdout != "counter=100\n" {
		t.Fatalf("code %d stdout %q", r.code, r.stdout)
	}
	ws := writes(parseEvents(t, r.stderr))
	if len(ws) != 1 || ws[0].New != "0x32" || ws[0].Old != "0x31" || writer(ws[0]) != "step" {
		t.Fatalf("writes %+v", ws)
	}
	// A region over 8 bytes: the 8-byte word the write touched.
	r = memtrap(t, "run", "--format", "json", "--symbol", "big", "--when-value", "1010", "--", prog)
	ws = writes(parseEvents(t, r.stderr))
	if len(ws) != 1 || ws[0].Offset != 80 || ws[0].New != "0x3f2" {
		t.Fatalf("writes %+v", ws)
	}
}

// TestAttachDetach attaches to a running program, sees its writes, detaches
// on SIGINT and leaves it running with its pages as they were.
func TestAttachDetach(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/ticker.c", "-O0")
	const n = 150
	target, output := startReady(t, prog, fmt.Sprint(n))
	before := mapsOf(t, target.Process.Pid)

	mt := exec.Command(memtrapBin, "attach", fmt.Sprint(target.Process.Pid), "--format", "json", "--symbol", "ticks")
	errPipe, _ := mt.StderrPipe()
	if err := mt.Start(); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(errPipe)
	var evs []event
	for len(writes(evs)) < 5 {
		l, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("memtrap output ended: %v; events %+v", err, evs)
		}
		evs = append(evs, parseEvents(t, l)...)
	}
	if err := mt.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	rest, _ := readAll(rd)
	evs = append(evs, parseEvents(t, rest)...)
	if err := mt.Wait(); err != nil {
		t.Fatalf("memtrap attach: %v", err)
	}
	if end := last(t, evs); end.Event != "detach" {
		t.Fatalf("last event %+v", end)
	}
	ws := writes(evs)
	for i := 1; i < len(ws); i++ {
		var a, b uint64
		fmt.Sscanf(ws[i-1].New, "0x%x", &a)
		fmt.Sscanf(ws[i].New, "0x%x", &b)
		if b != a+1 {
			t.Fatalf("ticks went %d -> %d between reports: missed a write", a, b)
		}
	}
	if tr, _ := tracerPid(target.Process.Pid); tr != 0 {
		t.Fatalf("target still traced by %d", tr)
	}
	after := mapsOf(t, target.Process.Pid)
	if before != after {
		t.Fatalf("maps differ after detach:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	lines := output() // every line read before Wait closes the pipe
	if err := target.Wait(); err != nil {
		t.Fatalf("target: %v", err)
	}
	if len(lines) != n+1 || lines[n] != fmt.Sprintf("done %d\n", n) {
		t.Fatalf("target output damaged: %d lines, last %q", len(lines), lines[len(lines)-1])
	}
	for i := 0; i < n; i++ {
		if lines[i] != fmt.Sprintf("tick %d\n", i+1) {
			t.Fatalf("line %d: %q", i, lines[i])
		}
	}
}

// startReady starts prog, waits for its "ready" line, and collects the
// rest of its output: output waits for its end (the pipe's), and returns
// the lines. The target is killed when the test ends.
func startReady(t *testing.T, prog string, args ...string) (target *exec.Cmd, output func() []string) {
	t.Helper()
	target = exec.Command(prog, args...)
	stdout, err := target.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { target.Process.Kill() })
	out := bufio.NewReader(stdout)
	if line, _ := out.ReadString('\n'); line != "ready\n" {
		t.Fatalf("target said %q", line)
	}
	var lines []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			l, err := out.ReadString('\n')
			if err != nil {
				return
			}
			lines = append(lines, l)
		}
	}()
	return target, func() []string { <-done; return lines }
}

func readAll(r *bufio.Reader) (string, error) {
	b, err := io.ReadAll(r)
	return string(b), err
}

func mapsOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func tracerPid(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "TracerPid:"); ok {
			var n int
			fmt.Sscan(strings.TrimSpace(v), &n)
			return n, nil
		}
	}
	return 0, nil
}

func TestBadInput(t *testing.T) {
	prog := fixture.Build(t, "examples/stomp.c", "-O0")
	notExec := filepath.Join(t.TempDir(), "notexec")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	sleeper := exec.Command("sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer sleeper.Process.Kill()
	// A zombie: a child that exited, not waited for (yet).
	zombie := exec.Command("true")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	defer zombie.Wait()
	// ELF headers of programs memtrap cannot watch.
	elf32 := filepath.Join(t.TempDir(), "prog32")
	os.WriteFile(elf32, append([]byte("\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x03\x00\x01\x00\x00\x00"), make([]byte, 28)...), 0o755)
	elfArm := filepath.Join(t.TempDir(), "progarm")
	os.WriteFile(elfArm, append([]byte("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00\x01\x00\x00\x00"), make([]byte, 40)...), 0o755)
	time.Sleep(50 * time.Millisecond)
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no args", nil, 0, ""},
		{"unknown flag", []string{"run", "--bogus", "--", prog}, 2, "unknown flag"},
		{"no program", []string{"run", "--addr", "0x1000", "--len", "8"}, 2, "no program given"},
		{"nothing to watch", []string{"run", "--", prog}, 2, "nothing to watch"},
		{"len 0", []string{"run", "--addr", "0x1000", "--len", "0", "--", prog}, 2, "length 0"},
		{"addr without len", []string{"run", "--addr", "0x1000", "--", prog}, 2, "needs --len"},
		{"overflow", []string{"run", "--addr", "0xffffffffffffff00", "--len", "0x1000", "--", prog}, 2, "past the end of the address space"},
		{"malformed", []string{"run", "--addr", "0x12zz", "--len", "8", "--", prog}, 2, "malformed number"},
		{"malformed len", []string{"run", "--addr", "0x1000", "--len", "eight", "--", prog}, 2, "malformed number"},
		{"huge", []string{"run", "--addr", "99999999999999999999999", "--len", "8", "--", prog}, 2, "too large"},
		{"bad format", []string{"run", "--format", "xml", "--symbol", "session", "--", prog}, 2, "--format"},
		{"count not a number", []string{"run", "--backtrace", "x", "--symbol", "session", "--", prog}, 2, "--backtrace x: not a whole number"},
		{"count too large", []string{"run", "--max-writes", "99999999999999999999", "--symbol", "session", "--", prog}, 2, "--max-writes 99999999999999999999: number too large"},
		{"redzone negative", []string{"run", "--heap", "size=8", "--redzone", "-1", "--", prog}, 2, "--redzone -1: not a whole number (0 or more)"},
		{"unknown symbol", []string{"run", "--symbol", "sesion", "--", prog}, 1, "did you mean session"},
		{"unknown heap site", []string{"run", "--heap", "size=8,site=issue_tokn", "--", prog}, 1, `--heap size=8,site=issue_tokn: unknown symbol "issue_tokn" (did you mean issue_token`},
		{"not mapped", []string{"run", "--addr", "0x10000", "--len", "8", "--", prog}, 1, "not mapped"},
		{"partly mapped", []string{"run", "--symbol", "session", "--len", "0x100000", "--", prog}, 1, "not mapped"},
		{"no such program", []string{"run", "--symbol", "x", "--", "/nonexistent/prog"}, 1, "no such file"},
		{"not executable", []string{"run", "--symbol", "x", "--", notExec}, 1, "permission denied"},
		{"no such pid", []string{"attach", "999999999", "--symbol", "x"}, 1, "no such process"},
		{"bad pid", []string{"attach", "12ab", "--symbol", "x"}, 2, "not a process id"},
		{"kernel thread", []string{"attach", "2", "--addr", "0x1000", "--len", "8"}, 1, "process 2 (kthreadd) is a kernel thread: it has no user memory to watch"},
		{"zombie", []string{"attach", fmt.Sprint(zombie.Process.Pid), "--symbol", "x"}, 1, "has exited: it is a zombie its parent has not waited for"},
		{"32-bit program", []string{"run", "--symbol", "x", "--", elf32}, 1, "memtrap watches x86-64 programs; " + elf32 + " is 32-bit x86"},
		{"another machine's program", []string{"run", "--symbol", "x", "--", elfArm}, 1, "memtrap watches x86-64 programs; " + elfArm + " is 64-bit for aarch64"},
		{"output not writable", []string{"run", "-o", "/nonexistent/dir/out", "--symbol", "session", "--", prog}, 1, "-o /nonexistent/dir/out: cannot write it: no such file or directory"},
		{"hw over capacity", []string{"run", "--engine", "hw", "--symbol", "session", "--len", "64", "--", prog}, 1, "--engine hw: the regions need more than the 4 debug registers (each covers one aligned 1, 2, 4 or 8-byte slot); use --engine page or auto"},
		{"when-value wider than the variable", []string{"run", "--symbol", "session+8", "--len", "4", "--when-value", "0x1ffffffff", "--", prog}, 2, "--when-value 0x1ffffffff does not fit session+8, whose watched value is 4 byte(s)"},
		{"attach unknown symbol", []string{"attach", fmt.Sprint(sleeper.Process.Pid), "--symbol", "no_such_symbol_anywhere"}, 1, "unknown symbol"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := memtrap(t, c.args...)
			if c.args == nil {
				if r.code != 0 || !strings.Contains(r.stdout, "Usage") {
					t.Fatalf("bare memtrap: code %d, stdout %q", r.code, r.stdout)
				}
				return
			}
			if r.code != c.code {
				t.Errorf("exit %d, want %d; stderr %q", r.code, c.code, r.stderr)
			}
			lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "memtrap: ") || !strings.Contains(lines[0], c.want) ||
				strings.Contains(lines[0], "strconv.") || strings.HasSuffix(lines[0], ": bad region") {
				t.Errorf("stderr should be one line with %q, got %q", c.want, r.stderr)
			}
			if strings.Contains(r.stderr, "goroutine") || strings.Contains(r.stderr, "panic") {
				t.Errorf("Go panic: %s", r.stderr)
			}
		})
	}
	// The sleeper we failed to watch is untouched and untraced.
	if tr, _ := tracerPid(sleeper.Process.Pid); tr != 0 {
		t.Fatalf("sleeper left traced by %d", tr)
	}
}

// TestAlreadyTraced: a process another debugger holds is refused clearly.
// The first debugger is memtrap's page engine, which traces its target to
// the end (the fast engine lets it go).
func TestAlreadyTraced(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/ticker.c", "-O0")
	first := exec.Command(memtrapBin, "run", "--engine", "page", "--symbol", "ticks", "--", prog, "300")
	out, err := first.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	defer first.Process.Kill()
	// Its first line means it runs its own code, traced.
	if l, _ := bufio.NewReader(out).ReadString('\n'); l != "ready\n" {
		t.Fatalf("target said %q", l)
	}
	pid := childOf(first.Process.Pid)
	if pid == 0 {
		t.Fatal("traced child not found")
	}
	r := memtrap(t, "attach", fmt.Sprint(pid), "--symbol", "ticks")
	if r.code != 1 || !strings.Contains(r.stderr, "already traced by process") {
		t.Fatalf("code %d stderr %q", r.code, r.stderr)
	}
}

// childOf finds a child process of ppid, from /proc.
func childOf(ppid int) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		var state string
		var pp, pid int
		fmt.Sscan(s[i+2:], &state, &pp)
		fmt.Sscan(s, &pid)
		if pp == ppid {
			return pid
		}
	}
	return 0
}

// TestExitStatusAndOutputFile: a target killed by signal N makes memtrap
// exit 128+N, as a shell reports it; -o sends the reports to a file and
// leaves stderr to the target.
func TestExitStatusAndOutputFile(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/killed.c", "-O0")
	out := filepath.Join(t.TempDir(), "w.jsonl")
	r := memtrap(t, "run", "--format", "json", "-o", out, "--symbol", "value", "--", prog)
	if r.code != 128+6 {
		t.Fatalf("exit %d, want %d (SIGABRT)", r.code, 128+6)
	}
	if r.stderr != "" {
		t.Fatalf("reports leaked to stderr: %q", r.stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	evs := parseEvents(t, string(b))
	end := last(t, evs)
	if len(writes(evs)) != 1 || end.Event != "exit" || end.Signal == nil || *end.Signal != 6 {
		t.Fatalf("events %+v", evs)
	}
}

// TestAttachSIGTERM: SIGTERM detaches like SIGINT.
func TestAttachSIGTERM(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/ticker.c", "-O0")
	target := exec.Command(prog, "100")
	stdout, _ := target.StdoutPipe()
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	defer target.Process.Kill()
	rd := bufio.NewReader(stdout)
	rd.ReadString('\n')
	go io.Copy(io.Discard, rd)
	mt := exec.Command(memtrapBin, "attach", fmt.Sprint(target.Process.Pid), "--engine", "page", "--format", "json", "--symbol", "ticks")
	errp, _ := mt.StderrPipe()
	if err := mt.Start(); err != nil {
		t.Fatal(err)
	}
	mrd := bufio.NewReader(errp)
	for {
		l, err := mrd.ReadString('\n')
		if err != nil {
			t.Fatalf("memtrap ended early: %v", err)
		}
		if strings.Contains(l, `"event":"write"`) {
			break
		}
	}
	mt.Process.Signal(syscall.SIGTERM)
	rest, _ := readAll(mrd)
	if err := mt.Wait(); err != nil {
		t.Fatalf("memtrap: %v", err)
	}
	if end := last(t, parseEvents(t, rest)); end.Event != "detach" {
		t.Fatalf("last event %+v", end)
	}
	if err := target.Wait(); err != nil {
		t.Fatalf("target after detach: %v", err)
	}
}

// TestAtomics: 4 threads take and drop references on one refcount (lock
// xadd, lock sub), bump a generation with a compare-and-swap loop and
// exchange their number into last_worker, all emulated. Each variable's writes, in report order, must
// chain: every write's old value is the previous write's new one, so none
// was missed, doubled or torn; and the program's result is unchanged.
func TestAtomics(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/refcount.c", "-O1", "-pthread")
	const n = 500
	want := native(t, prog, fmt.Sprint(n))
	if want.stdout != "refcount=1 generation=2000 last_worker>0 1\n" {
		t.Fatalf("native: %q", want.stdout)
	}
	for _, engine := range [][]string{{"--engine", "page"}, fastArgs} {
		atomicWrites(t, prog, n, want.stdout, engine)
	}
}

// atomicWrites checks TestAtomics's writes under one engine.
func atomicWrites(t *testing.T, prog string, n uint64, want string, engine []string) {
	t.Helper()
	args := append(append([]string{"run"}, engine...), "--format", "json", "--backtrace", "0", "--symbol", "refcount", "--symbol", "generation", "--symbol", "last_worker", "--", prog, fmt.Sprint(n))
	r := memtrap(t, args...)
	if r.stdout != want || r.code != 0 {
		t.Fatalf("%v: output %q code %d, want %q; stderr tail %s", engine, r.stdout, r.code, want, tail(r.stderr))
	}
	last := map[string]uint64{"refcount": 1}
	count := map[string]int{}
	insns := map[string]bool{}
	for _, w := range writes(parseEvents(t, r.stderr)) {
		var old, nw uint64
		fmt.Sscanf(w.Old, "0x%x", &old)
		fmt.Sscanf(w.New, "0x%x", &nw)
		if old != last[w.Region] || w.Size != 8 || !w.Exact {
			t.Fatalf("%v: %s: write #%d %s -> %s after %#x: a write was missed, doubled or torn (%+v)", engine, w.Region, w.Seq, w.Old, w.New, last[w.Region], w)
		}
		switch d := nw - old; {
		case w.Region == "refcount" && d != 1 && d != ^uint64(0):
			t.Fatalf("refcount: write #%d %s -> %s (%s)", w.Seq, w.Old, w.New, w.Insn)
		case w.Region == "generation" && d > 1, w.Region == "last_worker" && (nw < 1 || nw > 4):
			t.Fatalf("generation: write #%d %s -> %s (%s)", w.Seq, w.Old, w.New, w.Insn)
		}
		last[w.Region] = nw
		count[w.Region]++
		insns[strings.Fields(w.Insn)[0]+" "+strings.Fields(w.Insn)[1]] = true
	}
	if uint64(count["refcount"]) != 2*4*n || last["refcount"] != 1 || last["generation"] != 4*n || uint64(count["generation"]) < 4*n || count["last_worker"] != 4 {
		t.Fatalf("%v: writes %v, last values %v", engine, count, last)
	}
	for _, i := range []string{"lock xadd", "lock sub", "lock cmpxchg", "xchg qword"} {
		if !insns[i] {
			t.Errorf("%v: no write by %s among %v", engine, i, insns)
		}
	}
}
