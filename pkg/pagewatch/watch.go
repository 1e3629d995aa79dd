package pagewatch

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/memtrap/memtrap/pkg/bpfhook"
	"github.com/memtrap/memtrap/pkg/guard"
	"github.com/memtrap/memtrap/pkg/sysout"
	"github.com/memtrap/memtrap/pkg/tracer"
	"github.com/memtrap/memtrap/pkg/x86/store"
	"golang.org/x/sys/unix"
)

// Write is one write to watched memory.
type Write struct {
	Seq    int
	Pid    int
	Tid    int
	Region *Region
	Offset uint64 // of Addr from Region.Addr
	Addr   uint64 // first watched byte written
	Size   uint64
	Old    []byte
	New    []byte
	PC     uint64
	Insn   string // Intel syntax; "" if undecodable
	// Exact is false when the instruction could not be decoded and the write
	// is known only from the bytes that changed (a store of an equal value
	// is then invisible).
	Exact bool
	// Syscall names the system call when the kernel made the write on the
	// thread's behalf ("read"); PC is then the instruction after the
	// syscall instruction.
	Syscall string
	// Signal: the kernel made the write pushing the frame of this signal
	// for its handler; PC is where the thread was interrupted.
	Signal int
	// AfterPC: PC is the instruction after the write (debug registers
	// trap once the store is done) and Insn is empty.
	AfterPC bool
	// Regs are the writer's registers at the writing instruction, and
	// Thread is the writer, stopped there while Options.Report runs
	// (with Options.Unwind); neither may be used by the finish it returns.
	Regs   unix.PtraceRegs
	Thread *tracer.Thread
	// Stack holds whole pages of the writer's stack from StackAddr (the
	// page of its RSP) as they are while Options.Report runs, when
	// Options.StackBytes asked for them: an unwinder can read them there
	// instead of the target. Valid until Report returns.
	StackAddr uint64
	Stack     []byte
}

// Word is a watched value a write touched, before and after it: the whole
// region when it is at most 8 bytes, else one Width-byte aligned word of
// it (clipped to the region).
type Word struct {
	Addr     uint64
	Size     int
	Old, New uint64 // little-endian
}

