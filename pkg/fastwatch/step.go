package fastwatch

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/memtrap/memtrap/pkg/agent"
	"github.com/memtrap/memtrap/pkg/tracer"
	"github.com/memtrap/memtrap/pkg/x86/store"
	"github.com/memtrap/memtrap/pkg/x86/xsave"
	"golang.org/x/sys/unix"
)

// step is the agent's Stepper: a store memtrap's emulator cannot do (x87
// or FXSAVE/XSAVE state, say: getcontext's fnstenv) done the way the page
// engine's step completer does it, for that one write. memtrap traces the
// process again, every thread stopped; loads the writer with the registers
// and the FPU state its signal frame saved at the fault; gives the armed
// pages the store writes their own protection; single-steps it; writes the
// registers and FPU state the step left into the frame, so that the
// thread's sigreturn resumes after the store; and puts the rest back
// before it lets the process go again. Rare, slow, exact.
func (w *Watch) step(q agent.Request) (err error) {
	regs, err := agent.RequestRegs(w.mem, q)
	if err != nil {
		return err
	}
	frameG, err := agent.FrameGRegs(w.mem, q.UC)
	if err != nil {
		return err
	}
	code := make([]byte, 15)
	n, _ := w.mem.ReadAt(code, int64(regs.Rip))
	st, derr := store.Decode(code[:n], &regs)
	// What it writes, if the decoder knows (and agrees with the CPU's
	// fault); if not (an XSAVE: its size is the state's), the bytes of
	// the armed pages it changes, those it faults on opened one by one.
	cr2 := agent.FaultAddr(&frameG)
	exact := derr == nil && st.Known && st.Size > 0 && cr2-st.Addr < st.Size
	lo, hi := cr2&^(pageSize-1), cr2&^(pageSize-1)+pageSize
	if exact {
		lo, hi = st.Addr, st.Addr+st.Size
	}
	fp, err := agent.FrameFPState(w.mem, q.UC)
	if err != nil {
		return err
	}
	if fp == 0 {
		return errors.New("its signal frame holds no FPU state")
	}
	s := w.in.Shared
	// The agent's lock first: a thread stopped holding it would keep it.
	s.Lock()
	defer s.Unlock()
	if s.Room() == 0 {
		return agent.ErrRingFull
	}
	if err := w.p.Retrace(); err != nil {
		return fmt.Errorf("tracing the target again: %w", err)
	}
	defer func() {
		if uerr := w.untrace(); uerr != nil && err == nil {
			err = uerr
		}
	}()
	t := w.p.Thread(int(q.Tid))
	if t == nil {
		return fmt.Errorf("thread %d is gone", q.Tid)
	}
	var old []byte
	if exact {
		old = make([]byte, hi-lo)
		if _, err := w.mem.ReadAt(old, int64(lo)); err != nil {
			return fmt.Errorf("reading what it writes: %w", err)
		}
	}
	// The thread as it waits in the agent's handler, to go on from.
	var saved unix.PtraceRegs
	if err := t.Regs(&saved); err != nil {
		return err
	}
	xs := make([]byte, xstateMax)
	nx, err := t.XState(xs)
	if err != nil {
		return err
	}
	xs = xs[:nx]
	frameX, fsz, err := w.frameXState(fp, xs)
	if err != nil {
		return err
	}
	// A single-step's SIGTRAP resets an ignored SIGTRAP's action (the
	// tracer unblocks it for the step): put the action back after.
	_, ignored, err := w.p.SignalDispositions()
	if err != nil {
		return err
	}
	if ignored&(1<<(unix.SIGTRAP-1)) != 0 {
		a := s.Area()
		if a.Token == 0 {
			return errors.New("the target ignores SIGTRAP, and there is nowhere to keep its action")
		}
		keep := a.Token + sigactionOff
		w.p.QuietInjection(true)
		defer w.p.QuietInjection(false)
		if _, err := t.Syscall(unix.SYS_RT_SIGACTION, uintptr(unix.SIGTRAP), 0, uintptr(keep), 8); err != nil {
			return fmt.Errorf("reading the SIGTRAP action: %w", err)
		}
		defer func() {
			if _, rerr := t.Syscall(unix.SYS_RT_SIGACTION, uintptr(unix.SIGTRAP), uintptr(keep), 0, 8); rerr != nil && err == nil {
				err = fmt.Errorf("putting the SIGTRAP action back: %w", rerr)
			}
		}()
	}
	op := opener{w: w, t: t, before: map[uint64][]byte{}}
	defer func() {
		if perr := op.close(); perr != nil && err == nil {
			err = perr
		}
	}()
	after, afterX, err := op.step(lo, hi, &saved, &regs, frameX)
	// Back to where it waits, whatever the step did.
	if xerr := t.SetXState(xs); xerr != nil && err == nil {
		err = xerr
	}
	if rerr := t.SetRegs(&saved); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil {
		return err
	}
	var nw []byte
	if exact {
		nw = make([]byte, hi-lo)
		if _, err := w.mem.ReadAt(nw, int64(lo)); err != nil {
			return fmt.Errorf("reading what it wrote: %w", err)
		}
	} else if lo, old, nw, err = op.changed(); err != nil {
		return err
	}
	if err := agent.SetFrameGRegs(w.mem, q.UC, &after); err != nil {
		return err
	}
	// The FPU state after the store (fnstenv masks the x87 exceptions),
	// but the frame's own software bytes, which sigreturn checks.
	if _, err := w.mem.WriteAt(afterX[:swReserved], int64(fp)); err != nil {
		return fmt.Errorf("writing the thread's signal frame: %w", err)
	}
	if _, err := w.mem.WriteAt(frameBytes(afterX, fsz), int64(fp+fxsaveSize)); err != nil {
		return fmt.Errorf("writing the thread's signal frame: %w", err)
	}
	if len(old) == 0 {
		// An XSAVE that changed nothing watched.
		return nil
	}
	rec := agent.Record{Tid: q.Tid, Width: uint32(len(old)), PC: regs.Rip, Addr: lo, GRegs: frameG}
	var o, nv [8]byte
	copy(o[:], old)
	copy(nv[:], nw)
	rec.Old, rec.New = binary.LittleEndian.Uint64(o[:]), binary.LittleEndian.Uint64(nv[:])
	_, _ = w.mem.ReadAt(rec.Stack[:], int64(rec.StackAddr()))
	s.AppendWrite(&rec, old, nw, !exact)
	return nil
}

