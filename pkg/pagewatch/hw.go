package pagewatch

import (
	"errors"
	"fmt"

	"github.com/memtrap/memtrap/pkg/sysout"
	"github.com/memtrap/memtrap/pkg/tracer"
	"github.com/memtrap/memtrap/pkg/x86/store"
	"golang.org/x/sys/unix"
)

// The hw engine watches up to four aligned 1, 2, 4 or 8-byte slots with the
// x86 debug registers DR0-3 of every thread (DR7 enables them as write
// watchpoints). Nothing else traps: neighbouring data costs nothing. The
// CPU traps after the store is done, so the engine keeps a shadow copy of
// each region to know the old bytes, and finds the writing instruction by
// decoding back from RIP (storeBefore). The kernel writes watched memory
// directly (debug registers do not see it): calls whose outputs cover a
// region are followed to their exit and the region compared with its
// shadow; munmap and friends over a region drop it.
type hwEngine struct {
	w      *Watch
	slots  []slot             // the debug registers' watches
	shadow map[*Region][]byte // each region's last known bytes
	armed  bool               // the threads' DR7 is set (guardState)
}

// slot is one debug register's watch: an aligned 1, 2, 4 or 8-byte range.
type slot struct {
	addr, size uint64
	region     *Region
}

// hwSlots covers the regions with aligned slots, or says they do not fit
// in the four debug registers.
func hwSlots(regions []*Region) ([]slot, bool) {
	var out []slot
	for _, r := range regions {
		for a := r.Addr; a < r.End(); {
			s := uint64(8)
			for a%s != 0 || a+s > r.End() {
				s /= 2
			}
			out = append(out, slot{a, s, r})
			if len(out) > 4 {
				return nil, false
			}
			a += s
		}
	}
	return out, true
}

// dr7 is the control word enabling slots as write watchpoints.
func dr7(slots []slot) uint64 {
	var v uint64
	for i, s := range slots {
		var length uint64
		switch s.size {
		case 1:
			length = 0
		case 2:
			length = 1
		case 4:
			length = 3
		case 8:
			length = 2
		}
		v |= 1 << (2 * i)                        // L_i: enabled for this thread
		v |= (1 | length<<2) << (16 + 4*uint(i)) // RW_i = 01 (writes), LEN_i
	}
	return v
}

func (e *hwEngine) name() string { return EngineHW }

// arm loads the debug registers of every thread, and of every thread
// created later.
func (e *hwEngine) arm(*tracer.Thread) error {
	if err := e.takeShadows(e.w.regions); err != nil {
		return err
	}
	e.w.p.OnNewThread = e.loadDebugRegs
	e.armed = true
	return e.loadAll()
}

func (e *hwEngine) takeShadows(regions []*Region) error {
	for _, r := range regions {
		b := make([]byte, r.Len)
		if err := e.w.p.ReadMemory(r.Addr, b); err != nil {
			return fmt.Errorf("region %s: %w", r.Name, err)
		}
		e.shadow[r] = b
	}
	return nil
}

func (e *hwEngine) loadDebugRegs(t *tracer.Thread) error {
	if len(e.slots) == 0 {
		return t.SetDebugReg(7, 0)
	}
	for i, s := range e.slots {
		if err := t.SetDebugReg(i, s.addr); err != nil {
			return err
		}
	}
	return t.SetDebugReg(7, dr7(e.slots))
}

// loadAll loads the slots into every thread (all stopped).
func (e *hwEngine) loadAll() error {
	for _, t := range e.w.p.Threads() {
		if err := e.loadDebugRegs(t); err != nil && !errors.Is(err, tracer.ErrThreadGone) {
			return err
		}
	}
	return nil
}

func (e *hwEngine) add(_ *tracer.Thread, regions []*Region) error {
	all := append(append([]*Region(nil), e.w.regions...), regions...)
	slots, ok := hwSlots(all)
	if !ok {
		return fmt.Errorf("no debug register left for %s: restart with --engine page", regions[0].Name)
	}
	if err := e.takeShadows(regions); err != nil {
		return err
	}
	e.slots = slots
	return e.loadAll()
}

func (e *hwEngine) remove(_ *tracer.Thread, drop, keep []*Region) error {
	e.slots, _ = hwSlots(keep) // fewer regions always fit
	for _, r := range drop {
		delete(e.shadow, r)
	}
	return e.loadAll()
}

// disarm clears the debug registers of every thread.
func (e *hwEngine) disarm(*tracer.Thread) error {
	e.w.p.OnNewThread = nil
	var errs []error
	for _, t := range e.w.p.Threads() {
		// Once more if it fails: armed registers left behind would
		// kill the target with SIGTRAP at its next write.
		if err := t.SetDebugReg(7, 0); err != nil && t.SetDebugReg(7, 0) != nil {
			errs = append(errs, err)
		}
	}
	e.armed = false
	return errors.Join(errs...)
}

