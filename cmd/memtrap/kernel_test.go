package main

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
	"github.com/memtrap/memtrap/pkg/bpfhook"
)

// kallWrites are the kernel writes kall.c makes into box, in order: one
// per call, two for readv (one per iovec).
var kallWrites = []struct {
	syscall string
	offset  uint64
	new     string // "" when the value varies from run to run
}{
	{"read", 0, "0x216e692d65706970"},
	{"pread64", 8, "0x6261393837363534"},
	{"readv", 16, "0x44434241"},
	{"readv", 20, "0x48474645"},
	{"recvmsg", 24, "0x6d61726761746164"},
	{"recvfrom", 32, "0x6d6f726676636572"},
	{"newfstatat", 40, ""},
	{"clock_gettime", 184, ""},
	{"pipe2", 200, ""},
	{"wait4", 209, "0x7"},
	{"getdents64", 212, ""},
	{"ioctl", 468, "0x5"},
	{"recvmmsg", 472, "0x656e6f2d67736d6d"},
	{"recvmmsg", 480, "0x6f77742d67736d6d"},
}

// startWaiting starts `prog wait`, which says "ready" and waits for a
// line on its stdin; it is killed at the end of the test if still there.
func startWaiting(t *testing.T, prog string) (*exec.Cmd, io.WriteCloser, *bufio.Reader) {
	t.Helper()
	target := exec.Command(prog, "wait")
	in, _ := target.StdinPipe()
	out, _ := target.StdoutPipe()
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { target.Process.Kill() })
	rd := bufio.NewReader(out)
	if l, _ := rd.ReadString('\n'); l != "ready\n" {
		t.Fatalf("target said %q", l)
	}
	return target, in, rd
}

// attachKall runs kall attached with ARGS until memtrap reported n writes
// (or ended), detaches it, and returns memtrap's events; kall must print
// stdout, as it does without memtrap.
func attachKall(t *testing.T, prog, stdout string, n int, args ...string) []event {
	t.Helper()
	target, in, rd := startWaiting(t, prog)
	mt, mrd, evs := attachJSON(t, target.Process.Pid, args...)
	io.WriteString(in, "go\n")
	rest, _ := io.ReadAll(rd)
	for len(writes(evs)) < n {
		l, err := mrd.ReadString('\n')
		if err != nil {
			break
		}
		evs = append(evs, parseEvents(t, l)...)
	}
	mt.Process.Signal(syscall.SIGINT)
	tail, _ := io.ReadAll(mrd)
	evs = append(evs, parseEvents(t, string(tail))...)
	mt.Wait()
	if err := target.Wait(); err != nil {
		t.Fatalf("target: %v", err)
	}
	if string(rest) != stdout {
		t.Fatalf("attached: %q, want %q", rest, stdout)
	}
	return evs
}

func checkKall(t *testing.T, evs []event) {
	t.Helper()
	ws := writes(evs)
	if len(ws) != len(kallWrites) {
		t.Fatalf("%d writes, want %d: %+v", len(ws), len(kallWrites), ws)
	}
	for i, want := range kallWrites {
		w := ws[i]
		// A write starts at its first changed byte: a value that varies
		// may keep its low byte (CLOCK_MONOTONIC's seconds are a multiple
		// of 256 one second in 256), so its offset may be a little past.
		off := w.Offset == want.offset || want.new == "" && w.Offset > want.offset && w.Offset < want.offset+8
		if w.By != "kernel" || w.Syscall != want.syscall || !off || want.new != "" && w.New != want.new {
			t.Errorf("write %d: %s by %s(2) at +%d new %s; want %s(2) at +%d new %q", i+1, w.By, w.Syscall, w.Offset, w.New, want.syscall, want.offset, want.new)
		}
	}
}

