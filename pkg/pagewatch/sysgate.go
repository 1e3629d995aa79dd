package pagewatch

import (
	"fmt"

	"github.com/memtrap/memtrap/pkg/bpfhook"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// The system calls of an attached target on the hw engine (see the
// package doc, "Kernel writes"): the kernel writes the watched memory
// unhindered (nothing is write-protected), so memtrap need not stop a call
// before it runs, only see the calls that may have written a region once
// they have. A bpfhook.SysGate stops just those, the ones the seccomp
// filter of run mode would stop (filterRules), as they return; every other
// call costs a raw tracepoint and no stop. The page engine must act before
// the call (bounces), which only a stop at the entry allows: it follows
// every call, as does the hw engine where BPF cannot do this.

// maxGateRanges is the most ranges of watched memory a gate's program
// tests each pointer argument against (spans closer than filterGap are
// merged first).
const maxGateRanges = 8

// gateSyscalls makes the gate stop the calls that matter for what is
// watched now, and says whether it does (the caller follows every call
// otherwise).
func (w *Watch) gateSyscalls() bool {
	if w.opts.NoSyscallGate || w.eng.name() != EngineHW || w.noGate {
		return false
	}
	fail := func(err error) bool {
		// Said once: the next regions are not tried again.
		w.noGate = true
		w.note(fmt.Sprintf("following every system call of process %d: %v", w.p.Pid, err))
		if cerr := w.closeSysGate(); cerr != nil {
			w.note(fmt.Sprintf("process %d: %v", w.p.Pid, cerr))
		}
		return false
	}
	if w.sysgate == nil {
		if err := bpfhook.SysGateAvailable(); err != nil {
			return fail(err)
		}
		g, err := bpfhook.NewSysGate(w.p.Pid)
		if err != nil {
			return fail(err)
		}
		w.sysgate = g
	}
	if err := w.sysgate.Load(filterRules(mergeSpans(w.eng.spans(), maxGateRanges))); err != nil {
		return fail(err)
	}
	w.p.TraceSyscalls(false)
	return true
}

// gateOwns says whether st is the stop of a call the gate stopped.
func (w *Watch) gateOwns(st tracer.Stop) bool {
	if w.sysgate == nil {
		return false
	}
	_, ok := w.sysgate.Owns(st)
	return ok
}

// gateStop: a call the gate stopped has returned. Its books are kept as a
// followed call's would have been at its entry and exit, and the thread
// goes on without the SIGSTOP.
func (w *Watch) gateStop(st tracer.Stop) error {
	if err := w.gateSettle(st, false); err != nil {
		return err
	}
	if bpfhook.Foreign(st) {
		return st.Thread.Resume(int(unix.SIGSTOP))
	}
	return st.Thread.Resume(0)
}

// gateSettle keeps the books of the call st stopped after, and forgets
// the stop (a SIGSTOP someone else sent with it is kept for later when
// the thread is let go without being resumed: Defer). The thread stays
// stopped. detaching: every thread is stopped to be let go (see gateCall).
func (w *Watch) gateSettle(st tracer.Stop, detaching bool) error {
	t := st.Thread
	nr, _ := w.sysgate.Owns(st)
	if err := w.sysgate.Done(t.Tid); err != nil {
		return err
	}
	if err := w.gateCall(t, nr, detaching); err != nil {
		return err
	}
	if bpfhook.Foreign(st) {
		t.Defer(st.Info)
	}
	return nil
}

// gateCall keeps the books of call nr, which t (stopped) has just
// returned from: its arguments are still in their registers. detaching:
// the regions go anyway, and the other threads must stay stopped, so a
// region unmapped is left to Disarm (dropping it resumes the others).
func (w *Watch) gateCall(t *tracer.Thread, nr int, detaching bool) error {
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return err
	}
	si := tracer.SyscallInfo{Nr: nr, Entry: true, Args: [6]uint64{regs.Rdi, regs.Rsi, regs.Rdx, regs.R10, regs.R8, regs.R9}}
	w.callBooks(si)
	e, ok := w.eng.(*hwEngine)
	if !ok {
		return nil
	}
	if _, ok := memoryCalls[nr]; ok {
		name, sp, hit := e.memoryHits(si)
		if len(hit) == 0 || detaching && nr != unix.SYS_MADVISE {
			return nil
		}
		return e.memoryDone(t, nr, name, &regs, int64(regs.Rax), sp, hit)
	}
	if !w.followsWrites() {
		return nil
	}
	call := e.covering(si)
	if call == nil {
		return nil
	}
	call.regs = regs
	return e.syscallExit(t, call)
}

// closeSysGate takes the gate off and the SIGSTOPs it sent that are on
// their way (every thread stopped), keeping the books of their calls.
func (w *Watch) closeSysGate() error {
	g := w.sysgate
	if g == nil {
		return nil
	}
	defer func() {
		w.sysMissed += g.Missed()
		g.Close()
		w.noteMissed()
	}()
	if err := g.Detach(); err != nil {
		w.sysgate = nil
		return err
	}
	err := bpfhook.TakeSignals(w.p, g.Pending(), func(t *tracer.Thread) error {
		nr, _ := g.Owns(tracer.Stop{Kind: tracer.StopSignal, Sig: int(unix.SIGSTOP), Thread: t})
		if err := g.Done(t.Tid); err != nil {
			return err
		}
		return w.gateCall(t, nr, true)
	})
	w.sysgate = nil
	return err
}

// gateQuiet runs inject, memtrap's own calls in thread t, with the gate
// letting t's calls go by: their SIGSTOP would come during the injection
// and reach the target.
func (w *Watch) gateQuiet(t *tracer.Thread, inject func() error) error {
	if w.sysgate == nil {
		return inject()
	}
	if err := w.sysgate.Quiet(t.Tid, true); err != nil {
		return err
	}
	err := inject()
	if qerr := w.sysgate.Quiet(t.Tid, false); qerr != nil && err == nil {
		err = qerr
	}
	return err
}

// noteMissed says what calls of w's process the kernel failed to stop
// since it last said (a BPF gate's bpf_send_signal_thread can fail, where
// the kernel cannot queue the signal at once): memtrap did not see them,
// and must say so rather than seem exact.
func (w *Watch) noteMissed() {
	if w.hooks != nil {
		if n := w.hooks.Missed(); n > w.missedHooks {
			w.note(fmt.Sprintf("process %d: the kernel failed to stop %d hooked call(s) memtrap needed to see (the BPF gate's signal could not be sent): the heap blocks, arguments or frames they made are not watched", w.p.Pid, n-w.missedHooks))
			w.missedHooks = n
		}
	}
	n := w.sysMissed
	if w.sysgate != nil {
		n += w.sysgate.Missed()
	}
	if n > w.missedCalls {
		w.note(fmt.Sprintf("process %d: the kernel failed to stop %d system call(s) writing near watched memory (the BPF gate's signal could not be sent): what they wrote is not reported", w.p.Pid, n-w.missedCalls))
		w.missedCalls = n
	}
}

// noteAllMissed runs noteMissed for every process of the watch, at its end.
func (w *Watch) noteAllMissed() {
	w.noteMissed()
	for _, cw := range w.children {
		cw.noteMissed()
	}
}
