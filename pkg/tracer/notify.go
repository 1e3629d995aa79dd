package tracer

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/memtrap/memtrap/internal/seccompnotify"
	"golang.org/x/sys/unix"
)

// A syscall filter whose action is SECCOMP_RET_USER_NOTIF instead of
// SECCOMP_RET_TRACE needs no tracer: a call it stops waits in the kernel
// until whoever holds the filter's listener answers it. memtrap holds it
// (notifier), and answers each call of a task it does not trace at once,
// "run it as it is" (SECCOMP_USER_NOTIF_FLAG_CONTINUE): so a child process
// that memtrap does not follow is not traced, can be traced by the target
// itself (a debugger, strace, a test harness), and runs as without memtrap.
//
// A call of a thread memtrap traces must stop before it runs, as a
// SECCOMP_RET_TRACE stop did (pages to bounce, books to keep). The
// listener's goroutine cannot stop it (ptrace requests come from the
// ptrace thread only), so it sends the thread a SIGSTOP (the "wake"; no
// other signal cannot be blocked), which ends the wait: the call gives up
// with -ERESTARTSYS, not having run, and the thread stops. The ptrace
// thread swallows the SIGSTOP and resumes the thread with PTRACE_SYSCALL:
// the kernel restarts the call, whose entry stop is reported as the
// filter's stop (SyscallInfo.Seccomp). When the thread is resumed from
// there, the listener is told to let that thread's next call run (allow),
// and the call's exit stops as after a seccomp stop.
//
// A signal of the target's own can end the wait the same way, before
// memtrap answered: the call did not run, and must be restarted whatever
// the signal's SA_RESTART says (a call that never started cannot have been
// interrupted), so the thread's -ERESTARTSYS becomes -ERESTARTNOINTR at
// that signal's stop (fixNotifRestart).
//
// The filter has one listener, and the kernel allows one per task's chain
// of filters: the first filter memtrap installs carries it; a later one
// (for memory that came to be watched at run time) is a SECCOMP_RET_TRACE
// filter, whose children need a tracer (KeepChild) as before; one of them
// that asks its parent to trace it is let go first (releaseTraceme).
//
// When memtrap ends, the listener closes and the calls it would stop fail
// with ENOSYS in the processes that still carry the filter (children the
// target left running): KeepListener hands it to a small process of
// memtrap's own that answers them until the last of those processes is
// gone.

// Kernel ABI of seccomp's user notification (linux/seccomp.h).
const (
	seccompIoctlNotifSetFlags = 0x40082104 // SECCOMP_IOCTL_NOTIF_SET_FLAGS
)

// notifier serves the listener of memtrap's SECCOMP_RET_USER_NOTIF filter,
// on a goroutine of its own (serve); the ptrace thread tells it which
// tasks it traces (track) and which of them may run their next call
// (allow).
type notifier struct {
	fd     int
	rules  []FilterRule          // what the filter stops
	ledger *seccompnotify.Ledger // the calls received, for a keeper (nil: none)

	mu      sync.Mutex
	traced  map[int]*notifTask
	kept    map[int]bool // tasks kept traced in pass-through (Process.keep)
	release map[int]bool // kept tasks whose PTRACE_TRACEME the ptrace thread is to settle
	refused []int        // tasks that asked for a listener of their own (RefusedListeners)
	anyRef  atomic.Bool  // refused is not empty
}

// A filter with a listener of its own (SECCOMP_SET_MODE_FILTER with
// SECCOMP_FILTER_FLAG_NEW_LISTENER): the kernel takes one listener per
// filter chain, and memtrap's holds it, so the call fails with EBUSY.
const (
	seccompSetModeFilter = 1
	seccompNewListener   = 8
)

