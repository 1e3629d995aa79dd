package pagewatch

import (
	"errors"
	"fmt"
	"github.com/memtrap/memtrap/pkg/procmaps"
	"sort"

	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// The page engine write-protects every page that holds a watched byte, with
// mprotect injected into the target, and remembers each page's own
// protection from /proc/PID/maps. A SIGSEGV with SEGV_ACCERR on an armed
// page is its trap: the write is completed by the Completer (emulated, or
// single-stepped with the page open) and reported (fault.go). A write to
// other data of the page completes silently. Pages the target itself keeps
// read-only need nothing: a write there is the target's own fault.
//
// Besides the writes of the target's instructions, an armed page must
// survive what the kernel writes: system calls are bounced through the
// scratch area (kernel.go, kvec.go), signal frames are built with the pages
// unprotected (sigframe.go), and the target's own mprotect, munmap, mremap
// and madvise of watched pages keep the books (memoryCall).
type pageEngine struct {
	w       *Watch
	pages   map[uint64]*page
	codeBuf [16]byte
	spare   [][]byte                    // page buffers for the next fault (hullBuf)
	stack   []byte                      // Options.StackBytes of buffer, reused
	alt     map[*tracer.Thread]altStack // known alternate signal stacks (altStack)
	// query: the kernel's answers on the image's mappings (mappings);
	// noQuery: it has none.
	query   *procmaps.Query
	noQuery bool
	// arming: the pages not armed yet are being armed (add), and the
	// guardian is told of them first.
	arming bool
}

// page is one page holding watched bytes.
type page struct {
	addr  uint64
	prot  int  // the target's own protection, restored when disarmed
	armed bool // write-protected by us
	// suspended: armed, and unprotected while a vfork child memtrap let
	// go runs in this memory (leave)
	suspended bool
	shared    bool // of a MAP_SHARED mapping
	regions   []*Region
	lo, hi    uint64 // page offsets of the watched bytes' hull
}

func newPageEngine(w *Watch) *pageEngine {
	return &pageEngine{w: w, pages: map[uint64]*page{}}
}

func (e *pageEngine) name() string { return EnginePage }

func (e *pageEngine) arm(t *tracer.Thread) error {
	return e.add(t, e.w.regions)
}

func (e *pageEngine) add(t *tracer.Thread, regions []*Region) error {
	// A page given back at this stop must have its protection back
	// before it is read (a block freed, or moved, and its memory handed
	// out again at once).
	if err := e.w.p.FlushPending(); err != nil {
		return err
	}
	at, err := e.mappings()
	if err != nil {
		return err
	}
	if err := e.addPages(at, regions); err != nil {
		e.forgetUnarmed()
		return err
	}
	if err := e.checkRseq(); err != nil {
		e.forgetUnarmed()
		return err
	}
	if e.toArm(regions) {
		// The guardian hears of the pages before they are armed: if
		// memtrap dies meanwhile, it gives a page not armed yet its
		// own protection again (no harm), and never leaves one armed
		// that it does not know of.
		e.arming = true
		e.w.SyncGuard()
		defer func() { e.arming = false }()
	}
	return e.setProtection(t, true)
}

// toArm says whether a page of regions is waiting to be armed: only
// theirs are looked at (a heap block's, at each allocation), not every
// page of the watch.
func (e *pageEngine) toArm(regions []*Region) bool {
	for _, r := range regions {
		for a := pageDown(r.Addr); a < r.End(); a += pageSize {
			if pg := e.pages[a]; pg != nil && !pg.armed && pg.prot&unix.PROT_WRITE != 0 {
				return true
			}
		}
	}
	return false
}

// forgetUnarmed drops the pages an add that failed recorded: never armed,
// and no region of them is watched. Pages armed before keep their hulls,
// wider than they need be at worst.
func (e *pageEngine) forgetUnarmed() {
	for a, pg := range e.pages {
		if !pg.armed {
			delete(e.pages, a)
		}
	}
}

// remove takes drop's bytes off their pages; a page with no watched byte
// left gets its own protection back, and the others a hull of what stays.
func (e *pageEngine) remove(t *tracer.Thread, drop, keep []*Region) error {
	gone := map[*Region]bool{}
	for _, r := range drop {
		gone[r] = true
	}
	var free []uint64
	for _, r := range drop {
		for a := pageDown(r.Addr); a < r.End(); a += pageSize {
			pg := e.pages[a]
			if pg == nil {
				continue // unmapped meanwhile, or seen already
			}
			var left []*Region
			for _, o := range pg.regions {
				if !gone[o] {
					left = append(left, o)
				}
			}
			pg.regions = left
			if len(left) == 0 {
				free = append(free, a)
				continue
			}
			pg.lo, pg.hi = pageSize, 0
			for _, o := range left {
				pg.lo = min(pg.lo, max(a, o.Addr)-a)
				pg.hi = max(pg.hi, min(a+pageSize, o.End())-a)
			}
		}
	}
	sort.Slice(free, func(i, j int) bool { return free[i] < free[j] })
	for _, a := range free {
		pg := e.pages[a]
		if pg == nil {
			continue
		}
		// Given back as t goes on, before anything else of the
		// process runs, signal handlers included (MprotectOnResume).
		queued := pg.armed && len(free) == 1 && t.MprotectOnResume(a, pageSize, pg.prot)
		if pg.armed && !queued {
			if err := t.Mprotect(a, pageSize, pg.prot); err != nil {
				return fmt.Errorf("disarming page %#x: %w", a, err)
			}
		}
		delete(e.pages, a)
	}
	return nil
}

func (e *pageEngine) disarm(t *tracer.Thread) error {
	// The calls on resume first: the books count them as made.
	if err := e.w.p.FlushPending(); err != nil {
		return err
	}
	return e.setProtection(t, false)
}

const segvAccerr = 2

// owns: a write fault on an armed page.
func (e *pageEngine) owns(st tracer.Stop) bool {
	if st.Sig != int(unix.SIGSEGV) || st.Info.Code() != segvAccerr {
		return false
	}
	if e.armedPage(st.Info.Addr()) != nil {
		return true
	}
	pg := e.pages[pageDown(st.Info.Addr())]
	return pg != nil && pg.suspended
}

func (e *pageEngine) trap(st tracer.Stop) error {
	if pg := e.pages[pageDown(st.Info.Addr())]; pg != nil && pg.suspended {
		// Faulted before leave unprotected the page: it waits, and
		// writes again once the page is armed again.
		st.Thread.Park()
		return nil
	}
	return e.fault(st.Thread, st.Info.Addr())
}

// spans: the armed pages.
func (e *pageEngine) spans() []span {
	var out []span
	for a, pg := range e.pages {
		if pg.armed {
			out = append(out, span{a, a + pageSize})
		}
	}
	return out
}

// fork: the child has the same pages armed.
func (e *pageEngine) fork(cw *Watch, _ *tracer.Thread) (engine, error) {
	c := newPageEngine(cw)
	for a, pg := range e.pages {
		cp := *pg
		c.pages[a] = &cp
	}
	return c, nil
}

// release gives the child's copies of armed pages their protection back.
func (e *pageEngine) release(t *tracer.Thread) error {
	var first error
	for _, pg := range e.pages {
		if pg.armed {
			if err := t.Mprotect(pg.addr, pageSize, pg.prot); err != nil && !errors.Is(err, tracer.ErrThreadGone) && first == nil {
				first = err
			}
		}
	}
	return first
}

// kernelSpans: every page, armed or not just now (a step, a vfork child).
func (e *pageEngine) kernelSpans() []span {
	out := make([]span, 0, len(e.pages))
	for a := range e.pages {
		out = append(out, span{a, a + pageSize})
	}
	return out
}

// leave: a vfork child writes the process's memory, protections and all,
// until it executes a new program or exits; untraced, a write to an armed
// page would kill it. So the pages go unprotected until then (its parent's
// vfork ends: OnVforkDone), and every other thread of the process waits,
// stopped: nothing but the child runs in the memory meanwhile (the parent
// waits in vfork), and no write of the process's is missed.
func (e *pageEngine) leave(t *tracer.Thread) error {
	p := e.w.p
	if t.VforkParent() == nil || !e.anyArmed() {
		return nil
	}
	if err := p.StopOthers(t); err != nil {
		return err
	}
	var armed []*page
	for _, pg := range e.pages {
		if pg.armed {
			armed = append(armed, pg)
		}
	}
	if err := e.setProtection(t, false); err != nil {
		return err
	}
	for _, pg := range armed {
		pg.suspended = true
	}
	p.OnVforkDone = func(par *tracer.Thread) error {
		for _, pg := range armed {
			pg.suspended = false
		}
		if err := e.setProtection(par, true); err != nil {
			return err
		}
		return p.ResumeOthers()
	}
	return nil
}

func (e *pageEngine) leaveNote() string {
	return "; the other threads of its parent wait until then"
}

func (e *pageEngine) anyArmed() bool {
	for _, pg := range e.pages {
		if pg.armed {
			return true
		}
	}
	return false
}

// mappings returns what tells the mapping holding an address, as it is
// now: the kernel's answer for that address where it has PROCMAP_QUERY
// (one call, however many mappings the process has: heap watching asks
// at every block), else the maps read once for this call.
func (e *pageEngine) mappings() (func(a uint64) (procmaps.Mapping, bool, error), error) {
	if e.query == nil && !e.noQuery {
		q, err := procmaps.OpenQuery(e.w.p.Pid)
		if err != nil {
			e.noQuery = true
		} else {
			e.query = q
		}
	}
	if e.query != nil {
		return e.query.At, nil
	}
	maps, err := procmaps.Read(e.w.p.Pid)
	if err != nil {
		return nil, fmt.Errorf("reading maps: %w", err)
	}
	return func(a uint64) (procmaps.Mapping, bool, error) {
		m, ok := findMapping(maps, a)
		return m, ok, nil
	}, nil
}

// close lets go of what the engine holds of its own: the image is gone.
func (e *pageEngine) close() {
	if e.query != nil {
		e.query.Close()
		e.query = nil
	}
}

// addPages records the pages of regions, with their protections from at.
func (e *pageEngine) addPages(at func(a uint64) (procmaps.Mapping, bool, error), regions []*Region) error {
	var m procmaps.Mapping
	for _, r := range regions {
		for a := pageDown(r.Addr); a < r.End(); a += pageSize {
			ok := m.Contains(a)
			if !ok {
				var err error
				if m, ok, err = at(a); err != nil {
					return fmt.Errorf("region %s: %w", r.Name, err)
				}
			}
			if !ok {
				first := max(a, r.Addr)
				return notMapped(fmt.Sprintf("region %s: address %#x is not mapped", r.Name, first))
			}
			pg := e.pages[a]
			if pg == nil {
				pg = &page{addr: a, prot: m.Prot, shared: m.Shared}
				e.pages[a] = pg
			}
			if len(pg.regions) == 0 {
				pg.lo, pg.hi = pageSize, 0
			}
			pg.regions = append(pg.regions, r)
			pg.lo = min(pg.lo, max(a, r.Addr)-a)
			pg.hi = max(pg.hi, min(a+pageSize, r.End())-a)
		}
	}
	return nil
}

// notMapped is ErrNotMapped in words of its own (errors.Is), without
// ErrNotMapped's "address not mapped" after them.
type notMapped string

func (e notMapped) Error() string        { return string(e) }
func (e notMapped) Is(target error) bool { return target == ErrNotMapped }

func findMapping(maps []procmaps.Mapping, a uint64) (procmaps.Mapping, bool) {
	i := sort.Search(len(maps), func(i int) bool { return maps[i].End > a })
	if i < len(maps) && maps[i].Contains(a) {
		return maps[i], true
	}
	return procmaps.Mapping{}, false
}

// setProtection arms (or disarms) every page, one mprotect per run of
// adjacent pages with the same protection.
func (e *pageEngine) setProtection(t *tracer.Thread, arm bool) error {
	addrs := make([]uint64, 0, len(e.pages))
	for a, pg := range e.pages {
		if pg.prot&unix.PROT_WRITE != 0 && pg.armed != arm {
			addrs = append(addrs, a)
		}
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i] < addrs[j] })
	var errs []error
	for i := 0; i < len(addrs); {
		j := i + 1
		prot := e.pages[addrs[i]].prot
		for j < len(addrs) && addrs[j] == addrs[j-1]+pageSize && e.pages[addrs[j]].prot == prot {
			j++
		}
		want := prot
		if arm {
			want &^= unix.PROT_WRITE
		}
		var err error
		if !arm || i > 0 || j < len(addrs) || !t.MprotectOnResume(addrs[i], uint64(j-i)*pageSize, want) {
			// Armed now, or as t goes on (a block armed at its
			// allocator's return: before t runs on).
			err = t.Mprotect(addrs[i], uint64(j-i)*pageSize, want)
		}
		if err != nil && !arm {
			// Once more: a page left protected would kill the target
			// at its next write there.
			err = t.Mprotect(addrs[i], uint64(j-i)*pageSize, want)
		}
		if err != nil {
			err = fmt.Errorf("%s pages: %w", map[bool]string{true: "arming", false: "disarming"}[arm], err)
			if arm {
				return err
			}
			errs = append(errs, err) // the other pages are given back all the same
		} else {
			for _, a := range addrs[i:j] {
				e.pages[a].armed = arm
			}
		}
		i = j
	}
	return errors.Join(errs...)
}

// armedPage returns the armed page holding addr, or nil.
func (e *pageEngine) armedPage(addr uint64) *page {
	if pg := e.pages[pageDown(addr)]; pg != nil && pg.armed {
		return pg
	}
	return nil
}

// ErrRseqPage means a region shares a page with a thread's rseq area.
var ErrRseqPage = errors.New("page holds a thread's rseq area")

// checkRseq refuses pages holding a thread's rseq area (glibc registers one
// per thread, in its TCB): the kernel writes it at every preemption, and on
// a write-protected page that write fails and the kernel kills the thread
// with SIGSEGV. The debug registers have no such problem.
func (e *pageEngine) checkRseq() error {
	for _, t := range e.w.p.Threads() {
		addr, size, err := t.Rseq()
		if err != nil || addr == 0 {
			continue
		}
		for a := pageDown(addr); a < addr+uint64(max(size, 32)); a += pageSize {
			if pg := e.pages[a]; pg != nil && !pg.armed && pg.prot&unix.PROT_WRITE != 0 {
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
