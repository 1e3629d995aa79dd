package main

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
)

// TestHeapBothPaths: the allocator calls filtered in the kernel (BPF
// uprobes, the default where they work) and every call stopped (int3
// breakpoints, MEMTRAP_HOOKS=int3) report the same allocations, frees,
// reallocations and writes, with the same backtraces: overflows,
// use-after-free, realloc and posix_memalign, counting with every=,
// redzones, four threads, the stack slot of a return address left as
// natively (mode slot: the target checks), a thread that blocks every signal (the kernel's
// filter stops a call with SIGSTOP, which nothing blocks), a thread
// signalled without pause by another while it allocates (a signal of its
// own then comes with the gate's stop now and then, its handler first),
// signals from another process whose handler writes the heap page of a
// block being freed (mode neighbour), a followed fork
// and a fork that executes, a static binary's own malloc. The kernel's
// filter stops an allocation at its return (a uprobe session), and also
// at its entry as where the kernel has no sessions (MEMTRAP_HOOKS=entry).
// The watch header says which path ran.
func TestHeapBothPaths(t *testing.T) {
	prog := heapProg(t)
	static := fixture.Build(t, "cmd/memtrap/testdata/heap.c", "-O0", "-g", "-pthread", "-static")
	for _, c := range []struct {
		prog, mode string
		args       []string
		unordered  bool // threads: the interleaving is the scheduler's
	}{
		{prog, "overflow", []string{"--backtrace", "2", "--heap", "size=24"}, false},
		{prog, "uaf", []string{"--backtrace", "1", "--heap", "size=40", "--freed"}, false},
		{prog, "realloc", []string{"--backtrace", "1", "--heap", "size=40", "--heap", "size=3000"}, false},
		{prog, "select", []string{"--backtrace", "0", "--heap", "size=40,every=4", "--heap", "size=33-36"}, false},
		{prog, "overflow", []string{"--backtrace", "1", "--heap", "size=24,nth=1", "--redzone", "16"}, false},
		{prog, "threads", []string{"--backtrace", "0", "--heap", "size=40"}, true},
		{prog, "slot", []string{"--backtrace", "2", "--heap", "size=40"}, false},
		{prog, "sigblock", []string{"--backtrace", "1", "--heap", "size=40"}, false},
		{prog, "signalled", []string{"--backtrace", "2", "--heap", "size=40"}, false},
		{prog, "neighbour", []string{"--backtrace", "1", "--heap", "size=40"}, false},
		{prog, "fork", []string{"--backtrace", "1", "--heap", "size=40", "--follow-forks"}, false},
		{prog, "forkexec", []string{"--backtrace", "0", "--heap", "size=40", "--follow-forks"}, false},
		{static, "overflow", []string{"--backtrace", "1", "--heap", "size=24"}, false},
	} {
		name := c.mode + " " + strings.Join(c.args, " ")
		if c.prog == static {
			name = "static " + name
		}
		fast, fastHow := heapPath(t, c.prog, c.mode, "", c.args)
		if !strings.Contains(fastHow, "by BPF uprobes") {
			if strings.Contains(fastHow, "unavailable") {
				t.Skipf("no BPF uprobes here: %s", fastHow)
			}
			t.Fatalf("%s: the default path is not the kernel's filter: %s", name, fastHow)
		}
		if !strings.Contains(fastHow, "an allocation at its return") && kernelAtLeast(t, 6, 13) {
			t.Fatalf("%s: Linux has uprobe sessions since 6.13, but the gate stops allocations at their entry: %s", name, fastHow)
		}
		entry, entryHow := heapPath(t, c.prog, c.mode, "entry", c.args)
		if !strings.Contains(entryHow, "by BPF uprobes") || !strings.Contains(entryHow, "at their entry") {
			t.Fatalf("%s: MEMTRAP_HOOKS=entry did not take the gate's entry path: %s", name, entryHow)
		}
		exact, exactHow := heapPath(t, c.prog, c.mode, "int3", c.args)
		if !strings.Contains(exactHow, "by int3 breakpoints") {
			t.Fatalf("%s: MEMTRAP_HOOKS=int3 did not take the int3 path: %s", name, exactHow)
		}
		if c.unordered {
			// Blocks are numbered in the order the threads allocate.
			for _, l := range [][]string{fast, entry, exact} {
				for i := range l {
					l[i] = blockNumber.ReplaceAllString(l[i], "#")
				}
				sort.Strings(l)
			}
		}
		if len(exact) == 0 {
			t.Fatalf("%s: no heap event at all", name)
		}
		if strings.Join(fast, "\n") != strings.Join(exact, "\n") {
			t.Errorf("%s: BPF path\n %s\nint3 path\n %s", name, strings.Join(fast, "\n "), strings.Join(exact, "\n "))
		}
		if strings.Join(entry, "\n") != strings.Join(exact, "\n") {
			t.Errorf("%s: BPF path stopping at entries\n %s\nint3 path\n %s", name, strings.Join(entry, "\n "), strings.Join(exact, "\n "))
		}
	}
}

