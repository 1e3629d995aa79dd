package tracer

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// Vector registers live in two kernel views of a thread's FPU state.
//
// PTRACE_GETFPREGS gives the 512-byte FXSAVE image: the x87/MMX registers
// ST0-7/MM0-7 at FXSaveMMOffset+16*i (MMi in the low 8 bytes) and XMM0-15 at
// FXSaveXMMOffset+16*i. It is the cheaper read, enough for SSE and MMX.
//
// PTRACE_GETREGSET with NT_X86_XSTATE gives the XSAVE image in the standard
// (uncompacted) format, whatever format the kernel keeps internally: the
// same 512 bytes first, then the XSAVE header, whose first 8 bytes
// (XSTATE_BV, at XStateBVOffset) say which components are not in their
// initial (all-zero) state, then each component at the offset CPUID leaf
// 0xD reports for it (see XSaveComponent): YMM0-15's upper halves
// (component 2, usually at 576), the opmask registers (5), ZMM0-15's upper
// 256 bits (6) and ZMM16-31 whole (7).

// Offsets in the FXSAVE image.
const (
	FXSaveMMOffset  = 32
	FXSaveXMMOffset = 160
	XStateBVOffset  = 512
)

// XSAVE state components memtrap reads.
const (
	XCompYMMHi128 = 2 // upper 128 bits of YMM0-15, 16 bytes each
	XCompOpmask   = 5 // k0-k7, 8 bytes each
	XCompZMMHi256 = 6 // upper 256 bits of ZMM0-15, 32 bytes each
	XCompHi16ZMM  = 7 // ZMM16-31, 64 bytes each
)

// FPRegs reads the thread's FXSAVE image (PTRACE_GETFPREGS).
//
// Precondition: the thread is stopped and the caller is on the ptrace
// thread.
func (t *Thread) FPRegs(out *[512]byte) error {
	if err := ptraceGetFPRegs(t.Tid, out); err != nil {
		if err == unix.ESRCH {
			return ErrThreadGone
		}
		return fmt.Errorf("PTRACE_GETFPREGS %d: %w", t.Tid, err)
	}
	return nil
}

// XState reads the thread's XSAVE image (PTRACE_GETREGSET, NT_X86_XSTATE)
// into buf and returns how many bytes the kernel filled: all of buf, or
// less if the image is shorter. A buffer that ends after the last component
// the caller needs saves copying the rest (AMX tiles, say).
//
// Precondition: the thread is stopped and the caller is on the ptrace
// thread.
func (t *Thread) XState(buf []byte) (int, error) {
	if len(buf) == 0 {
		return 0, errors.New("XState: empty buffer")
	}
	n, err := ptraceGetRegset(t.Tid, unix.NT_X86_XSTATE, buf)
	if err != nil {
		if err == unix.ESRCH {
			return 0, ErrThreadGone
		}
		return 0, fmt.Errorf("PTRACE_GETREGSET NT_X86_XSTATE %d: %w", t.Tid, err)
	}
	return n, nil
}

// XSaveComponent returns where XSAVE state component i lies in the image
// XState reads: its offset and size, from CPUID leaf 0xD sub-leaf i. ok is
// false if this CPU has no such component.
func XSaveComponent(i int) (offset, size int, ok bool) {
	if i < 2 || i >= len(xsaveLayout().comp) {
		return 0, 0, false
	}
	c := xsaveLayout().comp[i]
	return c.offset, c.size, c.size > 0
}

// XStateSize is the size of the whole XSAVE image for the components the
// OS enabled (CPUID leaf 0xD sub-leaf 0, EBX).
func XStateSize() int { return xsaveLayout().size }

type xcomp struct{ offset, size int }

type layout struct {
	size int
	comp [10]xcomp
}

// xsaveLayout is a property of the CPU, read once.
var xsaveLayout = sync.OnceValue(func() layout {
	var l layout
	if max, _, _, _ := cpuid(0, 0); max < 0xD {
		return l
	}
	if _, _, c, _ := cpuid(1, 0); c&(1<<27) == 0 { // OSXSAVE
		return l
	}
	_, ebx, _, _ := cpuid(0xD, 0)
	l.size = int(ebx)
	for i := 2; i < len(l.comp); i++ {
		eax, ebx, ecx, _ := cpuid(0xD, uint32(i))
		if ecx&1 != 0 {
			continue // a supervisor component: not in the user image
		}
		l.comp[i] = xcomp{offset: int(ebx), size: int(eax)}
	}
	return l
})

// cpuid executes CPUID (cpuid_amd64.s).
func cpuid(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)
