package tracer

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Errors callers test with errors.Is.
var (
	// ErrProcessExited means the target is gone: every thread has exited.
	ErrProcessExited = errors.New("process exited")
	// ErrThreadGone means one thread exited while the tracer worked on it.
	ErrThreadGone = errors.New("thread exited")
	// ErrWrongThread means a method was called off the ptrace thread.
	ErrWrongThread = errors.New("tracer: called from a thread other than the one that attached")
)

// Process is a traced process (one address space) and its threads.
type Process struct {
	Pid int

	threads    map[int]*Thread
	mem        *os.File
	statusFile *os.File // /proc/PID/stat, kept open for SignalDispositions
	tracerTid  int
	ownChild   bool // launched by us: reap on exit, EXITKILL set
	options    int
	sysInsn    uint64          // address of a `syscall` instruction in the target
	ownInsn    bool            // sysInsn is memtrap's (SetSyscallInsn)
	threadLog  ThreadLog       // SetThreadLog
	idle       func()          // OnIdle
	quiet      bool            // QuietInjection
	gone       []func(tid int) // OnThreadGone
	// stub: where StubCode is (SetCallStub); filters: the seccomp
	// filters memtrap installed; filtersChecked, foreignFilters: whether
	// the target has filters of its own (ownFilters).
	stub                           uint64
	filters                        int
	filtersChecked, foreignFilters bool

	queue   []queued         // stops seen while stopping the world, handed out by Wait
	early   map[int]waitInfo // first stops of tasks whose creator has not reported them yet
	holding bool             // DrainQueue: bookkeeping stops stay stopped
	exited  bool
	status  unix.WaitStatus

	wake atomic.Bool // Wake was called: swallow one SIGSTOP

	traceSyscalls bool       // resume with PTRACE_SYSCALL (see TraceSyscalls)
	filtered      bool       // a SECCOMP_RET_TRACE filter is installed (InstallFilter)
	notif         *notifier  // the listener of a SECCOMP_RET_USER_NOTIF filter (notify.go)
	quick         *procQuick // the listener's view of the process (SetQuickCheck)
	noSuspend     bool       // PTRACE_O_SUSPEND_SECCOMP refused (suspendSeccomp)

	// kept are the tasks of child processes that stay traced only so
	// that the syscall filter they inherited has its tracer (KeepChild).
	kept     map[int]bool
	tracemes []int // kept tasks let go for a tracer of their own (KeptTracemes)

	// followed are the child processes traced as processes of their own
	// (Follow), kept on the first Process, whose Wait reports their stops.
	root     *Process
	followed map[int]*Process

	// OnVforkDone, if set, runs once, at the next thread that is done
	// waiting for its vfork child (the child executed or exited), stopped
	// at the exit of its vfork call.
	OnVforkDone func(*Thread) error

	// OnNewThread, if set, runs for each thread created after attach
	// while it is still stopped at its first instruction (to give it
	// per-thread state such as debug registers) and before it runs.
	OnNewThread func(*Thread) error
}

type waitInfo struct {
	tid int
	ws  unix.WaitStatus
}

// Thread is one traced task sharing the Process's address space.
type Thread struct {
	Tid int
	p   *Process

	stopped     bool
	stoppedByUs bool // stopped by StopOthers; ResumeOthers lets it go
	interrupted bool // PTRACE_INTERRUPT sent, its stop not yet seen
	// listening: in group-stop, let be with PTRACE_LISTEN; no signal but
	// SIGCONT makes it report again (see Wake).
	listening bool
	sigStop   bool // the current stop is a signal-delivery-stop
	sysEntry  bool // the current stop is a syscall entry (or seccomp) stop
	exiting   bool // reported PTRACE_EVENT_EXIT: never stops again
	foreign   bool // a vfork/CLONE_VM child: shares our memory, not our tgid
	deferred  []Siginfo
	rseq      rseqConf  // the thread's rseq registration, once seen (Rseq)
	pending   *onResume // a call on resume (MprotectOnResume)
	inStub    bool      // resumed into StubCode, not stopped since (startPending)
	// held: Resume leaves the thread in its stop (see Hold); heldSig is
	// the signal a Resume meanwhile asked to deliver.
	held    bool
	heldSig int
	// owed: the signals given back (giveBack), by number, oldest first
	owed map[int][]Siginfo

	// The listener's calls (notify.go). notifRestart: resumed to see the
	// entry of a call that gave up waiting for the listener, which is
	// reported as the filter's stop; notifEntry: the current stop is that
	// entry, and resuming lets the call run; callRan: the -ERESTARTSYS the
	// thread returns with is its call's own; restartMask: the thread's own
	// signal mask, while notifRestart holds its signals.
	// suspended: seccomp is suspended for the thread's current call
	// (suspendSeccomp); silentExit: that call's exit stops for the
	// tracer only.
	notifRestart, notifEntry, callRan, suspended, silentExit bool
	restartMask                                              uint64

	// inVfork: the thread waits in vfork for its child, which it cannot
	// be stopped from (the wait is killable only); vforkParent, of a vfork
	// child, is that thread's tid.
	inVfork, vforkExit bool
	vforkParent        int
}