// Options tunes a Watch.
type Options struct {
	// When, if set, keeps only the writes it says yes to, given the
	// watched values the write changed (see Word). It runs after Keep,
	// while the writer is stopped where the write left it: before the
	// instruction after a trapped store, at a syscall's end. A watch with
	// When therefore resumes a writer only after deciding.
	When func(wr *Write, words []Word) bool
	// Sync reports each write, its finish included, before its writer
	// runs on: what the writer prints next comes after the report (a
	// terminal's order). It costs the writer the report's time.
	Sync  bool
	Width int // bytes of a Word of a region larger than 8: 1, 2, 4 or 8; default 8
	// Keep, if set, drops the writes it says no to before they are
	// numbered and reported (an allocator's own writes into the blocks it
	// manages). It runs while the writer is stopped.
	Keep func(*Write) bool
	// Completer lets trapped writes happen; default Emulator, which falls
	// back to Stepper.
	Completer Completer
	// Engine is EnginePage, EngineHW or EngineAuto (default page).
	Engine string
	// Report receives each reported write, once. With Unwind set it runs
	// while the writer is still stopped at the writing instruction (for
	// kernel writes, at the syscall's end): the place to unwind its stack.
	// What needs no stopped writer (symbols, formatting, output) goes in
	// the finish it returns, which the watch calls once the writer of a
	// trapped store runs again, before the next write is reported. Without
	// Unwind the watch may resume the writer before calling Report.
	Report func(*Write) (finish func() error, err error)
	// Unwind says that Report reads the writer's stack, so it must run
	// while the writer is stopped.
	Unwind bool
	// Notify receives one-line notes about the target's life (exec, fork).
	Notify func(string)
	// OnExec, if set, is asked for the regions to watch in the new image
	// p executed (the first process, or with FollowForks a child), once it
	// has reached its entry point; nil drops the watch with the old image.
	OnExec func(p *tracer.Process) ([]*Region, error)
	// OnLibraries is asked for regions to add each time the dynamic
	// loader's list of objects changes (see WatchLibraries).
	OnLibraries func() ([]*Region, error)
	// Anywhere: regions will be added at run time anywhere in memory
	// (heap blocks, arguments, locals): the syscall filter covers all of
	// user space from the start (sysfilter.go).
	Anywhere bool
	// KernelWrites turns on following syscalls that write into watched
	// memory (bounce buffers, see kernel.go) and the target's own
	// mprotect/munmap of watched pages. Off, such a syscall fails with
	// EFAULT in the target (page engine) or goes unseen (hw engine).
	KernelWrites bool
	// SyscallFilter follows those syscalls with a seccomp filter, which
	// stops only them, instead of stopping every syscall twice. The
	// filter cannot be removed, so this is for targets memtrap launched
	// and keeps until they exit (their forked children, which inherit
	// it, until tracer.Process.ReleaseKept).
	SyscallFilter bool
	// NoSyscallGate: without SyscallFilter, the hw engine follows every
	// syscall too, instead of letting the kernel stop only those that
	// matter as they return (sysgate.go).
	NoSyscallGate bool
	// StackBytes asks for the first StackBytes bytes (whole pages) of the
	// writer's stack in Write.Stack, read with the fault's own system call
	// where that can be done.
	StackBytes int
	// FollowForks watches forked children too (their writes carry their
	// pid) instead of giving them their pages back.
	FollowForks bool
	// OnFork, if set, is told of each forked child the watch follows
	// (FollowForks), its watch built and its thread stopped, before it
	// runs: the place to give it hooks of its own (SetHooks).
	OnFork func(parent, child *Watch, forker *tracer.Thread) error
	// OnArm, if set, is told when the watch has armed the regions OnExec
	// named in a new image, t stopped at its entry point.
	OnArm func(w *Watch, t *tracer.Thread) error
	// OnUnmap is told when the target unmaps (part of) a region; how is
	// the syscall ("munmap(2)"). The region's other pages stay watched.
	OnUnmap func(r *Region, how string)
}

// Stats counts what a Watch did.
type Stats struct {
	Writes int // reported
	Faults int // trapped (including writes to unwatched data on armed pages)
}

// Watch is the set of watched regions of one process, and what is common to
// both engines: the stop loop, the syscalls followed (with the scratch area
// in the target they need), the guard of the target's signal handlers, the
// loader breakpoint, the followed children and the reports. How writes are
// caught is its engine's business.
type Watch struct {
	p         *tracer.Process
	opts      Options
	regions   []*Region
	eng       engine
	stats     Stats
	detach    atomic.Bool
	entry     uint64 // a followed child's new entry point, int3 there (execChild)
	entryOrig byte
	// saidListener: the processes told that their own seccomp listener
	// was refused (noteRefusedListeners).
	saidListener map[int]bool
	// missedHooks, missedCalls: the calls the kernel failed to stop
	// (noteMissed) said so far; sysMissed, those of the closed syscall
	// gates.
	missedHooks, missedCalls, sysMissed uint64
	// saidIOURing: the note that io_uring is not followed was given.
	saidIOURing bool
	// saidTraceme: the note that the target cannot be traced by another;
	// saidKeptGone: that a kept task was let go for a tracer of its own.
	saidTraceme  bool
	saidKeptGone bool
	decode       func([]byte, *unix.PtraceRegs) (store.Store, error) // store.Decode; tests replace it

	scratch *sysout.Scratch // bounce buffers for kernel writes, in the target
	calls   map[int]*kcall  // bounced syscalls in progress, by tid
	segv    segvGuard       // the target's SIGSEGV action, kept from force_sig
	libBP   uint64          // _dl_debug_state, where an int3 stands (WatchLibraries)
	// filtered: the spans the installed syscall filters stop calls for;
	// filters: how many there are.
	filtered []span
	filters  int
	// sysgate: the kernel's stops of the calls that matter, at their
	// return (sysgate.go); nil when every call is followed. noGate: it
	// could not be had, and is not tried again.
	sysgate *bpfhook.SysGate
	noGate  bool

	root     *Watch         // the watch of the first process, for a followed child's
	children map[int]*Watch // followed children, by pid (on the root watch)
	parents  map[int]int    // every followed child's parent, by pid (on the root watch)
	exited   *tracer.Stop   // the first process's exit, while children run on

	hooks Hooks                    // breakpoints in the first process's code (SetHooks)
	guard func(*guard.State) error // SetGuard
	insns map[uint64]insnText      // syntax's
	// handoff: a hand-off asked for (HandOff), done by Run once the
	// stop being handled is.
	handoff *handoff
}