// ListenerRule stops, with action (0: the filter's stop), the seccomp
// calls that ask for a listener (ListenerRequest):
// SECCOMP_FILTER_FLAG_NEW_LISTENER (8) set in the flags, among the six
// flags the kernel knows (below 64; it refuses others with EINVAL).
func ListenerRule(action uint32) FilterRule {
	var ranges []Range
	for lo := uint64(seccompNewListener); lo < 64; lo += 2 * seccompNewListener {
		ranges = append(ranges, Range{Lo: lo, Hi: lo + seccompNewListener})
	}
	return FilterRule{Nr: unix.SYS_SECCOMP, Args: []int{1}, Ranges: ranges, Action: action}
}

// ListenerRequest says whether seccomp(op, flags, ...) asks for a listener.
func ListenerRequest(op, flags uint64) bool {
	return op == seccompSetModeFilter && flags&seccompNewListener != 0
}

// RefusedListeners returns, once each, the processes whose tasks asked for a seccomp
// listener of their own since the last call, and that the kernel refuses
// (EBUSY) because memtrap's filter holds the one their filter chain may
// have. Cheap when there is none.
func (p *Process) RefusedListeners() []int {
	n := p.notif
	if n == nil || !n.anyRef.Load() {
		return nil
	}
	n.mu.Lock()
	tids := n.refused
	n.refused = nil
	n.anyRef.Store(false)
	n.mu.Unlock()
	var out []int
	for _, tid := range tids {
		pid, err := statusInt(tid, "Tgid:")
		if err != nil || pid == 0 {
			pid = tid // gone already: its thread id is all there is
		}
		if !slices.Contains(out, pid) {
			out = append(out, pid)
		}
	}
	return out
}

// notifTask is a traced task as the listener sees it.
type notifTask struct {
	tgid  int
	quick *procQuick // its process's, or nil
	allow int        // its next call runs if it is this one (+1; 0: none): the ptrace thread has settled it
	ran   bool       // a call was let run since the ptrace thread last looked
}

// QuickCheck says, on the listener's goroutine, whether a call of a traced
// thread that the filter stopped needs the tracer (true), or can run
// without it (false): a call the tracer would let run as it is, such as a
// read into memory far from anything watched, costs no ptrace stop then.
// It reads only what is safe to read while the ptrace thread works (an
// immutable view of what is watched) and the target's memory through mem.
type QuickCheck func(nr int, args *[6]uint64, mem MemReader) bool

// MemReader reads a process's memory.
type MemReader interface {
	ReadMemory(addr uint64, b []byte) error
}

// procQuick is a process's QuickCheck and a descriptor of its memory for
// it, both safe to use from the listener's goroutine.
type procQuick struct {
	check atomic.Pointer[QuickCheck]
	mem   atomic.Pointer[os.File]
	stub  atomic.Uint64 // where StubCode is (SetCallStub), 0: nowhere
}

func (q *procQuick) ReadMemory(addr uint64, b []byte) error {
	f := q.mem.Load()
	if f == nil {
		return unix.EIO
	}
	n, err := f.ReadAt(b, int64(addr))
	if n == len(b) {
		return nil
	}
	if err == nil {
		err = unix.EIO
	}
	return err
}

// stops says whether the call in req needs the tracer.
func (q *procQuick) stops(req *seccompnotify.Request) bool {
	if q == nil {
		return true
	}
	if s := q.stub.Load(); s != 0 && req.IP()-2 == s {
		return false // memtrap's own call on resume
	}
	f := q.check.Load()
	if f == nil {
		return true
	}
	var args [6]uint64
	for i := range args {
		args[i] = req.Arg(i)
	}
	return (*f)(req.Nr(), &args, q)
}

// SetQuickCheck makes the listener ask f before it stops a call of the
// process's threads for the tracer (nil: always stop).
func (p *Process) SetQuickCheck(f QuickCheck) {
	if p.notif == nil {
		return
	}
	q := p.quickView()
	if f == nil {
		q.check.Store(nil)
		return
	}
	if q.mem.Load() == nil {
		p.reopenQuickMem()
	}
	q.check.Store(&f)
}

