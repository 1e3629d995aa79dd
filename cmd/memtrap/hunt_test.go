package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/memtrap/memtrap/internal/fixture"
)

func huntProg(t *testing.T) string {
	return fixture.Build(t, "cmd/memtrap/testdata/hunt.c", "-O0", "-g")
}

const huntOut = "val=5010 flags=128\n"

// TestWhen counts the writes each condition keeps, against what the
// fixture is known to write.
func TestWhen(t *testing.T) {
	prog := huntProg(t)
	engines := []string{"page", "fast"}
	if hwWorks(t) {
		engines = append(engines, "hw")
	}
	for _, c := range []struct {
		sym, when string
		bt        string
		want      int
		first     string // new value of the first kept write
	}{
		{"val", "in(parse_a)", "0", 60, "0x1"},
		{"val", "!in(parse_a)", "0", 50, "0x3e9"},
		{"val", "in(parse_*) && (new & 1) == 0", "0", 50, "0x2"},
		{"val", "at(store)", "8", 100, "0x1"},
		{"val", "at(direct)", "8", 10, "0x1389"},
		{"val", "new > 1000 && new < 1021", "0", 20, "0x3e9"},
		{"val", "changed && seq > 105", "0", 5, "0x138e"},
		{"val", "old == 60 || file(hunt.c) && new == 2", "0", 2, "0x2"},
		{"val", "file(nothere.c)", "0", 0, ""},
		{"flags", "(old ^ new) & 0x10", "0", 2, "0x10"},
		{"flags", "new == 0x80 && size == 1 && off == 0 && !kernel", "0", 1, "0x80"},
	} {
		engine := engines[len(c.when)%len(engines)] // each, over the cases
		r := memtrap(t, "run", "--engine", engine, "--format", "json", "--backtrace", c.bt, "--symbol", c.sym, "--when", c.when, "--", prog)
		if r.code != 3 || r.stdout != huntOut {
			t.Fatalf("%s, --when %q: code %d stdout %q, want 3 %q; stderr %s", engine, c.when, r.code, r.stdout, huntOut, tail(r.stderr))
		}
		ws := writes(parseEvents(t, r.stderr))
		if len(ws) != c.want {
			t.Errorf("%s, --when %q: %d writes, want %d", engine, c.when, len(ws), c.want)
			continue
		}
		if c.want > 0 && ws[0].New != c.first {
			t.Errorf("%s, --when %q: first kept write %s, want %s", engine, c.when, ws[0].New, c.first)
		}
		for i, w := range ws {
			if w.Seq != i+1 {
				t.Errorf("--when %q: write %d numbered %d", c.when, i+1, w.Seq)
				break
			}
		}
	}
}

func TestWhenErrors(t *testing.T) {
	prog := huntProg(t)
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--symbol", "val", "--when", "new >"}, `memtrap: --when "new >": column 6: expected a value, found end of expression`},
		{[]string{"--symbol", "val", "--when", "new == 0x1g"}, `memtrap: --when "new == 0x1g": column 8: malformed number "0x1g"`},
		{[]string{"--symbol", "val", "--when", "in(parse_a"}, `memtrap: --when "in(parse_a": column 3: unclosed '(' of in`},
		{[]string{"--symbol", "flags", "--when", "new == 0x100"}, `memtrap: --when: column 8: 0x100 is wider than the watched value (1 byte), in flags`},
		{[]string{"--symbol", "val", "--on-hit", "pause"}, `memtrap: --on-hit "pause": the action is stop`},
		{[]string{"--symbol", "val", "--last", "-1"}, `memtrap: --last -1: must be 1 or more`},
	} {
		r := memtrap(t, append(append([]string{"run"}, c.args...), "--", prog)...)
		if r.code != 2 || strings.TrimSpace(r.stderr) != c.msg || r.stdout != "" {
			t.Errorf("%v: code %d stderr %q stdout %q, want 2 %q and no target run", c.args, r.code, r.stderr, r.stdout, c.msg)
		}
	}
}