// Hooks are breakpoints another package keeps in the target's code
// (package hook): the watch hands them their stops, rewinds the threads
// stopped at them at a detach, and has them take their bytes out at
// detach, out of forked children, and forget them at execve.
type Hooks interface {
	// Owns says whether a signal stop is one of theirs.
	Owns(st tracer.Stop) bool
	// Handle runs what the stop is for and leaves the thread stopped,
	// ready to go on.
	Handle(t *tracer.Thread) error
	// Missed counts the calls of theirs that needed a stop the kernel
	// failed to make (a BPF gate's signal that could not be sent).
	Missed() uint64
	// Rewind undoes a stop of theirs that will not be handled.
	Rewind(t *tracer.Thread) error
	// Remove takes everything out; t is stopped, and the others too.
	Remove(t *tracer.Thread) error
	// Release takes the breakpoints out of a forked child, and the
	// awaited returns out of the stack it copied from forker, the thread
	// that forked; t, the child's thread (stopped), unmaps its copy of
	// the hooks' code.
	Release(child *tracer.Process, t *tracer.Thread, forker int) error
	// Forget drops everything: the image is gone.
	Forget()
}

// SetHooks hands the watch the breakpoints of its process (nil: none).
func (w *Watch) SetHooks(h Hooks) { w.hooks = h }

// Hooks returns the breakpoints SetHooks gave, or nil.
func (w *Watch) Hooks() Hooks { return w.hooks }

// Process is the process the watch watches.
func (w *Watch) Process() *tracer.Process { return w.p }

// hookHit handles a breakpoint's stop and lets the thread go on.
func (w *Watch) hookHit(t *tracer.Thread) error {
	if err := w.hooks.Handle(t); err != nil {
		return err
	}
	if err := w.checkSegv(t); err != nil {
		return err
	}
	w.SyncGuard()
	return w.resume(t)
}

// ErrNotMapped means a region is not wholly mapped in the target.
var ErrNotMapped = tracer.ErrNotMapped

// New builds a watch over regions of p; nothing is armed yet.
func New(p *tracer.Process, regions []*Region, opts Options) (*Watch, error) {
	if opts.Width == 0 {
		opts.Width = 8
	}
	switch opts.Width {
	case 1, 2, 4, 8:
	default:
		return nil, fmt.Errorf("width %d: must be 1, 2, 4 or 8", opts.Width)
	}
	if opts.Completer == nil {
		opts.Completer = Emulator{}
	}
	for _, r := range regions {
		if err := r.Validate(); err != nil {
			return nil, err
		}
	}
	w := &Watch{p: p, opts: opts, regions: regions, decode: (&store.Cache{}).Decode, children: map[int]*Watch{}}
	eng, err := w.newEngine(regions)
	if err != nil {
		return nil, err
	}
	w.eng = eng
	return w, nil
}

// Stats returns the counters so far.
func (w *Watch) Stats() Stats { return w.stats }

// Engine says which engine watches: EnginePage or EngineHW.
func (w *Watch) Engine() string { return w.eng.name() }

// Regions returns the watched regions.
func (w *Watch) Regions() []*Region { return w.regions }

// Arm starts watching the regions: their pages write-protected, or the
// debug registers loaded, with t (a stopped thread, with the others stopped
// too) making the system calls that takes.
func (w *Watch) Arm(t *tracer.Thread) error {
	defer w.SyncGuard()
	w.noteIgnored()
	if err := w.eng.arm(t); err != nil {
		return err
	}
	if err := w.mapScratch(t); err != nil {
		return err
	}
	if err := w.snapshotSignals(t); err != nil {
		return err
	}
	return w.followSyscalls(t)
}

