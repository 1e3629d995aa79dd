package tracer

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SigMask reads the thread's blocked-signal mask (bit n-1 for signal n).
func (t *Thread) SigMask() (uint64, error) {
	var m uint64
	if err := ptracePtr(unix.PTRACE_GETSIGMASK, t.Tid, 8, unsafe.Pointer(&m)); err != nil {
		return 0, fmt.Errorf("PTRACE_GETSIGMASK %d: %w", t.Tid, err)
	}
	return m, nil
}

// SetSigMask writes the thread's blocked-signal mask.
func (t *Thread) SetSigMask(m uint64) error {
	if err := ptracePtr(unix.PTRACE_SETSIGMASK, t.Tid, 8, unsafe.Pointer(&m)); err != nil {
		return fmt.Errorf("PTRACE_SETSIGMASK %d: %w", t.Tid, err)
	}
	return nil
}

// Catches reports whether the process has a handler for signal sig. A
// standard signal is looked up in field 34 of /proc/PID/stat, which costs
// half of reading SigCgt from /proc/PID/status; that field holds signals 1
// to 31 only, so a real-time one is looked up in SigCgt.
func (p *Process) Catches(sig int) (bool, error) {
	if sig < 1 || sig > 64 {
		return false, fmt.Errorf("signal %d: out of range", sig)
	}
	if sig < sigRTMin {
		caught, _, err := p.SignalDispositions()
		return caught&(1<<(sig-1)) != 0, err
	}
	caught, err := statusMask(fmt.Sprintf("/proc/%d/status", p.Pid), "SigCgt")
	return caught&(1<<(sig-1)) != 0, err
}

// statusMask reads a signal mask (SigCgt, SigBlk, ...) from a status file
// of /proc.
func statusMask(path, key string) (uint64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return 0, ErrThreadGone
	}
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, fmt.Errorf("no %s in %s", key, path)
}

// SignalDispositions reads which of the standard signals (1 to 31) the
// process catches (a handler) and which it ignores (SIG_IGN), from
// /proc/PID/stat's sigcatch and sigignore; the rest are SIG_DFL.
func (p *Process) SignalDispositions() (caught, ignored uint64, err error) {
	if p.statusFile == nil {
		f, err := os.Open(fmt.Sprintf("/proc/%d/stat", p.Pid))
		if err != nil {
			return 0, 0, err
		}
		p.statusFile = f
	}
	var buf [1024]byte
	n, err := p.statusFile.ReadAt(buf[:], 0)
	if n == 0 && err != nil {
		return 0, 0, err
	}
	s := string(buf[:n])
	// The command name (field 2) may hold spaces: count from its ')'.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", p.Pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3; sigignore is field 33, sigcatch 34.
	if len(f) < 32 {
		return 0, 0, fmt.Errorf("short /proc/%d/stat", p.Pid)
	}
	if ignored, err = strconv.ParseUint(f[30], 10, 64); err != nil {
		return 0, 0, err
	}
	caught, err = strconv.ParseUint(f[31], 10, 64)
	return caught, ignored, err
}

// maskWaits are the calls that wait under a signal mask of their own and
// put the thread's back when they return (the kernel's
// TIF_RESTORE_SIGMASK).
var maskWaits = map[uint64]bool{
	unix.SYS_RT_SIGSUSPEND: true, unix.SYS_PPOLL: true, unix.SYS_PSELECT6: true,
	unix.SYS_EPOLL_PWAIT: true, unix.SYS_EPOLL_PWAIT2: true, unix.SYS_IO_PGETEVENTS: true,
}

// WaitMask tells, at a signal-delivery-stop (regs the thread's), whether
// the signal interrupted a call waiting under a mask of its own
// (sigsuspend, ppoll, pselect, epoll_pwait) that differs from the
// thread's: then during is the call's mask, under which the kernel
// delivers the signal and runs its handler, and own the thread's, which the
// handler's frame saves for its return.
//
// The kernel puts the thread's own mask back as soon as the thread leaves
// the kernel with no signal delivered, which every syscall injected or
// instruction stepped at this stop does: the signal delivered after that
// may be blocked (the kernel queues it again and restarts the call, which
// takes it again: a loop), or its handler runs with the wrong mask, and
// the signals the kernel would deliver right after it stay blocked. So a
// caller that runs anything in the thread at such a stop calls WaitMask
// first, then, before delivering the signal, SetSigMask(during), and once
// the frame is built (StepSignal) stores own into it.
func (t *Thread) WaitMask(regs *unix.PtraceRegs) (own, during uint64, ok bool, err error) {
	if !maskWaits[regs.Orig_rax] {
		return 0, 0, false, nil
	}
	// With the call's mask in place, PTRACE_GETSIGMASK answers the one
	// to put back; the mask in force is in the task's status.
	if own, err = t.SigMask(); err != nil {
		return 0, 0, false, err
	}
	during, err = statusMask(fmt.Sprintf("/proc/%d/task/%d/status", t.p.Pid, t.Tid), "SigBlk")
	return own, during, err == nil && own != during, err
}
