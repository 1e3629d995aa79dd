package pagewatch

import (
	"errors"
	"fmt"

	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// Following forks (Options.FollowForks). A forked child starts as a copy of
// the parent: the same pages armed, the same scratch area, the same loader
// breakpoint, the syscall filter. So its watch is a copy of the parent's
// over the child's tracer.Process; its writes are reported with its pid.
// Debug registers are not inherited: the hw engine loads them again. After
// an execve the child's watch ends (its regions went with the image); it
// stays traced until it exits, which the parent's watch reports as a note.

// follow starts watching the child pid of w's process (stopped at its
// first stop), and lets it run.
func (w *Watch) follow(pid int) error {
	c, err := w.p.Follow(pid)
	if err != nil {
		return err
	}
	root := w.rootWatch()
	cw := &Watch{
		p: c, opts: w.opts, regions: w.regions, decode: w.decode, root: root,
		pages:  map[uint64]*page{},
		segv:   w.segv,
		libBP:  w.libBP,
		slots:  w.slots,
		calls:  map[int]*kcall{},
		shadow: map[*Region][]byte{},
	}
	cw.opts.OnExec, cw.opts.OnLibraries = nil, nil
	cw.filtered = append([]span(nil), w.filtered...)
	for a, pg := range w.pages {
		cp := *pg
		cw.pages[a] = &cp
	}
	if w.scratch != nil {
		cw.scratch = &scratch{base: w.scratch.base, free: append([]span(nil), w.scratch.free...)}
		// Bounces in flight belong to other threads of the parent,
		// which the child does not have.
		for _, call := range w.calls {
			for _, b := range call.bounces {
				cw.scratch.release(b.scratch, uint64(len(b.before)))
			}
		}
	}
	for r, b := range w.shadow {
		cw.shadow[r] = append([]byte(nil), b...)
	}
	if cw.slots != nil {
		c.OnNewThread = cw.loadDebugRegs
		if err := cw.loadDebugRegs(c.Thread(pid)); err != nil {
			return err
		}
	}
	root.children[pid] = cw
	w.note(fmt.Sprintf("process %d forked %d: following it", w.p.Pid, pid))
	return c.ResumeAll()
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
		delete(w.children, pid)
		if err := cw.p.StopOthers(nil); err != nil {
			return err
		}
		if _, err := cw.p.DrainQueue(); err != nil {
			return err
		}
		ths := cw.p.Threads()
		if len(ths) == 0 {
			continue
		}
		if err := cw.Disarm(ths[0]); err != nil {
			return err
		}
		if err := cw.p.Detach(); err != nil {
			return err
		}
	}
	return nil
}

// tracerStopThread gives Detach a stopped thread of w's own process.
func (w *Watch) anyThread() *tracer.Thread {
	if ths := w.p.Threads(); len(ths) > 0 {
		return ths[0]
	}
	return nil
}

// ErrRseqPage means a region shares a page with a thread's rseq area.
var ErrRseqPage = errors.New("page holds a thread's rseq area")

// checkRseq refuses pages holding a thread's rseq area (glibc registers one
// per thread, in its TCB): the kernel writes it at every preemption, and on
// a write-protected page that write fails and the kernel kills the thread
// with SIGSEGV. The debug registers have no such problem.
func (w *Watch) checkRseq() error {
	for _, t := range w.p.Threads() {
		addr, size, err := t.Rseq()
		if err != nil || addr == 0 {
			continue
		}
		for a := pageDown(addr); a < addr+uint64(max(size, 32)); a += pageSize {
			if pg := w.pages[a]; pg != nil && !pg.armed && pg.prot&unix.PROT_WRITE != 0 {
				advice := "watch at most 32 bytes there with --engine hw"
				if tracer.CheckDebugRegisters() != nil {
					advice = "and this machine's debug registers do not fire, so it cannot be watched"
				}
				return fmt.Errorf("region %s: page %#x holds the rseq area of thread %d (%#x), which the kernel writes at every preemption, so it cannot be write-protected; %s: %w",
					pg.regions[0].Name, a, t.Tid, addr, advice, ErrRseqPage)
			}
		}
	}
	return nil
}
