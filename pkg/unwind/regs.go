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

// regMask is a set of DWARF registers: those whose value in a frame is known.
type regMask uint32

const allRegs regMask = 1<<numRegs - 1

func (m regMask) has(r uint64) bool { return r < numRegs && m&(1<<r) != 0 }
