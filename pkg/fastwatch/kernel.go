package fastwatch

import (
	"fmt"
	"slices"

	"github.com/memtrap/memtrap/pkg/agent"
	"github.com/memtrap/memtrap/pkg/pagewatch"
	"github.com/memtrap/memtrap/pkg/sysout"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// Kernel writes. The kernel does not fault on a write-protected page: a
// system call writing into an armed page would fail with EFAULT. The
// filter traps (SECCOMP_RET_TRAP) the calls package sysout knows whose
// output pointers come near an armed page; the agent's SIGSYS handler asks
// memtrap which buffers to bounce (ReqKernel), makes the call itself with
// them in a scratch mapping of its own, and asks memtrap to settle it
// (ReqKernelDone): under the agent's lock memtrap copies the bytes the
// kernel changed to their place and records them as the kernel's write
// for that call, in order with the target's own stores.

// maxBounce caps one bounced buffer (the page engine's cap): a larger one
// is left to fail as it would have.
const maxBounce = 1 << 20

// kcall is a trapped call between its plan and its settling.
type kcall struct {
	name  string
	outs  []sysout.Output // the bounced buffers, as the call had them
	plan  []agent.Bounce
	half  uint64 // where the copies to compare with start in the scratch
	gregs [agent.NGReg]uint64
	// vec holds a vector call's copies in memtrap's scratch (vector.go),
	// instead of outs and the agent's scratch.
	vec []vbounce
}

// syscallRules are the filter's rules for kernel writes: the calls sysout
// knows, when an output pointer lies on an armed page or up to maxBounce
// below one.
func syscallRules(pages []uint64) []tracer.FilterRule {
	ranges := slackRanges(pages, maxBounce)
	var rules []tracer.FilterRule
	for _, nr := range sysout.Numbers() {
		c, _ := sysout.Lookup(nr)
		rules = append(rules, tracer.FilterRule{Nr: nr, Args: c.PointerArgs(), Ranges: ranges})
	}
	return rules
}

// mmSlack: a memory-management call starting this far below an armed
// page is still trapped (a munmap of a large range over it); one starting
// further below is missed (the page engine's).
const mmSlack = 1 << 30

// mmRules trap the target's own memory management near the armed pages
// (agent.c's mm keeps the books).
func mmRules(pages []uint64) []tracer.FilterRule {
	ranges := slackRanges(pages, mmSlack)
	var rules []tracer.FilterRule
	for _, nr := range []int{unix.SYS_MPROTECT, unix.SYS_PKEY_MPROTECT, unix.SYS_MUNMAP, unix.SYS_MREMAP, unix.SYS_MMAP, unix.SYS_MADVISE} {
		rules = append(rules, tracer.FilterRule{Nr: nr, Args: []int{0}, Ranges: ranges})
	}
	return rules
}

// slackRanges are the ranges of the armed pages (mergePages), each from
// slack below it (not below the first page).
func slackRanges(pages []uint64, slack uint64) []tracer.Range {
	var out []tracer.Range
	for _, pg := range mergePages(pages) {
		lo := uint64(pageSize)
		if pg.Lo > slack+pageSize {
			lo = pg.Lo - slack
		}
		out = append(out, tracer.Range{Lo: lo, Hi: pg.Hi})
	}
	return out
}

// mergePages makes ranges of the armed pages, adjacent pages in one; more
// than 4 (each range costs instructions per pointer argument of every
// call) become the one range around them all, which traps more calls that
// then run as they are.
func mergePages(pages []uint64) []tracer.Range {
	s := slices.Clone(pages)
	slices.Sort(s)
	var out []tracer.Range
	for _, pg := range s {
		if n := len(out); n > 0 && out[n-1].Hi >= pg {
			out[n-1].Hi = max(out[n-1].Hi, pg+pageSize)
			continue
		}
		out = append(out, tracer.Range{Lo: pg, Hi: pg + pageSize})
	}
	if len(out) > 4 {
		out = []tracer.Range{{Lo: out[0].Lo, Hi: out[len(out)-1].Hi}}
	}
	return out
}

// serveKernel answers the agent's system call requests.
func (w *Watch) serveKernel() (int, error) {
	s := w.in.Shared
	n := 0
	for _, i := range s.Posted() {
		q := s.Request(i)
		switch q.Kind {
		case agent.ReqKernel:
			w.plan(i, q)
			n++
		case agent.ReqMM:
			w.unmapped(q)
			s.DoneKernel(i)
			n++
		case agent.ReqMadvise:
			err := w.madvised(q)
			s.DoneKernel(i)
			if err != nil {
				return n, err
			}
			n++
		case agent.ReqKernelDone:
			if err := w.settle(i, q); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// plan says which buffers of the trapped call to bounce: those that
// reach an armed page.
func (w *Watch) plan(i int, q agent.Request) {
	s := w.in.Shared
	w.forget(q.Tid)
	g, err := agent.FrameGRegs(w.mem, q.UC)
	if err != nil {
		s.AnswerKernel(i, 0, nil)
		return
	}
	regs := agent.GRegsPtrace(&g)
	// The trap leaves the call's number in RAX (the kernel rolls the
	// call back), its arguments in their registers.
	args := [6]uint64{regs.Rdi, regs.Rsi, regs.Rdx, regs.R10, regs.R8, regs.R9}
	if spec, ok := sysout.LookupVec(int(regs.Rax)); ok {
		w.planVec(i, q, spec, &args, g)
		return
	}
	c, ok := sysout.Lookup(int(regs.Rax))
	if !ok {
		s.AnswerKernel(i, 0, nil)
		return
	}
	kc := &kcall{name: c.Name, gregs: g}
	var off uint64
	for _, o := range c.Outputs(&args, memReader{w}) {
		if o.Size == 0 || o.Arg < 0 || !w.reachesArmed(o) || len(kc.plan) == agent.Bounces {
			continue
		}
		if o.Size > maxBounce {
			w.note(fmt.Sprintf("engine fast: %s(2) in thread %d writes %d bytes over watched memory, more than the %d memtrap moves aside: it fails with EFAULT", c.Name, q.Tid, o.Size, maxBounce))
			continue
		}
		kc.outs = append(kc.outs, o)
		kc.plan = append(kc.plan, agent.Bounce{Arg: uint32(o.Arg), Off: off, Size: o.Size})
		off += (o.Size + 15) &^ 15
	}
	if len(kc.plan) == 0 {
		s.AnswerKernel(i, 0, nil)
		return
	}
	kc.half = (off + pageSize - 1) &^ (pageSize - 1)
	w.kcalls[q.Tid] = kc
	s.AnswerKernel(i, 2*kc.half, kc.plan)
}

// reachesArmed says whether an output buffer covers part of an armed page.
func (w *Watch) reachesArmed(o sysout.Output) bool {
	for _, pg := range w.pages {
		if o.Addr < pg+pageSize && o.End() > pg {
			return true
		}
	}
	return false
}

// settle copies what the kernel wrote into the call's scratch to its
// place, and records what it changed in watched memory.
func (w *Watch) settle(i int, q agent.Request) error {
	s := w.in.Shared
	kc := w.kcalls[q.Tid]
	if kc == nil {
		s.DoneKernel(i)
		return nil
	}
	s.Lock()
	defer s.Unlock()
	delete(w.kcalls, q.Tid)
	defer s.DoneKernel(i)
	defer w.releaseVec(kc)
	if q.Ret < 0 {
		return nil // the call failed: it wrote nothing
	}
	var stack [agent.StackBytes]byte
	_, _ = w.mem.ReadAt(stack[:], int64(agent.StackAddr(kc.gregs[15])))
	for _, v := range kc.vec {
		after := make([]byte, len(v.before))
		if !w.read(after, v.scratch) {
			w.note(fmt.Sprintf("engine fast: %s(2) in thread %d: its output could not be copied to its place", kc.name, q.Tid))
			continue
		}
		if err := w.putBack(kc, q, &stack, v.real, v.before, after); err != nil {
			return err
		}
	}
	for k, o := range kc.outs {
		b := kc.plan[k]
		after := make([]byte, b.Size)
		before := make([]byte, b.Size)
		if !w.read(after, q.Scratch+b.Off) || !w.read(before, q.Scratch+kc.half+b.Off) {
			w.note(fmt.Sprintf("engine fast: %s(2) in thread %d: its output could not be copied to its place", kc.name, q.Tid))
			continue
		}
		if err := w.putBack(kc, q, &stack, o.Addr, before, after); err != nil {
			return err
		}
	}
	return nil
}

// putBack copies the bytes the kernel changed in a bounced buffer (before
// and after the call) to their place at real, and records what it changed
// in watched memory, as the kernel's write for the call.
func (w *Watch) putBack(kc *kcall, q agent.Request, stack *[agent.StackBytes]byte, real uint64, before, after []byte) error {
	cur := make([]byte, len(after))
	if !w.read(cur, real) {
		w.note(fmt.Sprintf("engine fast: %s(2) in thread %d: its output could not be copied to its place", kc.name, q.Tid))
		return nil
	}
	// The bytes the kernel changed go to their place, run by run: the
	// others may have changed meanwhile (other threads).
	for lo := 0; lo < len(after); {
		if after[lo] == before[lo] {
			lo++
			continue
		}
		hi := lo
		for hi < len(after) && after[hi] != before[hi] {
			hi++
		}
		if _, err := w.mem.WriteAt(after[lo:hi], int64(real)+int64(lo)); err != nil {
			return fmt.Errorf("engine fast: copying %s(2)'s output to %#x: %w", kc.name, real+uint64(lo), err)
		}
		lo = hi
	}
	return w.recordChanges(kc, q, stack, real, before, after, cur)
}

// recordChanges records, for each region, the bytes of [real, real+len)
// that the call changed (before and after it in a buffer the kernel
// wrote), as a write of the call: old, what was in their place (cur), new,
// what the kernel wrote. The lock held (memtrap's, or an agent thread's
// for it): where the ring has no room, the records in it are reported
// first (none comes meanwhile).
func (w *Watch) recordChanges(kc *kcall, q agent.Request, stack *[agent.StackBytes]byte, real uint64, before, after, cur []byte) error {
	s := w.in.Shared
	end := real + uint64(len(after))
	for s.Room() < len(w.regions) {
		rec := s.Peek()
		if rec == nil {
			return fmt.Errorf("engine fast: no room in the ring for %s(2)'s writes", kc.name)
		}
		err := w.record(rec)
		s.Done()
		if err != nil {
			return err
		}
	}
	for _, r := range w.regions {
		a, e := max(real, r.Addr), min(end, r.End())
		if a >= e {
			continue
		}
		lo, hi := e, a
		for x := a; x < e; x++ {
			if after[x-real] != before[x-real] {
				lo, hi = min(lo, x), max(hi, x+1)
			}
		}
		if lo >= hi {
			continue
		}
		old := append([]byte(nil), cur[lo-real:hi-real]...)
		nw := append([]byte(nil), old...)
		for x := lo; x < hi; x++ {
			if after[x-real] != before[x-real] {
				nw[x-lo] = after[x-real]
			}
		}
		rec := &agent.Record{Tid: q.Tid, Width: uint32(hi - lo), PC: kc.gregs[16], Addr: lo, GRegs: kc.gregs, Stack: *stack}
		s.AppendKernel(rec, old, nw, kc.name)
	}
	return nil
}

// serveMadvise answers the MADVISE requests posted: their threads hold
// the agent's lock for memtrap, which must not wait for it meanwhile
// (Shared.WhileLocked).
func (w *Watch) serveMadvise() {
	s := w.in.Shared
	for _, i := range s.Posted() {
		if q := s.Request(i); q.Kind == agent.ReqMadvise {
			if err := w.madvised(q); err != nil && w.err == nil {
				w.err = err
			}
			s.DoneKernel(i)
		}
	}
}

// madvised records what a madvise (trapped at q.UC, done) changed in
// watched memory: the armed pages of its range, whose bytes before it
// the agent kept in q.Scratch, in the area's order. The agent holds the
// lock meanwhile: no record comes, and those in the ring are reported
// first where room is short.
func (w *Watch) madvised(q agent.Request) error {
	s := w.in.Shared
	g, err := agent.FrameGRegs(w.mem, q.UC)
	if err != nil {
		return nil
	}
	regs := agent.GRegsPtrace(&g)
	lo, hi := regs.Rdi&^(pageSize-1), (regs.Rdi+regs.Rsi+pageSize-1)&^(pageSize-1)
	a := s.Area()
	var pages []uint64
	for i := range min(int(a.NPages), agent.Pages) {
		if pg := a.PageList[i]; pg >= lo && pg < hi && a.Prots[i]&agent.Dropped == 0 {
			pages = append(pages, pg)
		}
	}
	var stack [agent.StackBytes]byte
	_, _ = w.mem.ReadAt(stack[:], int64(agent.StackAddr(g[15])))
	kc := &kcall{name: "madvise", gregs: g}
	for j, pg := range pages {
		before, after := make([]byte, pageSize), make([]byte, pageSize)
		if !w.read(before, q.Scratch+uint64(j)*pageSize) || !w.read(after, pg) {
			continue
		}
		if err := w.recordChanges(kc, q, &stack, pg, before, after, before); err != nil {
			return err
		}
	}
	return nil
}

func (w *Watch) read(b []byte, addr uint64) bool {
	n, _ := w.mem.ReadAt(b, int64(addr))
	return n == len(b)
}

// memReader reads the target for sysout.
type memReader struct{ w *Watch }

func (m memReader) ReadMemory(addr uint64, b []byte) error {
	if !m.w.read(b, addr) {
		return unix.EFAULT
	}
	return nil
}

// unmapped says which regions lost armed pages to the target's own munmap,
// mremap or mmap MAP_FIXED (the call trapped at q.UC, done), as the page
// engine does (Options.OnUnmap); those pages are not watched any more.
func (w *Watch) unmapped(q agent.Request) {
	g, err := agent.FrameGRegs(w.mem, q.UC)
	if err != nil {
		return
	}
	regs := agent.GRegsPtrace(&g)
	nr := int(regs.Rax)
	lo, hi := regs.Rdi, regs.Rdi+regs.Rsi
	if nr == unix.SYS_MREMAP && uint64(q.Ret) == lo {
		lo += regs.Rdx // in place: what it shrank away
	}
	hi = (hi + pageSize - 1) &^ (pageSize - 1)
	lost := map[*pagewatch.Region]bool{}
	for _, pg := range w.pages {
		if pg+pageSize <= lo || pg >= hi || w.dropped[pg] {
			continue
		}
		w.dropped[pg] = true
		for _, r := range w.regions {
			if r.Addr < pg+pageSize && r.End() > pg {
				lost[r] = true
			}
		}
	}
	name := map[int]string{unix.SYS_MUNMAP: "munmap", unix.SYS_MREMAP: "mremap", unix.SYS_MMAP: "mmap"}[nr]
	for _, r := range w.regions {
		if lost[r] && w.opts.OnUnmap != nil {
			w.opts.OnUnmap(r, name+"(2)")
		}
	}
}
