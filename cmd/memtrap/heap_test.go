package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memtrap/memtrap/internal/fixture"
)

func heapProg(t *testing.T) string {
	return fixture.Build(t, "cmd/memtrap/testdata/heap.c", "-O0", "-g", "-pthread")
}

// heapRun runs prog mode under --heap with args, checks the target's
// output and status are its own, and returns the events.
func heapRun(t *testing.T, prog, mode string, args ...string) []event {
	t.Helper()
	var progArgs []string
	if mode != "" {
		progArgs = []string{mode}
	}
	want := native(t, prog, progArgs...)
	argv := append(append(append([]string{"run", "--format", "json"}, args...), "--", prog), progArgs...)
	r := memtrap(t, argv...)
	if r.stdout != want.stdout || r.code != want.code {
		t.Fatalf("%s: output %q code %d, native %q %d; stderr tail %s", mode, r.stdout, r.code, want.stdout, want.code, tail(r.stderr))
	}
	return parseEvents(t, r.stderr)
}

// brief is a write as these tests compare it: region+offset=new by func.
func brief(e event) string {
	return fmt.Sprintf("%s+%d=%s/%s%s", e.Region, e.Offset, e.New, writer(e), map[bool]string{true: "/" + e.Kind, false: ""}[e.Kind != ""])
}

func heapEvents(evs []event, kinds ...string) []event {
	var out []event
	for _, e := range evs {
		for _, k := range kinds {
			if e.Event == k {
				out = append(out, e)
			}
		}
	}
	return out
}

// TestHeapOverflow: a 40-byte write from a 24-byte block runs over the
// next chunk's header into the next block. Both blocks are watched from
// their allocation: the stomp is reported on the victim, by the function
// that overflowed, after the victim's own write.
func TestHeapOverflow(t *testing.T) {
	prog := heapProg(t)
	evs := heapRun(t, prog, "overflow", "--backtrace", "2", "--heap", "size=24")
	allocs := heapEvents(evs, "alloc")
	if len(allocs) != 2 || allocs[0].Block != 1 || allocs[1].Block != 2 || allocs[0].Fn != "malloc" || allocs[0].Size != 24 {
		t.Fatalf("allocations %+v", allocs)
	}
	var got []string
	for _, w := range writes(evs) {
		if w.Block == 0 || w.Region != fmt.Sprintf("heap#%d", w.Block) {
			t.Fatalf("write %+v not named by its block", w)
		}
		got = append(got, brief(w))
	}
	var want []string
	want = append(want, "heap#2+0=0x11/stamp")
	for i := 0; i < 24; i++ {
		want = append(want, fmt.Sprintf("heap#1+%d=0x41/overflow", i))
	}
	for i := 0; i < 8; i++ {
		want = append(want, fmt.Sprintf("heap#2+%d=0x41/overflow", i))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("writes\n %s\nwant\n %s", strings.Join(got, " "), strings.Join(want, " "))
	}
	// The allocation's backtrace: malloc, then main.
	if bt := allocs[1].Backtrace; len(bt) != 2 || bt[1].Func != "main" {
		t.Errorf("allocation backtrace %+v", bt)
	}
}

// TestHeapUseAfterFree: with --freed, the one write after free() is a
// use-after-free; the allocator's own bookkeeping in the freed chunk (its
// free-list pointers) is never reported; when malloc hands the chunk out
// again, the old watch ends and the new block's is its own.
func TestHeapUseAfterFree(t *testing.T) {
	prog := heapProg(t)
	evs := heapRun(t, prog, "uaf", "--backtrace", "1", "--heap", "size=40", "--freed")
	var got []string
	for _, e := range heapEvents(evs, "alloc", "free", "write") {
		if e.Event == "write" {
			got = append(got, brief(e))
		} else {
			got = append(got, fmt.Sprintf("%s#%d", e.Event, e.Block))
		}
	}
	want := "alloc#1 heap#1+0=0x1/stamp free#1 heap#1+16=0x2a/stamp/use-after-free alloc#2 heap#2+0=0x5/stamp free#2"
	if strings.Join(got, " ") != want {
		t.Errorf("events\n %s\nwant\n %s", strings.Join(got, " "), want)
	}
	// Without --freed the watch ends at free(): the write after it is
	// not the block's any more.
	evs = heapRun(t, prog, "uaf", "--backtrace", "1", "--heap", "size=40")
	got = nil
	for _, w := range writes(evs) {
		got = append(got, brief(w))
	}
	if want := "heap#1+0=0x1/stamp heap#2+0=0x5/stamp"; strings.Join(got, " ") != want {
		t.Errorf("without --freed: %s, want %s", strings.Join(got, " "), want)
	}
}