// quickView returns the process's procQuick, made on first use.
func (p *Process) quickView() *procQuick {
	if p.quick == nil {
		p.quick = &procQuick{}
	}
	return p.quick
}

// reopenQuickMem gives the listener a descriptor of the process's memory
// as it is now (after an execve, the old one reads nothing).
func (p *Process) reopenQuickMem() {
	if p.quick == nil {
		return
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", p.Pid))
	if err != nil {
		f = nil
	}
	if old := p.quick.mem.Swap(f); old != nil {
		old.Close()
	}
}

func newNotifier(fd int, rules []FilterRule) *notifier {
	n := &notifier{fd: fd, rules: rules, traced: map[int]*notifTask{}, kept: map[int]bool{}, release: map[int]bool{}}
	n.ledger, _ = seccompnotify.NewLedger() // without one, a keeper cannot answer the calls memtrap's death left
	go n.serve()
	return n
}

// serve answers the filter's stops for as long as memtrap runs (the
// listener stays open: the filter outlives any Process of it).
func (n *notifier) serve() {
	// Its own thread: woken by the waiting task on the task's CPU
	// (SYNC_WAKE_UP), it answers without waiting for the scheduler.
	runtime.LockOSThread()
	seccompnotify.Serve(n.fd, n.ledger, n.answer)
}

// answer decides one stopped call.
func (n *notifier) answer(req *seccompnotify.Request) {
	id, tid, nr := req.ID(), req.Tid(), req.Nr()
	n.mu.Lock()
	defer n.mu.Unlock()
	t := n.traced[tid]
	if nr == unix.SYS_SECCOMP && ListenerRequest(req.Arg(0), req.Arg(1)) {
		// Let run: it fails as it must; the tracer says why.
		n.refused = append(n.refused, tid)
		n.anyRef.Store(true)
		if t != nil {
			t.allow = 0
			t.ran = seccompnotify.Continue(n.fd, id) == nil
		} else {
			_ = seccompnotify.Continue(n.fd, id)
		}
		return
	}
	switch {
	case t == nil && nr == unix.SYS_PTRACE && req.Arg(0) == unix.PTRACE_TRACEME && n.kept[tid] && !n.release[tid]:
		// A task memtrap keeps traced asks its parent to trace it: a
		// task has one tracer, so the call would fail (EPERM). Turned
		// back, not run, with a SIGSTOP, as a traced task's call is
		// below: the ptrace thread lets the task go at that stop
		// (releaseTraceme), and the call, made again, runs.
		n.release[tid] = true
		_, _, _ = unix.RawSyscall(unix.SYS_TKILL, uintptr(tid), uintptr(unix.SIGSTOP), 0)
		_ = seccompnotify.Fail(n.fd, id, -errRestartNoIntr)
	case t == nil:
		diePoint(dieAtNotify, &notifyCount)
		_ = seccompnotify.Continue(n.fd, id)
	case t.allow == nr+1, !t.quick.stops(req):
		// Sent with the lock held, so that the ptrace thread, which
		// looks under it, never sees the call run and ran still false.
		t.allow = 0
		t.ran = seccompnotify.Continue(n.fd, id) == nil
	default:
		// Traced, not settled: the ptrace thread must stop it. Taken,
		// the call waits killable only (WAIT_KILLABLE_RECV): it is
		// answered "not run, restart" (the kernel restarts it after
		// the pending SIGSTOP's stop).
		_ = unix.Tgkill(t.tgid, tid, unix.SIGSTOP)
		_ = seccompnotify.Fail(n.fd, id, -errRestartNoIntr)
	}
}

// track makes the listener stop tid's calls for the ptrace thread (those
// q says need it).
func (n *notifier) track(tid, tgid int, q *procQuick) {
	if n == nil {
		return
	}
	n.mu.Lock()
	n.traced[tid] = &notifTask{tgid: tgid, quick: q}
	n.mu.Unlock()
}

// keep tells the listener that tid is kept traced in pass-through (on),
// or no longer (off: a release it was waiting for ends too, so that a
// task that reuses the id starts with none).
func (n *notifier) keep(tid int, on bool) {
	if n == nil {
		return
	}
	n.mu.Lock()
	if on {
		n.kept[tid] = true
	} else {
		delete(n.kept, tid)
		delete(n.release, tid)
	}
	n.mu.Unlock()
}

// releasing says whether kept task tid stopped for the SIGSTOP of its
// PTRACE_TRACEME turned back (answer).
func (n *notifier) releasing(tid int) bool {
	if n == nil {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.release[tid]
}

// untrack makes the listener let tid's calls run: memtrap lets it go.
func (n *notifier) untrack(tid int) {
	if n == nil {
		return
	}
	n.mu.Lock()
	delete(n.traced, tid)
	n.mu.Unlock()
}

// allow lets tid's next call run if it is call nr.
func (n *notifier) allow(tid, nr int) {
	if n == nil {
		return
	}
	n.mu.Lock()
	if t := n.traced[tid]; t != nil {
		t.allow = nr + 1
	}
	n.mu.Unlock()
}

// settle is the listener's part of a stop of tid: an allowance not used
// (the call did not reach the filter, or gave up waiting first) ends, and
// ran says whether a call of tid was let run since the last settle.
func (n *notifier) settle(tid int) (ran bool) {
	if n == nil {
		return false
	}
	n.mu.Lock()
	if t := n.traced[tid]; t != nil {
		ran = t.ran
		t.allow, t.ran = 0, false
	}
	n.mu.Unlock()
	return ran
}

// stops says whether the filter stops call nr with args (as the kernel
// runs it: x86-64 calls only).
func (n *notifier) stops(nr uint64, args [6]uint64) bool {
	if nr >= x32Bit {
		return false
	}
	for _, r := range n.rules {
		if uint64(r.Nr) != nr {
			continue
		}
		if len(r.Args) == 0 {
			return true
		}
		for _, a := range r.Args {
			for _, rg := range r.Ranges {
				if args[a] >= rg.Lo && args[a] < rg.Hi {
					return true
				}
			}
		}
	}
	return false
}

// isNotifWake tells the listener's SIGSTOP (serve) from any other, once
// reclaim has had its say (a carrier of an owed SIGSTOP is one of ours
// too: reclaim gave it its own siginfo back).
func isNotifWake(info *Siginfo) bool {
	return info.Signo() == int(unix.SIGSTOP) && info.Code() == siTkill && info.senderPid() == os.Getpid()
}

// -ERESTARTSYS and -ERESTARTNOINTR as a register reads.
const (
	raxRestartSys    = ^uint64(errRestartSys - 1)
	raxRestartNoIntr = ^uint64(errRestartNoIntr - 1)
)

// notifWaiting says whether a thread stopped with regs gave up a wait for
// the listener's answer, its call not run: the call stopped by the filter,
// -ERESTARTSYS, and no call let run since (ran, from settle).
func (p *Process) notifWaiting(regs *unix.PtraceRegs, ran bool) bool {
	return p.notifUnrun(regs, ran, raxRestartSys)
}

// notifRefused says whether a thread stopped with regs has a call the
// listener answered "not run, restart" (serve), or that gave up waiting.
func (p *Process) notifRefused(regs *unix.PtraceRegs, ran bool) bool {
	return p.notifUnrun(regs, ran, raxRestartNoIntr) || p.notifWaiting(regs, ran)
}

// notifUnrun: the call in regs is one the filter stops, it returns rax,
// and no call was let run since (ran).
func (p *Process) notifUnrun(regs *unix.PtraceRegs, ran bool, rax uint64) bool {
	if p.notif == nil || ran || regs.Rax != rax || int64(regs.Orig_rax) < 0 {
		return false
	}
	return p.notif.stops(regs.Orig_rax, [6]uint64{regs.Rdi, regs.Rsi, regs.Rdx, regs.R10, regs.R8, regs.R9})
}

// syncFault tells a fault of the thread's own instruction (a trapped
// write, a step's trap): it did not come out of a system call, and a
// trapped write need not pay for fixNotifRestart's look at the registers.
func syncFault(info *Siginfo) bool {
	switch info.Signo() {
	case int(unix.SIGSEGV), int(unix.SIGTRAP), int(unix.SIGBUS), int(unix.SIGILL), int(unix.SIGFPE):
		return info.Code() > 0
	}
	return false
}

// fixNotifRestart, at a signal-delivery-stop, makes a call that gave up
// waiting for the listener start again after the signal, whatever its
// handler's SA_RESTART: it had not started (see the top of this file).
func (t *Thread) fixNotifRestart(ran bool) error {
	if t.p.notif == nil {
		return nil
	}
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return err
	}
	if !t.p.notifWaiting(&regs, ran || t.callRan) {
		return nil
	}
	regs.Rax = raxRestartNoIntr
	return t.SetRegs(&regs)
}

// installListener is InstallFilter for a SECCOMP_RET_USER_NOTIF program:
// the target installs it with a new listener, which memtrap takes over
// (pidfd_getfd) and closes in the target.
func (t *Thread) installListener(fprog uint64, rules []FilterRule) error {
	// WAIT_KILLABLE_RECV: a call the listener has taken waits for its
	// answer whatever signal comes, so that "let run" means it ran.
	const flags = unix.SECCOMP_FILTER_FLAG_TSYNC | unix.SECCOMP_FILTER_FLAG_TSYNC_ESRCH |
		unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
	p := t.p
	r, err := t.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(fprog))
	if errors.Is(err, unix.EACCES) {
		if _, err := t.Syscall(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("%w: prctl(PR_SET_NO_NEW_PRIVS): %w", ErrNoFilter, err)
		}
		r, err = t.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(fprog))
	}
	if err != nil {
		return err
	}
	ours, err := t.TakeFd(int(r))
	if err != nil {
		return fmt.Errorf("%w: taking its listener: %w", ErrNoFilter, err)
	}
	// The waiting task hands its CPU to the listener at once, instead of
	// waking it on another (Linux 6.6; older kernels just refuse).
	_, _, _ = unix.Syscall(unix.SYS_IOCTL, uintptr(ours), seccompIoctlNotifSetFlags, unix.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
	n := newNotifier(ours, rules)
	p.notif = n
	for _, th := range p.threads {
		n.track(th.Tid, p.Pid, p.quickView())
	}
	return nil
}