type writerRow struct {
	Func  string `json:"func"`
	File  string `json:"file"`
	Line  int    `json:"line"`
	PC    string `json:"pc"`
	Count int    `json:"count"`
	Tids  []int  `json:"tids"`
}

func TestSummary(t *testing.T) {
	prog := huntProg(t)
	log := t.TempDir() + "/log.json"
	r := memtrap(t, "run", "--format", "json", "--summary", "--symbol", "val", "-o", log, "--", prog)
	if r.code != 3 || r.stdout != huntOut {
		t.Fatalf("code %d stdout %q; stderr %s", r.code, r.stdout, tail(r.stderr))
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	var rows []writerRow
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, `"event":"summary"`) {
			var ev struct{ Writers []writerRow }
			if err := json.Unmarshal([]byte(l), &ev); err != nil {
				t.Fatal(err)
			}
			rows = ev.Writers
		}
	}
	if len(rows) != 2 || rows[0].Func != "store" || rows[0].Count != 100 || rows[1].Func != "direct" || rows[1].Count != 10 {
		t.Fatalf("writers %+v, want store 100 then direct 10", rows)
	}
	if !strings.HasSuffix(rows[0].File, "hunt.c") || rows[0].Line != 13 || len(rows[0].Tids) != 1 || rows[0].Tids[0] == 0 {
		t.Errorf("store's row %+v: want hunt.c:13 and the one thread", rows[0])
	}

	// memtrap report reads the same log: the same table, and folded stacks.
	r = memtrap(t, "report", log)
	if r.code != 0 {
		t.Fatalf("memtrap report: code %d stderr %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], "110 writes from 2 instructions") ||
		!strings.Contains(lines[2], " 100 ") || !strings.Contains(lines[2], "90.9%") || !strings.Contains(lines[2], "store+0x") ||
		!strings.Contains(lines[3], " 10 ") || !strings.Contains(lines[3], "direct+0x") {
		t.Errorf("memtrap report:\n%s", r.stdout)
	}
	r = memtrap(t, "report", "--folded", log)
	want := "main;direct 10\nmain;parse_a;store 60\nmain;parse_b;store 40\n"
	if got := foldedWithoutStart(r.stdout); r.code != 0 || got != want {
		t.Errorf("memtrap report --folded: code %d\n%s\nwant (below libc's start frames)\n%s", r.code, r.stdout, want)
	}
	// The text summary, on the report stream.
	r = memtrap(t, "run", "--backtrace", "0", "--summary", "--symbol", "val", "--", prog)
	if !strings.Contains(r.stderr, "memtrap: writers of the watched memory, 110 writes from 2 instructions:") {
		t.Errorf("text summary missing:\n%s", tail(r.stderr))
	}
}

// foldedWithoutStart drops the frames below main (libc's start code, which
// differs between libc builds) from folded stacks.
func foldedWithoutStart(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if i := strings.Index(l, ";main;"); i >= 0 {
			l = l[i+1:]
		}
		b.WriteString(l + "\n")
	}
	return b.String()
}

func TestLastBeforeCrash(t *testing.T) {
	prog := huntProg(t)
	r := memtrap(t, "run", "--engine", "page", "--format", "json", "--last", "3", "--symbol", "val", "--", prog, "crash")
	if r.code != 128+11 || r.stdout != huntOut {
		t.Fatalf("code %d stdout %q; stderr %s", r.code, r.stdout, tail(r.stderr))
	}
	evs := parseEvents(t, r.stderr)
	ws := writes(evs)
	if len(ws) != 3 || ws[0].New != "0x1390" || ws[1].New != "0x1391" || ws[2].New != "0x1392" || ws[0].Seq != 108 || writer(ws[2]) != "direct" {
		t.Fatalf("writes %+v, want the last three: 5008, 5009, 5010 by direct", ws)
	}
	// Their parameters as they were at each write, though symbolized at
	// the end.
	for i, w := range ws {
		if a := w.Backtrace[0].Args; len(a) != 1 || a[0].Name != "i" || a[0].Value != fmt.Sprint(8+i) {
			t.Errorf("write %d: direct's args %+v, want i=%d", w.Seq, a, 8+i)
		}
	}
	note := false
	for _, e := range evs {
		if e.Event == "note" && e.Message == "the last 3 of 110 writes, before SIGSEGV:" {
			note = true
		}
	}
	if !note {
		t.Errorf("no note saying what the writes come before: %s", r.stderr)
	}
}