// TestKernelWritesEverySyscall: syscalls writing into a watched struct
// (plain buffers, iovecs, a msghdr, stat, a timespec, a pipe's fds, a wait
// status, directory entries, an ioctl's int) return what they return without memtrap and
// are each reported as a kernel write: launched (seccomp filter), under
// the fast engine, and attached (syscall stops).
func TestKernelWritesEverySyscall(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/kall.c", "-O0")
	want := native(t, prog)
	if !strings.HasPrefix(want.stdout, "read 8 pipe-in! pread 8 456789ab readv 8 ABCDEFGH recvmsg 8 datagram") || want.code != 0 {
		t.Fatalf("native: %q %d", want.stdout, want.code)
	}
	r := memtrap(t, "run", "--format", "json", "--backtrace", "1", "--symbol", "box", "--", prog)
	if r.stdout != want.stdout || r.code != 0 {
		t.Fatalf("run: %q exit %d; stderr %s", r.stdout, r.code, r.stderr)
	}
	checkKall(t, parseEvents(t, r.stderr))

	t.Run("fast", func(t *testing.T) {
		// The agent makes the calls: the vector ones (readv, recvmsg,
		// recvmmsg) with copies of their lists that memtrap made.
		r := memtrap(t, "run", "--engine", "fast", "--format", "json", "--backtrace", "1", "--symbol", "box", "--", prog)
		if r.stdout != want.stdout || r.code != 0 {
			t.Fatalf("run: %q exit %d; stderr %s", r.stdout, r.code, r.stderr)
		}
		checkKall(t, parseEvents(t, r.stderr))
	})

	t.Run("attach", func(t *testing.T) {
		checkKall(t, attachKall(t, prog, want.stdout, len(kallWrites), "--backtrace", "0", "--symbol", "box"))
	})

	t.Run("attach-hw", func(t *testing.T) {
		// Attached, the hw engine lets the kernel stop only the calls
		// that may have written a region, as they return (a BPF
		// program on sys_exit): each is still reported, once.
		if !hwWorks(t) {
			t.Skip("debug registers do not fire on this machine")
		}
		if err := bpfhook.SysGateAvailable(); err != nil {
			t.Skipf("no BPF system call gate here: %v", err)
		}
		evs := attachKall(t, prog, want.stdout, 4, "--engine", "hw", "--backtrace", "0",
			"--symbol", "box", "--len", "8", "--symbol", "box+24", "--len", "8",
			"--symbol", "box+184", "--len", "8", "--symbol", "box+472", "--len", "8")
		for _, e := range evs {
			if e.Event == "note" && strings.Contains(e.Message, "following every system call") {
				t.Fatalf("the gate was not used: %s", e.Message)
			}
		}
		var got []string
		for _, w := range writes(evs) {
			if w.Syscall == "clock_gettime" {
				w.New = "?" // the time it is
			}
			got = append(got, w.By+" "+w.Syscall+" "+w.New)
		}
		wantW := "kernel read 0x216e692d65706970,kernel recvmsg 0x6d61726761746164,kernel clock_gettime ?,kernel recvmmsg 0x656e6f2d67736d6d"
		if strings.Join(got, ",") != wantW {
			t.Fatalf("writes %v, want %s", got, wantW)
		}
	})

	t.Run("hw", func(t *testing.T) {
		// The debug registers do not see the kernel's writes: the
		// followed calls are compared with the region's shadow.
		if !hwWorks(t) {
			t.Skip("debug registers do not fire on this machine")
		}
		r := memtrap(t, "run", "--engine", "hw", "--format", "json", "--backtrace", "0", "--symbol", "box+24", "--len", "8", "--", prog)
		if r.stdout != want.stdout || r.code != 0 {
			t.Fatalf("%q exit %d; stderr %s", r.stdout, r.code, r.stderr)
		}
		ws := writes(parseEvents(t, r.stderr))
		if len(ws) != 1 || ws[0].Syscall != "recvmsg" || ws[0].New != "0x6d61726761746164" {
			t.Fatalf("writes %+v", ws)
		}
	})
}