// TestHeapWhenKinds: --when sees a write's block, whether it is a
// use-after-free or an overflow, and its offset from the block's start,
// as the report shows them; so a hunt can stop at the first stale write.
func TestHeapWhenKinds(t *testing.T) {
	prog := heapProg(t)
	briefs := func(evs []event) string {
		var got []string
		for _, w := range writes(evs) {
			got = append(got, brief(w))
		}
		return strings.Join(got, " ")
	}
	evs := heapRun(t, prog, "uaf", "--backtrace", "1", "--heap", "size=40", "--freed", "--when", "freed")
	if got, want := briefs(evs), "heap#1+16=0x2a/stamp/use-after-free"; got != want {
		t.Errorf("--when freed: %s, want %s", got, want)
	}
	evs = heapRun(t, prog, "uaf", "--backtrace", "1", "--heap", "size=40", "--freed", "--when", "!freed && block == 2")
	if got, want := briefs(evs), "heap#2+0=0x5/stamp"; got != want {
		t.Errorf("--when '!freed && block == 2': %s, want %s", got, want)
	}
	// The redzone of a 24-byte block starts at its offset 24.
	evs = heapRun(t, prog, "overflow", "--backtrace", "1", "--heap", "size=24,nth=1", "--redzone", "16", "--when", "overflow && off >= 30")
	if got, want := briefs(evs), "heap#1+30=0x41/overflow/overflow heap#1+31=0x41/overflow/overflow"; got != want {
		t.Errorf("--when 'overflow && off >= 30': %s, want %s", got, want)
	}
}

// TestHeapReallocAndFriends: calloc's block, followed when realloc moves
// it (the same block number, its new size), and posix_memalign's.
func TestHeapReallocAndFriends(t *testing.T) {
	prog := heapProg(t)
	evs := heapRun(t, prog, "realloc", "--backtrace", "1", "--heap", "size=40", "--heap", "size=3000")
	var got []string
	for _, e := range heapEvents(evs, "alloc", "realloc", "free", "write") {
		switch e.Event {
		case "write":
			got = append(got, brief(e))
		case "realloc":
			if e.From == e.Addr || e.From == "" {
				t.Errorf("realloc did not move: %+v", e)
			}
			got = append(got, fmt.Sprintf("realloc#%d:%d", e.Block, e.Size))
		default:
			got = append(got, fmt.Sprintf("%s#%d:%s", e.Event, e.Block, e.Fn))
		}
	}
	want := "alloc#1:calloc heap#1+8=0x7/stamp realloc#1:3000 heap#1+800=0x8/stamp alloc#2:posix_memalign heap#2+0=0x9/stamp free#1:free free#2:free"
	if strings.Join(got, " ") != want {
		t.Errorf("events\n %s\nwant\n %s", strings.Join(got, " "), want)
	}
}

// TestHeapSelect: size ranges, a site in the allocation's backtrace, the
// nth block and every nth.
func TestHeapSelect(t *testing.T) {
	prog := heapProg(t)
	for _, c := range []struct {
		spec string
		want string // the values written into watched blocks
	}{
		// alloc_a's sizes are 32+4i: 36..48 is i = 1..4; alloc_b's 40s
		// are i = 10..19.
		{"size=36-48", "1 2 3 4 10 11 12 13 14 15 16 17 18 19"},
		{"size=36-48,site=alloc_a", "1 2 3 4"},
		{"site=alloc_b", "10 11 12 13 14 15 16 17 18 19"},
		{"site=alloc_a,nth=3", "2"},
		{"size=40,every=4", "12 16"},
	} {
		evs := heapRun(t, prog, "select", "--backtrace", "0", "--heap", c.spec)
		var got []string
		for _, w := range writes(evs) {
			var v int
			fmt.Sscanf(w.New, "0x%x", &v)
			got = append(got, fmt.Sprint(v))
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("--heap %s: values %s, want %s", c.spec, strings.Join(got, " "), c.want)
		}
		if n := len(heapEvents(evs, "alloc")); n != len(got) {
			t.Errorf("--heap %s: %d allocations reported for %d written blocks", c.spec, n, len(got))
		}
	}
}

