package pagewatch

import (
	"fmt"

	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// childWatch is an empty watch of a followed child c of w's process: w's
// options (libraries loaded later are followed in the first process
// only), and w's filter spans, which c inherited with the filters.
func (w *Watch) childWatch(c *tracer.Process) *Watch {
	cw := &Watch{
		p: c, opts: w.opts, decode: w.decode, root: w.rootWatch(),
		calls:    map[int]*kcall{},
		filtered: append([]span(nil), w.filtered...),
		filters:  w.filters,
	}
	cw.eng = newPageEngine(cw)
	cw.opts.OnLibraries = nil
	return cw
}

// follow starts watching the child pid of w's process (stopped at its
// first stop), and lets it run.
func (w *Watch) follow(forker *tracer.Thread, pid int) error {
	c, err := w.p.Follow(pid)
	if err != nil {
		return err
	}
	root := w.rootWatch()
	cw := w.childWatch(c)
	cw.regions, cw.segv, cw.libBP = w.regions, w.segv, w.libBP
	if w.scratch != nil {
		cw.scratch = w.scratch.Clone()
		// Bounces in flight belong to other threads of the parent,
		// which the child does not have.
		for _, call := range w.calls {
			for _, b := range call.bounces {
				cw.scratch.Release(b.scratch, uint64(len(b.before)))
			}
		}
	}
	if cw.eng, err = w.eng.fork(cw, c.Thread(pid)); err != nil {
		return err
	}
	if cw.opts.KernelWrites {
		cw.publishQuick()
	}
	if w.opts.OnFork != nil {
		if err := w.opts.OnFork(w, cw, forker); err != nil {
			return err
		}
	}
	if w.hooks != nil && cw.hooks == nil {
		// Nobody hooks the child: its copy of the breakpoints goes.
		if err := w.hooks.Release(c, c.Thread(pid), forker.Tid); err != nil {
			return err
		}
	}
	root.children[pid] = cw
	root.setParent(pid, w.p.Pid)
	w.note(fmt.Sprintf("process %d forked %d: following it", w.p.Pid, pid))
	cw.guardChild()
	return c.ResumeAll()
}

// Parent returns the pid of the followed process that forked pid (also
// after either has exited), or 0 for the first process and for a process
// the watch never followed. Writes of a forked child are symbolized with
// its parent's image until it executes one of its own.
func (w *Watch) Parent(pid int) int {
	return w.rootWatch().parents[pid]
}

func (w *Watch) setParent(pid, parent int) {
	if w.parents == nil {
		w.parents = map[int]int{}
	}
	w.parents[pid] = parent
}

func (w *Watch) rootWatch() *Watch {
	if w.root != nil {
		return w.root
	}
	return w
}

// watchOf returns the watch a stop belongs to.
func (w *Watch) watchOf(st tracer.Stop) *Watch {
	if st.Pid == 0 || st.Pid == w.p.Pid {
		return w
	}
	if cw := w.children[st.Pid]; cw != nil {
		return cw
	}
	return w
}

// detachChildren lets every followed child go, pages disarmed.
func (w *Watch) detachChildren() error {
	for pid, cw := range w.children {
		if err := w.dropChild(pid, cw); err != nil {
			return err
		}
	}
	return nil
}

// anyThread gives Detach a thread of w's own process.
func (w *Watch) anyThread() *tracer.Thread {
	if ths := w.p.Threads(); len(ths) > 0 {
		return ths[0]
	}
	return nil
}

// followExec follows a vfork child of w's process that executed a new
// program (a shell running a command): a watch of its own, empty until its
// new image reaches its entry point and OnExec names regions there.
func (w *Watch) followExec(pid int) error {
	c, err := w.p.FollowExec(pid)
	if err != nil {
		return err
	}
	root := w.rootWatch()
	cw := w.childWatch(c)
	root.children[pid] = cw
	root.setParent(pid, w.p.Pid)
	w.note(fmt.Sprintf("process %d's vfork child %d executed a new program: following it", w.p.Pid, pid))
	cw.guardChild()
	t := c.Thread(pid)
	if cw.opts.OnExec == nil {
		return t.Resume(0)
	}
	return cw.execChild(t)
}

// execChild: a followed child executed a new image. The first process
// runs to its entry point under its own Wait (RunToEntry); a child's stops
// come through the root's Wait among everyone else's, so it gets an int3
// at its entry point instead and is armed when it gets there (atEntry).
func (w *Watch) execChild(t *tracer.Thread) error {
	aux, err := w.p.Auxv()
	if err != nil {
		w.note(fmt.Sprintf("process %d: reading auxv after execve: %v", w.p.Pid, err))
		return t.Resume(0)
	}
	entry := aux[tracer.AtEntry]
	orig := []byte{0}
	if err := w.p.ReadMemory(entry, orig); err != nil {
		return err
	}
	if err := w.p.WriteMemory(entry, []byte{0xcc}); err != nil {
		return err
	}
	w.entry, w.entryOrig = entry, orig[0]
	return t.Resume(0)
}

// entryHit says whether a stop is the int3 execChild put at the entry
// point.
func (w *Watch) entryHit(st tracer.Stop) bool {
	if w.entry == 0 || st.Sig != int(unix.SIGTRAP) || st.Info.Code() != siKernel {
		return false
	}
	var regs unix.PtraceRegs
	return st.Thread.Regs(&regs) == nil && regs.Rip == w.entry+1
}

// dropEntryBP takes back the int3 of a child let go before its new image
// reached its entry point (drained: its last stops, maybe that int3's).
func (w *Watch) dropEntryBP(drained []tracer.Stop) error {
	if w.entry == 0 {
		return nil
	}
	for _, st := range drained {
		if w.entryHit(st) {
			var regs unix.PtraceRegs
			if err := st.Thread.Regs(&regs); err != nil {
				return err
			}
			regs.Rip = w.entry
			if err := st.Thread.SetRegs(&regs); err != nil {
				return err
			}
		}
	}
	entry := w.entry
	w.entry = 0
	return w.p.WriteMemory(entry, []byte{w.entryOrig})
}

// atEntry takes the int3 away, runs the instruction it stood for from the
// start, and arms the new image.
func (w *Watch) atEntry(t *tracer.Thread) error {
	entry := w.entry
	w.entry = 0
	if err := w.p.WriteMemory(entry, []byte{w.entryOrig}); err != nil {
		return err
	}
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return err
	}
	regs.Rip = entry
	if err := t.SetRegs(&regs); err != nil {
		return err
	}
	w.armImage(t)
	return w.resume(t)
}
