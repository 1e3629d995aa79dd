package pagewatch

import (
	"sort"

	"github.com/memtrap/memtrap/pkg/guard"
	"golang.org/x/sys/unix"
)

// SetGuard has the watch tell update (a guardian's, package guard) what it
// has changed in the target, each time that changes and before the target
// runs with the change. nil: no guardian.
func (w *Watch) SetGuard(update func(*guard.State) error) { w.guard = update }

// Guarded says whether a guardian is told of the watch's changes.
func (w *Watch) Guarded() bool { return w.guard != nil }

// SyncGuard tells the guardian what is changed in the target now; the
// watch does so itself after its own changes. A failure is noted once: the
// watch goes on, unguarded.
func (w *Watch) SyncGuard() {
	if w.guard == nil {
		return
	}
	if err := w.guard(w.guardState()); err != nil {
		w.note("the guardian is gone (" + err.Error() + "): if memtrap dies now, the target may die of what it leaves armed")
		w.guard = nil
	}
}

// guardChild has the first process's guardian guard a followed child too,
// stopped, told what is armed in it before it runs: memtrap's death must
// not kill it of what the watch armed in it (its copy of the parent's
// pages, or its own debug registers).
func (w *Watch) guardChild() {
	w.guard = w.rootWatch().guard
	w.SyncGuard()
}

// endGuard tells the guardian that nothing of memtrap's is left in a
// followed child: it has exited, or memtrap gave everything back and let
// it go.
func (w *Watch) endGuard() {
	if w.guard != nil {
		_ = w.guard(&guard.State{Pid: w.p.Pid})
		w.guard = nil
	}
}

// guardHooks is what Hooks that a guardian can undo tell of themselves
// (package hook's Set).
type guardHooks interface {
	GuardState(s *guard.State)
}

func (w *Watch) guardState() *guard.State {
	s := &guard.State{Pid: w.p.Pid}
	w.eng.guardState(s)
	if w.libBP != 0 {
		s.Breakpoints = append(s.Breakpoints, guard.Breakpoint{Addr: w.libBP, Orig: 0xc3})
	}
	if w.entry != 0 {
		s.Breakpoints = append(s.Breakpoints, guard.Breakpoint{Addr: w.entry, Orig: w.entryOrig})
	}
	if h, ok := w.hooks.(guardHooks); ok {
		h.GuardState(s)
	}
	if w.scratch != nil {
		s.Unmap = append(s.Unmap, guard.Span{Addr: w.scratch.Base, Len: scratchSize})
	}
	return s
}

// guardState: the armed pages (and those being armed), with their own
// protections.
func (e *pageEngine) guardState(s *guard.State) {
	addrs := make([]uint64, 0, len(e.pages))
	for a, pg := range e.pages {
		if (pg.armed || e.arming) && pg.prot&unix.PROT_WRITE != 0 {
			addrs = append(addrs, a)
		}
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i] < addrs[j] })
	for _, a := range addrs {
		s.AddPage(a, pageSize, e.pages[a].prot)
	}
}

// guardState: the debug registers, while armed.
func (e *hwEngine) guardState(s *guard.State) { s.DebugRegs = s.DebugRegs || e.armed }
