package pagewatch

import (
	"encoding/binary"

	"github.com/memtrap/memtrap/pkg/tracer"
	"github.com/memtrap/memtrap/pkg/x86/xsave"
	"golang.org/x/sys/unix"
)

// frameRoom is how far below a stack pointer a signal frame can reach: the
// red zone, the XSAVE image and the rest of the frame, with margin.
func frameRoom() uint64 { return uint64(xsave.Size()) + 128 + 2048 }

// deliver resumes t, stopped at the delivery of sig, delivering it.
func (e *pageEngine) deliver(t *tracer.Thread, sig int) error {
	w := e.w
	if w.scratch == nil || !e.anyArmed() {
		return t.Resume(sig)
	}
	if caught, err := w.p.Catches(sig); err != nil || !caught {
		return t.Resume(sig) // no handler: no frame
	}
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return err
	}
	// Before anything runs in the thread (tracer.Thread.WaitMask).
	own, during, waiting, err := t.WaitMask(&regs)
	if err != nil {
		return err
	}
	room := frameRoom()
	windows := []span{{regs.Rsp - room, regs.Rsp}}
	info, err := t.Siginfo()
	if err != nil {
		return err
	}
	alt, ok := e.altStack(t)
	// The injected call left its own trap's siginfo at this stop.
	if err := t.SetSiginfo(info); err != nil {
		return err
	}
	if ok && !(regs.Rsp > alt.lo && regs.Rsp <= alt.hi) {
		windows = append(windows, span{max(alt.lo, alt.hi-room), alt.hi})
	}
	var pages []*page
	for _, win := range windows {
		for a := pageDown(win.lo); a < win.hi; a += pageSize {
			if pg := e.armedPage(a); pg != nil {
				pages = append(pages, pg)
			}
		}
	}
	if len(pages) == 0 && !waiting {
		return t.Resume(sig)
	}
	if len(pages) > 0 {
		if err := w.p.StopOthers(t); err != nil {
			return err
		}
	}
	before := map[uint64][]byte{}
	for _, pg := range pages {
		b, err := e.readHull(pg)
		if err != nil {
			return err
		}
		before[pg.addr] = b
		if err := t.Mprotect(pg.addr, pageSize, pg.prot); err != nil {
			return err
		}
	}
	if waiting {
		if err := t.SetSigMask(during); err != nil {
			return err
		}
	}
	if err := t.SetSiginfo(info); err != nil {
		return err
	}
	res, err := t.StepSignal(sig)
	if err != nil {
		return err
	}
	if waiting && res.Done {
		if err := e.setFrameMask(t, own); err != nil {
			return err
		}
	}
	for _, pg := range pages {
		if err := t.Mprotect(pg.addr, pageSize, pg.prot&^unix.PROT_WRITE); err != nil {
			return err
		}
	}
	if !res.Done {
		// Another signal came first; it is delivered next.
		t.Defer(res.Info)
	}
	if len(pages) > 0 {
		if err := w.p.ResumeOthers(); err != nil {
			return err
		}
	}
	for _, pg := range pages {
		after, err := e.readHull(pg)
		if err != nil {
			return err
		}
		call := &kcall{regs: regs, signal: sig}
		if err := w.reportKernel(t, call, pg.addr+pg.lo, before[pg.addr][pg.lo:pg.hi], after[pg.lo:pg.hi]); err != nil {
			return err
		}
	}
	return w.resume(t)
}

// ucSigmask is where the saved signal mask sits in an x86-64 signal frame,
// from the handler's stack pointer at its entry: the return address, then
// the ucontext's uc_flags, uc_link, uc_stack (24 bytes) and uc_mcontext
// (256 bytes) before its uc_sigmask.
const ucSigmask = 8 + 8 + 8 + 24 + 256

// setFrameMask makes the frame of the handler t is stopped at the entry of
// restore mask m when the handler returns.
func (e *pageEngine) setFrameMask(t *tracer.Thread, m uint64) error {
	var r unix.PtraceRegs
	if err := t.Regs(&r); err != nil {
		return err
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], m)
	return e.w.p.WriteMemory(r.Rsp+ucSigmask, b[:])
}

// altStack tells the thread's alternate signal stack. Asking the thread
// costs an injected sigaltstack (50-100 us), paid at every caught signal
// while pages are armed: Go's preemption signal alone comes up to 100 times
// a second per busy thread. So while the target's syscalls are followed
// (Options.KernelWrites), which includes every sigaltstack call that sets
// a stack (filterRules, syscallEntry), the answer is kept per thread until
// the thread sets another or the process executes a new image.
func (e *pageEngine) altStack(t *tracer.Thread) (span, bool) {
	if a, ok := e.alt[t]; ok {
		return a.span, a.ok
	}
	sp, ok := e.w.askAltStack(t)
	if e.w.opts.KernelWrites {
		if e.alt == nil || len(e.alt) > 2*len(e.w.p.Threads())+16 {
			e.alt = map[*tracer.Thread]altStack{} // drop the exited threads'
		}
		e.alt[t] = altStack{sp, ok}
	}
	return sp, ok
}

// altStack is a thread's alternate signal stack, if ok.
type altStack struct {
	span
	ok bool
}

// askAltStack asks the thread for its alternate signal stack.
func (w *Watch) askAltStack(t *tracer.Thread) (span, bool) {
	buf, ok := w.scratch.Alloc(24)
	if !ok {
		return span{}, false
	}
	defer w.scratch.Release(buf, 24)
	if _, err := t.Syscall(unix.SYS_SIGALTSTACK, 0, uintptr(buf)); err != nil {
		return span{}, false
	}
	var ss [24]byte
	if w.p.ReadMemory(buf, ss[:]) != nil {
		return span{}, false
	}
	sp := binary.LittleEndian.Uint64(ss[0:])
	flags := binary.LittleEndian.Uint32(ss[8:])
	size := binary.LittleEndian.Uint64(ss[16:])
	if flags&ssDisable != 0 || size == 0 {
		return span{}, false
	}
	return span{sp, sp + size}, true
}

const ssDisable = 2 // SS_DISABLE