// AddRegions starts watching more regions, at any stop: only what they
// concern is armed (the pages not armed yet, the debug registers).
// Precondition: t is stopped, and so are the other threads.
func (w *Watch) AddRegions(t *tracer.Thread, regions []*Region) error {
	defer w.SyncGuard()
	for _, r := range regions {
		if err := r.Validate(); err != nil {
			return err
		}
	}
	if err := w.eng.add(t, regions); err != nil {
		return err
	}
	w.regions = append(append([]*Region(nil), w.regions...), regions...)
	return w.followSyscalls(t)
}

// RemoveRegions stops watching regions, at any stop: a page keeps its
// protection while another region still has bytes on it, the others get
// theirs back. Writes to them are not reported from now on. The syscall
// filter keeps stopping the calls near them (a filter cannot be taken
// back); those calls then run as they are. Precondition: as AddRegions.
func (w *Watch) RemoveRegions(t *tracer.Thread, regions []*Region) error {
	defer w.SyncGuard()
	gone := map[*Region]bool{}
	for _, r := range regions {
		gone[r] = true
	}
	// A new slice: a report may be ranging over the old one.
	keep := make([]*Region, 0, len(w.regions))
	var drop []*Region
	for _, r := range w.regions {
		if gone[r] {
			drop = append(drop, r)
		} else {
			keep = append(keep, r)
		}
	}
	if len(drop) == 0 {
		return nil
	}
	if err := w.eng.remove(t, drop, keep); err != nil {
		return err
	}
	w.regions = keep
	return nil
}

// resume lets a thread go on after memtrap's work on it; a signal that
// arrived meanwhile (deferred) comes back as a stop of its own, delivered
// as any other (deliver). A held thread (HandOff) stays stopped: a signal
// waiting goes with the detach.
func (w *Watch) resume(t *tracer.Thread) error { return t.Resume(0) }

// handoff is a HandOff to carry out.
type handoff struct {
	t        *tracer.Thread // the writer, held where the write left it
	stopPid  int            // the process put into group-stop, 0 for none
	stopping bool
}

// HandOff asks Run to let the target go right after the write wr is
// complete: wr's thread does not run another instruction for memtrap;
// every thread is stopped, everything armed is undone, and every thread
// detached. With stop, wr's process is left in group-stop (state T) for
// another debugger to attach, SIGCONT or a debugger's continue resuming
// it; without, it runs on untraced. Run then returns a StopWake. Call it
// from Options.When (or Keep, Report), while the writer is stopped.
func (w *Watch) HandOff(wr *Write, stop bool) {
	root := w.rootWatch()
	if root.handoff != nil {
		return
	}
	wr.Thread.Hold()
	h := &handoff{t: wr.Thread}
	if stop {
		h.stopPid = wr.Pid
	}
	root.handoff = h
}

// HandedOff reports whether Run ended with a HandOff.
func (w *Watch) HandedOff() bool { return w.rootWatch().handoff != nil }

// doHandOff carries out the hand-off: the held writer stands for the stop
// Detach needs when it is a thread of w's own process; a followed child's
// writer is let go with its process, as are all children.
func (w *Watch) doHandOff() error {
	h := w.handoff
	h.stopping = true
	if err := w.detachChildren(); err != nil {
		return err
	}
	t := h.t
	if t.Process() != w.p {
		if err := w.p.StopOthers(nil); err != nil {
			return err
		}
		t = w.anyThread()
		if t == nil {
			return nil
		}
	}
	return w.Detach(tracer.Stop{Kind: tracer.StopWake, Thread: t})
}

// stopBeforeDetach puts p into group-stop if a hand-off asks for it: the
// SIGSTOP is queued while every thread is still in its ptrace-stop, so
// none runs an instruction before it stops.
func (w *Watch) stopBeforeDetach(p *tracer.Process) {
	if h := w.rootWatch().handoff; h != nil && h.stopping && h.stopPid == p.Pid {
		_ = unix.Kill(p.Pid, unix.SIGSTOP)
	}
}

