package tracer

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// offsetof(struct user, u_debugreg) on x86-64.
const debugRegOffset = 848

// DebugReg reads debug register i (0-7) of a stopped thread: one
// PTRACE_PEEKUSR (the kernel stores the word at data).
func (t *Thread) DebugReg(i int) (uint64, error) {
	v, err := ptracePeekWord(unix.PTRACE_PEEKUSR, t.Tid, uintptr(debugRegOffset+8*i))
	if err != nil {
		return 0, fmt.Errorf("reading DR%d of %d: %w", i, t.Tid, err)
	}
	return v, nil
}

// SetDebugReg writes debug register i (0-3 addresses, 6 status, 7 control)
// of a stopped thread. The kernel validates addresses and DR7 bits. One
// PTRACE_POKEUSR: unix.PtracePokeUser reads the word first, for the bytes
// of a write shorter than a word (two system calls for every debug
// register set).
func (t *Thread) SetDebugReg(i int, v uint64) error {
	if err := failPoint(fmt.Sprintf("writing DR%d of %d", i, t.Tid)); err != nil {
		return err
	}
	if err := ptraceRaw(unix.PTRACE_POKEUSR, t.Tid, uintptr(debugRegOffset+8*i), uintptr(v)); err != nil {
		return fmt.Errorf("writing DR%d of %d: %w", i, t.Tid, err)
	}
	return nil
}
