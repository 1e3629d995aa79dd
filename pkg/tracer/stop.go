package tracer

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// StopKind says why Wait returned.
type StopKind int

const (
	// StopSignal is a signal-delivery-stop: Sig is about to be delivered and
	// Info describes it. Resume with Sig to deliver it, 0 to suppress it.
	StopSignal StopKind = iota + 1
	// StopGroup is a group-stop (SIGSTOP, SIGTSTP, ...); resume with Listen.
	StopGroup
	// StopFork reports a new process (fork, or clone without CLONE_VM):
	// Child is its pid, attached and stopped. Use Fork to work on it.
	StopFork
	// StopExec reports a successful execve: the address space is new.
	StopExec
	// StopExited reports the end of the process; Status is its wait status.
	StopExited
	// StopWake is the stop Wake asked for; resume the thread with 0.
	StopWake
	// StopSyscall is a syscall entry or exit (see TraceSyscalls); Syscall
	// describes it. Resume with 0.
	StopSyscall
	// StopExecChild reports that a vfork child (it shared this process's
	// memory, as a thread does) executed a new program: it is a process of
	// its own now, stopped at its exec event, Child its pid, and no longer
	// one of this Process's threads. Follow it with FollowExec, keep it
	// with KeepChild (it inherited the syscall filter), or let it go with
	// DetachChild.
	StopExecChild
)

func (k StopKind) String() string {
	switch k {
	case StopSignal:
		return "signal"
	case StopGroup:
		return "group-stop"
	case StopFork:
		return "fork"
	case StopExec:
		return "exec"
	case StopExited:
		return "exited"
	case StopWake:
		return "wake"
	case StopSyscall:
		return "syscall"
	case StopExecChild:
		return "exec-child"
	}
	return fmt.Sprintf("StopKind(%d)", int(k))
}

// Stop is one stop that needs the caller's decision.
type Stop struct {
	Kind    StopKind
	Pid     int     // the process: this one, or one it follows (Follow)
	Thread  *Thread // nil for StopExited
	Sig     int
	Info    Siginfo
	Child   int
	Status  unix.WaitStatus
	Syscall SyscallInfo
}

const (
	siUser     = 0
	siKernel   = 0x80
	trapBrkpt  = 1
	trapTrace  = 2
	sigTrapBit = int(unix.SIGTRAP)
)

// OnIdle has Wait call f, on the ptrace thread, whenever it is about to
// sleep because no tracee has stopped for a while (tens of microseconds):
// the moment to do deferred work, such as flushing buffered output, that
// would otherwise delay a stopped tracee.
func (p *Process) OnIdle(f func()) { p.idle = f }

