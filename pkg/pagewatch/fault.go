package pagewatch

import (
	"encoding/binary"

	"github.com/memtrap/memtrap/pkg/tracer"
	"github.com/memtrap/memtrap/pkg/x86/store"
	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"
)

// Fault is one trapped write in progress.
type Fault struct {
	Thread *tracer.Thread
	Regs   unix.PtraceRegs // at the faulting instruction
	Store  store.Store     // what the decoder says it writes (Known may be false)
	SiAddr uint64          // the address the CPU faulted on
	eng    *pageEngine
	before map[uint64][]byte
	// stack: whole pages of the writer's stack from stackAddr, read with
	// the instruction (Options.StackBytes); nil if not.
	stackAddr uint64
	stack     []byte
	// after holds pages' watched bytes after the write, where the
	// completer knows them without reading (the emulator wrote them);
	// report reads the others.
	after map[uint64][]byte
}

// A Completer lets the write of a trapped instruction happen, exactly once,
// and leaves the thread stopped after it (or, if a signal must be delivered
// first, before it with the write not done).
//
// Before any byte of a page changes, the completer calls w.Snapshot for that
// page, so the watch can tell old from new.
type Completer interface {
	// Complete reports whether the instruction ran to its end.
	Complete(w *Watch, f *Fault) (bool, error)
}

// Snapshot records the page's bytes before a write may change them; later
// calls for the same page do nothing.
func (w *Watch) Snapshot(f *Fault, pageAddr uint64) error {
	if _, ok := f.before[pageAddr]; ok {
		return nil
	}
	pg := f.eng.pages[pageAddr]
	if pg == nil {
		return nil // no watched byte there
	}
	b, err := f.eng.readHull(pg)
	if err != nil {
		return err
	}
	f.before[pageAddr] = b
	return nil
}

// readHull reads the watched bytes of a page into a page-sized buffer at
// their page offsets; the rest stays zero and is never looked at.
func (e *pageEngine) readHull(pg *page) ([]byte, error) {
	b := e.hullBuf()
	if err := e.w.p.ReadMemory(pg.addr+pg.lo, b[pg.lo:pg.hi]); err != nil {
		return nil, err
	}
	return b, nil
}

// hullBuf returns a page-sized buffer for a page's watched bytes: one a
// finished fault gave back (see recycle), or a new one. Only the hull's
// bytes are ever looked at, so what the rest holds does not matter.
func (e *pageEngine) hullBuf() []byte {
	if n := len(e.spare); n > 0 {
		b := e.spare[n-1]
		e.spare = e.spare[:n-1]
		return b
	}
	return make([]byte, pageSize)
}

// recycle keeps a finished fault's page buffers for the next: a trapped
// write would otherwise allocate two pages. Nothing outlives report (Writes
// hold copies).
func (e *pageEngine) recycle(pages ...map[uint64][]byte) {
	for _, m := range pages {
	next:
		for _, b := range m {
			if len(e.spare) >= 16 || len(b) != pageSize {
				return
			}
			for _, s := range e.spare {
				if &s[0] == &b[0] {
					continue next // given back twice: keep one
				}
			}
			e.spare = append(e.spare, b)
		}
	}
}

func (e *pageEngine) readCode(pc uint64) []byte {
	n := uint64(len(e.codeBuf))
	// Never read across into a page that may not be mapped.
	if rest := pageUp(pc+1) - pc; rest < n {
		if err := e.w.p.ReadMemory(pc, e.codeBuf[:n]); err == nil {
			return e.codeBuf[:n]
		}
		n = rest
	}
	if err := e.w.p.ReadMemory(pc, e.codeBuf[:n]); err != nil {
		return nil
	}
	return e.codeBuf[:n]
}