// TestRseqPage: the page holding a thread's rseq area cannot be
// write-protected (the kernel's next rseq update would kill the thread):
// the page engine refuses it in one line and leaves the target unharmed;
// auto takes the debug registers and the target runs as without memtrap
// (where they do not fire, auto refuses as the page engine does).
func TestRseqPage(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/rseq.c", "-O0")
	for _, engine := range []string{"page", "auto"} {
		target := exec.Command(prog)
		in, _ := target.StdinPipe()
		out, _ := target.StdoutPipe()
		if err := target.Start(); err != nil {
			t.Fatal(err)
		}
		rd := bufio.NewReader(out)
		var tv, rseq uint64
		if l, _ := rd.ReadString('\n'); func() bool { _, err := fmt.Sscanf(l, "%v %v", &tv, &rseq); return err != nil }() {
			target.Process.Kill()
			t.Fatalf("target said %q", l)
		}
		addr := fmt.Sprintf("%#x", rseq+0x100)
		if (rseq+0x100)&^4095 != rseq&^4095 {
			addr = fmt.Sprintf("%#x", rseq-0x100)
		}
		mt := exec.Command(memtrapBin, "attach", fmt.Sprint(target.Process.Pid), "--engine", engine, "--addr", addr, "--len", "8")
		var stderr strings.Builder
		errPipe, _ := mt.StderrPipe()
		if err := mt.Start(); err != nil {
			t.Fatal(err)
		}
		erd := bufio.NewReader(errPipe)
		refused := engine == "page" || !hwWorks(t)
		if refused {
			all, _ := io.ReadAll(erd)
			stderr.Write(all)
			err := mt.Wait()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "rseq area") || strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("%s engine on the rseq page: %v, %q", engine, err, stderr.String())
			}
		} else {
			l, _ := erd.ReadString('\n')
			stderr.WriteString(l)
		}
		io.WriteString(in, "go\n")
		rest, _ := io.ReadAll(rd)
		if err := target.Wait(); err != nil || string(rest) != "done 199 cpu ok\n" {
			t.Fatalf("%s: target %v, said %q; memtrap: %s", engine, err, rest, stderr.String())
		}
		if !refused {
			all, _ := io.ReadAll(erd)
			stderr.Write(all)
			mt.Wait()
			if !strings.Contains(stderr.String(), "(engine hw)") {
				t.Errorf("auto: %s", stderr.String())
			}
		}
	}
}