// Notifying reports whether the process's syscall filter answers to
// memtrap's listener (see the top of notify.go), so that children it does
// not follow need no tracer.
func (p *Process) Notifying() bool { return p.notif != nil }

// notifSyscall is handle's part for a syscall-stop when the listener
// serves the process: the entry of a call restarted from the listener's
// stop (notifWake) is the filter's stop of that call; at an exit, a call
// that gave up waiting for the listener (a signal) starts again.
func (p *Process) notifSyscall(t *Thread, si SyscallInfo, ran bool) (Stop, bool, error) {
	if si.Entry {
		t.callRan = false
		if t.notifRestart {
			if err := t.endRestart(); err != nil {
				return Stop{}, false, err
			}
			t.notifEntry = true
			si.Seccomp = true
			t.suspendSeccomp()
		}
		return Stop{Kind: StopSyscall, Thread: t, Syscall: si}, true, nil
	}
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return Stop{}, false, goneErr(err)
	}
	if t.suspended {
		// The call ran, past the filters.
		if err := t.resumeSeccomp(); err != nil {
			return Stop{}, false, err
		}
		t.callRan = regs.Rax == raxRestartSys
		if t.silentExit {
			t.silentExit = false
			return Stop{}, false, p.release(t)
		}
		return Stop{Kind: StopSyscall, Thread: t, Syscall: si}, true, nil
	}
	if p.notifWaiting(&regs, ran) {
		regs.Rax = raxRestartNoIntr
		if err := t.SetRegs(&regs); err != nil {
			return Stop{}, false, goneErr(err)
		}
		si.Ret = -errRestartNoIntr
		t.callRan = false
	} else {
		t.callRan = ran && regs.Rax == raxRestartSys
	}
	return Stop{Kind: StopSyscall, Thread: t, Syscall: si}, true, nil
}

