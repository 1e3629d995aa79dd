package tracer

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SyscallInfo is a syscall-stop's view of the call (PTRACE_GET_SYSCALL_INFO).
type SyscallInfo struct {
	Entry bool // entry (Nr, Args) or exit (Ret)
	// Seccomp: an entry reported by the syscall filter. Resume with
	// ResumeSyscall to see the call's exit too; Resume lets it run on.
	Seccomp bool
	Nr      int
	Args    [6]uint64
	Ret     int64
	// IP: the address after the call's `syscall` instruction.
	IP uint64
}

func ptraceSyscallInfo(tid int) (SyscallInfo, error) {
	var buf [88]byte
	err := ptracePtr(unix.PTRACE_GET_SYSCALL_INFO, tid, uintptr(len(buf)), unsafe.Pointer(&buf[0]))
	if err != nil {
		return SyscallInfo{}, err
	}
	si := SyscallInfo{IP: binary.LittleEndian.Uint64(buf[8:])}
	switch buf[0] {
	case unix.PTRACE_SYSCALL_INFO_ENTRY, unix.PTRACE_SYSCALL_INFO_SECCOMP:
		si.Entry = true
		si.Nr = int(binary.LittleEndian.Uint64(buf[24:]))
		for i := range si.Args {
			si.Args[i] = binary.LittleEndian.Uint64(buf[32+8*i:])
		}
	case unix.PTRACE_SYSCALL_INFO_EXIT:
		si.Ret = int64(binary.LittleEndian.Uint64(buf[24:]))
	default:
		return si, fmt.Errorf("thread %d: not in a syscall-stop", tid)
	}
	return si, nil
}

// TraceSyscalls makes every later resume stop the threads at the entry and
// exit of each system call (StopSyscall), or stops doing so. It costs two
// stops per syscall; memtrap needs it while pages are armed, because the
// kernel does not fault on a write-protected page: a syscall writing there
// fails with EFAULT instead.
func (p *Process) TraceSyscalls(on bool) { p.traceSyscalls = on }

// Syscall returns the syscall a thread is stopped in (StopSyscall).
func (t *Thread) SyscallInfo() (SyscallInfo, error) { return ptraceSyscallInfo(t.Tid) }

// ResumeSyscall resumes a thread so that it stops at its next syscall entry
// or exit, whatever TraceSyscalls says: the exit of the call it is in.
func (t *Thread) ResumeSyscall() error {
	if err := t.p.check(); err != nil {
		return err
	}
	if err := t.flushPending(); err != nil { // only Resume runs it on the way
		return err
	}
	t.letRun(true)
	t.stopped, t.stoppedByUs, t.sigStop, t.sysEntry = false, false, false, false
	if err := ptraceRaw(unix.PTRACE_SYSCALL, t.Tid, 0, 0); err != nil {
		if err == unix.ESRCH {
			return ErrThreadGone
		}
		return fmt.Errorf("PTRACE_SYSCALL %d: %w", t.Tid, err)
	}
	return nil
}

// WaitThread waits for the next stop of one thread (after ResumeSyscall,
// typically), while the others keep their stops for Wait.
func (t *Thread) WaitThread() (Stop, error) {
	p := t.p
	if err := p.check(); err != nil {
		return Stop{}, err
	}
	for {
		_, ws, err := wait4(t.Tid)
		if err != nil {
			return Stop{}, fmt.Errorf("wait4 %d: %w", t.Tid, err)
		}
		st, ok, err := p.handle(waitInfo{t.Tid, ws})
		if err != nil {
			return Stop{}, err
		}
		if ok {
			return st, nil
		}
		if p.threads[t.Tid] == nil {
			return Stop{}, ErrThreadGone
		}
	}
}

// FinishSyscall runs a thread stopped at a system call's entry (its own
// call, maybe with rewritten arguments) to that call's exit, and returns
// the call's result; the thread stays stopped at the exit. The other
// threads keep their stops for Wait.
func (t *Thread) FinishSyscall() (int64, error) {
	if err := t.ResumeSyscall(); err != nil {
		return 0, err
	}
	st, err := t.WaitThread()
	if err != nil {
		return 0, err
	}
	if st.Kind != StopSyscall || st.Syscall.Entry {
		return 0, fmt.Errorf("thread %d: %s stop inside a system call", t.Tid, st.Kind)
	}
	return st.Syscall.Ret, nil
}
