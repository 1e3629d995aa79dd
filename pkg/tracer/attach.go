package tracer

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoProcess means there is no process with that pid.
var ErrNoProcess = errors.New("no such process")

// Attach seizes every thread of a running process and stops them all. The
// caller resumes them with ResumeAll once it is ready. Threads created later
// are traced automatically.
//
// Precondition: called on a goroutine locked to its OS thread (see Locked).
func Attach(pid int) (*Process, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("invalid pid %d", pid)
	}
	if pid == os.Getpid() {
		return nil, fmt.Errorf("process %d is memtrap itself", pid)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		return nil, fmt.Errorf("process %d: %w", pid, ErrNoProcess)
	}
	state, flags, err := procState(pid)
	if err == nil {
		switch {
		case flags&pfKthread != 0:
			return nil, fmt.Errorf("process %d (%s) is a kernel thread: it has no user memory to watch", pid, comm(pid))
		case state == 'Z' || state == 'X':
			return nil, goneError(fmt.Sprintf("process %d (%s) has exited: it is a zombie its parent has not waited for", pid, comm(pid)))
		}
	}
	if tracer, err := TracerPid(pid); err == nil && tracer != 0 {
		return nil, fmt.Errorf("process %d is already traced by process %d (%s); detach that debugger first", pid, tracer, comm(tracer))
	}
	quietChildStops()
	p := newProcessNoMem(pid)
	p.options = baseOptions | unix.PTRACE_O_TRACEEXIT | unix.PTRACE_O_TRACESYSGOOD
	if err := p.seizeAllOpen(); err != nil {
		return nil, err
	}
	return p, nil
}

// seizeAllOpen seizes every thread not seized yet, stops them all and
// opens the memory; on failure it lets every thread go.
func (p *Process) seizeAllOpen() error {
	err := p.seizeAll()
	if err == nil {
		err = p.openMem()
	}
	if err != nil {
		p.detachAll()
	}
	return err
}

// goneError says how a process is gone, in its own words; it is
// ErrNoProcess.
type goneError string

func (e goneError) Error() string        { return string(e) }
func (e goneError) Is(target error) bool { return target == ErrNoProcess }

const pfKthread = 0x00200000 // PF_KTHREAD, in /proc/PID/stat's flags

// procState reads a process's state letter and flags from /proc/PID/stat.
func procState(pid int) (state byte, flags uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 7 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	flags, err = strconv.ParseUint(f[6], 10, 64)
	return f[0][0], flags, err
}

// initNote names process 1 for what it is.
func initNote(pid int) string {
	if pid == 1 {
		return fmt.Sprintf(" (init, %s)", comm(pid))
	}
	return ""
}

// permHint says what may lift an EPERM, as far as this machine can tell:
// root rights when memtrap lacks them, Yama's setting where Yama is.
func permHint() string {
	if os.Geteuid() != 0 {
		return " (run memtrap as root)"
	}
	if b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope"); err == nil {
		if v := strings.TrimSpace(string(b)); v == "3" {
			return " (kernel.yama.ptrace_scope is 3: no process may be attached until reboot)"
		}
	}
	return ""
}

func comm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return "?"
	}
	return string(b[:len(b)-1])
}

func (p *Process) seizeAll() error {
	// Threads can be created while we seize; list until the list is stable.
	for {
		tids, err := listTasks(p.Pid)
		if err != nil {
			return fmt.Errorf("process %d: %w", p.Pid, ErrNoProcess)
		}
		added := false
		for _, tid := range tids {
			if p.threads[tid] != nil {
				continue
			}
			if err := ptraceSeize(tid, p.options); err != nil {
				if err == unix.ESRCH && tid != p.Pid {
					continue
				}
				switch err {
				case unix.EPERM:
					return fmt.Errorf("attaching to process %d%s: operation not permitted%s", p.Pid, initNote(p.Pid), permHint())
				case unix.ESRCH:
					return fmt.Errorf("process %d: %w", p.Pid, ErrNoProcess)
				}
				return fmt.Errorf("PTRACE_SEIZE %d: %w", tid, err)
			}
			p.addThread(tid)
			added = true
		}
		if !added {
			break
		}
	}
	return p.StopOthers(nil)
}

// detachAll lets every thread go, as is.
func (p *Process) detachAll() {
	for tid := range p.threads {
		p.notif.untrack(tid)
		_ = ptraceDetach(tid, 0)
	}
	p.threads = map[int]*Thread{}
}

// Detach lets the process run on untraced. Precondition: every thread is
// stopped (StopOthers(nil)) and the caller has handled the stops in the
// queue that it cares about (DrainQueue). Signals still owed to a thread are
// delivered as it is let go: the first as it is detached, the others sent
// again, which then reach the target with the tracer as their sender.
func (p *Process) Detach() error {
	err := p.Untrace()
	p.Close()
	return err
}

