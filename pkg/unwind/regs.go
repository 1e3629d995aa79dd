package unwind

import "golang.org/x/sys/unix"

// DWARF register numbers for x86-64, from the psABI's "DWARF Register
// Number Mapping". Column 16 is the return address column: in a frame's
// Regs it holds that frame's PC.
const (
	regRAX = 0
	regRDX = 1
	regRCX = 2
	regRBX = 3
	regRSI = 4
	regRDI = 5
	regRBP = 6
	regRSP = 7
	regR8  = 8
	regR15 = 15
	regRIP = 16

	numRegs = 17
)

// Regs holds the x86-64 general registers in DWARF numbering: 0 rax, 1 rdx,
// 2 rcx, 3 rbx, 4 rsi, 5 rdi, 6 rbp, 7 rsp, 8..15 r8..r15, and 16 rip, the
// return address column.
type Regs [numRegs]uint64

// RegsFromPtrace converts registers as PTRACE_GETREGS returns them.
func RegsFromPtrace(r *unix.PtraceRegs) Regs {
	return Regs{
		regRAX: r.Rax, regRDX: r.Rdx, regRCX: r.Rcx, regRBX: r.Rbx,
		regRSI: r.Rsi, regRDI: r.Rdi, regRBP: r.Rbp, regRSP: r.Rsp,
		8: r.R8, 9: r.R9, 10: r.R10, 11: r.R11,
		12: r.R12, 13: r.R13, 14: r.R14, 15: r.R15,
		regRIP: r.Rip,
	}
}

// RegSet is a set of DWARF register numbers, bit i for register i: in a
// [Frame], the registers whose values are known.
type RegSet uint32

// AllRegs holds every register of a Regs.
const AllRegs RegSet = 1<<numRegs - 1

// Has reports whether register r is in the set.
func (s RegSet) Has(r uint64) bool { return r < numRegs && s&(1<<r) != 0 }

// calleeSaved are the registers the psABI has a function preserve for its
// caller (rbx, rbp, r12-r15), and rsp. Where the CFI has no rule for one,
// the caller's value is the callee's. Every other register is the callee's
// to clobber (rax, rcx, rdx, rsi, rdi, r8-r11): the caller's value is lost
// unless the CFI says where it is.
const calleeSaved RegSet = 1<<regRBX | 1<<regRBP | 1<<regRSP | 1<<12 | 1<<13 | 1<<14 | 1<<regR15

// only returns r with the registers outside s zeroed.
func (r Regs) only(s RegSet) Regs {
	for i := range r {
		if !s.Has(uint64(i)) {
			r[i] = 0
		}
	}
	return r
}
