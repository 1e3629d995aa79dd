package pagewatch

import (
	"errors"
	"fmt"

	"github.com/memtrap/memtrap/pkg/sysout"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// System calls followed (see the package doc, "Kernel writes"): what both
// engines share. The page engine's bounces are in page_kernel.go and
// kvec.go, the hw engine's following in hw.go.

// maxBounce caps one bounced buffer; a larger one is left to fail as it
// would have (EFAULT) and said so in a note.
const maxBounce = 1 << 20

// scratchSize is the target-side area bounce buffers come from.
const scratchSize = 4 << 20

// bounce is one redirected output buffer of a call in progress.
type bounce struct {
	arg     int
	real    uint64
	scratch uint64
	before  []byte
}

// kcall is a syscall of one thread between its entry and exit.
type kcall struct {
	nr      int
	name    string
	regs    unix.PtraceRegs // at entry
	bounces []bounce
	signal  int // not a call: the delivery of this signal (sigframe.go)
	// outs: the output buffers over debug-register regions (hw engine),
	// which the kernel writes directly; compared with the shadow at exit.
	outs []span
}

// redirected says whether the call runs with pointers into the scratch
// area: its thread cannot be let go before the call's exit.
func (c *kcall) redirected() bool { return len(c.bounces) > 0 }

var errScratchFull = errors.New("memtrap's scratch area in the target is full")

// mapScratch maps memtrap's scratch area in the target (t stopped at a
// clean instruction boundary): bounce buffers, and room for a sigaction.
func (w *Watch) mapScratch(t *tracer.Thread) error {
	addr, err := t.Syscall(unix.SYS_MMAP, 0, scratchSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE, ^uintptr(0), 0)
	if err != nil {
		return fmt.Errorf("mapping memtrap's scratch area in the target: %w", err)
	}
	w.scratch = sysout.NewScratch(uint64(addr), scratchSize)
	w.segv.buf, _ = w.scratch.Alloc(sigactSize)
	w.calls = map[int]*kcall{}
	return nil
}

// dropScratch unmaps the scratch area (t stopped at a clean boundary).
func (w *Watch) dropScratch(t *tracer.Thread) error {
	if w.scratch == nil {
		return nil
	}
	w.p.TraceSyscalls(false)
	w.noteIgnored() // it may have started ignoring SIGTRAP since arming
	_, err := t.Syscall(unix.SYS_MUNMAP, uintptr(w.scratch.Base), scratchSize)
	w.scratch = nil
	w.segv = segvGuard{}
	return err
}

func argReg(r *unix.PtraceRegs, i int) *uint64 {
	switch i {
	case 0:
		return &r.Rdi
	case 1:
		return &r.Rsi
	case 2:
		return &r.Rdx
	case 3:
		return &r.R10
	case 4:
		return &r.R8
	}
	return &r.R9
}

// syscallEntry decides what a call about to run needs: what is common to
// both engines here, the rest in the engine's. It returns with the thread
// resumed.
func (w *Watch) syscallEntry(t *tracer.Thread, si tracer.SyscallInfo) error {
	if w.p.InStub(si.IP - 2) {
		// memtrap's own call on resume, stopped by a filter from before
		// its code was there: it runs as it is.
		return t.Resume(0)
	}
	if si.Nr == unix.SYS_PTRACE {
		done, err := w.ptraceCall(t, si)
		if done || err != nil {
			return err
		}
		return t.Resume(0)
	}
	w.callBooks(si)
	return w.eng.syscallEntry(t, si)
}

// callBooks keeps the books of a call that both engines keep.
func (w *Watch) callBooks(si tracer.SyscallInfo) {
	if si.Nr == unix.SYS_RT_SIGACTION {
		w.sigaction(si.Args)
	}
	if (si.Nr == unix.SYS_IO_URING_SETUP || si.Nr == unix.SYS_IO_URING_ENTER) && !w.rootWatch().saidIOURing {
		// Its requests name buffers in shared rings, and the kernel
		// may run them with no system call at all (SQPOLL): nothing
		// memtrap can bounce. Say so, once.
		w.rootWatch().saidIOURing = true
		w.note(fmt.Sprintf("process %d uses io_uring, which memtrap does not follow: an io_uring request writing into a watched page is not reported, and may fail with EFAULT", w.p.Pid))
	}
}

// followsWrites says whether calls writing watched memory are followed.
func (w *Watch) followsWrites() bool {
	return w.scratch != nil && w.opts.KernelWrites
}

// resumeToExit resumes a thread at a syscall entry so that the call's exit
// stops too.
func resumeToExit(t *tracer.Thread, si tracer.SyscallInfo) error {
	if si.Seccomp {
		return t.ResumeSyscall()
	}
	return t.Resume(0) // every call stops at its exit anyway
}

// syscallExit finishes a bounced call and resumes the thread.
func (w *Watch) syscallExit(t *tracer.Thread) error {
	if err := w.finishCall(t); err != nil {
		return err
	}
	return t.Resume(0)
}

// finishCall settles a followed call at its exit (the engine's part), and
// leaves the thread stopped.
func (w *Watch) finishCall(t *tracer.Thread) error {
	call := w.calls[t.Tid]
	if call == nil {
		return nil
	}
	delete(w.calls, t.Tid)
	return w.eng.syscallExit(t, call)
}

// reportKernel reports the watched bytes a syscall changed in [addr, +len).
func (w *Watch) reportKernel(t *tracer.Thread, call *kcall, addr uint64, before, after []byte) error {
	for _, r := range w.regions {
		s, ok := (span{addr, addr + uint64(len(before))}).intersect(span{r.Addr, r.End()})
		if !ok {
			continue
		}
		var lo, hi uint64 = s.hi, s.lo
		for x := s.lo; x < s.hi; x++ {
			if before[x-addr] != after[x-addr] {
				lo, hi = min(lo, x), max(hi, x+1)
			}
		}
		if lo >= hi {
			continue
		}
		wr := &Write{
			Pid: w.p.Pid, Tid: t.Tid, Region: r, Offset: lo - r.Addr, Addr: lo, Size: hi - lo,
			Old: append([]byte(nil), before[lo-addr:hi-addr]...), New: append([]byte(nil), after[lo-addr:hi-addr]...),
			PC: call.regs.Rip, Exact: true, Regs: call.regs, Thread: t, Syscall: call.name, Signal: call.signal,
		}
		if err := w.emit(wr, nil); err != nil {
			return err
		}
	}
	return nil
}

func (w *Watch) unmapped(r *Region, how string) {
	if w.opts.OnUnmap != nil {
		w.opts.OnUnmap(r, how)
	}
}
