package pagewatch

import (
	"github.com/memtrap/memtrap/pkg/procmaps"
	"github.com/memtrap/memtrap/pkg/tracer"
	"github.com/memtrap/memtrap/pkg/x86/store"
	"golang.org/x/sys/unix"
)

// Emulator completes a trapped store by doing it itself: package store
// computes what the instruction writes ([store.Emulate], from the decoded
// instruction, the registers and, when the instruction reads them, memory
// and the vector registers); the Emulator writes the bytes through
// /proc/PID/mem (which writes through the protection of private pages) and
// sets the registers the instruction leaves (RIP, and RCX/RSI/RDI or
// EFLAGS when it changes them). One ptrace stop per write, no unprotect
// window, no other thread stopped.
//
// Which instructions are emulated, package store's doc says. Everything
// else goes to Fallback (Stepper if nil), before anything changes: what
// store.Emulate refuses; stores that reach a page the target cannot write
// or that a forced write does not reach (an armed page of a shared
// mapping), or read one it cannot read; and stores whose decoded address
// disagrees with the fault.
//
// Other threads keep running meanwhile. They cannot change the bytes of an
// armed page (they would trap), so a read-modify-write of one is as
// consistent as the CPU's own unlocked one, and a LOCKed one as atomic as
// the CPU's: each other writer traps and waits its turn, then is emulated
// against the bytes this one left, and a shared mapping, where another
// process could write, never reaches the emulator. The protection of pages
// other than ours is read from the maps when a store reaches them, so a
// thread changing it at that very moment races with the store as it would
// with the CPU's.
type Emulator struct {
	Fallback Completer
	// Stats, if set, counts the faults emulated and those handed to the
	// fallback. It is updated on the ptrace thread.
	Stats *EmulatorStats
}

// EmulatorStats counts an Emulator's work.
type EmulatorStats struct {
	Emulated int
	Fallback int
	// Why counts the fallbacks by reason: "op XCHG", "locked",
	// "misaligned", "store not decoded", ...
	Why map[string]int
}

func (s *EmulatorStats) fallback(why string) {
	s.Fallback++
	if s.Why == nil {
		s.Why = map[string]int{}
	}
	s.Why[why]++
}

// Complete implements Completer.
func (e Emulator) Complete(w *Watch, f *Fault) (bool, error) {
	why, err := e.emulate(w, f)
	if err != nil {
		return false, err
	}
	if why == "" {
		if e.Stats != nil {
			e.Stats.Emulated++
		}
		return true, nil
	}
	if e.Stats != nil {
		e.Stats.fallback(why)
	}
	fb := e.Fallback
	if fb == nil {
		fb = Stepper{}
	}
	return fb.Complete(w, f)
}

// emulate does f's store or says why not, with nothing changed. An error
// means the thread's state is no longer known.
func (e Emulator) emulate(w *Watch, f *Fault) (string, error) {
	em, why := store.Emulate(&f.Store, &f.Regs, liveTarget{w.p, f.Thread})
	if why != "" {
		return why, nil
	}
	var dst, src span
	dst.lo, dst.hi = em.Written()
	src.lo, src.hi = em.Source()
	if em.Masked() && (f.SiAddr < dst.lo || f.SiAddr >= dst.hi) {
		// The decoder's address is not known to agree with the CPU's.
		return "masked store off the fault", nil
	}
	if why := f.eng.reachable(dst, src); why != "" {
		return why, nil
	}
	for a := pageDown(dst.lo); a < dst.hi; a += pageSize {
		if err := w.Snapshot(f, a); err != nil {
			return "", err
		}
	}
	addr, old := em.Addr(), em.Old()
	if old == nil && pageDown(dst.lo) != pageDown(dst.hi-1) {
		// A write over several pages can fail half-way (a page unmapped
		// meanwhile): keep what to put back.
		old = make([]byte, len(em.Data()))
		err := em.Runs(func(lo, hi uint64) error { return w.p.ReadMemory(addr+lo, old[lo:hi]) })
		if err != nil {
			return "reading the destination", nil
		}
	}
	written, err := apply(em, w.p, f.Thread)
	switch {
	case err != nil && written:
		return "", err
	case err != nil:
		if old != nil {
			_ = em.Runs(func(lo, hi uint64) error { return w.p.WriteMemory(addr+lo, old[lo:hi]) })
		}
		return "writing the destination", nil
	}
	f.after = pagesAfter(em, f.before, f.eng.hullBuf)
	return "", nil
}

// pagesAfter is what the watched bytes of the pages in before hold once
// em's bytes are in: nothing else can have changed them, as an armed page
// traps every other writer (threads) or has its calls bounced (the kernel),
// and a shared page never reaches the emulator. It saves reading them back.
func pagesAfter(em *store.Emulation, before map[uint64][]byte, buf func() []byte) map[uint64][]byte {
	addr, data := em.Addr(), em.Data()
	out := make(map[uint64][]byte, len(before))
	for a, b := range before {
		nb := buf()
		copy(nb, b)
		_ = em.Runs(func(lo, hi uint64) error {
			if s, ok := (span{addr + lo, addr + hi}).intersect(span{a, a + pageSize}); ok {
				copy(nb[s.lo-a:s.hi-a], data[s.lo-addr:s.hi-addr])
			}
			return nil
		})
		out[a] = nb
	}
	return out
}

// apply performs an emulation on the target: the bytes, then the registers.
// written says whether the bytes went in.
func apply(em *store.Emulation, p *tracer.Process, t *tracer.Thread) (written bool, err error) {
	addr, data := em.Addr(), em.Data()
	if err := em.Runs(func(lo, hi uint64) error { return p.WriteMemory(addr+lo, data[lo:hi]) }); err != nil {
		return false, err
	}
	regs := em.Regs()
	return true, t.SetRegs(&regs)
}

// liveTarget is a stopped thread of the traced process.
type liveTarget struct {
	p *tracer.Process
	t *tracer.Thread
}

func (l liveTarget) ReadMemory(addr uint64, b []byte) error { return l.p.ReadMemory(addr, b) }
func (l liveTarget) FPRegs(out *[512]byte) error            { return l.t.FPRegs(out) }
func (l liveTarget) XState(buf []byte) (int, error)         { return l.t.XState(buf) }

// reachable says why the target could not write all of dst or read all of
// src as the instruction would, or that a forced write would not reach
// dst, or "" if neither. Our armed pages are known; the protection of any
// other page comes from the maps, read only then.
func (e *pageEngine) reachable(dst, src span) string {
	var maps []procmaps.Mapping
	prot := func(a uint64) (int, bool) {
		if maps == nil {
			var err error
			if maps, err = procmaps.Read(e.w.p.Pid); err != nil {
				return 0, false
			}
		}
		m, ok := findMapping(maps, a)
		return m.Prot, ok
	}
	for a := pageDown(dst.lo); a < dst.hi; a += pageSize {
		if pg := e.pages[a]; pg != nil && pg.armed {
			if pg.shared {
				// Write-protected and shared: a forced write is refused.
				return "armed page of a shared mapping"
			}
			continue
		}
		if p, ok := prot(a); !ok || p&unix.PROT_WRITE == 0 {
			return "destination not writable"
		}
	}
	for a := pageDown(src.lo); a < src.hi; a += pageSize {
		if pg := e.pages[a]; pg != nil && pg.armed {
			if pg.prot&unix.PROT_READ == 0 {
				return "source not readable"
			}
			continue
		}
		if p, ok := prot(a); !ok || p&unix.PROT_READ == 0 {
			return "source not readable"
		}
	}
	return ""
}
