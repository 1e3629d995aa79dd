package main

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/memtrap/memtrap/internal/fixture"
	"golang.org/x/sys/unix"
)

// fastArgs select the fast engine.
var fastArgs = []string{"--engine", "fast"}

// TestFastEngine is the differential test of issue #15: the same target
// under the page engine and the fast one reports the same writes (offset,
// size, old and new values, instruction, writing function), each slot's in
// the same order, and runs as natively: the same output and exit status.
// The target mixes stores the agent completes from a recipe (plain MOVs)
// with those memtrap completes from the thread's signal frame (lock xadd,
// rep stosb, vector stores), stores to unwatched data on the watched page,
// its own SIGSEGV handler set and read back after memtrap armed and a fault
// of its own that it catches, and a forked child writing its copy of the
// watched memory (not reported by either engine: neither follows it).
func TestFastEngine(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/fastmix.c", "-O1", "-g", "-pthread")
	const rounds = 300
	want := native(t, prog, fmt.Sprint(rounds))
	if want.code != 5 || !strings.Contains(want.stdout, "own handler read back: yes\nown fault caught: 1\nchild: 7, slots 600 600 600 600, neighbor 1200") {
		t.Fatalf("native run: exit %d, %q", want.code, want.stdout)
	}
	run := func(engine []string) []event {
		args := append(append([]string{"run"}, engine...), "--format", "json", "--symbol", "watched", "--len", "96", "--", prog, fmt.Sprint(rounds))
		r := memtrap(t, args...)
		if r.stdout != want.stdout || r.code != want.code {
			t.Fatalf("%v: output %q, exit %d; want %q, %d; stderr: %s", engine, r.stdout, r.code, want.stdout, want.code, tail(r.stderr))
		}
		return writes(parseEvents(t, r.stderr))
	}
	page := run([]string{"--engine", "page", "--kernel-writes=false"})
	fast := run(fastArgs)
	key := func(e event) string {
		return fmt.Sprintf("+%d/%d %s->%s %q by %s", e.Offset, e.Size, e.Old, e.New, e.Insn, writer(e))
	}
	// Each slot: 2*rounds writes, each one more than the last, by plain()
	// and by the lock xadd in worker, in the same order under both.
	perSlot := func(evs []event) map[uint64][]string {
		m := map[uint64][]string{}
		for _, e := range evs {
			if e.Offset < 32 {
				m[e.Offset/8] = append(m[e.Offset/8], key(e))
			}
		}
		return m
	}
	ps, fs := perSlot(page), perSlot(fast)
	for s := uint64(0); s < 4; s++ {
		if len(fs[s]) != 2*rounds {
			t.Errorf("fast: slot %d: %d writes, want %d", s, len(fs[s]), 2*rounds)
		}
		if !slices.Equal(ps[s], fs[s]) {
			t.Errorf("slot %d: the engines differ:\npage %v\nfast %v", s, head(ps[s]), head(fs[s]))
		}
	}
	for i, e := range fast {
		if !e.Exact || e.Seq != i+1 {
			t.Fatalf("fast: write %d: seq %d exact %v", i, e.Seq, e.Exact)
		}
		if e.Offset < 32 {
			var old, nw uint64
			fmt.Sscanf(e.Old, "0x%x", &old)
			fmt.Sscanf(e.New, "0x%x", &nw)
			if nw != old+1 || e.Size != 8 || (writer(e) != "plain" && writer(e) != "worker") {
				t.Fatalf("fast: slot write %s", key(e))
			}
		}
	}
	// The buffer's writes: rep stosb (40 bytes at once), then memset and
	// memcpy as this machine's libc does them: the same under both.
	bufOf := func(evs []event) []string {
		var out []string
		for _, e := range evs {
			if e.Offset >= 32 {
				out = append(out, key(e))
			}
		}
		return out
	}
	pb, fb := bufOf(page), bufOf(fast)
	if len(fb) < 3 || !strings.HasPrefix(fb[0], "+32/40 "+strings.Repeat("00", 40)+"->"+strings.Repeat("11", 40)) || !strings.Contains(fb[0], "rep stosb") || !slices.Equal(pb, fb) {
		t.Fatalf("the buffer's writes:\npage %v\nfast %v", pb, fb)
	}
}