// opener gives armed pages their own protection for a step, by calls its
// thread makes (from the agent's code, which the target's filter lets
// through), keeping each page's bytes from before.
type opener struct {
	w      *Watch
	t      *tracer.Thread
	before map[uint64][]byte // armed page opened: its bytes before the step
	opened []opened
}

// opened is an armed page an opener gave its own protection.
type opened struct {
	page uint64
	prot int
}

// open opens the armed pages of [lo, hi) not open yet, and says how many.
func (op *opener) open(lo, hi uint64) (int, error) {
	a := op.w.in.Shared.Area()
	n := 0
	for pg := lo &^ (pageSize - 1); pg < hi; pg += pageSize {
		if op.before[pg] != nil {
			continue
		}
		for i := range min(int(a.NPages), agent.Pages) {
			if a.PageList[i] != pg || a.Prots[i]&(agent.Disarmed|agent.Dropped) != 0 {
				continue
			}
			b := make([]byte, pageSize)
			if _, err := op.w.mem.ReadAt(b, int64(pg)); err != nil {
				return n, fmt.Errorf("reading a watched page: %w", err)
			}
			prot := int(a.Prots[i] & 0xffffffff)
			if err := op.t.Mprotect(pg, pageSize, prot); err != nil {
				return n, err
			}
			op.before[pg] = b
			op.opened = append(op.opened, opened{pg, prot})
			n++
		}
	}
	return n, nil
}

