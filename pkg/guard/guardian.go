package guard

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// The guardian's file descriptors, as Start passes them.
const (
	stateFd = 3
	readyFd = 4
	logFd   = 5 // the ThreadLog's page
)

// reclaimTimeout bounds the wait for the dying memtrap to let the target go.
const reclaimTimeout = 3 * time.Second

// pidfdThread is PIDFD_THREAD (Linux 6.9): a pidfd of one thread, readable
// once that thread has exited.
const pidfdThread = unix.O_EXCL

// Main is the guardian: args are Command's arguments (the target's pid and
// the tid of memtrap's ptrace thread), errw its stderr. It returns the
// guardian's exit code.
func Main(args []string, errw io.Writer) int {
	// Every ptrace request of the rescue comes from this thread.
	runtime.LockOSThread()
	signal.Ignore(unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGPIPE, unix.SIGQUIT, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU)
	var pid, tracerTid int
	if len(args) == 2 {
		pid, _ = strconv.Atoi(args[0])
		tracerTid, _ = strconv.Atoi(args[1])
	}
	if pid <= 0 || tracerTid <= 0 {
		fmt.Fprintf(errw, "memtrap: %s is memtrap's own: it takes the pid of a target and the tid of its tracer\n", Command)
		return 2
	}
	// The pidfd tells the target from a process that took its pid later.
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		fmt.Fprintf(errw, "memtrap: guardian of process %d: %v\n", pid, err)
		return 1
	}
	// The tracer thread's pidfd is readable right after the kernel let
	// its tracees go; the pipe closes later, once every thread of
	// memtrap has given up its files. Kernels before 6.9 have only the
	// pipe.
	tracerFd, err := unix.PidfdOpen(tracerTid, pidfdThread)
	if err != nil {
		tracerFd = -1
	}
	// Woken, it must run before the target does.
	_ = unix.Setpriority(unix.PRIO_PROCESS, 0, -20)
	if _, err := unix.Write(readyFd, []byte{1}); err != nil {
		return 1
	}
	unix.Close(readyFd)
	in := frames{root: pid, states: map[int]*State{}, pidfds: map[int]int{}}
	fds := []unix.PollFd{{Fd: stateFd, Events: unix.POLLIN}, {Fd: int32(tracerFd), Events: unix.POLLIN}}
	if tracerFd < 0 {
		fds = fds[:1]
	}
	tracerGone := false
	for !in.closed && !in.ended && !tracerGone {
		if _, err := unix.Poll(fds, -1); err == unix.EINTR {
			continue
		} else if err != nil {
			return 1
		}
		if fds[0].Revents != 0 {
			in.read(stateFd)
		}
		tracerGone = len(fds) > 1 && fds[1].Revents != 0
	}
	if tracerGone {
		// What it wrote is all in the pipe.
		for !in.closed && !in.ended {
			rd := []unix.PollFd{{Fd: stateFd, Events: unix.POLLIN}}
			if n, _ := unix.Poll(rd, 0); n <= 0 {
				break
			}
			in.read(stateFd)
		}
	} else if in.closed && len(fds) > 1 {
		// The pipe closes as memtrap's last thread gives up its files,
		// which may come before the tracer thread's end: wait for it
		// rather than spin on PTRACE_SEIZE.
		_, _ = unix.Poll(fds[1:], int(reclaimTimeout.Milliseconds()))
	}
	seen := time.Now() // memtrap's end, as the guardian heard of it
	if in.ended {
		return 0
	}
	in.pidfds[pid] = pidfd
	var changed *Changed
	if c, ok := readThreadLog(logFd); ok {
		changed = &c
	}
	return rescueAll(pid, in.states, in.pidfds, changed, seen, errw)
}