// waitTask is Wait for one task of p only; other tasks' stops stay with
// the kernel for Wait.
// waitAny waits for the next event of any tracee. While a thread of the
// process is listening in group-stop, only SIGCONT would make it report,
// and Wake's SIGSTOP does not: then wait4 is polled, and a Wake interrupts
// the listening threads (PTRACE_INTERRUPT, from this, the ptrace thread),
// whose stops end the wait.
func (p *Process) waitAny() (int, unix.WaitStatus, error) {
	for {
		var listening []*Thread
		for _, t := range p.threads {
			if t.listening {
				listening = append(listening, t)
			}
		}
		if len(listening) == 0 {
			return wait4Idle(-1, p.idle)
		}
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WALL|unix.WNOTHREAD|unix.WNOHANG, nil)
		if pid != 0 || (err != nil && err != unix.EINTR) {
			return pid, ws, err
		}
		if p.wake.Load() {
			for _, t := range listening {
				if err := ptraceInterrupt(t.Tid); err == nil {
					t.listening, t.interrupted = false, true
				}
			}
			continue
		}
		if p.idle != nil {
			p.idle()
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *Process) waitTask(tid int) (Stop, error) {
	for {
		wtid, ws, err := wait4(tid)
		if err != nil {
			if err == unix.ECHILD {
				return Stop{Kind: StopExited, Pid: p.Pid, Status: p.status}, ErrProcessExited
			}
			return Stop{}, fmt.Errorf("wait4: %w", err)
		}
		st, ok, err := p.handle(waitInfo{wtid, ws})
		if err != nil && !errors.Is(err, ErrThreadGone) {
			return Stop{}, err
		}
		if ok && err == nil {
			st.Pid = p.Pid
			return st, nil
		}
	}
}

// Wait returns the next stop that needs a decision. The thread it names
// stays stopped until resumed.
func (p *Process) Wait() (Stop, error) {
	for {
		if p.exited && len(p.followed) == 0 {
			return Stop{Kind: StopExited, Pid: p.Pid, Status: p.status}, nil
		}
		var w waitInfo
		owner := p
		if len(p.queue) > 0 {
			w = waitInfo{p.queue[0].tid, p.queue[0].ws}
			p.queue = p.queue[1:]
		} else if c := p.queuedChild(); c != nil {
			owner = c
			w = waitInfo{c.queue[0].tid, c.queue[0].ws}
			c.queue = c.queue[1:]
		} else {
			tid, ws, err := p.waitAny()
			if err != nil {
				// Called off the ptrace thread, wait4 finds no tracee:
				// say so then, rather than pay a gettid every stop.
				if err := p.check(); err != nil {
					return Stop{}, err
				}
				if err == unix.ECHILD {
					p.exited = true
					p.followed = map[int]*Process{}
					return Stop{Kind: StopExited, Pid: p.Pid, Status: p.status}, ErrProcessExited
				}
				return Stop{}, fmt.Errorf("wait4: %w", err)
			}
			w = waitInfo{tid, ws}
			if p.threads[tid] == nil {
				for _, c := range p.followed {
					if c.threads[tid] != nil {
						owner = c
						break
					}
				}
			}
		}
		st, ok, err := owner.handle(w)
		if err != nil && !errors.Is(err, ErrThreadGone) {
			return Stop{}, err
		}
		if ok && err == nil {
			st.Pid = owner.Pid
			if st.Kind == StopExited && owner != p {
				delete(p.followed, owner.Pid)
			}
			return st, nil
		}
	}
}

func (p *Process) queuedChild() *Process {
	for _, c := range p.followed {
		if len(c.queue) > 0 {
			return c
		}
	}
	return nil
}

// Follow makes a new process reported by StopFork a traced Process of its
// own, stopped, whose stops this Process's Wait reports (Stop.Pid tells
// whose). Its own children can be followed the same way.
func (p *Process) Follow(pid int) (*Process, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	root := p
	if p.root != nil {
		root = p.root
	}
	c, err := newProcess(pid)
	if err != nil {
		return nil, err
	}
	c.root, c.early, c.kept = root, root.early, root.kept
	c.sysInsn, c.options, c.filtered, c.traceSyscalls = p.sysInsn, p.options, p.filtered, p.traceSyscalls
	c.ownChild, c.notif = p.ownChild, p.notif
	c.ownInsn, c.threadLog = p.ownInsn, p.threadLog
	t := c.addThread(pid)
	t.stopped = true
	root.followed[pid] = c
	return c, nil
}

// FollowExec is Follow for a child reported by StopExecChild: a new
// program, whose syscall instruction is still to be found.
func (p *Process) FollowExec(pid int) (*Process, error) {
	c, err := p.Follow(pid)
	if err != nil {
		return nil, err
	}
	c.sysInsn, c.ownInsn = 0, false
	return c, nil
}

// handle does the bookkeeping for one wait status and says whether it needs
// the caller.
func (p *Process) handle(w waitInfo) (Stop, bool, error) {
	ws := w.ws
	t := p.threads[w.tid]
	if t == nil && p.kept[w.tid] {
		return Stop{}, false, p.handleKept(w)
	}
	if t == nil {
		if ws.Stopped() {
			// A new task's first stop can come before its creator's
			// clone event; keep it for then.
			p.early[w.tid] = w
		}
		return Stop{}, false, nil
	}
	if ws.Exited() || ws.Signaled() {
		p.dropThread(w.tid)
		if w.tid == p.Pid {
			p.exited = true
			p.status = ws
			return Stop{Kind: StopExited, Status: ws}, true, nil
		}
		return Stop{}, false, nil
	}
	if !ws.Stopped() {
		return Stop{}, false, nil
	}
	t.stopped = true
	t.sigStop, t.listening = false, false
	ran := p.notif.settle(t.Tid)
	sig := ws.StopSignal()
	switch event(ws) {
	case unix.PTRACE_EVENT_CLONE, unix.PTRACE_EVENT_FORK, unix.PTRACE_EVENT_VFORK:
		return p.handleNewTask(t, event(ws))
	case unix.PTRACE_EVENT_EXEC:
		for _, th := range p.threads {
			th.rseq = rseqConf{} // execve ends the registration
			th.pending = nil
		}
		p.stub = 0 // memtrap's code page went with the old image
		return p.handleExec(t)
	case unix.PTRACE_EVENT_SECCOMP:
		if msg, err := ptraceEventMsg(t.Tid); err != nil || msg != filterMarker {
			if err := skipForeignTrace(t.Tid); err != nil {
				return Stop{}, false, goneErr(err)
			}
			return Stop{}, false, p.release(t)
		}
		si, err := ptraceSyscallInfo(t.Tid)
		if err != nil {
			return Stop{}, false, p.release(t)
		}
		si.Seccomp = true
		t.sysEntry = true
		return Stop{Kind: StopSyscall, Thread: t, Syscall: si}, true, nil
	case unix.PTRACE_EVENT_EXIT:
		// The thread is on its way out; let it go.
		t.exiting = true
		return Stop{}, false, p.release(t)
	case unix.PTRACE_EVENT_VFORK_DONE:
		t.inVfork = false
		if p.OnVforkDone == nil || p.holding {
			return Stop{}, false, p.release(t)
		}
		// Still inside vfork, where no call can be injected: on to
		// the call's exit stop, where OnVforkDone runs.
		t.vforkExit = true
		t.stopped, t.sigStop, t.sysEntry = false, false, false
		return Stop{}, false, goneErr(ptraceRaw(unix.PTRACE_SYSCALL, t.Tid, 0, 0))
	case unix.PTRACE_EVENT_STOP:
		if sig == unix.SIGTRAP {
			// A stale interrupt, or a new thread's first stop.
			t.interrupted = false
			return Stop{}, false, p.release(t)
		}
		return Stop{Kind: StopGroup, Thread: t, Sig: int(sig)}, true, nil
	case 0:
		if sig == unix.SIGTRAP|0x80 {
			if t.vforkExit {
				t.vforkExit = false
				if f := p.OnVforkDone; f != nil {
					p.OnVforkDone = nil
					if err := f(t); err != nil {
						return Stop{}, false, err
					}
				}
				return Stop{}, false, p.release(t)
			}
			si, err := ptraceSyscallInfo(t.Tid)
			if err != nil {
				return Stop{}, false, p.release(t)
			}
			t.sysEntry = si.Entry
			if p.notif != nil {
				return p.notifSyscall(t, si, ran)
			}
			return Stop{Kind: StopSyscall, Thread: t, Syscall: si}, true, nil
		}
		t.sigStop = true
		var st = Stop{Kind: StopSignal, Thread: t, Sig: int(sig)}
		if err := ptraceGetSiginfo(t.Tid, &st.Info); err != nil {
			if err == unix.ESRCH {
				return Stop{}, false, nil
			}
			return Stop{}, false, fmt.Errorf("PTRACE_GETSIGINFO %d: %w", t.Tid, err)
		}
		if err := t.reclaim(&st.Info); err != nil {
			return Stop{}, false, goneErr(err)
		}
		if err := t.beforeHandler(st.Info); err != nil {
			return Stop{}, false, goneErr(err)
		}
		if p.notif != nil {
			if isNotifWake(&st.Info) {
				return Stop{}, false, p.notifWake(t, ran)
			}
			// Restarted after the signal, the call notifies again.
			if err := t.endRestart(); err != nil {
				return Stop{}, false, err
			}
			if !syncFault(&st.Info) {
				if err := t.fixNotifRestart(ran); err != nil {
					return Stop{}, false, goneErr(err)
				}
			}
			t.callRan = false
		}
		if sig == unix.SIGSTOP && p.wake.Load() && st.Info.Code() == siUser && st.Info.senderPid() == os.Getpid() {
			p.wake.Store(false)
			st.Kind = StopWake
		}
		return st, true, nil
	}
	// Unknown event: keep the thread going.
	return Stop{}, false, p.release(t)
}

func (p *Process) handleNewTask(parent *Thread, event int) (Stop, bool, error) {
	msg, err := ptraceEventMsg(parent.Tid)
	if err != nil {
		return Stop{}, false, p.release(parent)
	}
	child := int(msg)
	if err := p.waitFirstStop(child); err != nil {
		return Stop{}, false, p.release(parent)
	}
	shared, err := kcmpSameVM(parent.Tid, child)
	if err != nil {
		shared = event != unix.PTRACE_EVENT_FORK
	}
	if shared {
		// A thread, or a vfork/CLONE_VM child: it writes through our
		// protected pages, so it is watched like any thread.
		t := p.addThread(child)
		t.stopped = true
		if event != unix.PTRACE_EVENT_CLONE {
			t.foreign = true
			p.notif.track(child, child, p.quickView()) // a thread group of its own, our memory
		}
		if event == unix.PTRACE_EVENT_VFORK {
			t.vforkParent, parent.inVfork = parent.Tid, true
		}
		if p.OnNewThread != nil {
			if err := p.OnNewThread(t); err != nil {
				return Stop{}, false, err
			}
		}
		if err := p.release(t); err != nil && !errors.Is(err, ErrThreadGone) {
			return Stop{}, false, err
		}
		return Stop{}, false, p.release(parent)
	}
	return Stop{Kind: StopFork, Thread: parent, Child: child}, true, nil
}

// waitFirstStop waits for an auto-attached task's first stop.
func (p *Process) waitFirstStop(tid int) error {
	if _, ok := p.early[tid]; ok {
		delete(p.early, tid)
		return nil
	}
	for {
		_, ws, err := wait4(tid)
		if err != nil {
			return err
		}
		if ws.Stopped() {
			return nil
		}
		if ws.Exited() || ws.Signaled() {
			return ErrThreadGone
		}
	}
}

func (p *Process) handleExec(t *Thread) (Stop, bool, error) {
	if t.foreign {
		// A vfork child left our address space. It may still carry our
		// syscall filter, so the caller decides.
		p.dropThread(t.Tid)
		return Stop{Kind: StopExecChild, Thread: t, Child: t.Tid}, true, nil
	}
	for tid := range p.threads {
		if tid != t.Tid {
			p.dropThread(tid)
		}
	}
	if t.Tid != p.Pid {
		// The exec'ing thread took over the leader's tid.
		p.dropThread(t.Tid)
		t.Tid = p.Pid
		p.threads[p.Pid] = t
		p.notif.track(p.Pid, p.Pid, p.quickView())
	}
	p.sysInsn, p.ownInsn = 0, false
	if p.statusFile != nil {
		p.statusFile.Close()
		p.statusFile = nil
	}
	if err := p.openMem(); err != nil {
		return Stop{}, false, err
	}
	if p.quick != nil {
		// What was watched went with the old image.
		p.quick.check.Store(nil)
		p.reopenQuickMem()
	}
	return Stop{Kind: StopExec, Thread: t}, true, nil
}

func ignoreGone(err error) error {
	if err == unix.ESRCH {
		return nil
	}
	return err
}

// release resumes a thread stopped for bookkeeping, or, while the world is
// held for a detach, leaves it stopped as if StopOthers had stopped it.
func (p *Process) release(t *Thread) error {
	if p.holding {
		t.stoppedByUs = true
		return nil
	}
	return p.cont(t, 0)
}

// cont resumes a stopped thread with sig (0: none); the signals deferred
// meanwhile go back to the kernel (giveBack), which delivers them next.
func (p *Process) cont(t *Thread, sig int) error {
	if t.held {
		if sig != 0 {
			t.heldSig = sig
		}
		return nil
	}
	if sig != 0 {
		// The signal's handler would run before a call on resume.
		if err := t.flushPending(); err != nil {
			return err
		}
	} else if err := t.startPending(); err != nil {
		return err
	}
	if len(t.deferred) > 0 {
		t.giveBack()
	}
	req := unix.PTRACE_CONT
	if p.traceSyscalls {
		req = unix.PTRACE_SYSCALL
	}
	if t.letRun(false) {
		req = unix.PTRACE_SYSCALL // to the exit, which ends the suspension
	}
	if t.notifRestart {
		req = unix.PTRACE_SYSCALL // to the restarted call's entry
	}
	t.stopped, t.stoppedByUs, t.sigStop, t.sysEntry, t.listening = false, false, false, false, false
	if err := ptraceRaw(req, t.Tid, 0, uintptr(sig)); err != nil {
		if err == unix.ESRCH {
			return ErrThreadGone
		}
		return fmt.Errorf("PTRACE_CONT %d: %w", t.Tid, err)
	}
	return nil
}

// Resume lets a stopped thread run, delivering sig (0: none). Signals that
// arrived while the tracer held the thread (see Defer) are delivered next,
// each through a signal-delivery-stop of its own.
func (t *Thread) Resume(sig int) error {
	// No thread check here: Resume follows a Wait, which made it.
	return t.p.cont(t, sig)
}

// Hold makes every later Resume of the thread a no-op, so that it stays
// in the stop it is in (right after a write, for a hand-off to another
// debugger) until Process.Detach lets it go; a signal a Resume asked for
// goes with the detach.
func (t *Thread) Hold() { t.held = true }

// Held reports whether Hold was called.
func (t *Thread) Held() bool { return t.held }

// Listen resumes a thread from a group-stop without ending the group-stop.
//
// A group-stop seen before memtrap moved the thread (a process attached
// while stopped: arming runs code in it) is no longer the thread's stop,
// and the kernel refuses to listen (EIO): the thread is given SIGSTOP
// again, which puts it back into the group-stop it was in (the group is
// stopped already: its parent hears of no new stop), and its next stop is
// that group-stop.
func (t *Thread) Listen() error {
	if err := t.flushPending(); err != nil { // only Resume runs it on the way
		return err
	}
	err := ptraceListen(t.Tid)
	if err == unix.EIO {
		return t.Resume(int(unix.SIGSTOP))
	}
	t.stopped, t.sysEntry = false, false
	t.listening = err == nil
	return ignoreGone(err)
}

// Defer keeps a signal the thread received while the tracer could not let it
// be delivered (in the middle of a single-step or an injected syscall).
// When the thread is resumed, it goes back to the kernel, and comes back as
// a signal-delivery-stop of its own, with its original siginfo, where and
// in the order the kernel delivers it (owed.go).
func (t *Thread) Defer(info Siginfo) { t.deferred = append(t.deferred, info) }

// Deferred reports whether signals kept by Defer wait for the thread's
// resuming.
func (t *Thread) Deferred() bool { return len(t.deferred) > 0 }

// Stopped reports whether the thread is in a ptrace-stop.
func (t *Thread) Stopped() bool { return t.stopped }

// Process returns the process the thread belongs to.
func (t *Thread) Process() *Process { return t.p }

// StopOthers stops every running thread but except (which may be nil), and
// returns once each is stopped. Threads that stop for another reason than
// the interrupt keep that stop for a later Wait.
func (p *Process) StopOthers(except *Thread) error {
	if err := p.check(); err != nil {
		return err
	}
	var waiting []*Thread
	for _, t := range p.threads {
		if t == except || t.stopped || t.exiting || t.inVfork {
			// A thread in vfork runs nothing of its own until its
			// child is done, and an interrupt cannot end that wait.
			continue
		}
		// Always interrupt anew: an earlier interrupt may have been used
		// up by another stop (a syscall-exit-stop reports it), and an
		// extra one only costs a stray event-stop that handle releases.
		if err := ptraceInterrupt(t.Tid); err != nil {
			if err == unix.ESRCH {
				continue
			}
			return fmt.Errorf("PTRACE_INTERRUPT %d: %w", t.Tid, err)
		}
		t.interrupted = true
		waiting = append(waiting, t)
	}
	for _, t := range waiting {
		for !t.stopped {
			tid, ws, err := wait4(t.Tid)
			if err != nil {
				if err == unix.ECHILD {
					p.dropThread(t.Tid)
					break
				}
				return fmt.Errorf("wait4 %d: %w", t.Tid, err)
			}
			if ws.Stopped() && event(ws) == unix.PTRACE_EVENT_STOP && ws.StopSignal() == unix.SIGTRAP {
				t.interrupted = false
				t.stopped, t.stoppedByUs = true, true
				break
			}
			// Something else happened first; the thread is stopped (or
			// gone) all the same. Keep it for Wait.
			if ws.Exited() || ws.Signaled() {
				if tid != p.Pid {
					p.dropThread(tid)
					break
				}
			}
			t.stopped = ws.Stopped()
			p.queue = append(p.queue, queued{tid, ws})
			if !ws.Stopped() {
				break
			}
		}
	}
	return nil
}

// ResumeOthers resumes the threads StopOthers stopped.
func (p *Process) ResumeOthers() error {
	for _, t := range p.threads {
		if t.stoppedByUs {
			if err := p.cont(t, 0); err != nil && !errors.Is(err, ErrThreadGone) {
				return err
			}
		}
	}
	return nil
}

// ResumeAll resumes every stopped thread that has no stop waiting in the
// queue: the end of an Attach or of a stop-the-world.
func (p *Process) ResumeAll() error {
	pending := map[int]bool{}
	for _, q := range p.queue {
		pending[q.tid] = true
	}
	for _, t := range p.threads {
		if t.stopped && !pending[t.Tid] {
			if err := p.cont(t, 0); err != nil && !errors.Is(err, ErrThreadGone) {
				return err
			}
		}
	}
	return nil
}

// Siginfo reads the siginfo of the thread's current signal-delivery-stop.
func (t *Thread) Siginfo() (Siginfo, error) {
	var si Siginfo
	err := ptraceGetSiginfo(t.Tid, &si)
	return si, goneErr(err)
}

// SetSiginfo sets what the signal delivered at this stop carries. An
// injected syscall in between leaves its own trap's siginfo behind: put the
// signal's back before resuming with it.
func (t *Thread) SetSiginfo(si Siginfo) error {
	return goneErr(ptraceSetSiginfo(t.Tid, &si))
}