// RequestDetach asks Run to disarm, detach and return. Safe from any
// goroutine (a signal handler's, typically).
func (w *Watch) RequestDetach() {
	w.detach.Store(true)
	w.p.Wake()
}

// Run drives the target until it exits (the returned Stop is then
// StopExited) or a requested detach is done (ok: the returned Stop is
// StopWake).
func (w *Watch) Run() (tracer.Stop, error) {
	defer w.noteRefusedListeners()
	defer w.noteAllMissed()
	for {
		st, err := w.p.Wait()
		w.noteRefusedListeners()
		w.noteKeptTracemes()
		if err != nil {
			if errors.Is(err, tracer.ErrProcessExited) {
				return st, nil
			}
			return st, err
		}
		if w.detach.Load() && st.Kind != tracer.StopExited {
			if err := w.detachChildren(); err != nil {
				return st, err
			}
			if st.Pid != 0 && st.Pid != w.p.Pid {
				// The stop was a child's, now detached.
				st = tracer.Stop{Kind: tracer.StopWake, Thread: w.anyThread()}
				if st.Thread == nil {
					if err := w.p.StopOthers(nil); err != nil {
						return st, err
					}
					st.Thread = w.anyThread()
				}
			}
			if err := w.Detach(st); err != nil {
				return st, err
			}
			return tracer.Stop{Kind: tracer.StopWake}, nil
		}
		if st.Kind == tracer.StopExited {
			if st.Pid != 0 && st.Pid != w.p.Pid {
				if cw := w.children[st.Pid]; cw != nil {
					if cw.hooks != nil {
						cw.hooks.Forget() // what they hold in the kernel goes too
					}
					cw.noteMissed()
					cw.endGuard()
					cw.closeEngine()
				}
				delete(w.children, st.Pid)
				w.note(fmt.Sprintf("process %d exited (%s)", st.Pid, exitString(st.Status)))
				if w.exited != nil && len(w.children) == 0 {
					return *w.exited, nil
				}
				continue
			}
			if len(w.children) > 0 {
				if w.exited != nil {
					// Again: the tracer follows none of them any
					// more, whatever w.children says.
					return *w.exited, nil
				}
				w.exited = &st
				continue
			}
			if w.exited != nil {
				return *w.exited, nil
			}
			return st, nil
		}
		err = w.watchOf(st).dispatch(st)
		if w.handoff != nil && !w.handoff.stopping {
			if err := w.doHandOff(); err != nil {
				return st, err
			}
			return tracer.Stop{Kind: tracer.StopWake}, nil
		}
		if err != nil {
			if errors.Is(err, tracer.ErrProcessExited) || errors.Is(err, tracer.ErrThreadGone) {
				continue
			}
			return st, err
		}
	}
}

func exitString(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return fmt.Sprintf("killed by signal %d", int(ws.Signal()))
	}
	return fmt.Sprintf("status %d", ws.ExitStatus())
}

func (w *Watch) dispatch(st tracer.Stop) error {
	switch st.Kind {
	case tracer.StopExited:
		return nil
	case tracer.StopSignal:
		if w.gateOwns(st) {
			defer w.noteMissed()
			return w.gateStop(st)
		}
		if w.eng.owns(st) {
			return w.eng.trap(st)
		}
		if w.hooks != nil && w.hooks.Owns(st) {
			defer w.noteMissed()
			return w.hookHit(st.Thread)
		}
		if w.entryHit(st) {
			return w.atEntry(st.Thread)
		}
		if w.libHit(st) {
			return w.libraries(st.Thread)
		}
		return w.eng.deliver(st.Thread, st.Sig)
	case tracer.StopGroup:
		return st.Thread.Listen()
	case tracer.StopFork:
		if w.opts.FollowForks {
			if err := w.follow(st.Thread, st.Child); err != nil {
				return err
			}
		} else if err := w.releaseChild(st.Thread, st.Child); err != nil {
			return err
		}
		return st.Thread.Resume(0)
	case tracer.StopExec:
		return w.exec(st.Thread)
	case tracer.StopExecChild:
		switch {
		case w.opts.FollowForks:
			return w.followExec(st.Child)
		case w.p.Filtered():
			// It inherited the syscall filter: its stops need a
			// tracer. Nothing else of ours went with the new image.
			return w.p.KeepChild(st.Child)
		}
		return w.p.DetachChild(st.Child)
	case tracer.StopWake:
		return st.Thread.Resume(0)
	case tracer.StopSyscall:
		if st.Syscall.Entry {
			return w.syscallEntry(st.Thread, st.Syscall)
		}
		return w.syscallExit(st.Thread)
	}
	return nil
}