// Untrace lets every thread go as Detach does, but keeps the process's
// memory open (ReadMemory, WriteMemory) for a watcher that goes on serving
// the target without ptrace (the in-target agent). Nothing traces the
// process after it; Wait may not be called again.
func (p *Process) Untrace() error {
	if err := p.check(); err != nil {
		return err
	}
	p.swallowWake()
	for _, t := range p.threads {
		// The watch disarmed, its calls made first (FlushPending): a
		// call left would arm a page again, or is one that failed.
		t.pending = nil
	}
	for tid, t := range p.threads {
		p.notif.untrack(tid)
		_ = t.endRestart()
		t.drainNotifWake()
	}
	var firstErr error
	for tid, t := range p.threads {
		sig := t.heldSig
		if sig == 0 && len(t.deferred) > 0 && t.sigStop {
			info := t.deferred[0]
			if ptraceSetSiginfo(tid, &info) == nil {
				sig = info.Signo()
				t.deferred = t.deferred[1:]
			}
		}
		for _, info := range t.deferred {
			_ = unix.Tgkill(p.Pid, tid, unix.Signal(info.Signo()))
		}
		t.deferred = nil
		if err := ptraceDetach(tid, sig); err != nil && err != unix.ESRCH && firstErr == nil {
			firstErr = fmt.Errorf("PTRACE_DETACH %d: %w", tid, err)
		}
	}
	p.threads = map[int]*Thread{}
	return firstErr
}

// Retrace seizes every thread of a process Untrace let go again, and stops
// them all, for a watcher that serves the target without ptrace and needs
// it for a moment (the fast engine, for a store its agent cannot do);
// Untrace lets them go again. Stops met on the way are queued
// (DrainQueue). Threads the process creates meanwhile are traced too;
// forked children are not, and memtrap's end meanwhile does not kill the
// process (no PTRACE_O_EXITKILL): the agent lets it go.
func (p *Process) Retrace() error {
	if err := p.check(); err != nil {
		return err
	}
	p.options = unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACEEXEC | unix.PTRACE_O_TRACEEXIT | unix.PTRACE_O_TRACESYSGOOD
	if err := p.seizeAll(); err != nil {
		p.detachAll()
		return err
	}
	return nil
}

// DrainQueue hands out the stops collected by StopOthers that have not been
// returned by Wait yet, so that a caller about to detach can settle them.
// Bookkeeping stops are handled as by Wait.
func (p *Process) DrainQueue() ([]Stop, error) {
	var out []Stop
	p.holding = true
	defer func() { p.holding = false }()
	for len(p.queue) > 0 {
		w := p.queue[0]
		p.queue = p.queue[1:]
		st, ok, err := p.handle(w)
		if err != nil {
			return out, err
		}
		if ok {
			out = append(out, st)
		}
	}
	return out, nil
}

// Kill ends the process with SIGKILL and reaps it.
func (p *Process) Kill() {
	_ = unix.Kill(p.Pid, unix.SIGKILL)
	for !p.exited {
		if _, err := p.Wait(); err != nil {
			return
		}
	}
}

// swallowWake takes back the SIGSTOP a Wake sent, when the stop it was
// meant to cause has not come yet (Run found another stop first): left
// pending, it would stop the target right after the detach. One thread
// runs on until it dequeues it; signals met on the way are kept for the
// detach. Precondition: every thread stopped.
func (p *Process) swallowWake() {
	if !p.wake.Load() {
		return
	}
	// Met during a single-step and deferred?
	for _, th := range p.threads {
		for i, info := range th.deferred {
			if isWake(&info) {
				th.deferred = append(th.deferred[:i], th.deferred[i+1:]...)
				p.wake.Store(false)
				return
			}
		}
	}
	t := p.threads[p.Pid]
	if t == nil {
		for _, th := range p.threads {
			t = th
			break
		}
	}
	if t != nil && t.runUntilSignal(isWake) {
		p.wake.Store(false)
	}
}

// drainNotifWake takes back a SIGSTOP the listener sent the thread
// (notify.go) that is still pending: left there, it would stop the
// target right after the detach. Precondition: the thread is stopped and
// untracked (no other comes). Signals met on the way are kept for the
// detach.
func (t *Thread) drainNotifWake() {
	if t.p.notif == nil || !t.stopped {
		return
	}
	pending, err := statusMask(fmt.Sprintf("/proc/%d/task/%d/status", t.p.Pid, t.Tid), "SigPnd")
	if err != nil || pending&(1<<(unix.SIGSTOP-1)) == 0 {
		return
	}
	t.runUntilSignal(isNotifWake)
}

// runUntilSignal resumes a stopped thread until it stops for a signal that
// is (its stop then swallowed), and says whether it did; the signals met
// on the way are kept for later (Defer). It gives up at a stop that needs
// the caller (an event) and when the thread ends.
func (t *Thread) runUntilSignal(is func(*Siginfo) bool) bool {
	for {
		if err := ptraceCont(t.Tid, 0); err != nil {
			return false
		}
		t.stopped, t.sigStop, t.sysEntry = false, false, false
		_, ws, err := wait4(t.Tid)
		if err != nil || !ws.Stopped() {
			t.p.dropThread(t.Tid)
			return false
		}
		t.stopped = true
		switch event(ws) {
		case unix.PTRACE_EVENT_STOP:
			continue // a stale interrupt
		case 0:
		default:
			return false // something that needs the caller; leave it be
		}
		var info Siginfo
		if ptraceGetSiginfo(t.Tid, &info) != nil || t.reclaim(&info) != nil {
			return false
		}
		t.sigStop = true
		if is(&info) {
			return true
		}
		if ws.StopSignal()&0x80 == 0 {
			t.Defer(info)
		}
	}
}

// isWake tells the SIGSTOP of Wake from any other.
func isWake(info *Siginfo) bool {
	return info.Signo() == int(unix.SIGSTOP) && info.Code() == siUser && info.senderPid() == os.Getpid()
}
