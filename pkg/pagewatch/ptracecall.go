package pagewatch

import (
	"fmt"

	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// Targets that trace. A task has one tracer: while memtrap traces a task,
// another tracer cannot (PTRACE_TRACEME, PTRACE_ATTACH and PTRACE_SEIZE
// fail with EPERM). Children memtrap does not follow are not traced by it
// (tracer/notify.go); a followed child process, or a vfork child (which
// shares the watched memory, so memtrap traces it as a thread), that hands
// itself to another tracer, or that its parent seizes, is given up first,
// with a note, and the call runs as it would without memtrap. So is a task
// kept traced only for a SECCOMP_RET_TRACE filter (tracer.Process.KeepChild)
// that the target attaches (LetKeptGo), or that asks its parent to trace it
// (the listener and tracer.Process.KeptTracemes). The launched target
// itself stays memtrap's: its own PTRACE_TRACEME fails.

// ptrace requests (linux/ptrace.h) that make a new tracer.
const (
	ptraceTraceme = 0
	ptraceAttach  = 16
	ptraceSeize   = 0x4206
)

// ptraceRule makes the syscall filter stop the requests above.
func ptraceRule() tracer.FilterRule {
	var ranges []tracer.Range
	for _, req := range []uint64{ptraceTraceme, ptraceAttach, ptraceSeize} {
		ranges = append(ranges, tracer.Range{Lo: req, Hi: req + 1})
	}
	return tracer.FilterRule{Nr: unix.SYS_PTRACE, Args: []int{0}, Ranges: ranges}
}

// ptraceCall settles a ptrace request of t at its entry. done says t was
// let go (it is not to be resumed).
func (w *Watch) ptraceCall(t *tracer.Thread, si tracer.SyscallInfo) (done bool, err error) {
	switch si.Args[0] {
	case ptraceTraceme:
		return w.giveUp(t, t.Tid, "asks its parent to trace it (PTRACE_TRACEME)")
	case ptraceAttach, ptraceSeize:
		return w.giveUp(t, int(int32(si.Args[1])), fmt.Sprintf("is being attached by process %d (ptrace)", w.p.Pid))
	}
	return false, nil
}

// giveUp lets task tid go, for another tracer: a thread of a followed
// child takes its whole process with it; a vfork child goes alone; a
// thread of the launched target stays. t is the stopped caller.
func (w *Watch) giveUp(t *tracer.Thread, tid int, why string) (bool, error) {
	root := w.rootWatch()
	owner := root
	if root.p.Thread(tid) == nil {
		owner = nil
		for _, cw := range root.children {
			if cw.p.Thread(tid) != nil {
				owner = cw
				break
			}
		}
	}
	if owner == nil {
		// A task kept traced for a SECCOMP_RET_TRACE filter (not
		// followed): let go now, so that the call can trace it.
		if kept, err := root.p.LetKeptGo(tid); err != nil || !kept {
			return false, err
		}
		w.noteKeptGone(tid, why)
		return false, nil
	}
	th := owner.p.Thread(tid)
	if th.Foreign() {
		if err := owner.eng.leave(th); err != nil {
			return false, err
		}
		w.note(fmt.Sprintf("process %d (a vfork child of %d) %s: memtrap lets it go; until it runs a new program, its writes to watched memory are not reported%s", tid, owner.p.Pid, why, owner.eng.leaveNote()))
		return th == t, th.DetachThread()
	}
	if owner == root {
		if !root.saidTraceme {
			root.saidTraceme = true
			w.note(fmt.Sprintf("process %d %s, but memtrap traces it: the call fails (EPERM)", tid, why))
		}
		return false, nil
	}
	pid := owner.p.Pid
	if err := root.dropChild(pid, owner); err != nil {
		return false, err
	}
	w.note(fmt.Sprintf("process %d %s: memtrap lets it go, its watch disarmed", pid, why))
	return owner == w, nil
}

// dropChild lets the followed child pid go, its watch cw disarmed.
func (w *Watch) dropChild(pid int, cw *Watch) error {
	delete(w.children, pid)
	defer cw.closeEngine()
	w.p.Unfollow(pid)
	if err := cw.p.StopOthers(nil); err != nil {
		return err
	}
	drained, err := cw.p.DrainQueue()
	if err != nil {
		return err
	}
	if err := cw.dropEntryBP(drained); err != nil {
		return err
	}
	ths := cw.p.Threads()
	if len(ths) == 0 {
		cw.endGuard()
		return nil
	}
	if err := cw.Disarm(ths[0]); err != nil {
		return err
	}
	w.stopBeforeDetach(cw.p)
	err = cw.p.Detach()
	if err == nil {
		cw.endGuard()
	}
	return err
}