// rescueAll rescues every process that has something of memtrap's in it
// (the target and the children memtrap followed), each on a thread of its
// own (a tracee is its tracer thread's), all at once: each waits for the
// same release. The target's goes on the calling thread, which runs
// already: with a thread woken for it, the seize came 0.47-1.07 ms after
// the guardian heard of memtrap's end, and 0.14-0.17 ms on this thread
// (perf trace, this 2-CPU VM); a trap the target runs into before the
// seize kills it. changed is the thread memtrap was changing when it
// died, if there was one; seen is when the guardian heard memtrap had
// ended: the times it reports count from there.
func rescueAll(root int, states map[int]*State, pidfds map[int]int, changed *Changed, seen time.Time, errw io.Writer) int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	code := 0
	run := func(s *State, fd int) {
		var out strings.Builder
		ch := changed
		if ch != nil && ch.Pid != s.Pid {
			ch = nil
		}
		c := rescue(s, fd, ch, seen, &out)
		mu.Lock()
		defer mu.Unlock()
		_, _ = io.WriteString(errw, out.String())
		code = max(code, c)
	}
	var here *State
	for p, s := range states {
		fd, ok := pidfds[p]
		switch {
		case !ok:
			continue // gone before its first State was read: nothing to save
		case here == nil && (p == root || states[root] == nil):
			here = s
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // never unlocked: the thread ends with its tracees' ptrace
			run(s, fd)
		}()
	}
	if here != nil {
		run(here, pidfds[here.Pid]) // on Main's thread, locked already
	}
	wg.Wait()
	return code
}

// frames reads memtrap's frames and keeps the last whole State of each
// process.
type frames struct {
	pending []byte
	buf     [64 << 10]byte
	states  map[int]*State // the processes with something of memtrap's in them
	pidfds  map[int]int    // their pidfds (a child's opened at its first State)
	root    int            // the target's pid (its pidfd is Main's)
	ended   bool           // the end frame came
	closed  bool           // the pipe closed
}

// read reads what the pipe has (it is readable) and takes the frames it
// completes.
func (f *frames) read(fd int) {
	n, err := unix.Read(fd, f.buf[:])
	if err == unix.EINTR {
		return
	}
	if n <= 0 {
		f.closed = true
		return
	}
	f.pending = append(f.pending, f.buf[:n]...)
	for len(f.pending) >= 4 {
		size := binary.LittleEndian.Uint32(f.pending)
		if size == endFrame {
			f.ended = true
			return
		}
		if uint64(len(f.pending)) < 4+uint64(size) {
			return
		}
		var s State
		if json.Unmarshal(f.pending[4:4+size], &s) == nil {
			f.take(&s)
		}
		f.pending = f.pending[4+size:]
	}
}

// take keeps s as its process's last State. A child's pidfd is opened
// with its first one, sent while the child is stopped or running armed, so
// that the rescue cannot take a process that got its pid later; an empty
// State (the child ended, or memtrap let it go) closes it.
func (f *frames) take(s *State) {
	if f.states == nil {
		f.states, f.pidfds = map[int]*State{}, map[int]int{}
	}
	if s.Empty() {
		delete(f.states, s.Pid)
		if fd, ok := f.pidfds[s.Pid]; ok && s.Pid != f.root {
			unix.Close(fd)
			delete(f.pidfds, s.Pid)
		}
		return
	}
	if _, ok := f.pidfds[s.Pid]; !ok && s.Pid != f.root {
		fd, err := unix.PidfdOpen(s.Pid, 0)
		if err != nil {
			return // gone already
		}
		f.pidfds[s.Pid] = fd
	}
	f.states[s.Pid] = s
}

