package pagewatch

import (
	"errors"
	"fmt"

	"github.com/memtrap/memtrap/pkg/tracer"
	"github.com/memtrap/memtrap/pkg/x86/store"
	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"
)

// Engines.
const (
	EnginePage = "page" // write-protected pages: any size, any number of regions
	EngineHW   = "hw"   // x86 debug registers: up to 4 aligned slots of 1-8 bytes
	EngineAuto = "auto" // hw when every region fits, page otherwise
)

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

// armHW loads the debug registers of every thread, and of every thread
// created later.
func (w *Watch) armHW() error {
	for _, r := range w.regions {
		b := make([]byte, r.Len)
		if err := w.p.ReadMemory(r.Addr, b); err != nil {
			return fmt.Errorf("region %s: %w", r.Name, err)
		}
		w.shadow[r] = b
	}
	w.p.OnNewThread = w.loadDebugRegs
	for _, t := range w.p.Threads() {
		if err := w.loadDebugRegs(t); err != nil {
			return err
		}
	}
	return nil
}

func (w *Watch) loadDebugRegs(t *tracer.Thread) error {
	for i, s := range w.slots {
		if err := t.SetDebugReg(i, s.addr); err != nil {
			return err
		}
	}
	return t.SetDebugReg(7, dr7(w.slots))
}

// disarmHW clears the debug registers of every thread.
func (w *Watch) disarmHW() error {
	w.p.OnNewThread = nil
	for _, t := range w.p.Threads() {
		if err := t.SetDebugReg(7, 0); err != nil {
			return err
		}
	}
	return nil
}

const trapHWBkpt = 4

// hwHit says whether a stop is a debug-register trap of ours.
func (w *Watch) hwHit(st tracer.Stop) bool {
	return w.slots != nil && st.Sig == int(unix.SIGTRAP) && st.Info.Code() == trapHWBkpt
}