func TestMaxWrites(t *testing.T) {
	prog := huntProg(t)
	for _, engine := range []string{"auto", "fast"} {
		r := memtrap(t, "run", "--engine", engine, "--format", "json", "--max-writes", "5", "--symbol", "val", "--", prog)
		if r.code != 3 || r.stdout != huntOut {
			t.Fatalf("%s: code %d stdout %q; stderr %s", engine, r.code, r.stdout, tail(r.stderr))
		}
		evs := parseEvents(t, r.stderr)
		ws := writes(evs)
		if len(ws) != 5 || ws[4].New != "0x5" {
			t.Fatalf("%s: writes %+v, want 5, the last setting 5", engine, ws)
		}
		if e := last(t, evs); e.Event != "exit" || e.Code == nil || *e.Code != 3 {
			t.Errorf("%s: last event %+v, want the target's exit with 3", engine, e)
		}
	}
}

// TestOnHitStop stops a launched target right after the write that meets
// the condition, and hands it to gdb, which sees the value just written
// and runs it to its end.
func TestOnHitStop(t *testing.T) {
	engines := []string{"page"}
	if hwWorks(t) {
		engines = append(engines, "hw")
	}
	for _, e := range engines {
		t.Run(e, func(t *testing.T) { testOnHitStop(t, e) })
	}
}

func testOnHitStop(t *testing.T, engine string) {
	prog := huntProg(t)
	mt := exec.Command(memtrapBin, "run", "--engine", engine, "--symbol", "val", "--when", "new == 30", "--on-hit", "stop", "--", prog)
	var stdout strings.Builder
	mt.Stdout = &stdout
	errPipe, _ := mt.StderrPipe()
	if err := mt.Start(); err != nil {
		t.Fatal(err)
	}
	defer mt.Process.Kill()
	rd := bufio.NewReader(errPipe)
	var pid int
	var report strings.Builder
	for pid == 0 {
		l, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("memtrap said %q, then %v", report.String(), err)
		}
		report.WriteString(l)
		if strings.HasPrefix(l, "memtrap: process ") && strings.Contains(l, "stopped after write #1 by store") {
			fmt.Sscanf(l, "memtrap: process %d", &pid)
		}
	}
	if want := fmt.Sprintf("continue with: gdb -p %d", pid); !strings.Contains(report.String(), want) || !strings.Contains(report.String(), "hunt.c:13") {
		t.Fatalf("report %q lacks %q and the line", report.String(), want)
	}
	if st := settledState(t, pid); st != "T" {
		t.Fatalf("target state %q, want T (stopped)", st)
	}
	if tr, _ := tracerPid(pid); tr != 0 {
		t.Fatalf("target still traced by %d", tr)
	}
	gdb := exec.Command("gdb", "-nx", "-batch", "-p", fmt.Sprint(pid), "-ex", "handle SIGSTOP nostop noprint nopass", "-ex", "print val", "-ex", "continue")
	out, err := gdb.CombinedOutput()
	if err != nil {
		t.Fatalf("gdb: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "$1 = 30") || !strings.Contains(string(out), "exited with code 03") {
		t.Fatalf("gdb saw:\n%s", out)
	}
	rest, _ := readAll(rd)
	if err := mt.Wait(); err == nil || mt.ProcessState.ExitCode() != 3 {
		t.Fatalf("memtrap: %v, want the target's status 3; stderr %s", err, rest)
	}
	if stdout.String() != huntOut {
		t.Fatalf("target output %q, want %q", stdout.String(), huntOut)
	}
}