// rescue takes the target over from the dead memtrap, gives back what s
// says is changed, and lets it go.
func rescue(s *State, pidfd int, changed *Changed, start time.Time, errw io.Writer) int {
	// The pidfd tells the target from a process that took its pid later.
	gone := func() bool {
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, _ := unix.Poll(fds, 0)
		return n > 0
	}
	p, err := tracer.Reclaim(s.Pid, start.Add(reclaimTimeout), gone)
	if err == nil && gone() {
		_ = p.Detach()
		err = tracer.ErrNoProcess
	}
	if err != nil {
		if errors.Is(err, tracer.ErrNoProcess) {
			// It ended with memtrap, or of a trap memtrap's death left
			// it no time to be saved from.
			fmt.Fprintf(errw, "memtrap: died while attached to process %d, which ended (%s) before its guardian could take it over\n", s.Pid, endOf(s.Pid))
			return 1
		}
		fmt.Fprintf(errw, "memtrap: died while attached to process %d, and its guardian could not take the process over: %v\n", s.Pid, err)
		return 1
	}
	seized := time.Since(start)
	notes, err := restore(p, s, changed)
	if errors.Is(err, errExec) {
		notes, err = append(notes, "it executed a new program meanwhile: nothing of memtrap's is left in it"), nil
	}
	if derr := p.Detach(); err == nil {
		err = derr
	}
	done := time.Since(start)
	if err != nil {
		fmt.Fprintf(errw, "memtrap: died while attached to process %d; its guardian could not give everything back: %v\n", s.Pid, err)
		return 1
	}
	for _, n := range notes {
		fmt.Fprintf(errw, "memtrap: guardian of process %d: %s\n", s.Pid, n)
	}
	fmt.Fprintf(errw, "memtrap: died while attached to process %d; its guardian gave back what memtrap had changed and let the process go (seized %d us after it saw memtrap die, done after %d us)\n",
		s.Pid, seized.Microseconds(), done.Microseconds())
	return 0
}

// Signal codes of the traps memtrap's arming causes.
const (
	segvAccerr = 2    // SIGSEGV: a write to a write-protected page
	trapTrace  = 2    // SIGTRAP: a single-step
	trapHWBkpt = 4    // SIGTRAP: a debug register
	trapBrkpt  = 1    // SIGTRAP: a debug exception with DR6 empty, or ICEBP
	siKernel   = 0x80 // SIGTRAP: an int3; SIGSTOP: a BPF program's
)