// step opens the armed pages of [lo, hi) and single-steps the store from
// the registers regs and the FPU state x (a signal frame's), from saved
// otherwise (its segment registers and bases), and returns what the step
// left. An armed page it faults on is opened too, and the store goes on
// from its fault, as the CPU restarts a store that faulted.
func (op *opener) step(lo, hi uint64, saved, regs *unix.PtraceRegs, x []byte) (after unix.PtraceRegs, afterX []byte, err error) {
	if _, err := op.open(lo, hi); err != nil {
		return after, nil, err
	}
	t := op.t
	sr := *saved
	sr.R8, sr.R9, sr.R10, sr.R11, sr.R12, sr.R13, sr.R14, sr.R15 = regs.R8, regs.R9, regs.R10, regs.R11, regs.R12, regs.R13, regs.R14, regs.R15
	sr.Rdi, sr.Rsi, sr.Rbp, sr.Rbx, sr.Rdx, sr.Rax, sr.Rcx, sr.Rsp = regs.Rdi, regs.Rsi, regs.Rbp, regs.Rbx, regs.Rdx, regs.Rax, regs.Rcx, regs.Rsp
	sr.Rip, sr.Eflags = regs.Rip, regs.Eflags
	// Not in a system call: nothing for the kernel to restart.
	sr.Orig_rax = ^uint64(0)
	if err := t.SetXState(x); err != nil {
		return after, nil, err
	}
	if err := t.SetRegs(&sr); err != nil {
		return after, nil, err
	}
	// A rep-prefixed store steps one iteration at a time.
	for range maxSteps {
		res, err := t.Step()
		if err != nil {
			return after, nil, err
		}
		if !res.Done {
			if res.Sig != int(unix.SIGSEGV) || len(op.opened) >= maxOpened {
				return after, nil, fmt.Errorf("it faulted (signal %d)", res.Sig)
			}
			a := res.Info.Addr()
			if n, err := op.open(a, a+1); err != nil || n == 0 {
				return after, nil, fmt.Errorf("it faulted (signal %d at %#x)", res.Sig, a)
			}
			continue
		}
		if err := t.Regs(&after); err != nil {
			return after, nil, err
		}
		if after.Rip != sr.Rip {
			afterX = make([]byte, len(x))
			n, err := t.XState(afterX)
			if err != nil {
				return after, nil, err
			}
			if n != len(x) {
				return after, nil, errors.New("the FPU state changed size")
			}
			return after, afterX, nil
		}
	}
	return after, nil, errors.New("it did not end")
}

// changed is the span of the opened pages' bytes the step changed: where
// it starts, and its bytes before and after (those of the pages between
// that were not opened, which are no region's, read once for both).
func (op *opener) changed() (lo uint64, old, nw []byte, err error) {
	now := map[uint64][]byte{}
	var hi uint64
	lo = ^uint64(0)
	for pg, b := range op.before {
		cur := make([]byte, pageSize)
		if _, err := op.w.mem.ReadAt(cur, int64(pg)); err != nil {
			return 0, nil, nil, fmt.Errorf("reading what it wrote: %w", err)
		}
		now[pg] = cur
		for i := range b {
			if b[i] != cur[i] {
				lo, hi = min(lo, pg+uint64(i)), max(hi, pg+uint64(i)+1)
			}
		}
	}
	if hi == 0 {
		return 0, nil, nil, nil
	}
	old, nw = make([]byte, hi-lo), make([]byte, hi-lo)
	if _, err := op.w.mem.ReadAt(nw, int64(lo)); err != nil {
		return 0, nil, nil, fmt.Errorf("reading what it wrote: %w", err)
	}
	copy(old, nw)
	for pg, b := range op.before {
		a, e := max(lo, pg), min(hi, pg+pageSize)
		if a < e {
			copy(old[a-lo:e-lo], b[a-pg:e-pg])
			copy(nw[a-lo:e-lo], now[pg][a-pg:e-pg])
		}
	}
	return lo, old, nw, nil
}