// readFault reads the instruction at f's RIP and, in the same system call,
// the watched bytes of the faulting page into f's snapshot of it. Where
// that cannot be done in one (an instruction across a page boundary, a
// page the target cannot read) it reads the code alone, and Snapshot the
// page later.
func (e *pageEngine) readFault(f *Fault) []byte {
	pc := f.Regs.Rip
	pg := e.pages[pageDown(f.SiAddr)]
	n := uint64(len(e.codeBuf))
	if pg == nil || pageUp(pc+1)-pc < n {
		return e.readCode(pc)
	}
	hull := e.hullBuf()
	want := int(pg.hi - pg.lo)
	segs := []tracer.Segment{{Addr: pg.addr + pg.lo, Buf: hull[pg.lo:pg.hi]}, {Addr: pc, Buf: e.codeBuf[:n]}}
	if sb := e.w.opts.StackBytes &^ (pageSize - 1); sb > 0 {
		if len(e.stack) != sb {
			e.stack = make([]byte, sb)
		}
		// Last: where the stack ends within the window, the read stops
		// with the other segments done.
		segs = append(segs, tracer.Segment{Addr: pageDown(f.Regs.Rsp), Buf: e.stack})
	}
	got, err := e.w.p.ReadSegments(segs)
	if err != nil || got < want+int(n) {
		e.spare = append(e.spare, hull)
		return e.readCode(pc)
	}
	if rest := (got - want - int(n)) &^ (pageSize - 1); len(segs) == 3 && rest > 0 {
		f.stackAddr, f.stack = segs[2].Addr, e.stack[:rest]
	}
	f.before[pg.addr] = hull
	return e.codeBuf[:n]
}

func (e *pageEngine) fault(t *tracer.Thread, siAddr uint64) error {
	e.w.rootWatch().stats.Faults++
	f := &Fault{Thread: t, SiAddr: siAddr, eng: e, before: map[uint64][]byte{}}
	if err := t.Regs(&f.Regs); err != nil {
		return err
	}
	code := e.readFault(f)
	st, err := e.w.decode(code, &f.Regs)
	if err != nil || st.Size == 0 || siAddr < st.Addr || siAddr-st.Addr >= st.Size {
		// The decoder and the CPU disagree: trust only the comparison.
		st.Known = false
	}
	f.Store = st
	if st.Known {
		for a := pageDown(st.Addr); a < st.Addr+st.Size; a += pageSize {
			if err := e.w.Snapshot(f, a); err != nil {
				return err
			}
		}
	} else if err := e.w.Snapshot(f, pageDown(siAddr)); err != nil {
		return err
	}
	done, err := e.w.opts.Completer.Complete(e.w, f)
	if err != nil {
		return err
	}
	if err := e.w.checkSegv(t); err != nil {
		return err
	}
	resumed, err := e.report(f, done)
	if err != nil || resumed {
		return err
	}
	return e.w.resume(t)
}

// touched lists the regions with bytes on the pages a fault saw before
// its store, in the watch's order: those of its page where it had one
// (the regions of a heap hunt run into thousands, and every fault went
// through them all), else every region.
func (e *pageEngine) touched(before map[uint64][]byte) []*Region {
	if len(before) == 1 {
		for a := range before {
			if pg := e.pages[a]; pg != nil {
				return pg.regions
			}
		}
	}
	return e.w.regions
}