// restore gives back what s says is changed, and what changed says of a
// thread; every thread of p is stopped. The traps a thread ran into since
// memtrap died (queued by the stop) are taken back: they run again,
// untrapped, once the arming is gone.
func restore(p *tracer.Process, s *State, changed *Changed) (notes []string, err error) {
	stops, err := p.DrainQueue()
	if err != nil {
		return nil, err
	}
	bps := map[uint64]*Breakpoint{}
	for i := range s.Breakpoints {
		bps[s.Breakpoints[i].Addr] = &s.Breakpoints[i]
	}
	rets := append([]Return(nil), s.Returns...)
	// returnFor finds the awaited call of thread tid that has just returned
	// to the trampoline (its slot popped: rsp one word above), and drops it.
	returnFor := func(tid int, rsp uint64) (uint64, bool) {
		for i, r := range rets {
			if r.Tid == tid && r.Slot+8 == rsp {
				rets = append(rets[:i], rets[i+1:]...)
				return r.RA, true
			}
		}
		return 0, false
	}
	int3 := map[*tracer.Thread]bool{} // stopped by a breakpoint's or the trampoline's int3
	settle := func(st tracer.Stop) error {
		switch st.Kind {
		case tracer.StopSignal:
			ours, at := s.trapped(st, bps)
			if !ours {
				st.Thread.Defer(st.Info)
			}
			int3[st.Thread] = int3[st.Thread] || at
		case tracer.StopExec:
			return errExec
		case tracer.StopFork, tracer.StopExecChild:
			if err := p.DetachChild(st.Child); err != nil {
				notes = append(notes, fmt.Sprintf("child %d: %v", st.Child, err))
			}
		}
		return nil
	}
	for _, st := range stops {
		if err := settle(st); err != nil {
			return notes, err
		}
	}
	// A thread that trapped just before the interrupt stopped it has the
	// trap's signal still pending: the interrupt comes first. Continued,
	// it stops at that signal's delivery before it runs anything.
	for _, t := range p.Threads() {
		for i := 0; i < 4 && pendingTrap(p.Pid, t.Tid); i++ {
			if err := t.Resume(0); err != nil {
				break
			}
			st, err := p.Wait()
			if err != nil {
				return notes, err
			}
			if err := settle(st); err != nil {
				return notes, err
			}
		}
	}
	threads := p.Threads()
	if len(threads) == 0 {
		return nil, tracer.ErrProcessExited
	}
	// Threads in memtrap's code page go back to the target's code; one
	// in its call on resume first makes the call (the books memtrap sent
	// count it made), and the pages below get their protections back.
	p.SetCallStub(s.Stub)
	for _, t := range threads {
		var regs unix.PtraceRegs
		if err := t.Regs(&regs); err != nil {
			continue
		}
		if changed != nil && changed.Tid == t.Tid {
			if err := putBack(t, &regs, s, changed); err != nil {
				return notes, err
			}
		}
		if p.InStub(regs.Rip) {
			if err := t.LeaveStub(); err != nil {
				notes = append(notes, fmt.Sprintf("thread %d: memtrap's call on resume: %v", t.Tid, err))
			}
			continue
		}
		rip, moved := regs.Rip, false
		for _, bp := range s.Breakpoints {
			switch {
			case bp.Slot == 0:
			case rip == bp.Slot:
				regs.Rip, moved = bp.Addr, true
			case rip == bp.Slot+uint64(bp.Len):
				regs.Rip, moved = bp.Addr+uint64(bp.Len), true
			}
		}
		if s.Trampoline != 0 && (rip == s.Trampoline || rip == s.Trampoline+1) {
			if ra, ok := returnFor(t.Tid, regs.Rsp); ok {
				regs.Rip, moved = ra, true
			}
		}
		if bp := bps[rip-1]; bp != nil && int3[t] {
			regs.Rip, moved = bp.Addr, true
		}
		if moved {
			if err := t.SetRegs(&regs); err != nil {
				return notes, err
			}
		}
	}
	for _, bp := range s.Breakpoints {
		if err := p.WriteMemory(bp.Addr, []byte{bp.Orig}); err != nil {
			notes = append(notes, fmt.Sprintf("the breakpoint at %#x: %v", bp.Addr, err))
		}
	}
	for _, r := range rets {
		var b [8]byte
		if p.ReadMemory(r.Slot, b[:]) != nil || binary.LittleEndian.Uint64(b[:]) != s.Trampoline {
			continue // returned, or left by a longjmp
		}
		binary.LittleEndian.PutUint64(b[:], r.RA)
		if err := p.WriteMemory(r.Slot, b[:]); err != nil {
			notes = append(notes, fmt.Sprintf("thread %d: a return address: %v", r.Tid, err))
		}
	}
	if s.DebugRegs {
		for _, t := range threads {
			if err := t.SetDebugReg(7, 0); err != nil && !errors.Is(err, tracer.ErrThreadGone) {
				return notes, err
			}
			_ = t.SetDebugReg(6, 0)
		}
	}
	t := threads[0]
	for _, pg := range s.Pages {
		if err := t.Mprotect(pg.Addr, pg.Len, pg.Prot); err != nil {
			notes = append(notes, fmt.Sprintf("pages %#x-%#x: %v", pg.Addr, pg.Addr+pg.Len, err))
		}
	}
	for _, m := range s.Unmap {
		if inside(threads, m) {
			notes = append(notes, fmt.Sprintf("memtrap's mapping at %#x stays: a thread runs there", m.Addr))
			continue
		}
		if _, err := t.Syscall(unix.SYS_MUNMAP, uintptr(m.Addr), uintptr(m.Len)); err != nil {
			notes = append(notes, fmt.Sprintf("memtrap's mapping at %#x: %v", m.Addr, err))
		}
	}
	return notes, nil
}