const (
	trapBrkpt  = 1
	trapHWBkpt = 4
)

// owns: a debug-register trap. Also a TRAP_BRKPT: the kernel's code for a
// debug exception with nothing in DR6, which a hypervisor sometimes hands
// a guest for a debug-register hit (one in about a hundred runs of 8000
// hits on this VM), and which an ICEBP instruction also makes: trap tells
// them apart.
func (e *hwEngine) owns(st tracer.Stop) bool {
	return st.Sig == int(unix.SIGTRAP) && (st.Info.Code() == trapHWBkpt || st.Info.Code() == trapBrkpt)
}

func (e *hwEngine) trap(st tracer.Stop) error {
	if st.Info.Code() == trapBrkpt {
		return e.lostDR6(st)
	}
	return e.hwWrite(st.Thread, 0)
}

// lostDR6 handles a debug exception that came with DR6 empty: the slots
// the store just before RIP covers are the ones that fired; an ICEBP
// (int1) of the target's own is delivered as natively.
func (e *hwEngine) lostDR6(st tracer.Stop) error {
	t := st.Thread
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return err
	}
	var prev [1]byte
	if e.w.p.ReadMemory(regs.Rip-1, prev[:]) == nil && prev[0] == 0xf1 {
		return t.Resume(int(unix.SIGTRAP))
	}
	const back = 15
	var code [back]byte
	if err := e.w.p.ReadMemory(regs.Rip-back, code[:]); err != nil {
		return t.Resume(0)
	}
	var bits uint64
	for k := 1; k <= back && bits == 0; k++ {
		r := regs
		r.Rip = regs.Rip - uint64(k)
		st, err := e.w.decode(code[back-k:], &r)
		if err != nil || st.Len != k || !st.Known || st.Size == 0 {
			continue
		}
		for i, s := range e.slots {
			if st.Addr < s.addr+s.size && s.addr < st.Addr+st.Size {
				bits |= 1 << i
			}
		}
	}
	// No store into a slot ends here: a stray exception, which natively
	// would not have happened. Nothing to report, nothing to deliver.
	return e.hwWrite(t, bits)
}

// deliver: no page is protected, the frame lands where it may.
func (e *hwEngine) deliver(t *tracer.Thread, sig int) error { return t.Resume(sig) }

// spans: the regions themselves.
func (e *hwEngine) spans() []span {
	var out []span
	for _, r := range e.w.regions {
		out = append(out, span{r.Addr, r.End()})
	}
	return out
}

func (e *hwEngine) kernelSpans() []span { return e.spans() }

// fork: debug registers are not inherited; the child's thread gets them,
// and the shadows are copied.
func (e *hwEngine) fork(cw *Watch, t *tracer.Thread) (engine, error) {
	c := &hwEngine{w: cw, slots: e.slots, shadow: map[*Region][]byte{}}
	for r, b := range e.shadow {
		c.shadow[r] = append([]byte(nil), b...)
	}
	cw.p.OnNewThread = c.loadDebugRegs
	c.armed = true
	return c, c.loadDebugRegs(t)
}

// release: a forked child has no debug registers of ours.
func (e *hwEngine) release(*tracer.Thread) error { return nil }

// leave clears the thread's debug registers.
func (e *hwEngine) leave(t *tracer.Thread) error {
	if err := t.SetDebugReg(7, 0); err != nil && t.SetDebugReg(7, 0) != nil {
		return err
	}
	return nil
}

func (e *hwEngine) leaveNote() string { return "" }

