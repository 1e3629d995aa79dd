package pagewatch

import (
	"encoding/binary"

	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"
)

// Emulator completes the simplest stores by doing them itself: it computes
// the bytes from the decoded instruction and the registers, writes them
// through /proc/PID/mem (which writes through the protection of private
// pages), and moves RIP past the instruction. One ptrace stop per write, no
// unprotect window, no other thread stopped.
//
// Everything else goes to Fallback (Stepper if nil): instructions outside
// the emulated set, LOCKed ones (their atomicity towards other threads is
// only kept with the world stopped), pages of shared mappings (a forced
// write does not reach them), and any store whose decoded address disagrees
// with the fault.
type Emulator struct {
	Fallback Completer
}

// Complete implements Completer.
func (e Emulator) Complete(w *Watch, f *Fault) (bool, error) {
	if b, ok := storeBytes(&f.Store, &f.Regs); ok && w.privatePages(f.Store.Addr, f.Store.Size) {
		if err := w.p.WriteMemory(f.Store.Addr, b); err == nil {
			regs := f.Regs
			regs.Rip += uint64(f.Store.Len)
			if err := f.Thread.SetRegs(&regs); err != nil {
				return false, err
			}
			return true, nil
		}
	}
	fb := e.Fallback
	if fb == nil {
		fb = Stepper{}
	}
	return fb.Complete(w, f)
}

// privatePages reports whether every armed page of [addr, addr+n) belongs
// to a private mapping.
func (w *Watch) privatePages(addr, n uint64) bool {
	for a := pageDown(addr); a < addr+n; a += pageSize {
		if pg := w.pages[a]; pg != nil && pg.shared {
			return false
		}
	}
	return true
}

// storeBytes returns the bytes a plain store writes, for the instructions
// the emulator handles: MOV and MOVNTI from a general register or an
// immediate.
func storeBytes(s *Store, regs *unix.PtraceRegs) ([]byte, bool) {
	if !s.Known || s.Rep || s.Size == 0 || s.Size > 8 {
		return nil, false
	}
	in := &s.Inst
	for _, p := range in.Prefix {
		if p == 0 {
			break
		}
		if p&0xFF == x86asm.PrefixLOCK&0xFF {
			return nil, false
		}
	}
	switch in.Op {
	case x86asm.MOV, x86asm.MOVNTI:
	default:
		return nil, false
	}
	if _, ok := in.Args[0].(x86asm.Mem); !ok {
		return nil, false
	}
	var v uint64
	switch src := in.Args[1].(type) {
	case x86asm.Reg:
		r, ok := regValue(src, regs)
		if !ok {
			return nil, false
		}
		v = r
	case x86asm.Imm:
		v = uint64(src)
	default:
		return nil, false
	}
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], v)
	return buf[:s.Size], true
}
