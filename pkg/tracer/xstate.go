package tracer

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// A thread's vector registers come in two kernel views, the FXSAVE image
// (FPRegs) and the XSAVE image (XState); pkg/x86/xsave says where each
// register lies in them.

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

// SetXState writes the thread's XSAVE image (PTRACE_SETREGSET,
// NT_X86_XSTATE) from buf, as XState read it.
//
// Precondition: as for XState.
func (t *Thread) SetXState(buf []byte) error {
	if err := ptraceSetRegset(t.Tid, unix.NT_X86_XSTATE, buf); err != nil {
		if err == unix.ESRCH {
			return ErrThreadGone
		}
		return fmt.Errorf("PTRACE_SETREGSET NT_X86_XSTATE %d: %w", t.Tid, err)
	}
	return nil
}