// TestHeapThreads: four threads allocate, write and free 50 blocks each:
// every block's one write, by its own thread, with its own value.
func TestHeapThreads(t *testing.T) {
	prog := heapProg(t)
	evs := heapRun(t, prog, "threads", "--backtrace", "0", "--heap", "size=40")
	tidOf := map[int]int{} // block -> allocating thread
	for _, a := range heapEvents(evs, "alloc") {
		tidOf[a.Block] = a.Tid
	}
	perThread := map[int64]int{}
	for _, w := range writes(evs) {
		var v int64
		fmt.Sscanf(w.New, "0x%x", &v)
		if w.Offset != 0 || w.Tid != tidOf[w.Block] {
			t.Fatalf("write %+v: not its block's thread (%d)", w, tidOf[w.Block])
		}
		perThread[v/1000]++
	}
	for id := int64(0); id < 4; id++ {
		if perThread[id] != 50 {
			t.Errorf("thread %d: %d writes, want 50 (all: %v)", id, perThread[id], perThread)
		}
	}
	if n := len(heapEvents(evs, "free")); n != 200 {
		t.Errorf("%d frees, want 200", n)
	}
}

// TestHeapDemo is make demo's heap stomp: the credentials block that
// new_credentials allocates, written by grant, then stomped by copy_name
// across the allocator's header of its chunk; the program's output and
// status its own.
func TestHeapDemo(t *testing.T) {
	prog := fixture.Build(t, "examples/heapstomp.c", "-O0", "-g", "-fno-omit-frame-pointer")
	evs := heapRun(t, prog, "", "--backtrace", "2", "--heap", "size=24,site=new_credentials")
	if a := heapEvents(evs, "alloc"); len(a) != 1 || len(a[0].Backtrace) != 2 || a[0].Backtrace[1].Func != "new_credentials" {
		t.Fatalf("allocations %+v", a)
	}
	var got []string
	for _, w := range writes(evs) {
		got = append(got, brief(w))
	}
	want := "heap#1+0=0x3e8/grant heap#1+0=0x64/copy_name heap#1+1=0x65/copy_name heap#1+2=0x65/copy_name heap#1+3=0x64/copy_name heap#1+4=0x0/copy_name"
	if strings.Join(got, " ") != want {
		t.Errorf("writes\n %s\nwant\n %s", strings.Join(got, " "), want)
	}
}

// TestHeapCPlusPlus: operator new and delete reach the hooked allocator;
// a C++ site name matches with or without its parameter list; a vector
// that reallocates gets a block per capacity (1, 2, 4, 8 elements), each
// freed when the next takes over, the last at its destruction.
func TestHeapCPlusPlus(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/heap.cc", "-O0", "-g")
	evs := heapRun(t, prog, "", "--backtrace", "3", "--heap", "site=Session::create")
	allocs := heapEvents(evs, "alloc")
	if len(allocs) != 1 || allocs[0].Size != 8 || allocs[0].Backtrace[1].Func != "operator new(unsigned long)" {
		t.Fatalf("allocations %+v", allocs)
	}
	ws := writes(evs)
	if len(ws) == 0 || ws[len(ws)-1].New != "0x5ec0de" || writer(ws[len(ws)-1]) != "main" {
		t.Errorf("writes %+v: want main's token last", ws)
	}
	if f := heapEvents(evs, "free"); len(f) != 1 || f[0].Block != 1 || len(f[0].Backtrace) < 2 || f[0].Backtrace[0].Func != "free" || f[0].Backtrace[1].Func != "main" {
		// operator delete tail-calls free: no frame of its own.
		t.Errorf("frees %+v: want delete's, with its backtrace: free, main", f)
	}

	evs = heapRun(t, prog, "", "--backtrace", "0", "--heap", "site=fill_vector")
	var sizes []string
	for _, a := range heapEvents(evs, "alloc") {
		sizes = append(sizes, fmt.Sprint(a.Size))
	}
	if strings.Join(sizes, " ") != "8 16 32 64" {
		t.Errorf("vector buffers of %s bytes, want 8 16 32 64", strings.Join(sizes, " "))
	}
	if n := len(heapEvents(evs, "free")); n != 4 {
		t.Errorf("%d frees, want 4", n)
	}
	// Each push_back's element lands in the buffer of its capacity.
	pushed := map[string]bool{}
	for _, w := range writes(evs) {
		pushed[fmt.Sprintf("%s+%d=%s", w.Region, w.Offset, w.New)] = true
	}
	for _, p := range []string{"heap#1+0=0x64", "heap#2+8=0x65", "heap#3+16=0x66", "heap#3+24=0x67", "heap#4+32=0x68"} {
		if !pushed[p] {
			t.Errorf("no write %s among %v", p, pushed)
		}
	}
}