func (w *Watch) note(s string) {
	if w.opts.Notify != nil {
		w.opts.Notify(s)
	}
}

// releaseChild gives a forked child (a copy of our protected pages) its
// pages back and lets it go untraced: it must never die of our protection.
func (w *Watch) releaseChild(forker *tracer.Thread, pid int) error {
	c, err := w.p.Fork(pid)
	if err != nil {
		return w.p.DetachChild(pid)
	}
	defer c.Close()
	t := c.Thread(pid)
	if err := w.unwatchLibraries(c); err != nil {
		w.note(fmt.Sprintf("child %d: %v", pid, err))
	}
	if w.hooks != nil {
		if err := w.hooks.Release(c, t, forker.Tid); err != nil {
			w.note(fmt.Sprintf("child %d: %v", pid, err))
		}
	}
	if w.scratch != nil {
		if _, err := t.Syscall(unix.SYS_MUNMAP, uintptr(w.scratch.Base), scratchSize); err != nil {
			w.note(fmt.Sprintf("child %d: %v", pid, err))
		}
	}
	if err := w.eng.release(t); err != nil {
		w.note(fmt.Sprintf("child %d: %v", pid, err))
	}
	if w.p.Filtered() {
		// It inherited the syscall filter: its stops need a tracer.
		c.Close()
		return w.p.KeepChild(pid)
	}
	return c.Detach()
}

// Detach disarms every page and lets the target run on untraced. st is the
// stop Run was handling (its thread is stopped).
func (w *Watch) Detach(st tracer.Stop) error {
	t := st.Thread
	switch st.Kind {
	case tracer.StopSignal:
		if w.gateOwns(st) {
			if err := w.gateSettle(st, true); err != nil {
				return err
			}
		} else if w.libHit(st) {
			if err := w.returnFromLibBP(t); err != nil {
				return err
			}
		} else if w.hooks != nil && w.hooks.Owns(st) {
			if err := w.hooks.Rewind(t); err != nil {
				return err
			}
		} else if !w.eng.owns(st) {
			t.Defer(st.Info)
		}
	case tracer.StopFork:
		if err := w.releaseChild(st.Thread, st.Child); err != nil {
			return err
		}
	}
	if t == nil {
		return nil
	}
	if err := w.p.StopOthers(t); err != nil {
		return err
	}
	queued, err := w.p.DrainQueue()
	if err != nil {
		return err
	}
	for _, q := range queued {
		switch q.Kind {
		case tracer.StopSignal:
			if w.gateOwns(q) {
				if err := w.gateSettle(q, true); err != nil {
					return err
				}
			} else if w.libHit(q) {
				if err := w.returnFromLibBP(q.Thread); err != nil {
					return err
				}
			} else if w.hooks != nil && w.hooks.Owns(q) {
				if err := w.hooks.Rewind(q.Thread); err != nil {
					return err
				}
			} else if !w.eng.owns(q) {
				// Delivered as the thread is let go; a trapped write
				// just runs again, unprotected.
				q.Thread.Defer(q.Info)
			}
		case tracer.StopFork:
			if err := w.releaseChild(q.Thread, q.Child); err != nil {
				return err
			}
		case tracer.StopSyscall:
			if !q.Syscall.Entry {
				if err := w.finishCall(q.Thread); err != nil {
					return err
				}
			}
		}
	}
	for tid, c := range w.calls {
		// Still inside its call: it cannot be let go with a pointer
		// into our scratch area.
		if c.redirected() {
			return fmt.Errorf("thread %d is inside a system call memtrap redirected; try again", tid)
		}
	}
	if err := w.Disarm(t); err != nil {
		return err
	}
	w.stopBeforeDetach(w.p)
	return w.p.Detach()
}