// TestOnHitStopAttach: the same for an attached target; memtrap exits 0.
func TestOnHitStopAttach(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/ticker.c", "-O0", "-g")
	target, output := startReady(t, prog, "40")
	pid := target.Process.Pid
	r := memtrap(t, "attach", fmt.Sprint(pid), "--symbol", "ticks", "--when", "new == 20", "--on-hit", "stop")
	if r.code != 0 || !strings.Contains(r.stderr, fmt.Sprintf("memtrap: process %d stopped after write #1 by main", pid)) {
		t.Fatalf("code %d stderr %s", r.code, r.stderr)
	}
	if st := settledState(t, pid); st != "T" {
		t.Fatalf("target state %q, want T", st)
	}
	gdb := exec.Command("gdb", "-nx", "-batch", "-p", fmt.Sprint(pid), "-ex", "handle SIGSTOP nostop noprint nopass", "-ex", "print ticks", "-ex", "continue")
	gout, err := gdb.CombinedOutput()
	if err != nil || !strings.Contains(string(gout), "$1 = 20") || !strings.Contains(string(gout), "exited normally") {
		t.Fatalf("gdb: %v\n%s", err, gout)
	}
	lines := output()
	if err := target.Wait(); err != nil {
		t.Fatalf("target: %v", err)
	}
	if len(lines) != 41 || lines[19] != "tick 20\n" || lines[40] != "done 40\n" {
		t.Fatalf("target output: %d lines %q", len(lines), lines)
	}
}

