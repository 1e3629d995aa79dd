package unwind

import (
	"bytes"
	"encoding/binary"
)

// sigreturnCode is glibc's __restore_rt, the trampoline a signal handler
// returns to: "mov $15, %rax; syscall" (15 is rt_sigreturn). gdb's
// amd64_linux_sigtramp_p recognises signal frames by the same bytes.
var sigreturnCode = [...]byte{0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05}

// sigreturnSyscallOffset is where the syscall instruction starts in it: a
// thread stopped there (frame 0) is still in the trampoline.
const sigreturnSyscallOffset = 7

// The kernel's struct rt_sigframe on x86-64 is { char *pretcode; struct
// ucontext uc; struct siginfo info; }. The handler's return pops
// pretcode, so in the trampoline rsp points at uc. uc_mcontext, a struct
// sigcontext, follows uc_flags (8), uc_link (8) and uc_stack (24 bytes),
// and begins with the general registers in this order.
const (
	ucMcontextOffset = 40
	sigframeRegsSize = 17 * 8
)

// sigcontextDWARF maps the general registers of struct sigcontext (r8..r15,
// rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip) to DWARF numbers.
var sigcontextDWARF = [17]uint8{
	8, 9, 10, 11, 12, 13, 14, 15,
	regRDI, regRSI, regRBP, regRBX, regRDX, regRAX, regRCX, regRSP, regRIP,
}

// isSigtramp reports whether pc is in the signal trampoline: at its start,
// or, for an exact PC, at its syscall.
func (w *walker) isSigtramp(pc uint64, exact bool) bool {
	if w.u.noSigtrampBytes {
		return false
	}
	p := w.buf[:len(sigreturnCode)]
	if w.mem.ReadMemory(pc, p) == nil && bytes.Equal(p, sigreturnCode[:]) {
		return true
	}
	if exact && pc >= sigreturnSyscallOffset &&
		w.mem.ReadMemory(pc-sigreturnSyscallOffset, p) == nil && bytes.Equal(p, sigreturnCode[:]) {
		return true
	}
	return false
}

// sigframe recovers the interrupted registers from the rt_sigframe at rsp.
// The frame's CFA is reported as the interrupted rsp, which is what glibc's
// CFI for __restore_rt computes too.
func (w *walker) sigframe(cur *Regs, valid RegSet) stepResult {
	res := stepResult{sigtramp: true}
	if !valid.Has(regRSP) {
		return res
	}
	p := w.buf[:sigframeRegsSize]
	if err := w.mem.ReadMemory(cur[regRSP]+ucMcontextOffset, p); err != nil {
		return res
	}
	for i, reg := range sigcontextDWARF {
		res.next[reg] = binary.LittleEndian.Uint64(p[8*i:])
	}
	res.valid = AllRegs
	res.cfa = res.next[regRSP]
	res.signal = true
	res.method = "sigframe"
	res.ok = true
	return res
}