// report turns a completed fault into Writes, one per region it touched.
// The writer is still stopped; other threads may run if the completer let
// them (the emulator), which cannot change bytes on a still-armed page.
//
// With Options.Unwind, Options.Report sees each Write while the writer is
// stopped; then the writer is resumed (resumed says so), and what each
// Report left to finish is done.
func (e *pageEngine) report(f *Fault, done bool) (resumed bool, err error) {
	after := f.after
	if after == nil {
		after = map[uint64][]byte{}
	}
	defer e.recycle(f.before, after)
	for a := range f.before {
		if after[a] != nil {
			continue
		}
		b, err := e.readHull(e.pages[a])
		if err != nil {
			return false, err
		}
		after[a] = b
	}
	// With the bytes in hand and nothing left to see the writer stopped,
	// resume it now, and build the Writes while the target runs. Unless a
	// signal waits (its delivery may report a signal frame, which must
	// come after this write), or --when-value may read the target.
	early := !e.w.opts.Unwind && e.w.opts.When == nil && !e.w.opts.Sync && !f.Thread.Deferred()
	if early {
		if err := e.w.resume(f.Thread); err != nil {
			return false, err
		}
	}
	var out []*Write
	var finish []func() error
	for _, r := range e.touched(f.before) {
		var lo, hi uint64 = 1<<64 - 1, 0
		if done && f.Store.Known {
			if s, ok := (span{f.Store.Addr, f.Store.Addr + f.Store.Size}).intersect(span{r.Addr, r.End()}); ok {
				lo, hi = s.lo, s.hi
			}
		}
		// Bytes that changed, whatever the decoder said.
		for a, old := range f.before {
			s, ok := (span{a, a + pageSize}).intersect(span{r.Addr, r.End()})
			if !ok {
				continue
			}
			nw := after[a]
			for x := s.lo; x < s.hi; x++ {
				if old[x-a] != nw[x-a] {
					lo, hi = min(lo, x), max(hi, x+1)
				}
			}
		}
		if lo >= hi {
			continue
		}
		wr := &Write{
			Pid: e.w.p.Pid, Tid: f.Thread.Tid, Region: r, Offset: lo - r.Addr,
			Addr: lo, Size: hi - lo, PC: f.Regs.Rip, Regs: f.Regs, Thread: f.Thread,
			Exact: f.Store.Known,
		}
		if f.stack != nil && f.after != nil {
			// Only after an emulated store, and unless it wrote into the
			// window: then the pages read before it are still current.
			win := span{f.stackAddr, f.stackAddr + uint64(len(f.stack))}
			if _, hit := win.intersect(span{f.Store.Addr, f.Store.Addr + f.Store.Size}); !hit {
				wr.StackAddr, wr.Stack = f.stackAddr, f.stack
			}
		}
		if wr.Old, err = gather(f.before, lo, hi, e.w.p); err != nil {
			return false, err
		}
		if wr.New, err = gather(after, lo, hi, e.w.p); err != nil {
			return false, err
		}
		if !e.w.accept(wr, after) {
			continue
		}
		if e.w.opts.Unwind {
			fin, err := e.w.hand(wr)
			if err != nil {
				return false, err
			}
			finish = append(finish, fin)
		}
		out = append(out, wr)
	}
	if !early && !e.w.opts.Sync {
		if err := e.w.resume(f.Thread); err != nil {
			return false, err
		}
	}
	if f.Store.Inst.Op != 0 && len(out) > 0 {
		// After the resume: formatting costs microseconds.
		insn := e.w.rootWatch().syntax(f.Store.Inst, f.Regs.Rip)
		for _, wr := range out {
			wr.Insn = insn
		}
	}
	for i, wr := range out {
		var fin func() error
		if e.w.opts.Unwind {
			fin = finish[i]
		} else if fin, err = e.w.hand(wr); err != nil {
			return true, err
		}
		if fin != nil {
			if err := fin(); err != nil {
				return true, err
			}
		}
	}
	if e.w.opts.Sync {
		return true, e.w.resume(f.Thread)
	}
	return true, nil
}

// accept applies --when-value to a write (pages: snapshots of the memory
// after it; nil reads the target) and numbers it if it stays.
func (w *Watch) accept(wr *Write, pages map[uint64][]byte) bool {
	if w.opts.Keep != nil && !w.opts.Keep(wr) {
		return false
	}
	if !w.matches(wr, pages) {
		return false
	}
	w.rootWatch().stats.Writes++
	wr.Seq = w.rootWatch().stats.Writes
	return true
}

// hand gives a write to Options.Report, and returns what it left to do.
func (w *Watch) hand(wr *Write) (func() error, error) {
	if w.opts.Report == nil {
		return nil, nil
	}
	return w.opts.Report(wr)
}

// emit reports a write whose writer stays stopped throughout (a kernel
// write, a debug-register hit), if --when-value keeps it.
func (w *Watch) emit(wr *Write, pages map[uint64][]byte) error {
	if !w.accept(wr, pages) {
		return nil
	}
	fin, err := w.hand(wr)
	if err != nil || fin == nil {
		return err
	}
	return fin()
}

// gather assembles [lo, hi) from page snapshots, reading the target for any
// page not snapshotted.
func gather(pages map[uint64][]byte, lo, hi uint64, p *tracer.Process) ([]byte, error) {
	out := make([]byte, hi-lo)
	for x := lo; x < hi; {
		a := pageDown(x)
		end := min(hi, a+pageSize)
		if b, ok := pages[a]; ok {
			copy(out[x-lo:end-lo], b[x-a:end-a])
		} else if err := p.ReadMemory(x, out[x-lo:end-lo]); err != nil {
			return nil, err
		}
		x = end
	}
	return out, nil
}

// matches applies Options.When (after: snapshots of the memory after
// the write; pages not in it are read from the target).
func (w *Watch) matches(wr *Write, after map[uint64][]byte) bool {
	if w.opts.When == nil {
		return true
	}
	words, ok := w.words(wr, after)
	return ok && w.opts.When(wr, words)
}