// settledState is the state letter of /proc/PID/stat, once it settles: a
// group-stop is reached by every thread shortly after the detach.
func settledState(t *testing.T, pid int) string {
	t.Helper()
	var st string
	for i := 0; i < 100; i++ {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		st = fields[0]
		if st == "T" {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
	return st
}

type fieldEvent struct {
	Event  string `json:"event"`
	Region string `json:"region"`
	Offset uint64 `json:"offset"`
	Field  string `json:"field"`
	Addr   string `json:"addr"`
	Size   uint64 `json:"size"`
}

// TestFieldNames: a write into a struct or array is named by the smallest
// member or element that holds it (all of a char array: its name),
// and --symbol takes member and index paths.
func TestFieldNames(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/fields.c", "-O0", "-g")
	fields := func(sym string) (got []string) {
		r := memtrap(t, "run", "--engine", "page", "--format", "json", "--backtrace", "0", "--symbol", sym, "--", prog)
		if r.code != 0 || r.stdout != "ok\n" {
			t.Fatalf("--symbol %s: code %d stdout %q stderr %s", sym, r.code, r.stdout, r.stderr)
		}
		for _, l := range strings.Split(r.stderr, "\n") {
			var ev fieldEvent
			if json.Unmarshal([]byte(l), &ev) == nil && ev.Event == "write" {
				got = append(got, fmt.Sprintf("%s+%d=%s", ev.Region, ev.Offset, ev.Field))
			}
		}
		return got
	}
	for _, c := range []struct {
		sym  string
		want string
	}{
		{"cfg", "cfg+12=cfg.limits.max cfg+34=cfg.grid[1][2] cfg+16=cfg.name cfg+1=cfg.id+1"},
		{"table", "table+21=table[2].name[1]"},
		{"table[2].name", "table[2].name+1=table[2].name[1]"},
		{"cfg.limits", "cfg.limits+4=cfg.limits.max"},
		{"session_token[3]", "session_token[3]+0="}, // a scalar: no member to name
	} {
		if got := strings.Join(fields(c.sym), " "); got != c.want {
			t.Errorf("--symbol %s: writes %s, want %s", c.sym, got, c.want)
		}
	}
	r := memtrap(t, "run", "--symbol", "cfg.name[9]", "--", prog)
	if r.code != 1 || !strings.Contains(r.stderr, "cfg.name[9]") || !strings.Contains(r.stderr, "index 9 is past the end of an array of 8") || r.stdout != "" {
		t.Errorf("cfg.name[9]: code %d stderr %q stdout %q", r.code, r.stderr, r.stdout)
	}
	r = memtrap(t, "run", "--engine", "page", "--backtrace", "0", "--symbol", "cfg", "--", prog)
	if !strings.Contains(r.stderr, "#1 tid ") || !strings.Contains(r.stderr, " wrote cfg.limits.max (cfg+12, 0x") {
		t.Errorf("text report does not name the member:\n%s", r.stderr)
	}
}

// onTerminal runs memtrap with its streams on a pseudo-terminal (util-linux
// script), as a user at a terminal does, and returns what the terminal
// showed, with the terminal's \r\n made \n.
func onTerminal(t *testing.T, env []string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("no script(1) to give memtrap a terminal (util-linux; scripts/deps installs it)")
	}
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	cmd := exec.Command("script", "-qec", memtrapBin+" "+strings.Join(quoted, " "), "/dev/null")
	cmd.Env = append(os.Environ(), env...)
	r := runCmd(t, cmd)
	return strings.ReplaceAll(r.stdout, "\r\n", "\n")
}

// TestTerminal: on a terminal each report comes before what its writer
// prints next, in colour unless NO_COLOR or --color never; never in
// JSON, or in a file unless --color always.
func TestTerminal(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/order.c", "-O0", "-g")
	for _, engine := range []string{"page", "hw"} {
		if engine == "hw" && !hwWorks(t) {
			continue
		}
		out := onTerminal(t, nil, "run", "--engine", engine, "--backtrace", "0", "--symbol", "val", "--", prog)
		var order []string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "#") || strings.HasPrefix(l, "after ") {
				order = append(order, l)
			}
		}
		if len(order) != 60 {
			t.Fatalf("%s: %d report and output lines, want 60:\n%s", engine, len(order), out)
		}
		for i := 1; i <= 30; i++ {
			rep, after := order[2*i-2], order[2*i-1]
			want := fmt.Sprintf("8 bytes: \x1b[31m%#x\x1b[0m -> \x1b[32m%#x\x1b[0m", i-1, i)
			if !strings.HasPrefix(rep, fmt.Sprintf("#%d tid ", i)) || !strings.HasSuffix(rep, want) || after != fmt.Sprintf("after %d", i) {
				t.Fatalf("%s: line %d: %q then %q, want report #%d (in colour: %q) then \"after %d\"", engine, 2*i-1, rep, after, i, want, i)
			}
		}
	}
	for _, c := range []struct {
		env  []string
		args []string
	}{
		{[]string{"NO_COLOR=1"}, nil},
		{nil, []string{"--color", "never"}},
		{nil, []string{"--format", "json"}},
	} {
		out := onTerminal(t, c.env, append(append([]string{"run", "--symbol", "val"}, c.args...), "--", prog)...)
		if !strings.Contains(out, "after 30") || strings.Contains(out, "\x1b[") {
			t.Errorf("%v %v: colour where none is wanted, or no run:\n%s", c.env, c.args, out)
		}
	}
	log := t.TempDir() + "/report.txt"
	onTerminal(t, nil, "run", "--symbol", "val", "-o", log, "--", prog)
	if b, _ := os.ReadFile(log); strings.Contains(string(b), "\x1b[") || !strings.Contains(string(b), "30 writes reported") {
		t.Errorf("a file got colours (or no report):\n%s", b)
	}
	r := memtrap(t, "run", "--color", "always", "--backtrace", "1", "--symbol", "val", "--", prog)
	if !strings.Contains(r.stderr, "\x1b[31m0x0\x1b[0m -> \x1b[32m0x1\x1b[0m") || !strings.Contains(r.stderr, "#0  \x1b[1m\x1b[36mmain\x1b[0m+0x") {
		t.Errorf("--color always: no colour in\n%s", r.stderr)
	}
}