// TestSignalFramesOnWatchedStack: watched memory on the stack and on an
// alternate signal stack; handlers run there while the region is armed.
// The target runs as without memtrap; the frames the kernel pushes onto a
// watched page are reported as kernel writes of that signal.
func TestSignalFramesOnWatchedStack(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/stacksig.c", "-O0")
	const want = "sum 132 usr1 20 alrm>0 1\n"
	for _, mode := range []string{"stack", "alt", "switch"} {
		target := exec.Command(prog, mode)
		in, _ := target.StdinPipe()
		out, _ := target.StdoutPipe()
		if err := target.Start(); err != nil {
			t.Fatal(err)
		}
		rd := bufio.NewReader(out)
		var local, alt uint64
		l, _ := rd.ReadString('\n')
		if _, err := fmt.Sscanf(l, "%v %v", &local, &alt); err != nil {
			target.Process.Kill()
			t.Fatalf("target said %q", l)
		}
		addr, n := local, "64"
		if mode != "stack" {
			addr, n = alt, "4096" // the top page of the alternate stack
		}
		mt, mrd, evs := attachJSON(t, target.Process.Pid, "--engine", "page", "--backtrace", "1", "--addr", fmt.Sprintf("%#x", addr), "--len", n)
		lines := make(chan string, 1024)
		go func() {
			defer close(lines)
			for {
				l, err := mrd.ReadString('\n')
				if err != nil {
					return
				}
				lines <- l
			}
		}()
		io.WriteString(in, "go\n")
		rest, _ := io.ReadAll(rd)
		if err := target.Wait(); err != nil || string(rest) != want {
			t.Fatalf("%s: target %v, said %q", mode, err, rest)
		}
		for l := range lines {
			evs = append(evs, parseEvents(t, l)...)
		}
		mt.Wait()
		ws := writes(evs)
		if mode == "stack" {
			// main's 20 stores; after main returns, exit() reuses
			// its dead stack frame.
			if len(ws) < 20 {
				t.Fatalf("stack: %d writes, want 20 by main: %+v", len(ws), ws)
			}
			for i, w := range ws {
				if i < 20 && (w.By != "user" || writer(w) != "main" || w.New != fmt.Sprintf("%#x", i+1)) || i >= 20 && writer(w) == "main" {
					t.Errorf("stack: write %d %+v", i+1, w)
				}
			}
			continue
		}
		frames := map[string]int{}
		for _, w := range ws {
			switch {
			case w.By == "kernel" && w.Signal != nil && (*w.Signal == 10 || *w.Signal == 14):
				frames[map[int]string{10: "SIGUSR1", 14: "SIGALRM"}[*w.Signal]]++
			case w.By == "user" && (writer(w) == "on_usr1" || writer(w) == "on_alrm"):
			default:
				t.Errorf("alt: unexpected write %+v", w)
			}
		}
		if frames["SIGUSR1"] == 0 {
			t.Errorf("%s: no SIGUSR1 frame reported: %+v", mode, ws)
		}
		if mode == "switch" && frames["SIGUSR1"] > 10 {
			// Rounds 11-20 at most: the first ten ran on the other
			// stack. (Fewer when a SIGUSR1 frame nests below a SIGALRM
			// one, off the watched page.)
			t.Errorf("switch: %d SIGUSR1 frames on the watched stack, want 10 at most", frames["SIGUSR1"])
		}
	}
	// Launched: the seccomp filter must stop sigaltstack for memtrap to
	// see the switch.
	cmd := exec.Command(memtrapBin, "run", "--engine", "page", "--format", "json", "--backtrace", "0", "--symbol", "altstack+61440", "--len", "4096", "--", prog, "switch")
	cmd.Stdin = strings.NewReader("go\n")
	r := runCmd(t, cmd)
	if r.code != 0 || !strings.HasSuffix(r.stdout, want) {
		t.Fatalf("run switch: exit %d, said %q; stderr %s", r.code, r.stdout, tail(r.stderr))
	}
	n := 0
	for _, w := range writes(parseEvents(t, r.stderr)) {
		if w.By == "kernel" && w.Signal != nil && *w.Signal == 10 {
			n++
		}
	}
	if n == 0 || n > 10 {
		t.Fatalf("run switch: %d SIGUSR1 frames on the watched stack, want 1 to 10", n)
	}
}

// TestBigStringOps: REP string operations of 4 MiB over a watched page are
// emulated a MiB at a time, the CPU doing the rest (they used to be
// single-stepped an element at a time: minutes). Each is reported once,
// with exact bytes, and the program's result is unchanged.
func TestBigStringOps(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/bigset.c", "-O1")
	want := native(t, prog)
	r := memtrap(t, "run", "--engine", "page", "--format", "json", "--backtrace", "0", "--symbol", "big+2097152", "--len", "16", "--", prog)
	if r.stdout != want.stdout || r.code != want.code {
		t.Fatalf("%q exit %d, want %q; stderr %s", r.stdout, r.code, want.stdout, r.stderr)
	}
	ws := writes(parseEvents(t, r.stderr))
	exp := []struct{ insn, old, new string }{
		{"rep stosb", "00000000000000000000000000000000", "62626262626262626262626262626262"},
		{"rep movsq", "62626262626262626262626262626262", "73787878787878787878787878787878"},
		{"rep movsb", "73787878787878787878787878787878", "78787878787878787378787878787878"},
	}
	if len(ws) != len(exp) {
		t.Fatalf("writes %+v", ws)
	}
	for i, e := range exp {
		if !strings.HasPrefix(ws[i].Insn, e.insn) || ws[i].Old != e.old || ws[i].New != e.new {
			t.Errorf("write %d: %s %s -> %s; want %s %s -> %s", i+1, ws[i].Insn, ws[i].Old, ws[i].New, e.insn, e.old, e.new)
		}
	}
}