// notifWake handles the listener's SIGSTOP, swallowed. A thread that gave
// up waiting for the listener, its call not run, is resumed to the entry of
// that call, which the kernel restarts, and whose entry stop is the
// filter's stop (notifSyscall). Not sooner: the call must be in the kernel,
// past the signals it may meet on the way, when the tracer bounces its
// buffers (a signal there runs a handler, after which the call notifies
// the listener again, with its own arguments).
func (p *Process) notifWake(t *Thread, ran bool) error {
	if err := t.endRestart(); err != nil {
		return err
	}
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return goneErr(err)
	}
	if !p.notifRefused(&regs, ran || t.callRan) {
		return p.release(t) // stale: its call was settled otherwise
	}
	t.callRan = false
	if p.holding {
		// Held for a detach: let go, the kernel restarts the call.
		t.stoppedByUs = true
		return nil
	}
	// Till the entry, the signals that wait stay pending: delivered
	// first, each would run its handler and restart the call, and a
	// target signalled faster than memtrap restarts calls would never
	// make this one. The call is in the kernel from its entry on: they
	// come as they would have, when it returns.
	m, err := t.SigMask()
	if err != nil {
		return goneErr(err)
	}
	if err := t.SetSigMask(m | ^uint64(forced)); err != nil {
		return goneErr(err)
	}
	t.notifRestart, t.restartMask = true, m
	return p.cont(t, 0)
}

