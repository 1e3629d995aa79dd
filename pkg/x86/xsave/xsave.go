// Package xsave says where a thread's vector registers lie in the two
// images Linux gives a tracer of its FPU state, so that the code reading
// them (pkg/tracer) and the code using them (pkg/x86/store) agree on one
// layout.
//
// PTRACE_GETFPREGS gives the 512-byte FXSAVE image: the x87/MMX registers
// ST0-7/MM0-7 at MMOffset+16*i (MMi in the low 8 bytes) and XMM0-15 at
// XMMOffset+16*i. It is the cheaper read, enough for SSE and MMX.
//
// PTRACE_GETREGSET with NT_X86_XSTATE gives the XSAVE image in the standard
// (uncompacted) format, whatever format the kernel keeps internally: the
// same 512 bytes first, then the XSAVE header, whose first 8 bytes
// (XSTATE_BV, at BVOffset) say which components are not in their initial
// (all-zero) state, then each component at the offset CPUID leaf 0xD
// reports for it (see [Component]): YMM0-15's upper halves (YMMHi128,
// usually at 576), the opmask registers (Opmask), ZMM0-15's upper 256 bits
// (ZMMHi256) and ZMM16-31 whole (Hi16ZMM).
//
// The offsets of the components are a property of the CPU: they are read
// with CPUID once per process and never change, so any goroutine may ask.
package xsave

import "sync"

// Offsets in the FXSAVE image, which is also the start of the XSAVE image.
const (
	MMOffset  = 32  // ST0-7/MM0-7, 16 bytes each
	XMMOffset = 160 // XMM0-15, 16 bytes each
)

// BVOffset is where XSTATE_BV lies in the XSAVE image: just after the
// FXSAVE area, at the start of the XSAVE header.
const BVOffset = 512

// XSAVE state components memtrap reads.
const (
	YMMHi128 = 2 // upper 128 bits of YMM0-15, 16 bytes each
	Opmask   = 5 // k0-k7, 8 bytes each
	ZMMHi256 = 6 // upper 256 bits of ZMM0-15, 32 bytes each
	Hi16ZMM  = 7 // ZMM16-31, 64 bytes each
)

// Component returns where XSAVE state component i lies in the standard
// image: its offset and size, from CPUID leaf 0xD sub-leaf i. ok is false
// if this CPU has no such component.
func Component(i int) (offset, size int, ok bool) {
	if i < 2 || i >= len(cpuLayout().comp) {
		return 0, 0, false
	}
	c := cpuLayout().comp[i]
	return c.offset, c.size, c.size > 0
}

// Size is the size of the whole XSAVE image for the components the OS
// enabled (CPUID leaf 0xD sub-leaf 0, EBX).
func Size() int { return cpuLayout().size }

type component struct{ offset, size int }

type layout struct {
	size int
	comp [19]component // up to AMX's TILEDATA
}

// cpuLayout is a property of the CPU, read once.
var cpuLayout = sync.OnceValue(func() layout {
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
		l.comp[i] = component{offset: int(ebx), size: int(eax)}
	}
	return l
})

// cpuid executes CPUID (cpuid_amd64.s).
func cpuid(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)