// TestHeapRedzone: with --redzone on the overflowing block alone, the
// bytes past its 24 are its redzone: up to the next block's, no further
// (the next chunk's size field, 8 bytes). The write of that header by
// the next malloc is the allocator's and never reported; the overflow's
// 8 bytes are, as an overflow, numbered from the block's start; the next
// block's own write is not watched at all.
func TestHeapRedzone(t *testing.T) {
	prog := heapProg(t)
	evs := heapRun(t, prog, "overflow", "--backtrace", "1", "--heap", "size=24,nth=1", "--redzone", "16")
	var got []string
	for _, w := range writes(evs) {
		got = append(got, brief(w))
	}
	var want []string
	for i := 0; i < 24; i++ {
		want = append(want, fmt.Sprintf("heap#1+%d=0x41/overflow", i))
	}
	for i := 24; i < 32; i++ {
		want = append(want, fmt.Sprintf("heap#1+%d=0x41/overflow/overflow", i))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("writes\n %s\nwant\n %s", strings.Join(got, " "), strings.Join(want, " "))
	}
}

// TestHeapAttach: attached to a running program, --heap watches the blocks
// allocated from then on; at SIGTERM memtrap takes its breakpoints out
// (the target's next malloc would die of SIGTRAP otherwise, and
// hijacked return addresses would send it to a page that is gone) and
// the target runs on to its own end.
func TestHeapAttach(t *testing.T) {
	prog := heapProg(t)
	target := exec.Command(prog, "loop")
	stdout, _ := target.StdoutPipe()
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	defer target.Process.Kill()
	rd := bufio.NewReader(stdout)
	if l, _ := rd.ReadString('\n'); l != "ready\n" {
		t.Fatalf("target said %q", l)
	}
	out := make(chan string, 1)
	go func() { rest, _ := readAll(rd); out <- rest }()
	mt := exec.Command(memtrapBin, "attach", fmt.Sprint(target.Process.Pid), "--format", "json", "--backtrace", "1", "--heap", "size=40")
	errp, _ := mt.StderrPipe()
	if err := mt.Start(); err != nil {
		t.Fatal(err)
	}
	mrd := bufio.NewReader(errp)
	var seen []string
	for len(seen) < 10 {
		l, err := mrd.ReadString('\n')
		if err != nil {
			t.Fatalf("memtrap ended early: %v", err)
		}
		seen = append(seen, l)
	}
	mt.Process.Signal(syscall.SIGTERM)
	rest, _ := readAll(mrd)
	if err := mt.Wait(); err != nil {
		t.Fatalf("memtrap: %v", err)
	}
	evs := parseEvents(t, strings.Join(seen, "")+rest)
	if end := last(t, evs); end.Event != "detach" {
		t.Fatalf("last event %+v", end)
	}
	// Each watched block: its allocation, the loop's one write of its
	// number, its free; numbers in a row.
	prev := -1
	for _, w := range writes(evs) {
		var v int
		fmt.Sscanf(w.New, "0x%x", &v)
		if writer(w) != "stamp" || w.Offset != 0 || (prev >= 0 && v != prev+1) {
			t.Fatalf("write %+v after value %d", w, prev)
		}
		prev = v
	}
	if prev < 0 {
		t.Fatal("no write reported")
	}
	// Its output to the end first: Wait closes the pipe once the target
	// has exited, maybe before the reader has read it all.
	s := <-out
	if err := target.Wait(); err != nil {
		t.Fatalf("target after detach: %v", err)
	}
	if s != "loop done\n" {
		t.Errorf("target's output after detach %q", s)
	}
}