func head(s []string) []string { return s[:min(len(s), 6)] }

// TestFastBlockedSignals: writes to armed pages from threads that block
// SIGSEGV (all signals blocked in a worker, a handler with a full mask,
// SIGSEGV blocked alone, a handler run during ppoll with a mask that
// blocks it) are caught and the target lives, under both
// engines alike; the kernel would kill a thread that faults with SIGSEGV
// blocked, so memtrap keeps it unblocked (the worker sees so).
func TestFastBlockedSignals(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/blocked.c", "-O0", "-pthread")
	want := native(t, prog)
	if want.code != 0 || want.stdout != "worker: SIGSEGV blocked 1, SIGUSR1 blocked 1\nppoll -1 (EINTR)\ncounter 2101\n" {
		t.Fatalf("native: exit %d, %q", want.code, want.stdout)
	}
	for _, engine := range []string{"page", "fast"} {
		r := memtrap(t, "run", "--engine", engine, "--format", "json", "--backtrace", "0", "--symbol", "counter", "--", prog)
		if r.code != 0 || r.stdout != "worker: SIGSEGV blocked 0, SIGUSR1 blocked 1\nppoll -1 (EINTR)\ncounter 2101\n" {
			t.Fatalf("%s: exit %d, %q; stderr %s", engine, r.code, r.stdout, tail(r.stderr))
		}
		ws := writes(parseEvents(t, r.stderr))
		if len(ws) != 1003 || ws[1000].New != "0x44c" || ws[1001].New != "0x44d" || ws[1002].New != "0x835" {
			t.Fatalf("%s: %d writes, the last %+v", engine, len(ws), ws[len(ws)-1])
		}
	}
}

// TestFastALU: read-modify-writes of watched memory (ADD, SUB, AND, OR,
// XOR from a register and an immediate, INC, DEC, locked and not, every
// width, edge values), which the agent completes itself with the flags
// they set: every result and flag as the CPU's (the program hashes them),
// and the same writes as the page engine's emulator.
func TestFastALU(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/aluflags.c", "-O1")
	want := native(t, prog)
	if want.code != 0 || !strings.HasPrefix(want.stdout, "hash ") {
		t.Fatalf("native: exit %d, %q", want.code, want.stdout)
	}
	var counts []int
	for _, engine := range []string{"page", "fast"} {
		r := memtrap(t, "run", "--engine", engine, "--format", "json", "--backtrace", "0", "--symbol", "watched", "--", prog)
		if r.stdout != want.stdout || r.code != 0 {
			t.Fatalf("%s: %q exit %d, want %q (a result or a flag differs from the CPU's)", engine, r.stdout, r.code, want.stdout)
		}
		end := last(t, parseEvents(t, r.stderr))
		counts = append(counts, end.Writes)
	}
	// 20 values: 8 ops x 8 forms (4 widths from a register over 20x20
	// pairs, 4 from an immediate over 20), 6 INC/DEC forms over 20; each
	// op's setup store counts too.
	const ops = 8*4*(20*20*2) + 8*4*(20*2) + 6*20*2
	if counts[0] != ops || counts[1] != ops {
		t.Fatalf("writes: page %d, fast %d, want %d", counts[0], counts[1], ops)
	}
}