// TestTargetMemoryManagement: the target mprotects, madvises and munmaps
// watched pages and maps something new in their place. memtrap keeps
// watching what is still mapped, reports MADV_DONTNEED's zeroing as a
// kernel write and the unmapping as an "unmapped" event, does not watch
// the new mapping, and at detach leaves each page with the protection the
// target last gave it.
func TestTargetMemoryManagement(t *testing.T) {
	prog := fixture.Build(t, "cmd/memtrap/testdata/mm.c", "-O0")
	type want struct {
		writes   []string // by/new of each write
		unmapped bool
	}
	for _, c := range []struct {
		engine string
		off    uint64
		len    string
		want   want
	}{
		{"page", 0, "12288", want{[]string{"user 0x1", "user 0x2", "kernel 0x0"}, true}},
		{"hw", 0, "8", want{[]string{"user 0x1", "kernel 0x0"}, false}},
		{"hw", 8192, "8", want{nil, true}},
	} {
		if c.engine == "hw" && !hwWorks(t) {
			continue
		}
		name := fmt.Sprintf("%s+%d", c.engine, c.off)
		target := exec.Command(prog)
		in, _ := target.StdinPipe()
		out, _ := target.StdoutPipe()
		if err := target.Start(); err != nil {
			t.Fatal(err)
		}
		rd := bufio.NewReader(out)
		var base uint64
		if l, _ := rd.ReadString('\n'); func() bool { _, err := fmt.Sscanf(l, "%v", &base); return err != nil }() {
			target.Process.Kill()
			t.Fatalf("target said %q", l)
		}
		mt, mrd, evs := attachJSON(t, target.Process.Pid, "--engine", c.engine, "--backtrace", "0",
			"--addr", fmt.Sprintf("%#x", base+c.off), "--len", c.len)
		io.WriteString(in, "go\n")
		if l, _ := rd.ReadString('\n'); l != "waiting 0 2 3\n" {
			t.Fatalf("%s: target said %q", name, l)
		}
		mt.Process.Signal(syscall.SIGINT)
		rest, _ := readAll(mrd)
		evs = append(evs, parseEvents(t, rest)...)
		if err := mt.Wait(); err != nil {
			t.Fatalf("%s: memtrap: %v", name, err)
		}
		maps := mapsOf(t, target.Process.Pid)
		io.WriteString(in, "go\n")
		if l, _ := rd.ReadString('\n'); l != "done\n" || target.Wait() != nil {
			t.Fatalf("%s: target said %q after the detach", name, l)
		}
		var got []string
		unmapped := false
		for _, e := range evs {
			switch e.Event {
			case "write":
				got = append(got, e.By+" "+e.New)
			case "unmapped":
				unmapped = true
			}
		}
		if strings.Join(got, ",") != strings.Join(c.want.writes, ",") || unmapped != c.want.unmapped {
			t.Errorf("%s: writes %v unmapped %v; want %v %v", name, got, unmapped, c.want.writes, c.want.unmapped)
		}
		// Page 1 stays read-only, as the target left it; the others
		// writable.
		for i, prot := range []string{"rw-p", "r--p", "rw-p"} {
			a := fmt.Sprintf("%x-", base+uint64(i)*4096)
			found := false
			for _, l := range strings.Split(maps, "\n") {
				var lo, hi uint64
				if _, err := fmt.Sscanf(l, "%x-%x", &lo, &hi); err == nil && lo <= base+uint64(i)*4096 && base+uint64(i)*4096 < hi {
					found = strings.Contains(l, " "+prot+" ")
				}
			}
			if !found {
				t.Errorf("%s: page %d (%s) is not %s after the detach:\n%s", name, i, a, prot, maps)
			}
		}
	}
}

// attachJSON starts `memtrap attach PID --format json ARGS...` and returns
// once it has armed (its "watch" event), with a reader of the rest of its
// output.
func attachJSON(t *testing.T, pid int, args ...string) (*exec.Cmd, *bufio.Reader, []event) {
	t.Helper()
	mt := exec.Command(memtrapBin, append([]string{"attach", fmt.Sprint(pid), "--format", "json"}, args...)...)
	errPipe, _ := mt.StderrPipe()
	if err := mt.Start(); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(errPipe)
	var evs []event
	for len(evs) == 0 || evs[0].Event != "watch" {
		l, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("memtrap attach %v: no watch event: %v", args, err)
		}
		evs = parseEvents(t, l)
	}
	return mt, rd, evs
}