// hwWrite reports the write that triggered slots in DR6. The CPU traps
// after the writing instruction, so the PC is the next instruction's.
func (e *hwEngine) hwWrite(t *tracer.Thread, fired uint64) error {
	e.w.rootWatch().stats.Faults++
	dr6, err := t.DebugReg(6)
	if err != nil {
		return err
	}
	dr6 |= fired
	if err := t.SetDebugReg(6, 0); err != nil {
		return err
	}
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return err
	}
	seen := map[*Region]bool{}
	for i, s := range e.slots {
		if dr6&(1<<i) == 0 || seen[s.region] {
			continue
		}
		r := s.region
		seen[r] = true
		now := make([]byte, r.Len)
		if err := e.w.p.ReadMemory(r.Addr, now); err != nil {
			return err
		}
		old := e.shadow[r]
		// Only the slots that fired for this thread: another thread's
		// store to another slot may already be in memory, and is its
		// own trap's to report.
		var lo, hi uint64 = r.Len, 0
		var slo, shi uint64 = r.Len, 0
		for j, s2 := range e.slots {
			if dr6&(1<<j) == 0 || s2.region != r {
				continue
			}
			a, b := s2.addr-r.Addr, s2.addr+s2.size-r.Addr
			slo, shi = min(slo, a), max(shi, b)
			for x := a; x < b; x++ {
				if now[x] != old[x] {
					lo, hi = min(lo, x), max(hi, x+1)
				}
			}
		}
		changed := lo < hi
		if !changed {
			// A store of the value already there: the slots that
			// fired bound it.
			lo, hi = slo, shi
		}
		wr := &Write{
			Pid: e.w.p.Pid, Tid: t.Tid, Region: r, Offset: lo, Addr: r.Addr + lo, Size: hi - lo,
			PC: regs.Rip, AfterPC: true, Exact: true, Regs: regs, Thread: t,
		}
		if st, ok := e.storeBefore(&regs, r.Addr+lo, r.Addr+hi, changed, dr6); ok {
			// The instruction is known: report what it wrote, as the
			// page engine would.
			lo = max(st.Addr, r.Addr) - r.Addr
			hi = min(st.Addr+st.Size, r.End()) - r.Addr
			wr.Offset, wr.Addr, wr.Size = lo, r.Addr+lo, hi-lo
			wr.PC, wr.AfterPC = regs.Rip-uint64(st.Len), false
			wr.Insn = e.w.rootWatch().syntax(st.Inst, wr.PC)
		}
		wr.Old = append([]byte(nil), old[lo:hi]...)
		wr.New = append([]byte(nil), now[lo:hi]...)
		copy(old[slo:shi], now[slo:shi])
		if err := e.w.emit(wr, regionPages(r, now)); err != nil {
			return err
		}
	}
	if err := e.w.checkSegv(t); err != nil {
		return err
	}
	return t.Resume(0)
}

// regionPages lays a region's bytes out as page snapshots, for emit.
func regionPages(r *Region, now []byte) map[uint64][]byte {
	page := map[uint64][]byte{}
	for a := pageDown(r.Addr); a < r.End(); a += pageSize {
		b := make([]byte, pageSize)
		lo, hi := max(a, r.Addr), min(a+pageSize, r.End())
		copy(b[lo-a:hi-a], now[lo-r.Addr:hi-r.Addr])
		page[a] = b
	}
	return page
}

// storeBefore finds the store that just ended at regs.Rip. Debug registers
// trap after the instruction and x86 keeps no record of where it started, so
// every start 1 to 15 bytes back is decoded; a candidate counts if it ends
// exactly at RIP and, evaluated with the current registers, writes the bytes
// that changed and the slots that fired. An instruction that changed its own
// address registers (PUSH, STOS) finds no candidate and leaves the report at
// "just before RIP".
func (e *hwEngine) storeBefore(regs *unix.PtraceRegs, lo, hi uint64, changed bool, dr6 uint64) (store.Store, bool) {
	const back = 15
	var code [back]byte
	start := regs.Rip - back
	if err := e.w.p.ReadMemory(start, code[:]); err != nil {
		return store.Store{}, false
	}
	var found store.Store
	n := 0
	for k := 1; k <= back; k++ {
		r := *regs
		r.Rip = regs.Rip - uint64(k)
		st, err := e.w.decode(code[back-k:], &r)
		if err != nil || st.Len != k || !st.Known || st.Size == 0 || st.Rep {
			continue
		}
		if changed && (st.Addr > lo || st.Addr+st.Size < hi) {
			continue
		}
		hits := true
		for i, s := range e.slots {
			if dr6&(1<<i) != 0 && (s.addr+s.size <= st.Addr || s.addr >= st.Addr+st.Size) {
				hits = false
			}
		}
		if !hits {
			continue
		}
		// Where several starts decode to a matching store (a REX
		// prefix dropped leaves a narrower MOV of the same address),
		// the longest is the instruction: a shorter one is a suffix.
		found = st
		n++
	}
	return found, n > 0
}

// hwMemoryCall follows the target's own munmap/mremap/mmap(MAP_FIXED) and
// madvise over debug-register regions: a region unmapped is dropped (its
// slot freed, "unmapped" reported) so a new mapping there is not watched;
// bytes madvise changed are reported as a kernel write. done means the
// thread has been resumed.
func (e *hwEngine) memoryCall(t *tracer.Thread, si tracer.SyscallInfo) (bool, error) {
	name, sp, hit := e.memoryHits(si)
	if len(hit) == 0 {
		return false, nil
	}
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return false, err
	}
	ret, err := t.FinishSyscall()
	if err != nil {
		return false, fmt.Errorf("%s: %w", name, err)
	}
	if err := e.memoryDone(t, si.Nr, name, &regs, ret, sp, hit); err != nil {
		return false, err
	}
	return true, t.Resume(0)
}

