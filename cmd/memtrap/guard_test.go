package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memtrap/memtrap/internal/fixture"
)

// TestGuardianSIGKILL: memtrap is killed with SIGKILL while attached to a
// target that writes the watched variable (through a hooked function, in
// one case) every 200 ms, half a period after a write; its guardian gives
// everything back, and the target runs on as if memtrap had never been
// there: its maps as before the attach (no protection left, no mapping of
// memtrap's), its code intact (no int3 left), every write done once, its
// own exit status. Killed half a period from any trap, memtrap leaves no
// trap for the kernel to deliver while it lets the target go (README,
// Limits): every try must survive.
//
// For scripts/guardian-survival, which counts survivors:
// MEMTRAP_GUARD_RANDOM=1 kills memtrap at a random moment instead,
// MEMTRAP_GUARD_TRIES and MEMTRAP_GUARD_PERIOD (ms) change the tries per
// case and the period, and MEMTRAP_GUARD_PREFIX is a command memtrap runs
// under (chrt -f 1).
func TestGuardianSIGKILL(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/guarded.c", "-O1", "-g")
	tries, period := envInt("MEMTRAP_GUARD_TRIES", 3), envInt("MEMTRAP_GUARD_PERIOD", 200)
	random := os.Getenv("MEMTRAP_GUARD_RANDOM") == "1"
	cases := map[string][]string{
		"page":       {"--engine", "page", "--symbol", "ticks"},
		"hw":         {"--engine", "hw", "--symbol", "ticks"},
		"page+hooks": {"--engine", "page", "--symbol", "ticks", "--arg", "bump:1:8"},
		// The target forks after the attach, and its followed child
		// carries on writing: killed then, memtrap leaves the child armed
		// too (its copy of the parent's pages, or its own debug
		// registers), which its own guardian gives back.
		"page+fork": {"--engine", "page", "--symbol", "ticks", "--follow-forks"},
		"hw+fork":   {"--engine", "hw", "--symbol", "ticks", "--follow-forks"},
	}
	names := engines(t, "page", "hw", "page+hooks", "page+fork", "hw+fork")
	if !hwWorks(t) {
		names = slices.DeleteFunc(names, func(n string) bool { return strings.HasPrefix(n, "hw") })
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			survived := 0
			var seized, done []int
			for i := 0; i < tries; i++ {
				s, d, err := guardedTry(t, prog, period, random, strings.HasSuffix(name, "+fork"), cases[name])
				if err != nil {
					t.Errorf("try %d: %v", i+1, err)
					continue
				}
				survived++
				seized, done = append(seized, s), append(done, d)
			}
			slices.Sort(seized)
			slices.Sort(done)
			t.Logf("%s: %d of %d targets survived memtrap's SIGKILL; the guardian seized the target %s us, and was done %s us, after it saw memtrap die (min/median/max)",
				name, survived, tries, spread(seized), spread(done))
		})
	}
}