// endRestart ends a restart notifWake began: the thread's own signal mask
// back.
func (t *Thread) endRestart() error {
	if !t.notifRestart {
		return nil
	}
	t.notifRestart = false
	return goneErr(t.SetSigMask(t.restartMask))
}

// letRun, resuming a thread from the filter's stop, lets its call run.
// With seccomp suspended for the thread (suspendSeccomp), the call runs as
// it is, past the filter; syscall says the thread is resumed to the call's
// exit stop, whose exit then stops (it ends the suspension), silently if
// the caller did not ask for it. Else the listener lets call nr run.
func (t *Thread) letRun(syscall bool) (forceSyscall bool) {
	if !t.notifEntry {
		return false
	}
	t.notifEntry = false
	if t.suspended {
		t.silentExit = !syscall && !t.p.traceSyscalls
		return true
	}
	var regs unix.PtraceRegs
	if ptraceGetRegs(t.Tid, &regs) == nil {
		t.p.notif.allow(t.Tid, int(regs.Orig_rax))
	}
	return false
}

// suspendSeccomp, at the entry of a call the listener answered "restart",
// makes the call run past every filter (PTRACE_O_SUSPEND_SECCOMP, for a
// tracer with CAP_SYS_ADMIN): the filters have said their word on it
// already, and the call must not wait for the listener again, where a
// signal pending would make it give up, and a target that is signalled
// often would hardly make it at all. Without the capability, the listener
// lets it run (letRun).
func (t *Thread) suspendSeccomp() {
	p := t.p
	if p.noSuspend {
		return
	}
	if err := ptraceRaw(unix.PTRACE_SETOPTIONS, t.Tid, 0, uintptr(p.options|unix.PTRACE_O_SUSPEND_SECCOMP)); err != nil {
		p.noSuspend = true
		return
	}
	t.suspended = true
}

