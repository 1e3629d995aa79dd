package pagewatch

import (
	"errors"
	"fmt"
	"sort"

	"github.com/memtrap/memtrap/pkg/sysout"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// Kernel writes. The kernel does not fault on a page memtrap write-protects:
// a syscall that writes there fails with EFAULT instead, which the target
// would notice. So while pages are armed every syscall stops at its entry
// (tracer.TraceSyscalls), and a call that would write into an armed page is
// bounced: its output pointer is pointed at a scratch buffer in the target,
// filled with the real bytes first; at the call's exit the bytes the kernel
// changed are copied to the real place (through the protection, like an
// emulated store) and reported as a write "by the kernel"; the argument
// register gets its value back. No page is ever unprotected, no other
// thread stopped, and a call that blocks (read on a pipe) blocks only its
// own thread.
//
// The target's own memory management (mprotect, munmap, mremap, madvise,
// mmap MAP_FIXED) over watched pages runs with the other threads stopped,
// and the books are brought up to date at its exit.

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
	_, err := t.Syscall(unix.SYS_MUNMAP, uintptr(w.scratch.Base), scratchSize)
	w.scratch = nil
	w.segv = segvGuard{}
	return err
}

// touchesArmed reports whether [addr, addr+n) has a byte on an armed page.
func (w *Watch) touchesArmed(addr, n uint64) bool {
	if n == 0 || addr+n < addr {
		return false
	}
	for a := pageDown(addr); a < addr+n; a += pageSize {
		if w.armedPage(a) != nil {
			return true
		}
	}
	return false
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

// syscallEntry decides what a call about to run needs. It returns with the
// thread resumed.
func (w *Watch) syscallEntry(t *tracer.Thread, si tracer.SyscallInfo) error {
	if _, ok := memoryCalls[si.Nr]; ok {
		memoryCall := w.memoryCall
		if w.slots != nil {
			memoryCall = w.hwMemoryCall
		}
		if done, err := memoryCall(t, si); done || err != nil {
			return err
		}
		return t.Resume(0)
	}
	if si.Nr == unix.SYS_RT_SIGACTION {
		w.sigaction(si.Args)
	}
	if si.Nr == unix.SYS_SIGALTSTACK && si.Args[0] != 0 {
		delete(w.alt, t) // a new alternate stack: ask again (altStack)
	}
	if (si.Nr == unix.SYS_IO_URING_SETUP || si.Nr == unix.SYS_IO_URING_ENTER) && !w.rootWatch().saidIOURing {
		// Its requests name buffers in shared rings, and the kernel
		// may run them with no system call at all (SQPOLL): nothing
		// memtrap can bounce. Say so, once.
		w.rootWatch().saidIOURing = true
		w.note(fmt.Sprintf("process %d uses io_uring, which memtrap does not follow: an io_uring request writing into a watched page is not reported, and may fail with EFAULT", w.p.Pid))
	}
	if w.scratch == nil || !w.opts.KernelWrites {
		return t.Resume(0)
	}
	if vs, ok := sysout.LookupVec(si.Nr); ok {
		if w.slots != nil {
			return w.hwFollow(t, si, vs.Name, w.vecOuts(si, vs))
		}
		return w.vecEntry(t, si, vs)
	}
	spec, ok := sysout.Lookup(si.Nr)
	if !ok {
		return t.Resume(0)
	}
	if w.slots != nil {
		return w.hwCallEntry(t, si, spec)
	}
	var call *kcall
	for _, o := range spec.Outputs(&si.Args, w.p) {
		ptr, n := o.Addr, o.Size
		if ptr == 0 || !w.touchesArmed(ptr, n) {
			continue
		}
		if call == nil {
			call = &kcall{nr: si.Nr, name: spec.Name}
			if err := t.Regs(&call.regs); err != nil {
				return err
			}
		}
		if n > maxBounce {
			w.note(fmt.Sprintf("%s(2) of %d bytes into watched memory at %#x is too large to follow; it fails with EFAULT as the kernel sees it", spec.Name, n, ptr))
			continue
		}
		before := make([]byte, n)
		if err := w.p.ReadMemory(ptr, before); err != nil {
			// Partly unmapped: the call fails as it would have.
			continue
		}
		s, ok := w.scratch.Alloc(n)
		if !ok {
			w.note(fmt.Sprintf("%s(2): scratch area full; the call fails with EFAULT", spec.Name))
			continue
		}
		if err := w.p.WriteMemory(s, before); err != nil {
			return err
		}
		call.bounces = append(call.bounces, bounce{arg: o.Arg, real: ptr, scratch: s, before: before})
	}
	if call == nil || len(call.bounces) == 0 {
		return t.Resume(0)
	}
	regs := call.regs
	for _, b := range call.bounces {
		*argReg(&regs, b.arg) = b.scratch
	}
	if err := t.SetRegs(&regs); err != nil {
		return err
	}
	w.calls[t.Tid] = call
	return resumeToExit(t, si)
}

// resumeToExit resumes a thread at a syscall entry so that the call's exit
// stops too.
func resumeToExit(t *tracer.Thread, si tracer.SyscallInfo) error {
	if si.Seccomp {
		return t.ResumeSyscall()
	}
	return t.Resume(0) // every call stops at its exit anyway
}

// hwCallEntry: on the hw engine the kernel writes watched memory directly
// (debug registers do not see it); a call whose output covers a region is
// followed to its exit, where the region is compared with its shadow.
func (w *Watch) hwCallEntry(t *tracer.Thread, si tracer.SyscallInfo, spec sysout.Call) error {
	var outs []span
	for _, o := range spec.Outputs(&si.Args, w.p) {
		if o.Size != 0 && o.End() > o.Addr {
			outs = append(outs, span{o.Addr, o.End()})
		}
	}
	return w.hwFollow(t, si, spec.Name, outs)
}

// hwFollow follows a call to its exit if one of outs covers a region.
func (w *Watch) hwFollow(t *tracer.Thread, si tracer.SyscallInfo, name string, outs []span) error {
	var call *kcall
	for _, o := range outs {
		for _, r := range w.regions {
			if _, ok := o.intersect(span{r.Addr, r.End()}); ok {
				if call == nil {
					call = &kcall{nr: si.Nr, name: name}
					if err := t.Regs(&call.regs); err != nil {
						return err
					}
				}
				call.outs = append(call.outs, o)
				break
			}
		}
	}
	if call == nil {
		return t.Resume(0)
	}
	w.calls[t.Tid] = call
	return resumeToExit(t, si)
}

// hwCallExit reports what a followed call changed in the regions.
func (w *Watch) hwCallExit(t *tracer.Thread, call *kcall) error {
	for _, r := range w.regions {
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
		if err := w.p.ReadMemory(r.Addr, now); err != nil {
			return err
		}
		old := w.shadow[r]
		w.shadow[r] = now
		if err := w.reportKernel(t, call, r.Addr, old, now); err != nil {
			return err
		}
	}
	return nil
}

// syscallExit finishes a bounced call and resumes the thread.
func (w *Watch) syscallExit(t *tracer.Thread) error {
	if err := w.finishCall(t); err != nil {
		return err
	}
	return t.Resume(0)
}

// finishCall settles a bounced call at its exit: the kernel's bytes go
// where the target asked and are reported, and the argument registers get
// their values back (so a restarted call writes to the real place again).
func (w *Watch) finishCall(t *tracer.Thread) error {
	call := w.calls[t.Tid]
	if call == nil {
		return nil
	}
	delete(w.calls, t.Tid)
	if call.outs != nil {
		return w.hwCallExit(t, call)
	}
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return err
	}
	for _, b := range call.bounces {
		after := make([]byte, len(b.before))
		err := w.p.ReadMemory(b.scratch, after)
		w.scratch.Release(b.scratch, uint64(len(b.before)))
		if err != nil {
			return err
		}
		// Only the bytes the kernel changed: another thread may have
		// stored to the real buffer meanwhile, and those stores stand.
		for i := 0; i < len(after); {
			if after[i] == b.before[i] {
				i++
				continue
			}
			j := i
			for j < len(after) && after[j] != b.before[j] {
				j++
			}
			if err := w.p.WriteMemory(b.real+uint64(i), after[i:j]); err != nil {
				return err
			}
			i = j
		}
		if err := w.reportKernel(t, call, b.real, b.before, after); err != nil {
			return err
		}
		if b.arg >= 0 {
			*argReg(&regs, b.arg) = *argReg(&call.regs, b.arg)
		}
	}
	return t.SetRegs(&regs)
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

// memoryCall handles the target's own mprotect/munmap/mremap/madvise/mmap
// over watched pages: the call runs with the other threads stopped, and at
// its exit the books follow. done means the thread has been resumed.
func (w *Watch) memoryCall(t *tracer.Thread, si tracer.SyscallInfo) (bool, error) {
	a := si.Args
	var lo, n uint64
	switch si.Nr {
	case unix.SYS_MMAP:
		if a[3]&(unix.MAP_FIXED|unix.MAP_FIXED_NOREPLACE) == 0 {
			return false, nil
		}
		lo, n = a[0], a[1]
	case unix.SYS_MREMAP:
		// The old range goes; with MREMAP_FIXED, so does what stood at
		// the new address: take the hull of both.
		lo, n = a[0], a[1]
		if a[3]&unix.MREMAP_FIXED != 0 {
			end := max(a[0]+a[1], a[4]+a[2])
			lo = min(a[0], a[4])
			n = end - lo
		}
	default:
		lo, n = a[0], a[1]
	}
	hi := pageUp(lo + n)
	lo = pageDown(lo)
	var hit []uint64
	for pa := range w.pages {
		if pa >= lo && pa < hi {
			hit = append(hit, pa)
		}
	}
	if len(hit) == 0 {
		return false, nil
	}
	sort.Slice(hit, func(i, j int) bool { return hit[i] < hit[j] })
	p := w.p
	if err := p.StopOthers(t); err != nil {
		return false, err
	}
	before := map[uint64][]byte{}
	if si.Nr == unix.SYS_MADVISE {
		for _, pa := range hit {
			b := make([]byte, pageSize)
			if p.ReadMemory(pa, b) == nil {
				before[pa] = b
			}
		}
	}
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return false, err
	}
	ret, err := t.FinishSyscall()
	if err != nil {
		return false, err
	}
	if ret >= 0 || si.Nr == unix.SYS_MMAP && ret < -4095 {
		switch si.Nr {
		case unix.SYS_MPROTECT, unix.SYS_PKEY_MPROTECT:
			prot := int(a[2])
			for _, pa := range hit {
				pg := w.pages[pa]
				pg.prot = prot
				pg.armed = false
				if prot&unix.PROT_WRITE != 0 {
					if err := t.Mprotect(pa, pageSize, prot&^unix.PROT_WRITE); err != nil {
						return false, err
					}
					pg.armed = true
				}
			}
		case unix.SYS_MUNMAP, unix.SYS_MREMAP, unix.SYS_MMAP:
			w.dropPages(hit, fmt.Sprintf("%s(2)", map[int]string{unix.SYS_MUNMAP: "munmap", unix.SYS_MREMAP: "mremap", unix.SYS_MMAP: "mmap"}[si.Nr]))
		case unix.SYS_MADVISE:
			for _, pa := range hit {
				b := before[pa]
				if b == nil {
					continue
				}
				now := make([]byte, pageSize)
				if p.ReadMemory(pa, now) != nil {
					continue
				}
				call := &kcall{name: "madvise", regs: regs}
				if err := w.reportKernel(t, call, pa, b, now); err != nil {
					return false, err
				}
			}
		}
	}
	if err := p.ResumeOthers(); err != nil {
		return false, err
	}
	return true, t.Resume(0)
}

// dropPages forgets pages the target unmapped, and says which regions lost
// memory.
func (w *Watch) dropPages(addrs []uint64, how string) {
	lost := map[*Region]bool{}
	for _, pa := range addrs {
		if pg := w.pages[pa]; pg != nil {
			for _, r := range pg.regions {
				lost[r] = true
			}
			delete(w.pages, pa)
		}
	}
	for _, r := range w.regions {
		if lost[r] {
			w.unmapped(r, how)
		}
	}
}

func (w *Watch) unmapped(r *Region, how string) {
	if w.opts.OnUnmap != nil {
		w.opts.OnUnmap(r, how)
	}
}