// TestArgAndLocal: --arg watches what a call is given while it lasts (the
// size from DWARF, or LEN), --local a local variable in each live frame,
// recursion's two at once; nothing after the calls return.
func TestArgAndLocal(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/calls.c", "-O0", "-g")
	for _, c := range []struct {
		args []string
		want string
	}{
		// struct rec is 24 bytes: id, then name's "x\0"; main's a.id = 5
		// after the call is not fill_record's.
		{[]string{"--arg", "fill_record:1"}, "fill_record:1+0=0x1/fill_record fill_record:1+8=0x78/fill_record fill_record:1+0=0x2/fill_record fill_record:1+8=0x78/fill_record"},
		{[]string{"--arg", "fill_record:1:8"}, "fill_record:1+0=0x1/fill_record fill_record:1+0=0x2/fill_record"},
		// depth 1's scratch[0..1], then depth 0's whole life inside it,
		// then depth 1's scratch[2].
		{[]string{"--local", "process_batch:scratch"}, "process_batch:scratch+0=0x1/process_batch process_batch:scratch+8=0x2/process_batch " +
			"process_batch:scratch+0=0x0/process_batch process_batch:scratch+8=0x0/process_batch process_batch:scratch+16=0x0/process_batch " +
			"process_batch:scratch+16=0x0/process_batch"},
	} {
		evs := heapRun(t, prog, "", append([]string{"--backtrace", "1"}, c.args...)...)
		var got []string
		addrs := map[string]bool{}
		for _, w := range writes(evs) {
			got = append(got, brief(w))
			addrs[w.Addr] = true
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("%v: writes\n %s\nwant\n %s", c.args, strings.Join(got, " "), c.want)
		}
		if c.args[0] == "--local" && len(addrs) != 6 {
			t.Errorf("--local: %d addresses written, want 6 (three of each frame's scratch)", len(addrs))
		}
	}
	// scale's argument is a number: the first three calls say their
	// region cannot be watched, then one note says no more will.
	var notes []string
	for _, e := range heapRun(t, prog, "", "--arg", "scale:1:8") {
		if e.Event == "note" && strings.HasPrefix(e.Message, "scale:1") {
			notes = append(notes, e.Message)
		}
	}
	wantNotes := []string{
		"scale:1 at 0x1000: region scale:1: address 0x1000 is not mapped",
		"scale:1 at 0x2000: region scale:1: address 0x2000 is not mapped",
		"scale:1 at 0x3000: region scale:1: address 0x3000 is not mapped",
		"scale:1: more calls whose region memtrap cannot watch; it says no more of them",
	}
	if strings.Join(notes, "\n") != strings.Join(wantNotes, "\n") {
		t.Errorf("--arg scale:1:8: notes\n %s\nwant\n %s", strings.Join(notes, "\n "), strings.Join(wantNotes, "\n "))
	}
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--arg", "fill_record:3"}, 1, "--arg fill_record:3: fill_record has 2 parameter(s)"},
		{[]string{"--arg", "fill_record:2"}, 1, "--arg fill_record:2: its DWARF does not say the size of what it points to; give --arg fill_record:2:LEN"},
		{[]string{"--local", "process_batch:nope"}, 1, "--local process_batch:nope: nope: no such local variable in the function's DWARF"},
		{[]string{"--arg", "fill_recrod:1"}, 1, "--arg fill_recrod:1: "},
		{[]string{"--arg", "fill_record"}, 2, "--arg fill_record: want FUNC:N or FUNC:N:LEN (N the argument's number from 1)"},
		{[]string{"--arg", "fill_record:0"}, 2, "--arg fill_record:0: argument 0: they are numbered from 1"},
		{[]string{"--arg", "fill_record:1:0"}, 2, "--arg fill_record:1:0: LEN 0: a region needs at least one byte"},
		{[]string{"--local", "process_batch"}, 2, "--local process_batch: want FUNC:VAR"},
	} {
		r := memtrap(t, append(append([]string{"run"}, c.args...), "--", prog)...)
		line := strings.TrimSpace(r.stderr)
		if r.code != c.code || strings.Count(line, "\n") != 0 || !strings.HasPrefix(line, "memtrap: "+c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d, %q", c.args, r.code, r.stderr, c.code, c.msg)
		}
	}
}