// suspendForInjection suspends seccomp for a call memtrap injects (the
// listener's round trip saved), and says whether it did. A thread whose own
// call is suspended already stays so (its exit ends it).
func (t *Thread) suspendForInjection() bool {
	if t.p.notif == nil || t.suspended {
		return false
	}
	t.suspendSeccomp()
	return t.suspended
}

// resumeSeccomp ends suspendSeccomp, at the call's exit.
func (t *Thread) resumeSeccomp() error {
	if !t.suspended {
		return nil
	}
	t.suspended = false
	return goneErr(ptraceRaw(unix.PTRACE_SETOPTIONS, t.Tid, 0, uintptr(t.p.options)))
}

// Listener returns the descriptor of the process's listener (see the top
// of notify.go), for a keeper that answers it once memtrap is gone.
func (p *Process) Listener() (int, bool) {
	if p.notif == nil {
		return 0, false
	}
	return p.notif.fd, true
}

// ListenerLedger is the memfd of the ledger of the listener's calls
// (seccompnotify.Ledger), -1 if there is none.
func (p *Process) ListenerLedger() int {
	if p.notif == nil || p.notif.ledger == nil {
		return -1
	}
	return p.notif.ledger.Fd()
}

// Foreign reports whether the thread is a vfork (or CLONE_VM) child: a
// process of its own that shares this one's memory until it executes a
// new program or exits.
func (t *Thread) Foreign() bool { return t.foreign }

// Park leaves a stopped thread stopped as if StopOthers had stopped it:
// ResumeOthers resumes it.
func (t *Thread) Park() { t.stoppedByUs = true }

// VforkParent returns, for a vfork child, the thread that waits for it, if
// it still does (nil otherwise).
func (t *Thread) VforkParent() *Thread {
	if t.vforkParent == 0 {
		return nil
	}
	if par := t.p.threads[t.vforkParent]; par != nil && par.inVfork {
		return par
	}
	return nil
}

// DetachThread lets one stopped thread go untraced, the others staying
// traced: a vfork child that hands itself to another tracer. A thread at a
// syscall entry runs its call on.
func (t *Thread) DetachThread() error {
	p := t.p
	if err := p.check(); err != nil {
		return err
	}
	if err := t.flushPending(); err != nil {
		return err
	}
	p.notif.untrack(t.Tid)
	_ = t.endRestart()
	t.drainNotifWake()
	sig := t.heldSig
	tgid := p.Pid
	if t.foreign {
		tgid = t.Tid
	}
	for _, info := range t.deferred {
		_ = unix.Tgkill(tgid, t.Tid, unix.Signal(info.Signo()))
	}
	t.deferred = nil
	p.dropThread(t.Tid)
	if err := ptraceDetach(t.Tid, sig); err != nil && err != unix.ESRCH {
		return fmt.Errorf("PTRACE_DETACH %d: %w", t.Tid, err)
	}
	return nil
}

// Unfollow forgets a followed child process that was let go (Detach):
// Wait no longer waits for it.
func (p *Process) Unfollow(pid int) {
	root := p
	if p.root != nil {
		root = p.root
	}
	delete(root.followed, pid)
}

// TakeFd moves the target's descriptor theirs into memtrap (pidfd_getfd)
// and closes it in the target, which never sees it, whatever happens; the
// copy is close-on-exec. Precondition: as for Syscall.
func (t *Thread) TakeFd(theirs int) (int, error) {
	pidfd, err := unix.PidfdOpen(t.p.Pid, 0)
	ours := -1
	if err == nil {
		ours, err = unix.PidfdGetfd(pidfd, theirs, 0)
		unix.Close(pidfd)
	}
	if _, cerr := t.Syscall(unix.SYS_CLOSE, uintptr(theirs)); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		if ours >= 0 {
			unix.Close(ours)
		}
		return -1, err
	}
	unix.CloseOnExec(ours)
	return ours, nil
}