// TestBytesView: a write wider than 8 bytes shows old and new bytes with
// their ASCII, and which changed.
func TestBytesView(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/order.c", "-O0", "-g")
	r := memtrap(t, "run", "--engine", "page", "--backtrace", "0", "--symbol", "buf", "--", prog)
	want := "" +
		"    old +0   68 65 6c 6c 6f 2c 20 77 6f 72 6c 64 21 21 21 21  |hello, world!!!!|\n" +
		"    new +0   68 65 6c 6c 6f 2c 20 57 4f 52 4c 44 21 21 21 21  |hello, WORLD!!!!|\n" +
		"                                   ^^ ^^ ^^ ^^ ^^\n" +
		"    5 of 16 bytes changed\n"
	if !strings.Contains(r.stderr, " wrote buf+0 (0x") || !strings.Contains(r.stderr, "16 bytes:\n"+want) {
		t.Errorf("report:\n%s\nwant the view\n%s", r.stderr, want)
	}
}

// TestMaxWritesAttach: attached, memtrap lets go after N writes and exits
// 0; the target runs on untraced to its own end.
func TestMaxWritesAttach(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/ticker.c", "-O0")
	// Long enough to outlive an attach on a loaded machine.
	target, output := startReady(t, prog, "150")
	pid := target.Process.Pid
	before := mapsOf(t, pid)
	r := memtrap(t, "attach", fmt.Sprint(pid), "--format", "json", "--symbol", "ticks", "--max-writes", "3")
	evs := parseEvents(t, r.stderr)
	if ws := writes(evs); r.code != 0 || len(ws) != 3 || last(t, evs).Event != "detach" {
		t.Fatalf("code %d, %d writes, last event %+v; stderr %s", r.code, len(ws), last(t, evs), r.stderr)
	}
	if tr, _ := tracerPid(pid); tr != 0 {
		t.Fatalf("target still traced by %d", tr)
	}
	if after := mapsOf(t, pid); after != before {
		t.Fatalf("maps differ after the detach:\n%s\n%s", before, after)
	}
	lines := output()
	if err := target.Wait(); err != nil || len(lines) != 151 || lines[150] != "done 150\n" {
		t.Fatalf("target: %v, %d lines", err, len(lines))
	}
}

// TestRedZoneArgs: a leaf function's parameter, kept in the red zone
// below its stack pointer, is read at every write, also where it lies in
// the page below the stack pointer's. The fast engine's agent copies the
// red zone with the stack; it reports most writes once the target has
// exited, and still names each one's instruction.
func TestRedZoneArgs(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/redzone.c", "-O0", "-g")
	engines := []string{"page", "fast"}
	if hwWorks(t) {
		engines = append(engines, "hw")
	}
	for _, e := range engines {
		r := memtrap(t, "run", "--engine", e, "--format", "json", "--backtrace", "1", "--symbol", "val", "--", prog)
		if r.code != 0 || r.stdout != "val=300\n" {
			t.Fatalf("%s: code %d stdout %q; stderr %s", e, r.code, r.stdout, tail(r.stderr))
		}
		ws := writes(parseEvents(t, r.stderr))
		if len(ws) != 300 {
			t.Fatalf("%s: %d writes, want 300", e, len(ws))
		}
		bad := 0
		for i, w := range ws {
			if a := w.Backtrace[0].Args; len(a) != 1 || a[0].Name != "v" || a[0].Value != fmt.Sprintf("%#x", i+1) ||
				w.Backtrace[0].Func != "leaf" || !strings.HasPrefix(w.Insn, "mov qword ptr [rip+") {
				bad++
			}
		}
		if bad > 0 {
			t.Errorf("%s: %d of 300 writes without leaf's v as it was, or its instruction (first: %+v)", e, bad, ws[0])
		}
	}
}