// TestHeapForks: with --follow-forks a forked child's heap is watched (its
// copy of the parent's block, and its own), and after execve the new
// image's allocator is hooked again; without it, the child gets its copy
// of the breakpoints taken out and runs as it would.
func TestHeapForks(t *testing.T) {
	prog := heapProg(t)
	for _, c := range []struct {
		mode   string
		follow bool
		want   string // pid:write, parent P, child C
	}{
		{"fork", true, "P:heap#1+0=0x1/ C:heap#1+0=0x2/ C:heap#2+0=0x3/ P:heap#1+0=0x4/"},
		{"forkexec", true, "P:heap#1+0=0x1/ C:heap#2+0=0x1/ C:heap#3+0=0x5/ P:heap#1+0=0x4/"},
		{"fork", false, "P:heap#1+0=0x1/ P:heap#1+0=0x4/"},
		// The target runs itself anew: its loader's calls, which the
		// filter stops (--heap watches for kernel writes everywhere),
		// ran into a loop that did not resume them, and memtrap hung
		// until killed.
		{"exec", false, "P:heap#1+0=0x1/ P:heap#2+0=0x1/ P:heap#3+0=0x5/"},
	} {
		args := []string{"--backtrace", "0", "--heap", "size=40"}
		if c.follow {
			args = append(args, "--follow-forks")
		}
		evs := heapRun(t, prog, c.mode, args...)
		parent := evs[0].Pid
		var got []string
		for _, w := range writes(evs) {
			who := "C"
			if w.Pid == parent {
				who = "P"
			}
			got = append(got, who+":"+brief(w))
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("%s (follow %v): writes\n %s\nwant\n %s", c.mode, c.follow, strings.Join(got, " "), c.want)
		}
	}
}

// TestHeapForkRealloc: a parent and its followed child each grow a block
// with reallocarray, which glibc implements as a tail call of realloc.
// Each process has its gate, and the kernel runs every gate's uprobe
// session at a call of either process: the other process's asked for the call's return too,
// so the return address was the kernel's trampoline when memtrap stopped
// the call. memtrap took that for the caller (the backtraces ended
// there) and put its own trampoline over it; realloc's uprobe, at the
// tail call, then found memtrap's address there and dropped the kernel's
// record of reallocarray's call: both processes died of SIGILL ("failed
// to handle uretprobe") when realloc returned.
func TestHeapForkRealloc(t *testing.T) {
	prog := heapProg(t)
	evs := heapRun(t, prog, "forkrealloc", "--backtrace", "2", "--heap", "size=40", "--follow-forks")
	parent := evs[0].Pid
	got := map[string][]string{}
	for _, w := range writes(evs) {
		who := "C"
		if w.Pid == parent {
			who = "P"
		}
		got[who] = append(got[who], brief(w))
	}
	if p, c := strings.Join(got["P"], " "), strings.Join(got["C"], " "); p != "heap#1+0=0x1/stamp heap#1+0=0x3/stamp" || c != "heap#1+0=0x2/stamp" {
		t.Errorf("writes: parent %s, child %s", p, c)
	}
	callers := map[string]string{"alloc": "main", "realloc": "grow", "free": "release"}
	count := map[string]int{}
	for _, e := range heapEvents(evs, "alloc", "realloc", "free") {
		count[e.Event]++
		if len(e.Backtrace) < 2 || e.Backtrace[1].Func != callers[e.Event] {
			t.Errorf("%s of heap#%d in %d: backtrace %+v, want %s called by %s", e.Event, e.Block, e.Pid, e.Backtrace, e.Fn, callers[e.Event])
		}
		if e.Event == "realloc" && e.Fn != "reallocarray" {
			t.Errorf("realloc event of heap#%d: fn %q, want reallocarray", e.Block, e.Fn)
		}
	}
	if count["alloc"] != 1 || count["realloc"] != 2 || count["free"] != 2 {
		t.Errorf("heap events %v, want 1 alloc, 2 reallocs, 2 frees", count)
	}
}

// TestHeapNoAllocator: a Go program has no malloc to hook; memtrap says
// why in one line and exits 1 before the program runs a line of its own.
func TestHeapNoAllocator(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/atomics.go")
	r := memtrap(t, "run", "--heap", "size=40", "--", prog)
	want := "defines malloc: a Go program's objects come from the Go runtime's own heap, which --heap does not hook\n"
	if r.code != 1 || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "memtrap: --heap: no module of process ") || !strings.HasSuffix(r.stderr, want) {
		t.Errorf("code %d, stdout %q, stderr %q; want 1, nothing, one line ending %q", r.code, r.stdout, r.stderr, want)
	}
}