// Locked runs f on a new goroutine locked to its own OS thread and returns
// f's result: the arrangement every Process needs.
func Locked(f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is not unlocked: it may have tracees left if f failed
		// half-way, and an exiting locked thread takes them with it.
		done <- f()
	}()
	return <-done
}

func (p *Process) check() error {
	if unix.Gettid() != p.tracerTid {
		return ErrWrongThread
	}
	return nil
}

const baseOptions = unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACEFORK |
	unix.PTRACE_O_TRACEVFORK | unix.PTRACE_O_TRACEEXEC | unix.PTRACE_O_TRACEVFORKDONE

func newProcess(pid int) (*Process, error) {
	p := newProcessNoMem(pid)
	if err := p.openMem(); err != nil {
		return nil, err
	}
	return p, nil
}

func newProcessNoMem(pid int) *Process {
	return &Process{
		Pid:       pid,
		threads:   map[int]*Thread{},
		tracerTid: unix.Gettid(),
		early:     map[int]waitInfo{},
		kept:      map[int]bool{},
		followed:  map[int]*Process{},
	}
}

func (p *Process) openMem() error {
	if p.mem != nil {
		p.mem.Close()
	}
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", p.Pid), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening memory of %d: %w", p.Pid, err)
	}
	p.mem = f
	return nil
}

func (p *Process) addThread(tid int) *Thread {
	t := &Thread{Tid: tid, p: p}
	p.threads[tid] = t
	if p.notif != nil {
		p.notif.track(tid, p.Pid, p.quickView())
	}
	return t
}

// dropThread forgets a thread that exited or is let go.
func (p *Process) dropThread(tid int) {
	delete(p.threads, tid)
	p.notif.untrack(tid)
	for _, f := range p.gone {
		f(tid)
	}
}

// OnThreadGone has f told of each thread the process forgets (it exited,
// or memtrap let it go), on the ptrace thread: so that what is kept by
// thread id is not inherited by a new thread with the same id.
func (p *Process) OnThreadGone(f func(tid int)) { p.gone = append(p.gone, f) }

// Threads returns the live threads, ordered by tid.
func (p *Process) Threads() []*Thread {
	out := make([]*Thread, 0, len(p.threads))
	for _, t := range p.threads {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Tid < out[j].Tid })
	return out
}

// Thread returns the thread with the given tid, or nil.
func (p *Process) Thread(tid int) *Thread { return p.threads[tid] }

// Exited reports whether the process has exited, and its wait status.
func (p *Process) Exited() (bool, unix.WaitStatus) { return p.exited, p.status }

// Wake makes a Wait that is blocked return soon with a stop of kind StopWake,
// so that the ptrace thread can act on a request from another goroutine
// (Ctrl-C: detach). Safe to call from any goroutine. The target sees a
// SIGSTOP that the tracer swallows, like gdb's interrupt.
func (p *Process) Wake() {
	if p.wake.Swap(true) {
		return
	}
	if err := unix.Kill(p.Pid, unix.SIGSTOP); err != nil {
		p.wake.Store(false)
	}
}

// Close releases the tracer's resources for the process (not the process).
func (p *Process) Close() error {
	if p.quick != nil {
		p.quick.check.Store(nil)
		if f := p.quick.mem.Swap(nil); f != nil {
			f.Close()
		}
	}
	if p.statusFile != nil {
		p.statusFile.Close()
		p.statusFile = nil
	}
	if p.mem != nil {
		err := p.mem.Close()
		p.mem = nil
		return err
	}
	return nil
}

// TracerPid reads who traces pid, from /proc/PID/status (0: nobody).
func TracerPid(pid int) (int, error) { return statusInt(pid, "TracerPid:") }

// statusInt reads a number field of /proc/PID/status (0: no such field).
func statusInt(pid int, field string) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, nil
}

func listTasks(pid int) ([]int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	var tids []int
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

type queued = waitInfo