// memoryHits: the regions a memory-management call si may change, the
// span it covers and its name; none for the others.
func (e *hwEngine) memoryHits(si tracer.SyscallInfo) (string, span, []*Region) {
	a := si.Args
	lo, n := a[0], a[1]
	name := map[int]string{unix.SYS_MUNMAP: "munmap", unix.SYS_MREMAP: "mremap", unix.SYS_MMAP: "mmap", unix.SYS_MADVISE: "madvise"}[si.Nr]
	switch si.Nr {
	case unix.SYS_MMAP:
		if a[3]&(unix.MAP_FIXED|unix.MAP_FIXED_NOREPLACE) == 0 {
			return "", span{}, nil
		}
	case unix.SYS_MREMAP:
		if a[3]&unix.MREMAP_FIXED != 0 {
			end := max(a[0]+a[1], a[4]+a[2])
			lo = min(a[0], a[4])
			n = end - lo
		}
	case unix.SYS_MUNMAP, unix.SYS_MADVISE:
	default:
		return "", span{}, nil
	}
	sp := span{pageDown(lo), pageUp(lo + n)}
	var hit []*Region
	for _, r := range e.w.regions {
		if _, ok := sp.intersect(span{r.Addr, r.End()}); ok {
			hit = append(hit, r)
		}
	}
	return name, sp, hit
}

// memoryDone settles a memory-management call over the regions hit that
// returned ret (t stopped after it; regs as at its entry).
func (e *hwEngine) memoryDone(t *tracer.Thread, nr int, name string, regs *unix.PtraceRegs, ret int64, sp span, hit []*Region) error {
	if ret < 0 && ret >= -4095 {
		return nil
	}
	if nr == unix.SYS_MADVISE {
		return e.syscallExit(t, &kcall{nr: nr, name: name, regs: *regs, outs: []span{sp}})
	}
	// Gone: their slots are freed, so that what is mapped there next is
	// not watched.
	if err := e.w.p.StopOthers(t); err != nil {
		return err
	}
	if err := e.w.RemoveRegions(t, hit); err != nil {
		return err
	}
	if err := e.w.p.ResumeOthers(); err != nil {
		return err
	}
	for _, r := range hit {
		e.w.unmapped(r, name+"(2)")
	}
	return nil
}

// syscallEntry follows the target's memory management over the regions,
// and the calls whose outputs cover one to their exit.
func (e *hwEngine) syscallEntry(t *tracer.Thread, si tracer.SyscallInfo) error {
	if _, ok := memoryCalls[si.Nr]; ok {
		if done, err := e.memoryCall(t, si); done || err != nil {
			return err
		}
		return t.Resume(0)
	}
	if !e.w.followsWrites() {
		return t.Resume(0)
	}
	call := e.covering(si)
	if call == nil {
		return t.Resume(0)
	}
	if err := t.Regs(&call.regs); err != nil {
		return err
	}
	e.w.calls[t.Tid] = call
	return resumeToExit(t, si)
}

// hwCovering: on the hw engine the kernel writes watched memory directly
// (debug registers do not see it); a call whose output covers a region is
// followed (to its exit, where the region is compared with its shadow).
// It is that call, with the outputs over regions, or nil for a call
// memtrap need not follow.
func (e *hwEngine) covering(si tracer.SyscallInfo) *kcall {
	var outs []span
	var name string
	if vs, ok := sysout.LookupVec(si.Nr); ok {
		name = vs.Name
		if l, ok := vs.Read(&si.Args, e.w.p); ok {
			for _, o := range l.Outputs() {
				outs = append(outs, span{o.Addr, o.End()})
			}
		}
	} else if spec, ok := sysout.Lookup(si.Nr); ok {
		name = spec.Name
		for _, o := range spec.Outputs(&si.Args, e.w.p) {
			if o.Size != 0 && o.End() > o.Addr {
				outs = append(outs, span{o.Addr, o.End()})
			}
		}
	}
	var call *kcall
	for _, o := range outs {
		for _, r := range e.w.regions {
			if _, ok := o.intersect(span{r.Addr, r.End()}); ok {
				if call == nil {
					call = &kcall{nr: si.Nr, name: name}
				}
				call.outs = append(call.outs, o)
				break
			}
		}
	}
	return call
}

// syscallExit reports what a followed call changed in the regions.
func (e *hwEngine) syscallExit(t *tracer.Thread, call *kcall) error {
	for _, r := range e.w.regions {
		touched := false
		for _, o := range call.outs {
			if _, ok := o.intersect(span{r.Addr, r.End()}); ok {
				touched = true
			}
		}
		if !touched {
			continue
		}
		now := make([]byte, r.Len)
		if err := e.w.p.ReadMemory(r.Addr, now); err != nil {
			return err
		}
		old := e.shadow[r]
		e.shadow[r] = now
		if err := e.w.reportKernel(t, call, r.Addr, old, now); err != nil {
			return err
		}
	}
	return nil
}