var blockNumber = regexp.MustCompile(`#[0-9]+`)

// heapPath runs prog mode under memtrap with args and MEMTRAP_HOOKS=hooks,
// checks the target's output and status are its own, and returns its
// heap events and writes in a form two runs can compare (no addresses,
// pids as P and C), and the watch header's line on the allocator.
func heapPath(t *testing.T, prog, mode, hooks string, args []string) ([]string, string) {
	t.Helper()
	want := native(t, prog, mode)
	cmd := exec.Command(memtrapBin, append(append(append([]string{"run", "--format", "json"}, args...), "--", prog), mode)...)
	cmd.Env = append(os.Environ(), "MEMTRAP_HOOKS="+hooks)
	r := runCmd(t, cmd)
	if r.stdout != want.stdout || r.code != want.code {
		t.Fatalf("%s %v (MEMTRAP_HOOKS=%s): output %q code %d, native %q %d; stderr %s", mode, args, hooks, r.stdout, r.code, want.stdout, want.code, tail(r.stderr))
	}
	evs := parseEvents(t, r.stderr)
	var how string
	var out []string
	for _, e := range evs {
		if e.Event == "note" && (strings.HasPrefix(e.Message, "watching heap blocks") && how == "" || strings.Contains(e.Message, "BPF")) {
			how += e.Message + "; "
		}
		if l := heapLine(e, evs[0].Pid); l != "" {
			out = append(out, l)
		}
	}
	return out, how
}

// heapLine is a heap event or a write as two runs compare them, the
// process as P (first's pid) or C, or "" for another event.
func heapLine(e event, first int) string {
	who := "P"
	if e.Pid != first {
		who = "C"
	}
	var funcs []string
	for _, f := range e.Backtrace {
		funcs = append(funcs, f.Func)
	}
	bt := strings.Join(funcs, "<")
	switch e.Event {
	case "alloc", "free", "realloc":
		return fmt.Sprintf("%s:%s#%d size=%d fn=%s bt=%s", who, e.Event, e.Block, e.Size, e.Fn, bt)
	case "write":
		return fmt.Sprintf("%s:%s bt=%s", who, brief(e), bt)
	}
	return ""
}

// TestHeapPIDNamespace: memtrap in a PID namespace of its own (a
// container) knows the target by a pid the kernel's first namespace does
// not: the kernel's filter must still stop its calls, by the ids memtrap
// sees. The same events as outside.
func TestHeapPIDNamespace(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare(1) here")
	}
	prog := heapProg(t)
	if out, err := exec.Command(unshare, "-p", "-f", "--mount-proc", "true").CombinedOutput(); err != nil {
		t.Skipf("cannot make a PID namespace here: %v %s", err, out)
	}
	outside, how := heapPath(t, prog, "uaf", "", []string{"--backtrace", "1", "--heap", "size=40"})
	if !strings.Contains(how, "by BPF uprobes") {
		t.Skipf("no BPF uprobes here: %s", how)
	}
	want := native(t, prog, "uaf")
	r := runCmd(t, exec.Command(unshare, "-p", "-f", "--mount-proc", memtrapBin, "run", "--format", "json",
		"--backtrace", "1", "--heap", "size=40", "--", prog, "uaf"))
	if r.stdout != want.stdout || r.code != want.code {
		t.Fatalf("output %q code %d, native %q %d; stderr %s", r.stdout, r.code, want.stdout, want.code, tail(r.stderr))
	}
	var inside []string
	evs := parseEvents(t, r.stderr)
	for _, e := range evs {
		if l := heapLine(e, evs[0].Pid); l != "" {
			inside = append(inside, l)
		}
	}
	if len(outside) == 0 || strings.Join(inside, "\n") != strings.Join(outside, "\n") {
		t.Errorf("in a PID namespace\n %s\noutside\n %s", strings.Join(inside, "\n "), strings.Join(outside, "\n "))
	}
}

// kernelAtLeast says whether the running kernel's release is at least
// major.minor.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	var ma, mi int
	if _, err := fmt.Sscanf(string(b), "%d.%d", &ma, &mi); err != nil {
		t.Fatalf("kernel release %q: %v", b, err)
	}
	return ma > major || ma == major && mi >= minor
}