// TestHeapAllocators: the allocator hooked is the one the program's calls
// bind to: a static binary's own malloc, jemalloc preloaded in front of
// glibc's; the watch header says which. The overflow is the same stomp.
func TestHeapAllocators(t *testing.T) {
	const jemalloc = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
	static := fixture.Build(t, "cmd/memtrap/testdata/heap.c", "-O0", "-g", "-pthread", "-static")
	dynamic := heapProg(t)
	want := []string{"heap#2+0=0x11/stamp"}
	for i := 0; i < 24; i++ {
		want = append(want, fmt.Sprintf("heap#1+%d=0x41/overflow", i))
	}
	for i := 0; i < 8; i++ {
		want = append(want, fmt.Sprintf("heap#2+%d=0x41/overflow", i))
	}
	for _, c := range []struct {
		prog, preload, module string
	}{
		{static, "", static},
		{dynamic, jemalloc, jemalloc},
	} {
		cmd := exec.Command(memtrapBin, "run", "--format", "json", "--backtrace", "1", "--heap", "size=24", "--", c.prog, "overflow")
		nat := exec.Command(c.prog, "overflow")
		if c.preload != "" {
			cmd.Env = append(os.Environ(), "LD_PRELOAD="+c.preload)
			nat.Env = cmd.Env
		}
		want0, r := runCmd(t, nat), runCmd(t, cmd)
		if r.stdout != want0.stdout || r.code != want0.code {
			t.Fatalf("%s: output %q code %d, native %q %d; stderr %s", c.module, r.stdout, r.code, want0.stdout, want0.code, tail(r.stderr))
		}
		evs := parseEvents(t, r.stderr)
		hooked := false
		for _, e := range evs {
			if e.Event == "note" && strings.Contains(e.Message, "of "+c.module+" hooked") {
				hooked = true
			}
		}
		if !hooked {
			t.Errorf("%s: no note names it as the allocator hooked: %s", c.module, tail(r.stderr))
		}
		var got []string
		for _, w := range writes(evs) {
			got = append(got, brief(w))
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s: writes\n %s\nwant\n %s", c.module, strings.Join(got, " "), strings.Join(want, " "))
		}
	}
}

// TestAttachTargetDies: a target that dies while watched makes attach
// say how and exit as a shell would report it (128+N for signal N), as
// run does; one that exits exits memtrap with its code.
func TestAttachTargetDies(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/ticker.c", "-O0")
	for _, c := range []struct {
		args []string
		code int
		end  string
	}{
		{[]string{"20", "abort"}, 128 + 6, "target killed by signal 6"},
		{[]string{"20"}, 0, "target exited with status 0"},
	} {
		target := exec.Command(prog, c.args...)
		stdout, _ := target.StdoutPipe()
		if err := target.Start(); err != nil {
			t.Fatal(err)
		}
		rd := bufio.NewReader(stdout)
		rd.ReadString('\n')
		go readAll(rd)
		r := memtrap(t, "attach", fmt.Sprint(target.Process.Pid), "--engine", "page", "--backtrace", "0", "--symbol", "ticks")
		target.Wait()
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		if r.code != c.code || !strings.HasSuffix(lines[len(lines)-1], c.end) {
			t.Errorf("%v: exit %d, last line %q; want exit %d, %q", c.args, r.code, lines[len(lines)-1], c.code, c.end)
		}
	}
}

// TestPendingNeverResolved: a module:name still pending when the target
// exits is said to have never resolved.
func TestPendingNeverResolved(t *testing.T) {
	prog := fixture.Build(t, "examples/stomp.c", "-O0")
	r := memtrap(t, "run", "--backtrace", "0", "--symbol", "session", "--symbol", "libnothere.so:thing", "--", prog)
	if r.code != 3 || !strings.Contains(r.stderr, "memtrap: symbol libnothere.so:thing never resolved: no library loaded defined it, nothing was watched for it\n") {
		t.Errorf("exit %d, stderr %s", r.code, tail(r.stderr))
	}
}