// putBack gives thread t, whose registers are regs, what memtrap had
// changed of it for an injected call or a single-step: its signal mask,
// and its registers if it is at memtrap's landing (before the call, or in
// the loop after it). Elsewhere its registers are its own: memtrap had
// not set them yet, or had put them back. A call memtrap had not made
// yet is not made: the pages it would change are the guardian's to give
// back (memtrap tells of a page before it arms it).
func putBack(t *tracer.Thread, regs *unix.PtraceRegs, s *State, changed *Changed) error {
	if err := t.SetSigMask(changed.Mask); err != nil {
		return err
	}
	atLanding := s.Landing != 0 && (regs.Rip == s.Landing || regs.Rip == s.Landing+2)
	if !changed.HasRegs || !atLanding {
		return nil
	}
	if err := t.SetRegs(&changed.Regs); err != nil {
		return err
	}
	*regs = changed.Regs
	return nil
}

// errExec: the target executed a new program before it was seized.
var errExec = errors.New("the process executed a new program meanwhile")

// trapped says whether a signal stop is a trap of memtrap's arming (to be
// taken back), and whether it is an int3 of a breakpoint or the trampoline.
func (s *State) trapped(st tracer.Stop, bps map[uint64]*Breakpoint) (ours, int3 bool) {
	switch {
	case st.Sig == int(unix.SIGSEGV) && st.Info.Code() == segvAccerr:
		a := st.Info.Addr()
		for _, pg := range s.Pages {
			if a >= pg.Addr && a < pg.Addr+pg.Len {
				return true, false
			}
		}
	case st.Sig == int(unix.SIGSTOP) && st.Info.Code() == siKernel:
		// The kernel's filter of allocator calls (package bpfhook)
		// stops a call that matters so: its probes went with memtrap.
		return true, false
	case st.Sig != int(unix.SIGTRAP):
	case st.Info.Code() == trapHWBkpt:
		return s.DebugRegs, false
	case st.Info.Code() == trapBrkpt && s.DebugRegs:
		// A debug-register hit the hypervisor handed over with DR6
		// empty (see pagewatch's hwEngine.owns), unless the byte
		// before is the target's own ICEBP.
		var regs unix.PtraceRegs
		if st.Thread.Regs(&regs) != nil {
			return false, false
		}
		var b [1]byte
		return st.Thread.Process().ReadMemory(regs.Rip-1, b[:]) != nil || b[0] != 0xf1, false
	case st.Info.Code() == trapTrace:
		// memtrap was single-stepping it: the trap flag stays set
		// when a tracer dies (PTRACE_DETACH clears it).
		return true, false
	case st.Info.Code() == siKernel:
		var regs unix.PtraceRegs
		if st.Thread.Regs(&regs) != nil {
			return false, false
		}
		at := regs.Rip - 1
		if bps[at] != nil || (s.Trampoline != 0 && at == s.Trampoline) {
			return true, true
		}
	}
	return false, false
}

// pendingTrap says whether thread tid has a SIGSEGV, SIGTRAP or SIGSTOP of
// its own pending.
func pendingTrap(pid, tid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "SigPnd:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && m&(1<<(unix.SIGSEGV-1)|1<<(unix.SIGTRAP-1)|1<<(unix.SIGSTOP-1)) != 0
		}
	}
	return false
}

// inside says whether a thread's RIP lies in m.
func inside(threads []*tracer.Thread, m Span) bool {
	for _, t := range threads {
		var regs unix.PtraceRegs
		if t.Regs(&regs) == nil && regs.Rip >= m.Addr && regs.Rip < m.Addr+m.Len {
			return true
		}
	}
	return false
}

// endOf says how process pid ended, from its zombie's /proc/PID/stat (its
// 52nd field is the wait status), as far as it can still be told.
func endOf(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "reaped already"
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 50 || f[0] != "Z" {
		return "its pid is someone else's now"
	}
	code, err := strconv.Atoi(f[49])
	if err != nil {
		return "a zombie"
	}
	ws := unix.WaitStatus(code)
	if ws.Signaled() {
		return fmt.Sprintf("killed by signal %d", int(ws.Signal()))
	}
	return fmt.Sprintf("exit status %d", ws.ExitStatus())
}
