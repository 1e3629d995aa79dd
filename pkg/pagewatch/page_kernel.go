package pagewatch

import (
	"fmt"
	"sort"

	"github.com/memtrap/memtrap/pkg/sysout"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// touchesArmed reports whether [addr, addr+n) has a byte on an armed page.
func (e *pageEngine) touchesArmed(addr, n uint64) bool {
	if n == 0 || addr+n < addr {
		return false
	}
	for a := pageDown(addr); a < addr+n; a += pageSize {
		if e.armedPage(a) != nil {
			return true
		}
	}
	return false
}

// syscallEntry bounces the outputs of a call that would write into an
// armed page. It returns with the thread resumed.
func (e *pageEngine) syscallEntry(t *tracer.Thread, si tracer.SyscallInfo) error {
	w := e.w
	if _, ok := memoryCalls[si.Nr]; ok {
		if done, err := e.memoryCall(t, si); done || err != nil {
			return err
		}
		return t.Resume(0)
	}
	if si.Nr == unix.SYS_SIGALTSTACK && si.Args[0] != 0 {
		delete(e.alt, t) // a new alternate stack: ask again (altStack)
	}
	if !w.followsWrites() {
		return t.Resume(0)
	}
	if vs, ok := sysout.LookupVec(si.Nr); ok {
		return e.vecEntry(t, si, vs)
	}
	spec, ok := sysout.Lookup(si.Nr)
	if !ok {
		return t.Resume(0)
	}
	var call *kcall
	for _, o := range spec.Outputs(&si.Args, w.p) {
		ptr, n := o.Addr, o.Size
		if ptr == 0 || !e.touchesArmed(ptr, n) {
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

// syscallExit settles a bounced call at its exit: the kernel's bytes go
// where the target asked and are reported, and the argument registers get
// their values back (so a restarted call writes to the real place again).
func (e *pageEngine) syscallExit(t *tracer.Thread, call *kcall) error {
	w := e.w
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

// memoryCall handles the target's own mprotect/munmap/mremap/madvise/mmap
// over watched pages: the call runs with the other threads stopped, and at
// its exit the books follow. done means the thread has been resumed.
func (e *pageEngine) memoryCall(t *tracer.Thread, si tracer.SyscallInfo) (bool, error) {
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
	for pa := range e.pages {
		if pa >= lo && pa < hi {
			hit = append(hit, pa)
		}
	}
	if len(hit) == 0 {
		return false, nil
	}
	sort.Slice(hit, func(i, j int) bool { return hit[i] < hit[j] })
	w := e.w
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
				pg := e.pages[pa]
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
			e.dropPages(hit, fmt.Sprintf("%s(2)", map[int]string{unix.SYS_MUNMAP: "munmap", unix.SYS_MREMAP: "mremap", unix.SYS_MMAP: "mmap"}[si.Nr]))
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
	w.SyncGuard()
	if err := p.ResumeOthers(); err != nil {
		return false, err
	}
	return true, t.Resume(0)
}

// dropPages forgets pages the target unmapped, and says which regions lost
// memory.
func (e *pageEngine) dropPages(addrs []uint64, how string) {
	w := e.w
	lost := map[*Region]bool{}
	for _, pa := range addrs {
		if pg := e.pages[pa]; pg != nil {
			for _, r := range pg.regions {
				lost[r] = true
			}
			delete(e.pages, pa)
		}
	}
	for _, r := range w.regions {
		if lost[r] {
			w.unmapped(r, how)
		}
	}
}