// spread is the min/median/max of sorted.
func spread(sorted []int) string {
	if len(sorted) == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d/%d", sorted[0], sorted[len(sorted)/2], sorted[len(sorted)-1])
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// guardedTry attaches to a fresh target, kills memtrap half a period after
// the first write it reports (random: at a random moment within two
// periods of the armed watch), and checks the target. It returns the
// guardian's times, as it says them.
//
// With fork, the target forks once memtrap watches it, and memtrap is
// killed once the child writes: the child, which carries on, must survive
// too, its guardian having given it back.
func guardedTry(t *testing.T, prog string, period int, random, fork bool, flags []string) (seized, done int, err error) {
	t.Helper()
	args := []string{strconv.Itoa(period)}
	if fork {
		args = append(args, "fork")
	}
	target := exec.Command(prog, args...)
	stdin, _ := target.StdinPipe()
	stdout, _ := target.StdoutPipe()
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	defer target.Process.Kill()
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() (string, error) {
		select {
		case l, ok := <-lines:
			if !ok {
				return "", io.EOF
			}
			return l, nil
		case <-time.After(10 * time.Second):
			return "", fmt.Errorf("the target printed nothing for 10 s")
		}
	}
	if l, err := next(); l != "ready" {
		t.Fatalf("target: %q, %v", l, err)
	}
	pid := target.Process.Pid
	before := mapsOf(t, pid)
	argv := append(strings.Fields(os.Getenv("MEMTRAP_GUARD_PREFIX")), memtrapBin, "attach", strconv.Itoa(pid), "--format", "json", "--backtrace", "0")
	mt := exec.Command(argv[0], append(argv[1:], flags...)...)
	errp, _ := mt.StderrPipe()
	if err := mt.Start(); err != nil {
		t.Fatal(err)
	}
	mrd := bufio.NewReader(errp)
	// awaitEvent reads memtrap's events up to one of kind ev.
	awaitEvent := func(ev string) {
		for {
			l, err := mrd.ReadString('\n')
			if err != nil {
				mt.Wait()
				t.Fatalf("memtrap ended before a %s event: %v", ev, err)
			}
			if strings.Contains(l, `"event":"`+ev+`"`) {
				return
			}
		}
	}
	awaitEvent("watch")
	child := 0
	if fork {
		// The child's first write, then as without a child.
		if err := target.Process.Signal(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		for child == 0 {
			l, err := mrd.ReadString('\n')
			if err != nil {
				mt.Wait()
				t.Fatalf("memtrap ended before the child wrote: %v", err)
			}
			var ev struct {
				Event string `json:"event"`
				Pid   int    `json:"pid"`
			}
			if json.Unmarshal([]byte(l), &ev) == nil && ev.Event == "write" && ev.Pid != pid {
				child = ev.Pid
			}
		}
	}
	if random {
		time.Sleep(time.Duration(rand.IntN(2*period*1000)) * time.Microsecond)
	} else {
		if !fork {
			awaitEvent("write")
		}
		time.Sleep(time.Duration(period/2) * time.Millisecond)
	}
	mt.Process.Kill()
	// The guardian holds memtrap's stderr until it is done.
	rest, _ := readAll(mrd)
	mt.Wait()
	// What the target printed so far, then a tick more.
	var all []string
	for drained := false; !drained; {
		select {
		case l, ok := <-lines:
			if ok {
				all = append(all, l)
			}
			drained = !ok
		default:
			drained = true
		}
	}
	for k := len(all); len(all) < k+1; {
		l, err := next()
		if err != nil {
			target.Wait()
			return 0, 0, fmt.Errorf("the target after memtrap's death: %v (%v); memtrap's stderr: %s", err, target.ProcessState, rest)
		}
		all = append(all, l)
	}
	i := strings.Index(rest, "its guardian gave back what memtrap had changed")
	if i < 0 {
		return 0, 0, fmt.Errorf("no word of the guardian; memtrap's stderr: %s", rest)
	}
	if j := strings.Index(rest[i:], "(seized "); j >= 0 {
		fmt.Sscanf(rest[i+j:], "(seized %d us after it saw memtrap die, done after %d us)", &seized, &done)
	}
	if after := mapsOf(t, pid); after != before {
		return 0, 0, fmt.Errorf("maps changed:\n%s\nwere:\n%s", after, before)
	}
	if tp, err := tracerPid(pid); err != nil || tp != 0 {
		return 0, 0, fmt.Errorf("still traced by %d (%v)", tp, err)
	}
	if fork {
		if !strings.Contains(rest, fmt.Sprintf("died while attached to process %d; its guardian gave back", child)) {
			return 0, 0, fmt.Errorf("no word of child %d's guardian; memtrap's stderr: %s", child, rest)
		}
		// A copy of the parent's memory: its maps as the parent's were.
		if after := mapsOf(t, child); after != before {
			return 0, 0, fmt.Errorf("child %d's maps:\n%s\nthe parent's before the attach:\n%s", child, after, before)
		}
		if tp, err := tracerPid(child); err != nil || tp != 0 {
			return 0, 0, fmt.Errorf("child %d still traced by %d (%v)", child, tp, err)
		}
	}
	stdin.Close()
	for {
		l, err := next()
		if err != nil {
			break
		}
		all = append(all, l)
	}
	werr := target.Wait()
	ws, _ := target.ProcessState.Sys().(syscall.WaitStatus)
	if werr == nil || !ws.Exited() || ws.ExitStatus() != 7 {
		return 0, 0, fmt.Errorf("target ended with %v; its last lines %q", target.ProcessState, all[max(0, len(all)-3):])
	}
	// Every bump printed its value: no write lost or doubled.
	n := len(all) - 1
	for i, l := range all[:n] {
		if l != fmt.Sprintf("tick %d", i+1) {
			return 0, 0, fmt.Errorf("line %d of the target: %q", i+1, l)
		}
	}
	if want := fmt.Sprintf("done %d, code intact", n); all[n] != want {
		return 0, 0, fmt.Errorf("the target's last line %q, want %q", all[n], want)
	}
	return seized, done, nil
}

// TestGuardianMidCall: memtrap dies (MEMTRAP_DIE_AT_INJECT, a testing aid)
// in the middle of a system call it injects, the thread's registers set
// for the call, while it watches heap blocks of an attached target (every
// call of the target traced, so every block's page is armed and given back
// by injected calls). The dying tracer lets the thread go there: from a
// `syscall` of the target's own, it ran on into the code after it and
// returned from main with the call's result (exit 0, its work not done).
// From memtrap's landing it waits in a loop for the guardian, which gives
// it its registers and signal mask back. The target runs on, its sum
// right, its exit status its own, its maps as before the attach.
func TestGuardianMidCall(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/heapguarded.c", "-O0", "-g")
	// The 2nd call arms a block's page at its allocation, the 3rd gives
	// it back at its free; the 6th is a later block's. Each is the first
	// call at its stop. Not the 1st, the scratch area's mmap at the
	// attach: it follows the code page's at the same stop, and a
	// single-step (the injected call's) leaves the thread's trap flag
	// set until it is resumed: let go with it, the thread dies of
	// SIGTRAP at its next instruction (README, Limits).
	for _, k := range []int{2, 3, 6} {
		t.Run(fmt.Sprintf("call%d", k), func(t *testing.T) {
			t.Parallel()
			midCallTry(t, prog, k)
		})
	}
}

func midCallTry(t *testing.T, prog string, k int) {
	target := exec.Command(prog)
	stdin, _ := target.StdinPipe()
	stdout, _ := target.StdoutPipe()
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	defer target.Process.Kill()
	sc := bufio.NewScanner(stdout)
	lines := make(chan string, 1<<16)
	go func() {
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() (string, bool) {
		select {
		case l, ok := <-lines:
			return l, ok
		case <-time.After(10 * time.Second):
			return "", false
		}
	}
	if l, _ := next(); l != "ready" {
		t.Fatalf("target: %q", l)
	}
	pid := target.Process.Pid
	// Its heap made, the maps stay as they are.
	if l, _ := next(); !strings.HasPrefix(l, "pairs ") {
		t.Fatalf("target: %q", l)
	}
	before := mapsOf(t, pid)
	mt := exec.Command(memtrapBin, "attach", strconv.Itoa(pid), "--format", "json", "--backtrace", "0", "-o", os.DevNull, "--heap", "size=40")
	mt.Env = append(os.Environ(), fmt.Sprintf("MEMTRAP_DIE_AT_INJECT=%d", k))
	var errb strings.Builder
	mt.Stderr = &errb
	if err := mt.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- mt.Wait() }()
	select {
	case <-ended:
	case <-time.After(20 * time.Second):
		mt.Process.Kill()
		<-ended
		t.Fatalf("memtrap did not die at its injected call %d (no call from its landing?); stderr: %s", k, errb.String())
	}
	if ws, _ := mt.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("memtrap ended with %v, not its own SIGKILL; stderr: %s", mt.ProcessState, errb.String())
	}
	rest := errb.String()
	if !strings.Contains(rest, fmt.Sprintf("died while attached to process %d; its guardian gave back", pid)) {
		t.Fatalf("no word of the guardian; memtrap's stderr: %s", rest)
	}
	t.Logf("%s", strings.TrimSpace(rest))
	// It goes on, untraced: 5000 pairs more than it had printed when
	// the guardian was done.
	var last string
	var seen int64
	for drained := false; !drained; {
		select {
		case l := <-lines:
			fmt.Sscanf(l, "pairs %d", &seen)
		default:
			drained = true
		}
	}
	for now := seen; now < seen+5000; {
		l, ok := next()
		if !ok {
			target.Wait()
			t.Fatalf("the target after memtrap's death: %v, its last line %q; memtrap's stderr: %s", target.ProcessState, last, rest)
		}
		last = l
		fmt.Sscanf(l, "pairs %d", &now)
	}
	if after := mapsOf(t, pid); after != before {
		t.Errorf("maps changed:\n%s\nwere:\n%s", after, before)
	}
	if tp, err := tracerPid(pid); err != nil || tp != 0 {
		t.Errorf("still traced by %d (%v)", tp, err)
	}
	stdin.Close()
	for l, ok := next(); ok; l, ok = next() {
		last = l
	}
	target.Wait()
	ws, _ := target.ProcessState.Sys().(syscall.WaitStatus)
	var n, sum int64
	if _, err := fmt.Sscanf(last, "done %d %d", &n, &sum); err != nil || !ws.Exited() || ws.ExitStatus() != 7 {
		t.Fatalf("target ended with %v, its last line %q", target.ProcessState, last)
	}
	if sum != n*(n-1)/2 {
		t.Errorf("target: %d pairs, sum %d, want %d", n, sum, n*(n-1)/2)
	}
}