// Disarm undoes what Arm did: every armed page gets its own protection
// back, the debug registers are cleared, the loader breakpoint and the
// scratch area go, and the signal actions a trap of memtrap's reset are
// the target's again. t is a stopped thread and the others are stopped
// too. A step that fails does not stop the others (the target must get
// back all that can be given back); the errors are returned together.
func (w *Watch) Disarm(t *tracer.Thread) error {
	defer w.SyncGuard()
	var errs []error
	if err := w.unwatchLibraries(w.p); err != nil {
		errs = append(errs, err)
	}
	w.libBP = 0
	if err := w.closeSysGate(); err != nil {
		errs = append(errs, err)
	}
	if w.hooks != nil {
		if err := w.hooks.Remove(t); err != nil {
			errs = append(errs, err)
		}
		w.hooks = nil
	}
	if err := w.eng.disarm(t); err != nil {
		errs = append(errs, err)
	}
	if err := w.checkSegv(t); err != nil {
		errs = append(errs, err)
	}
	if err := w.dropScratch(t); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// closeEngine lets go of what the engine holds of the image's own (the
// page engine's descriptor on its maps): the image is gone.
func (w *Watch) closeEngine() {
	if e, ok := w.eng.(*pageEngine); ok {
		e.close()
	}
}

// exec starts over in the image execve brought: the old pages, scratch
// area and breakpoints went with the old address space.
func (w *Watch) exec(t *tracer.Thread) error {
	w.note(fmt.Sprintf("process %d called execve: %d watched region(s) went with the old image", w.p.Pid, len(w.regions)))
	w.regions = nil
	w.closeEngine()
	w.eng = newPageEngine(w) // nothing armed: the new image gets its own
	if w.hooks != nil {
		w.hooks.Forget()
		w.hooks = nil
	}
	w.p.OnNewThread = nil
	if w.sysgate != nil {
		// No other thread is left, nor a signal on its way: only the
		// old image's rules go.
		w.sysgate.Close()
		w.sysgate = nil
	}
	// The filters stay (execve keeps them), and count against the
	// kernel's limit; what they cover is the old image's.
	w.scratch, w.calls, w.segv, w.libBP, w.filtered = nil, nil, segvGuard{}, 0, nil
	w.entry = 0
	w.SyncGuard()
	w.p.TraceSyscalls(false)
	if w.opts.OnExec == nil {
		return t.Resume(0)
	}
	if w.root != nil {
		return w.execChild(t)
	}
	t, err := w.p.RunToEntry()
	if err != nil {
		return err
	}
	w.armImage(t)
	return w.p.ResumeAll()
}

// armImage watches what OnExec names in the new image w's process reached
// the entry point of, t stopped there.
func (w *Watch) armImage(t *tracer.Thread) {
	regions, err := w.opts.OnExec(w.p)
	if err != nil {
		w.note(err.Error())
		return
	}
	// With OnArm, also an image with no region yet is armed: its regions
	// may come at run time (heap blocks).
	if len(regions) > 0 || w.opts.OnArm != nil {
		eng, err := w.newEngine(regions)
		if err != nil {
			w.note(err.Error() + "; the new image is watched by the page engine")
			eng = newPageEngine(w)
		}
		w.eng, w.regions = eng, regions
		if err := w.Arm(t); err != nil {
			w.note(fmt.Sprintf("arming the new image of process %d: %v", w.p.Pid, err))
			return
		}
		if len(regions) > 0 {
			w.note(fmt.Sprintf("watching %d region(s) in the new image of process %d", len(regions), w.p.Pid))
		}
	}
	if w.opts.OnArm != nil {
		if err := w.opts.OnArm(w, t); err != nil {
			w.note(fmt.Sprintf("process %d: %v", w.p.Pid, err))
		}
	}
}