// TestIgnoredSIGTRAP: a target that ignores SIGTRAP and later raises it
// lives on, as natively, though memtrap's traps (a single-stepped store,
// debug registers, --heap's breakpoints) are forced on it as SIGTRAP,
// which resets an ignored signal to SIG_DFL.
func TestIgnoredSIGTRAP(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/trapign.c", "-O0", "-g")
	want := native(t, prog)
	modes := [][]string{
		{"--engine", "page", "--symbol", "watched"},
		{"--engine", "page", "--completer", "step", "--symbol", "watched"},
		{"--heap", "size=40"},
	}
	if hwWorks(t) {
		modes = append(modes, []string{"--engine", "hw", "--symbol", "watched"})
	}
	for _, m := range modes {
		r := memtrap(t, append(append([]string{"run", "--backtrace", "0"}, m...), "--", prog)...)
		if r.code != want.code || r.stdout != want.stdout {
			t.Errorf("%v: exit %d, stdout %q; native %d, %q; stderr %s", m, r.code, r.stdout, want.code, want.stdout, tail(r.stderr))
		}
	}
}

// procState is the state letter of /proc/PID/stat.
func procState(t *testing.T, pid int) byte {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	i := strings.LastIndexByte(string(b), ')')
	return b[i+2]
}

// TestAttachStopped: attached while stopped (kill -STOP), the target is
// armed and stays stopped; continued, it is watched; let go while stopped,
// it stays stopped, and runs on to its own end once continued (#12, part
// 4). Both engines where they run.
func TestAttachStopped(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/ticker.c", "-O0")
	engines := []string{"page"}
	if hwWorks(t) {
		engines = append(engines, "hw")
	}
	for _, engine := range engines {
		for _, detachStopped := range []bool{false, true} {
			target := exec.Command(prog, "60")
			stdout, _ := target.StdoutPipe()
			if err := target.Start(); err != nil {
				t.Fatal(err)
			}
			rd := bufio.NewReader(stdout)
			rd.ReadString('\n')
			lines := make(chan string, 1000)
			go func() {
				for {
					l, err := rd.ReadString('\n')
					if err != nil {
						close(lines)
						return
					}
					lines <- l
				}
			}()
			pid := target.Process.Pid
			target.Process.Signal(syscall.SIGSTOP)
			for procState(t, pid) != 'T' {
				time.Sleep(time.Millisecond)
			}
			// What it printed before it stopped.
			time.Sleep(20 * time.Millisecond)
			for len(lines) > 0 {
				<-lines
			}
			mt := exec.Command(memtrapBin, "attach", fmt.Sprint(pid), "--engine", engine, "--format", "json", "--backtrace", "0", "--symbol", "ticks")
			errp, _ := mt.StderrPipe()
			if err := mt.Start(); err != nil {
				t.Fatal(err)
			}
			mrd := bufio.NewReader(errp)
			if l, _ := mrd.ReadString('\n'); !strings.Contains(l, `"event":"watch"`) {
				t.Fatalf("%s: memtrap said %q", engine, l)
			}
			time.Sleep(200 * time.Millisecond)
			if s := procState(t, pid); s != 't' && s != 'T' {
				t.Errorf("%s: attached target in state %c, want stopped", engine, s)
			}
			for len(lines) > 0 {
				l := <-lines
				if strings.HasPrefix(l, "tick") {
					t.Errorf("%s: the stopped target ran: %q", engine, l)
				}
			}
			if !detachStopped {
				target.Process.Signal(syscall.SIGCONT)
				for {
					l, err := mrd.ReadString('\n')
					if err != nil {
						t.Fatalf("%s: memtrap ended before a write: %v", engine, err)
					}
					if strings.Contains(l, `"event":"write"`) {
						break
					}
				}
			}
			mt.Process.Signal(syscall.SIGTERM)
			rest, _ := readAll(mrd)
			if err := mt.Wait(); err != nil {
				t.Fatalf("%s: memtrap: %v (%s)", engine, err, rest)
			}
			if detachStopped {
				time.Sleep(50 * time.Millisecond)
				if s := procState(t, pid); s != 'T' {
					t.Errorf("%s: after a detach while stopped, state %c, want T", engine, s)
				}
				target.Process.Signal(syscall.SIGCONT)
			}
			if err := target.Wait(); err != nil {
				t.Errorf("%s (detach while stopped %v): target: %v", engine, detachStopped, err)
			}
		}
	}
}