// TestFastCPython: CPython's None refcount, written by four threads and
// the main one (every INCREF and DECREF an ADD or SUB the agent does
// itself), reported exactly as many times as the CPU writes it natively:
// perf's count of a hardware breakpoint on it (mem:ADDR/8:w), the same
// from run to run (the script forces no GIL switch by time, which a slower
// run would make more of). And the program's own output unchanged.
func TestFastCPython(t *testing.T) {
	const python = "/usr/bin/python3.11" // scripts/deps installs it
	f, err := elf.Open(python)
	if err != nil {
		t.Fatalf("%v: scripts/deps installs python3.11-minimal (make test runs it)", err)
	}
	none := uint64(0)
	syms, _ := f.DynamicSymbols()
	for _, s := range syms {
		if s.Name == "_Py_NoneStruct" {
			none = s.Value
		}
	}
	pie := f.Type != elf.ET_EXEC
	f.Close()
	if pie || none == 0 {
		t.Skipf("%s is position-independent or has no _Py_NoneStruct: None's address is not known before it runs, for perf's breakpoint", python)
	}
	script := filepath.Join(fixture.Root(), "cmd/memtrap/testdata/refcount.py")
	perf := exec.Command("perf", "stat", "-x,", "-e", fmt.Sprintf("mem:%#x/8:w:u", none), python, "-S", script)
	out, err := perf.CombinedOutput()
	var cpu int
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Split(l, ","); len(f) > 2 && strings.HasPrefix(f[2], "mem:") {
			cpu, _ = strconv.Atoi(f[0])
		}
	}
	if err != nil || cpu == 0 {
		t.Skipf("perf cannot count a hardware breakpoint here (%v): %s", err, out)
	}
	r := memtrap(t, "run", "--engine", "fast", "--format", "json", "--backtrace", "0", "--symbol", "_Py_NoneStruct", "--len", "8", "--", python, "-S", script)
	if r.stdout != "done\n" || r.code != 0 {
		t.Fatalf("%q exit %d; stderr %s", r.stdout, r.code, tail(r.stderr))
	}
	if end := last(t, parseEvents(t, r.stderr)); end.Writes != cpu {
		t.Fatalf("%d writes reported, the CPU made %d", end.Writes, cpu)
	}
}

// TestFastMemtrapKilled: memtrap killed while the fast engine watches. The
// target, which memtrap launched and let go, runs on: the agent keeps
// completing its stores until its ring is full, then sees memtrap gone (its
// pidfd) and gives the pages their protections back, and the stores run as
// without memtrap. Every tick is counted once, in order, and the program
// ends as it would have.
func TestFastMemtrapKilled(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/guarded.c", "-O1")
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	mt := exec.Command(memtrapBin, "run", "--engine", "fast", "--format", "json", "--backtrace", "0", "--symbol", "ticks", "--", prog, "1")
	mt.Stdin, mt.Stdout, mt.Stderr = inR, outW, errW
	if err := mt.Start(); err != nil {
		t.Fatal(err)
	}
	inR.Close()
	outW.Close()
	errW.Close()
	lines := make(chan string, 100000)
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	events := bufio.NewReader(errR)
	pid := 0
	for writes := 0; writes < 10; {
		l, err := events.ReadString('\n')
		if err != nil {
			mt.Process.Kill()
			t.Fatalf("memtrap ended after %d writes: %v", writes, err)
		}
		var ev event
		if json.Unmarshal([]byte(l), &ev) == nil {
			switch ev.Event {
			case "watch":
				pid = ev.Pid
			case "write":
				writes++
			}
		}
	}
	mt.Process.Kill()
	mt.Wait()
	defer unix.Kill(pid, unix.SIGKILL)
	// 1024 more ticks fill the ring nobody reads; then the pages are the
	// target's again.
	var got []string
	deadline := time.After(time.Minute)
	for len(got) < 3000 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the target ended after %d lines: %v", len(got), got[max(0, len(got)-3):])
			}
			got = append(got, l)
		case <-deadline:
			t.Fatalf("the target stalled after %d lines (last %v): memtrap's death stopped it", len(got), got[max(0, len(got)-1):])
		}
	}
	inW.Close()
	for l := range lines {
		got = append(got, l)
	}
	if got[0] != "ready" {
		t.Fatalf("first line %q", got[0])
	}
	n := len(got) - 2
	for i := 1; i <= n; i++ {
		if got[i] != fmt.Sprintf("tick %d", i) {
			t.Fatalf("line %d: %q, want tick %d: a store was lost or doubled", i, got[i], i)
		}
	}
	if want := fmt.Sprintf("done %d, code intact", n); got[n+1] != want {
		t.Fatalf("last line %q, want %q", got[n+1], want)
	}
}