// words are the watched values wr touched. Bytes of a word outside
// [wr.Addr, wr.Addr+wr.Size) did not change (the write's span covers
// every byte that did), so a word before the write is the word after it
// with wr.Old in place.
func (w *Watch) words(wr *Write, after map[uint64][]byte) ([]Word, bool) {
	r := wr.Region
	word := func(lo, hi uint64) (Word, bool) {
		v, err := gather(after, lo, hi, w.p)
		if err != nil {
			return Word{}, false
		}
		old := append([]byte(nil), v...)
		for x := max(lo, wr.Addr); x < min(hi, wr.Addr+wr.Size); x++ {
			old[x-lo] = wr.Old[x-wr.Addr]
		}
		return Word{Addr: lo, Size: int(hi - lo), Old: leValue(old), New: leValue(v)}, true
	}
	if r.Len <= 8 {
		wd, ok := word(r.Addr, r.End())
		return []Word{wd}, ok
	}
	width := uint64(w.opts.Width)
	if width == 0 {
		width = 8
	}
	var out []Word
	for a := wr.Addr &^ (width - 1); a < wr.Addr+wr.Size; a += width {
		wd, ok := word(max(a, r.Addr), min(a+width, r.End()))
		if !ok {
			return nil, false
		}
		out = append(out, wd)
	}
	return out, true
}

func leValue(b []byte) uint64 {
	var buf [8]byte
	copy(buf[:], b)
	return binary.LittleEndian.Uint64(buf[:])
}

// Stepper completes a write the exact, slow way: every other thread
// stopped, the page unprotected, one single-step, the page protected again.
// It needs nothing from the decoder, so it is also the fallback for every
// instruction an emulator cannot handle.
type Stepper struct{}

// Complete implements Completer.
func (Stepper) Complete(w *Watch, f *Fault) (done bool, err error) {
	t := f.Thread
	p := t.Process()
	if err := p.StopOthers(t); err != nil {
		return false, err
	}
	var open []uint64
	defer func() {
		for _, a := range open {
			prot := f.eng.pages[a].prot &^ unix.PROT_WRITE
			if perr := t.Mprotect(a, pageSize, prot); perr != nil && err == nil {
				err = perr
			}
		}
		if rerr := p.ResumeOthers(); rerr != nil && err == nil {
			err = rerr
		}
	}()
	unprotect := func(a uint64) error {
		if err := w.Snapshot(f, a); err != nil {
			return err
		}
		if err := t.Mprotect(a, pageSize, f.eng.pages[a].prot); err != nil {
			return err
		}
		open = append(open, a)
		return nil
	}
	if err := unprotect(pageDown(f.SiAddr)); err != nil {
		return false, err
	}
	for {
		res, err := t.Step()
		if err != nil {
			return false, err
		}
		if res.Done {
			if !f.Store.Rep {
				return true, nil
			}
			// A REP string instruction traps after each iteration;
			// it is done when RIP leaves it.
			var r unix.PtraceRegs
			if err := t.Regs(&r); err != nil {
				return false, err
			}
			if r.Rip != f.Regs.Rip {
				return true, nil
			}
			continue
		}
		if res.Sig == int(unix.SIGSEGV) && res.Info.Code() == segvAccerr && f.eng.armedPage(res.Info.Addr()) != nil && !contains(open, pageDown(res.Info.Addr())) {
			// The write reaches a second armed page.
			if err := unprotect(pageDown(res.Info.Addr())); err != nil {
				return false, err
			}
			continue
		}
		// Any other signal comes before the instruction: deliver it once
		// our pages are protected again; the write will trap again after.
		t.Defer(res.Info)
		return false, nil
	}
}

func contains(s []uint64, v uint64) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// syntax is x86asm's Intel syntax of inst at pc, once per site: formatting
// costs a few microseconds a write.
func (w *Watch) syntax(inst x86asm.Inst, pc uint64) string {
	if c, ok := w.insns[pc]; ok && c.inst == inst {
		return c.text
	}
	text := x86asm.IntelSyntax(inst, pc, nil)
	if w.insns == nil || len(w.insns) >= 4096 {
		w.insns = map[uint64]insnText{}
	}
	w.insns[pc] = insnText{inst, text}
	return text
}

type insnText struct {
	inst x86asm.Inst
	text string
}