// close gives the opened pages back their armed protection.
func (op *opener) close() error {
	var err error
	for _, o := range op.opened {
		if perr := op.t.Mprotect(o.page, pageSize, o.prot&^unix.PROT_WRITE); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

// untrace lets the process go again after Retrace: the signals that
// stopped a thread meanwhile are delivered as it goes.
func (w *Watch) untrace() error {
	stops, err := w.p.DrainQueue()
	for _, st := range stops {
		if st.Kind == tracer.StopSignal && st.Thread != nil {
			st.Thread.Defer(st.Info)
		}
	}
	if uerr := w.p.Untrace(); uerr != nil && err == nil {
		err = uerr
	}
	return err
}

// The XSAVE image: the FXSAVE area, whose bytes 464-511 the kernel keeps
// for software (a signal frame's say how big its image is), then the
// XSAVE header and the components.
const (
	fxsaveSize = 512
	swReserved = 464
	// xstateMax bounds ptrace's XSAVE image (AMX's tiles included).
	xstateMax = 16 << 10
	// maxSteps bounds the iterations of a rep store stepped.
	maxSteps = 1 << 16
	// maxOpened bounds the armed pages one store may write (an XSAVE
	// of every state component AMX's tiles included: 3 pages).
	maxOpened = 8
	// sigactionOff is where, in the token's page, the SIGTRAP action is
	// kept while a step runs.
	sigactionOff = 64
	// fpMagic1 marks a signal frame's XSAVE image (FP_XSTATE_MAGIC1).
	fpMagic1 = 0x46505853
)

// frameXState reads the XSAVE image of the signal frame at fp, and returns
// it in ptrace's layout (xs is ptrace's image of the thread now), with its
// own size. The two share a layout (the standard, not the compacted
// form), but a frame may be shorter: the kernel leaves out of signal
// frames the state a process has not asked for (AMX's tiles, 8 KiB,
// without arch_prctl(ARCH_REQ_XCOMP_PERM)), which ptrace shows all the
// same. What the frame has not is in its initial state (XSTATE_BV says
// so); ptrace's own software bytes stay.
func (w *Watch) frameXState(fp uint64, xs []byte) ([]byte, int, error) {
	var head [fxsaveSize]byte
	if _, err := w.mem.ReadAt(head[:], int64(fp)); err != nil {
		return nil, 0, fmt.Errorf("reading its signal frame's FPU state: %w", err)
	}
	fsz := frameXSize(head[:])
	if fsz < fxsaveSize+64 || fsz > len(xs) { // the legacy area, then the XSAVE header
		return nil, 0, fmt.Errorf("its signal frame's FPU state has %d bytes, ptrace's %d", fsz, len(xs))
	}
	x := append([]byte(nil), xs...)
	if _, err := w.mem.ReadAt(x[:fsz], int64(fp)); err != nil {
		return nil, 0, fmt.Errorf("reading its signal frame's FPU state: %w", err)
	}
	copy(x[swReserved:fxsaveSize], xs[swReserved:fxsaveSize])
	return x, fsz, nil
}

// frameBytes is what goes back into a signal frame of fsz bytes of XSAVE
// image from x (ptrace's layout), past its legacy area: the header and the
// components the frame has room for, XSTATE_BV cut to those.
func frameBytes(x []byte, fsz int) []byte {
	b := append([]byte(nil), x[fxsaveSize:fsz]...)
	if fsz < len(x) {
		bv := binary.LittleEndian.Uint64(b)
		for i := 2; i < 64; i++ {
			off, size, ok := xsave.Component(i)
			if ok && off+size > fsz || !ok && i >= xsaveKnown {
				bv &^= 1 << i
			}
		}
		binary.LittleEndian.PutUint64(b, bv)
	}
	return b
}

// xsaveKnown: package xsave knows the components below it; one above is
// not in a frame shorter than ptrace's image.
const xsaveKnown = 19

// frameXSize is the size of a signal frame's XSAVE image, from its
// software bytes; an FXSAVE image only: 512.
func frameXSize(x []byte) int {
	if len(x) < fxsaveSize || binary.LittleEndian.Uint32(x[swReserved:]) != fpMagic1 {
		return fxsaveSize
	}
	return int(binary.LittleEndian.Uint32(x[swReserved+16:]))
}