// TestFastClosesAll: a target that closes every descriptor above its
// standard ones (close_range) and two it never opened, where the agent's
// own lie: the agent keeps them (the target sees what it would without
// memtrap: close_range done, EBADF for the two) and the writes after are
// reported as before it.
func TestFastClosesAll(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/closer.c", "-O0")
	want := native(t, prog)
	if want.code != 0 || want.stdout != "close_range 0 close -1 -1, next fd 3, counter 3\n" {
		t.Fatalf("native: exit %d, %q", want.code, want.stdout)
	}
	r := memtrap(t, "run", "--engine", "fast", "--format", "json", "--backtrace", "0", "--symbol", "counter", "--", prog)
	if r.stdout != want.stdout || r.code != 0 {
		t.Fatalf("%q exit %d, want %q; stderr %s", r.stdout, r.code, want.stdout, tail(r.stderr))
	}
	ws := writes(parseEvents(t, r.stderr))
	if len(ws) != 3 || ws[0].New != "0x1" || ws[1].New != "0x2" || ws[2].New != "0x3" {
		t.Fatalf("writes %+v", ws)
	}
}

// TestFastManyPages: a region of 256 pages, a byte stored on each and an
// 8-byte store straddling each boundary (two armed pages at once): the
// same writes under page and fast, each once.
func TestFastManyPages(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/bigbuf.c", "-O1")
	want := native(t, prog)
	var evs [2][]string
	for i, engine := range []string{"page", "fast"} {
		r := memtrap(t, "run", "--engine", engine, "--format", "json", "--backtrace", "1", "--symbol", "big", "--", prog)
		if r.stdout != want.stdout || r.code != 0 {
			t.Fatalf("%s: %q exit %d, want %q; stderr %s", engine, r.stdout, r.code, want.stdout, tail(r.stderr))
		}
		for _, e := range writes(parseEvents(t, r.stderr)) {
			evs[i] = append(evs[i], fmt.Sprintf("+%d/%d %s->%s by %s", e.Offset, e.Size, e.Old, e.New, writer(e)))
		}
	}
	if len(evs[1]) != 256+255 || !slices.Equal(evs[0], evs[1]) {
		t.Fatalf("page %d writes, fast %d: %v\n%v", len(evs[0]), len(evs[1]), head(evs[0]), head(evs[1]))
	}
}

// bothEngines runs prog under the page engine and the fast one with args
// (JSON, no backtrace), checks that it prints and exits as natively, and
// returns each engine's events.
func bothEngines(t *testing.T, prog string, args ...string) map[string][]event {
	t.Helper()
	want := native(t, prog)
	out := map[string][]event{}
	for _, engine := range []string{"page", "fast"} {
		a := append(append([]string{"run", "--engine", engine, "--format", "json", "--backtrace", "0"}, args...), "--", prog)
		r := memtrap(t, a...)
		if r.stdout != want.stdout || r.code != want.code {
			t.Fatalf("%s: %q exit %d, want %q %d; stderr %s", engine, r.stdout, r.code, want.stdout, want.code, tail(r.stderr))
		}
		out[engine] = parseEvents(t, r.stderr)
	}
	return out
}

