package pagewatch

import (
	"fmt"

	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

const siKernel = 0x80

// WatchLibraries arms the loader breakpoint at addr (_dl_debug_state's
// runtime address). At each hit Options.OnLibraries is asked for regions to
// add. Precondition: all threads stopped.
func (w *Watch) WatchLibraries(addr uint64) error {
	b := []byte{0}
	if err := w.p.ReadMemory(addr, b); err != nil {
		return err
	}
	if b[0] != 0xc3 {
		return fmt.Errorf("_dl_debug_state at %#x does not start with ret (%#x): libraries loaded later are not followed", addr, b[0])
	}
	if err := w.p.WriteMemory(addr, []byte{0xcc}); err != nil {
		return err
	}
	w.libBP = addr
	return nil
}

// unwatchLibraries puts the ret back in p (the target, or a forked child).
func (w *Watch) unwatchLibraries(p *tracer.Process) error {
	if w.libBP == 0 {
		return nil
	}
	return p.WriteMemory(w.libBP, []byte{0xc3})
}

// libHit says whether a stop is the loader breakpoint.
func (w *Watch) libHit(st tracer.Stop) bool {
	if w.libBP == 0 || st.Sig != int(unix.SIGTRAP) || st.Info.Code() != siKernel {
		return false
	}
	var r unix.PtraceRegs
	return st.Thread.Regs(&r) == nil && r.Rip == w.libBP+1
}

// libraries handles a loader breakpoint hit: return as the ret would, then
// arm what became resolvable.
func (w *Watch) libraries(t *tracer.Thread) error {
	if err := w.returnFromLibBP(t); err != nil {
		return err
	}
	if err := w.checkSegv(t); err != nil {
		return err
	}
	if w.opts.OnLibraries != nil {
		regions, err := w.opts.OnLibraries()
		if err != nil {
			w.note(err.Error())
		} else if len(regions) > 0 {
			if err := w.p.StopOthers(t); err != nil {
				return err
			}
			if err := w.AddRegions(t, regions); err != nil {
				w.note(err.Error())
			}
			if err := w.p.ResumeOthers(); err != nil {
				return err
			}
		}
	}
	w.SyncGuard()
	return t.Resume(0)
}

// returnFromLibBP does the ret the int3 stands on.
func (w *Watch) returnFromLibBP(t *tracer.Thread) error {
	var r unix.PtraceRegs
	if err := t.Regs(&r); err != nil {
		return err
	}
	var ra [8]byte
	if err := w.p.ReadMemory(r.Rsp, ra[:]); err != nil {
		return err
	}
	r.Rip = leValue(ra[:])
	r.Rsp += 8
	return t.SetRegs(&r)
}