// hwWrite reports the write that triggered slots in DR6. The CPU traps
// after the writing instruction, so the PC is the next instruction's.
func (w *Watch) hwWrite(t *tracer.Thread) error {
	w.rootWatch().stats.Faults++
	dr6, err := t.DebugReg(6)
	if err != nil {
		return err
	}
	if err := t.SetDebugReg(6, 0); err != nil {
		return err
	}
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return err
	}
	seen := map[*Region]bool{}
	for i, s := range w.slots {
		if dr6&(1<<i) == 0 || seen[s.region] {
			continue
		}
		r := s.region
		seen[r] = true
		now := make([]byte, r.Len)
		if err := w.p.ReadMemory(r.Addr, now); err != nil {
			return err
		}
		old := w.shadow[r]
		// Only the slots that fired for this thread: another thread's
		// store to another slot may already be in memory, and is its
		// own trap's to report.
		var lo, hi uint64 = r.Len, 0
		var slo, shi uint64 = r.Len, 0
		for j, s2 := range w.slots {
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
			Pid: w.p.Pid, Tid: t.Tid, Region: r, Offset: lo, Addr: r.Addr + lo, Size: hi - lo,
			PC: regs.Rip, AfterPC: true, Exact: true, Regs: regs, Thread: t,
		}
		if st, ok := w.storeBefore(&regs, r.Addr+lo, r.Addr+hi, changed, dr6); ok {
			// The instruction is known: report what it wrote, as the
			// page engine would.
			lo = max(st.Addr, r.Addr) - r.Addr
			hi = min(st.Addr+st.Size, r.End()) - r.Addr
			wr.Offset, wr.Addr, wr.Size = lo, r.Addr+lo, hi-lo
			wr.PC, wr.AfterPC = regs.Rip-uint64(st.Len), false
			wr.Insn = x86asm.IntelSyntax(st.Inst, wr.PC, nil)
		}
		wr.Old = append([]byte(nil), old[lo:hi]...)
		wr.New = append([]byte(nil), now[lo:hi]...)
		copy(old[slo:shi], now[slo:shi])
		if err := w.emit(wr, regionPages(r, now)); err != nil {
			return err
		}
	}
	if err := w.checkSegv(t); err != nil {
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
func (w *Watch) storeBefore(regs *unix.PtraceRegs, lo, hi uint64, changed bool, dr6 uint64) (store.Store, bool) {
	const back = 15
	var code [back]byte
	start := regs.Rip - back
	if err := w.p.ReadMemory(start, code[:]); err != nil {
		return store.Store{}, false
	}
	var found store.Store
	n := 0
	for k := 1; k <= back; k++ {
		r := *regs
		r.Rip = regs.Rip - uint64(k)
		st, err := w.decode(code[back-k:], &r)
		if err != nil || st.Len != k || !st.Known || st.Size == 0 || st.Rep {
			continue
		}
		if changed && (st.Addr > lo || st.Addr+st.Size < hi) {
			continue
		}
		hits := true
		for i, s := range w.slots {
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
func (w *Watch) hwMemoryCall(t *tracer.Thread, si tracer.SyscallInfo) (bool, error) {
	a := si.Args
	lo, n := a[0], a[1]
	name := map[int]string{unix.SYS_MUNMAP: "munmap", unix.SYS_MREMAP: "mremap", unix.SYS_MMAP: "mmap", unix.SYS_MADVISE: "madvise"}[si.Nr]
	switch si.Nr {
	case unix.SYS_MMAP:
		if a[3]&(unix.MAP_FIXED|unix.MAP_FIXED_NOREPLACE) == 0 {
			return false, nil
		}
	case unix.SYS_MREMAP:
		if a[3]&unix.MREMAP_FIXED != 0 {
			end := max(a[0]+a[1], a[4]+a[2])
			lo = min(a[0], a[4])
			n = end - lo
		}
	case unix.SYS_MUNMAP, unix.SYS_MADVISE:
	default:
		return false, nil
	}
	sp := span{pageDown(lo), pageUp(lo + n)}
	var hit []*Region
	for _, r := range w.regions {
		if _, ok := sp.intersect(span{r.Addr, r.End()}); ok {
			hit = append(hit, r)
		}
	}
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
	if ret < 0 && ret >= -4095 {
		return true, t.Resume(0)
	}
	if si.Nr == unix.SYS_MADVISE {
		call := &kcall{nr: si.Nr, name: name, regs: regs, outs: []span{sp}}
		return true, w.finishHW(t, call)
	}
	gone := map[*Region]bool{}
	for _, r := range hit {
		gone[r] = true
	}
	var keep []*Region
	for _, r := range w.regions {
		if !gone[r] {
			keep = append(keep, r)
		}
	}
	slots, _ := hwSlots(keep)
	if err := w.p.StopOthers(t); err != nil {
		return false, err
	}
	w.regions, w.slots = keep, slots
	for _, th := range w.p.Threads() {
		var err error
		if len(slots) == 0 {
			err = th.SetDebugReg(7, 0)
		} else {
			err = w.loadDebugRegs(th)
		}
		if err != nil && !errors.Is(err, tracer.ErrThreadGone) {
			return false, err
		}
	}
	if err := w.p.ResumeOthers(); err != nil {
		return false, err
	}
	for _, r := range hit {
		delete(w.shadow, r)
		w.unmapped(r, name+"(2)")
	}
	return true, t.Resume(0)
}

// finishHW reports what a followed call changed and resumes the thread.
func (w *Watch) finishHW(t *tracer.Thread, call *kcall) error {
	if err := w.hwCallExit(t, call); err != nil {
		return err
	}
	return t.Resume(0)
}

// chooseEngine sets w up for the debug registers when Options.Engine asks
// for them (hw) or allows them (auto) and they can watch regions, and
// leaves it on the page engine otherwise. Debug registers that the machine
// accepts but never fires would lose every write silently, so they are
// checked first (tracer.CheckDebugRegisters): auto then takes the page
// engine, quietly (the report header names the engine), and hw is refused.
// Where the check cannot run, hw trusts them and auto does not.
func (w *Watch) chooseEngine(regions []*Region) error {
	slots, ok := hwSlots(regions)
	if !ok {
		if w.opts.Engine == EngineHW {
			return fmt.Errorf("the regions need more than the 4 debug registers (each covers one aligned 1, 2, 4 or 8-byte slot): %w", ErrBadRegion)
		}
		return nil
	}
	if err := tracer.CheckDebugRegisters(); err != nil {
		switch {
		case w.opts.Engine == EngineHW && errors.Is(err, tracer.ErrDebugRegsDead):
			return fmt.Errorf("engine hw: %w (a perf breakpoint on memtrap's own memory counted none of 8 stores); use the page engine", err)
		case w.opts.Engine == EngineHW:
			w.note(fmt.Sprintf("could not check that debug registers fire here (%v); trusting them", err))
		default:
			return nil
		}
	}
	w.slots, w.shadow = slots, map[*Region][]byte{}
	return nil
}