// TestFastTargetMprotect: the target makes a watched page read-only (its
// store faults into its own handler, as natively) and writable again (its
// store is reported): under page and fast alike.
func TestFastTargetMprotect(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/mprot.c", "-O0")
	if want := native(t, prog); want.code != 0 || want.stdout != "faulted 1 counter 3\n" {
		t.Fatalf("native: exit %d, %q", want.code, want.stdout)
	}
	for engine, evs := range bothEngines(t, prog, "--symbol", "counter") {
		ws := writes(evs)
		if len(ws) != 2 || ws[0].New != "0x1" || ws[1].Old != "0x1" || ws[1].New != "0x3" {
			t.Fatalf("%s: writes %+v", engine, ws)
		}
	}
}

// TestFastTargetUnmaps: the target maps a new page over a watched one
// (mmap MAP_FIXED): the store before it is reported, then the region's
// loss, and the store to the new page is not, under page and fast alike.
func TestFastTargetUnmaps(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/remap.c", "-O0")
	if want := native(t, prog); want.code != 0 || want.stdout != "mmap ok counter 2\n" {
		t.Fatalf("native: exit %d, %q", want.code, want.stdout)
	}
	for engine, evs := range bothEngines(t, prog, "--symbol", "counter") {
		var got []string
		for _, e := range evs {
			switch e.Event {
			case "write":
				got = append(got, "write "+e.New)
			case "unmapped":
				got = append(got, "unmapped "+e.Region+" by "+e.How)
			}
		}
		if want := []string{"write 0x1", "unmapped counter by mmap(2)"}; !slices.Equal(got, want) {
			t.Fatalf("%s: events %v, want %v", engine, got, want)
		}
	}
}

// TestFastVforkChild: a vfork child's write to the memory it shares with
// its parent is reported, with the child's tid, between the parent's two:
// under page and fast alike.
func TestFastVforkChild(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/vfork.c", "-O0")
	for engine, evs := range bothEngines(t, prog, "--symbol", "counter") {
		ws := writes(evs)
		if len(ws) != 3 || ws[0].New != "0x1" || ws[1].New != "0x2" || ws[2].New != "0x3" ||
			ws[1].Tid == ws[0].Tid || ws[2].Tid != ws[0].Tid {
			t.Fatalf("%s: writes %+v", engine, ws)
		}
	}
}

// TestFastStackEdge: a store from a function at the top of a stack that
// nothing readable follows. The agent copies the stack at each write as
// far as it is mapped (a fault in its copy comes back to its handler); the
// writes and their writers are those of the page engine.
func TestFastStackEdge(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/edgestack.c", "-O1", "-g")
	if want := native(t, prog); want.code != 0 || want.stdout != "counter 100\n" {
		t.Fatalf("native: exit %d, %q", want.code, want.stdout)
	}
	for engine, evs := range bothEngines(t, prog, "--symbol", "counter", "--backtrace", "1") {
		ws := writes(evs)
		if len(ws) != 100 {
			t.Fatalf("%s: %d writes, want 100", engine, len(ws))
		}
		for i, w := range ws {
			fn := "main"
			if i < 50 {
				fn = "onedge"
			}
			if w.New != fmt.Sprintf("%#x", i+1) || writer(w) != fn {
				t.Fatalf("%s: write %d: %s by %s, want %#x by %s", engine, i, w.New, writer(w), i+1, fn)
			}
		}
	}
}

// TestFastUnemulatedStore: stores neither the agent nor memtrap's emulator
// can do to watched pages: getcontext's fnstenv of the x87 environment,
// while a second thread writes another watched variable on the page; an
// fxsave; an xsave (whose size nobody knows before: only the bytes it
// changes are reported, not exact); and one across two watched pages. The
// fast engine traces the process again for each and single-steps it, as
// the page engine does: the same writes, in the same order, under both;
// the saved context works (setcontext resumes from it), the saved states
// are the CPU's, the thread's writes are all there, and the SIGTRAP the
// target ignores stays ignored.
func TestFastUnemulatedStore(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/x87ctx.c", "-O1", "-g", "-pthread")
	const rounds = 20
	// XSTATE_BV: the SSE bit, and the x87 bit where the CPU does not
	// count the x87 state as in its initial configuration after the
	// setcontext (0x2 on one machine of ours, 0x3 on another); the
	// engines' runs must print the native one (bothEngines).
	want := native(t, prog)
	var bv string
	for _, b := range []string{"0x2", "0x3"} {
		if want.code == 0 && want.stdout == "SIGTRAP ignored 1\nresumed 2, fcw 0x37f, counter 800, fxsave fcw 0x37f, xsave fcw 0x37f bv "+b+", across 0x37f "+b+"\n" {
			bv = "0" + b[2:]
		}
	}
	if bv == "" {
		t.Fatalf("native: exit %d, %q", want.code, want.stdout)
	}
	// Many values are addresses, which differ from run to run.
	key := func(e event) string {
		return fmt.Sprintf("%s+%d/%d %q exact %v", e.Region, e.Offset, e.Size, e.Insn, e.Exact)
	}
	keys := map[string][]string{}
	for engine, evs := range bothEngines(t, prog, "--symbol", "ctx", "--symbol", "counter", "--symbol", "fx", "--symbol", "xs", "--symbol", "two") {
		var ks, saves []string
		counter, ctx, fnstenv := 0, 0, 0
		for _, w := range writes(evs) {
			if w.Region == "counter" {
				counter++
				if w.New != fmt.Sprintf("%#x", counter) {
					t.Fatalf("%s: counter write %d: %s", engine, counter, key(w))
				}
				continue
			}
			ks = append(ks, key(w))
			switch {
			case w.Region == "ctx":
				ctx++
				if strings.HasPrefix(w.Insn, "fnstenv") {
					fnstenv++
					// The x87 control word first: 0x37f, as natively.
					if w.Size != 28 || !w.Exact || !strings.HasPrefix(w.New, "7f03") {
						t.Fatalf("%s: %s: %s", engine, key(w), w.New)
					}
				}
			default:
				// An image's control word, and XSTATE_BV as natively.
				if !strings.HasPrefix(w.New, "7f03") || w.Size == 513 && !strings.HasSuffix(w.New, bv) {
					t.Fatalf("%s: %s: %s", engine, key(w), w.New)
				}
				saves = append(saves, key(w))
			}
		}
		if counter != 40*rounds || fnstenv != rounds || ctx != 17*rounds {
			t.Fatalf("%s: %d counter writes, %d of ctx, %d fnstenv; want %d, %d, %d", engine, counter, ctx, fnstenv, 40*rounds, 17*rounds, rounds)
		}
		want := []string{`fx+0/512 "fxsave64 ptr [rip+0x`, `xs+0/513 "xsave64 ptr [rip+0x`, `two+3840/513 "xsave64 ptr [rcx]" exact false`}
		if len(saves) != 3 || !strings.HasPrefix(saves[0], want[0]) || !strings.HasSuffix(saves[0], "exact true") ||
			!strings.HasPrefix(saves[1], want[1]) || !strings.HasSuffix(saves[1], "exact false") || saves[2] != want[2] {
			t.Fatalf("%s: the saves' writes %q, want %q", engine, saves, want)
		}
		keys[engine] = ks
	}
	if !slices.Equal(keys["page"], keys["fast"]) {
		t.Fatalf("the engines differ:\npage %v\nfast %v", head(keys["page"]), head(keys["fast"]))
	}
}

// TestFastExecutedChild: a program the target runs by system(3) inherits
// the fast engine's syscall filter but not its agent; the filter's traps
// are for calls from the target's own code only, so the shell (which
// blocks signals and sets handlers: calls the agent traps in the target)
// runs as without memtrap, under auto (which takes the fast engine for
// these 64 bytes). Where the address space is not randomized (setarch
// -R) the shell's code could lie where the target's did: auto takes the
// page engine, and --engine fast refuses in one line.
func TestFastExecutedChild(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/sysexec.c", "-O0")
	want := native(t, prog)
	if want.code != 0 || want.stdout != "usr1\nchild ok\nsystem 0\n" {
		t.Fatalf("native: exit %d, %q", want.code, want.stdout)
	}
	check := func(name, engine string, r result) {
		t.Helper()
		if r.stdout != want.stdout || r.code != 0 || !strings.Contains(r.stderr, `"engine":"`+engine+`"`) || !strings.Contains(r.stderr, `"writes":2`) {
			t.Fatalf("%s: %q exit %d, want %q under the %s engine; stderr %s", name, r.stdout, r.code, want.stdout, engine, tail(r.stderr))
		}
	}
	check("auto", "fast", memtrap(t, "run", "--format", "json", "--backtrace", "0", "--symbol", "value", "--", prog))
	setarch, err := exec.LookPath("setarch")
	if err != nil {
		t.Skip("no setarch here (util-linux) to run memtrap with address space randomization off")
	}
	check("auto, setarch -R", "page", runCmd(t, exec.Command(setarch, "-R", memtrapBin, "run", "--format", "json", "--backtrace", "0", "--symbol", "value", "--", prog)))
	r := runCmd(t, exec.Command(setarch, "-R", memtrapBin, "run", "--engine", "fast", "--symbol", "value", "--", prog))
	if r.code != 1 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "randomization is off") {
		t.Fatalf("--engine fast, setarch -R: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestFastMadvise: madvise(MADV_DONTNEED) zeroing watched pages is the
// kernel's write, reported by madvise(2) with what it zeroed, under the
// page engine and the fast one alike; one over an unwatched page is not.
func TestFastMadvise(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/madvise.c", "-O0")
	if want := native(t, prog); want.code != 0 || want.stdout != "madvise 0 0: 0 0 4 3 0\n" {
		t.Fatalf("native: exit %d, %q", want.code, want.stdout)
	}
	for engine, evs := range bothEngines(t, prog, "--symbol", "buf") {
		var got []string
		for _, w := range writes(evs) {
			got = append(got, fmt.Sprintf("+%d %s->%s %s %s", w.Offset, w.Old, w.New, w.By, w.Syscall))
		}
		want := []string{"+8 0x0->0x1 user ", "+4112 0x0->0x2 user ", "+8224 0x0->0x4 user ",
			"+8 0x1->0x0 kernel madvise", "+4112 0x2->0x0 kernel madvise", "+24 0x0->0x3 user "}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: writes %q, want %q", engine, got, want)
		}
	}
}

// TestFastMadviseRace: a madvise's writes recorded while another thread's
// lock xadd, which the fast engine's agent hands to memtrap, needs the
// agent's lock that the madvise holds for memtrap: every write reported,
// as under the page engine, and no deadlock.
func TestFastMadviseRace(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/madvrace.c", "-O1", "-pthread")
	if want := native(t, prog); want.code != 0 || want.stdout != "counter 2000 bad 0 seen 1999000\n" {
		t.Fatalf("native: exit %d, %q", want.code, want.stdout)
	}
	for engine, evs := range bothEngines(t, prog, "--symbol", "buf") {
		stores, zeroed, adds := 0, 0, 0
		for _, w := range writes(evs) {
			switch {
			case w.Offset == 0 && w.By == "user":
				stores++
			case w.Offset == 0 && w.Syscall == "madvise" && w.New == "0x0":
				zeroed++
			case w.Offset == 4096+8 && w.By == "user":
				adds++
			default:
				t.Fatalf("%s: write %+v", engine, w)
			}
		}
		if stores != 200 || zeroed != 200 || adds != 2000 {
			t.Fatalf("%s: %d stores, %d zeroed by madvise, %d adds; want 200, 200, 2000", engine, stores, zeroed, adds)
		}
	}
}
