package tracer

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/memtrap/memtrap/pkg/procmaps"

	"golang.org/x/sys/unix"
)

// The ERESTART* family: an injected call interrupted by a signal is retried.
const (
	errRestartSys       = 512
	errRestartNoIntr    = 513
	errRestartNoHand    = 514
	errRestartRestartBl = 516
)

// syscallInsn finds the bytes 0f 05 (`syscall`) in an executable mapping of
// the target. Where they sit in the original instruction stream does not
// matter: executed from their own address they are a syscall. The vDSO
// comes first: every process has one and it carries syscall fallbacks.
func (p *Process) syscallInsn() (uint64, error) {
	if p.sysInsn != 0 {
		return p.sysInsn, nil
	}
	maps, err := procmaps.Read(p.Pid)
	if err != nil {
		return 0, err
	}
	var order []procmaps.Mapping
	for _, m := range maps {
		if m.Prot&unix.PROT_EXEC != 0 && m.Path == "[vdso]" {
			order = append(order, m)
		}
	}
	for _, m := range maps {
		if m.Prot&unix.PROT_EXEC != 0 && m.Path != "[vdso]" && m.Path != "[vsyscall]" {
			order = append(order, m)
		}
	}
	buf := make([]byte, 64<<10)
	for _, m := range order {
		for a := m.Start; a < m.End; a += uint64(len(buf)) - 1 {
			n := min(uint64(len(buf)), m.End-a)
			if err := p.ReadMemory(a, buf[:n]); err != nil {
				break
			}
			if i := bytes.Index(buf[:n], []byte{0x0f, 0x05}); i >= 0 {
				p.sysInsn = a + uint64(i)
				return p.sysInsn, nil
			}
		}
	}
	return 0, errors.New("no syscall instruction found in the target's executable mappings")
}

// SetSyscallInsn has injected calls run from the `syscall` instruction at
// addr instead of one found in the target's code (0: found again): one a
// seccomp filter of the caller's lets through, or one followed by code
// that holds a thread let go mid-call (memtrap's landing, package hook).
func (p *Process) SetSyscallInsn(addr uint64) { p.sysInsn, p.ownInsn = addr, addr != 0 }

// A ThreadLog keeps, outside memtrap, what a thread's registers and signal
// mask were while memtrap has them changed for an injected call or a
// single-step (package guard's Link: a page that the guardian reads if
// memtrap dies meanwhile). A thread let go by a dying tracer runs on with
// what the tracer left: a call found in the target's code runs on into
// the code after it, and returns who knows where (the vDSO's: `leave;
// ret`); from memtrap's landing it stops in a loop, where the guardian
// finds it and puts the registers back.
type ThreadLog interface {
	// Changing is told, before the mask or the registers change, the
	// mask and the registers (nil: unchanged) that are to come back.
	Changing(pid, tid int, regs *unix.PtraceRegs, mask uint64)
	// Restored is told once they are back.
	Restored()
}

// SetThreadLog has the process, and the children it follows from now on,
// tell l of their threads' changes.
func (p *Process) SetThreadLog(l ThreadLog) { p.threadLog = l }

// Syscall makes the stopped thread t execute system call nr with args, and
// returns its result; the thread's registers are restored afterwards.
// Signals that arrive meanwhile stay pending, blocked (see holdSignals),
// or are deferred (see Defer).
//
// Precondition: t is stopped (not in a group-stop), and no other thread can
// observe what the call changes before the caller wants it to.
func (t *Thread) Syscall(nr uintptr, args ...uintptr) (uintptr, error) {
	if t.p.quiet {
		return t.inject(t.runSyscallStops, nr, args...)
	}
	return t.inject(t.runSyscall, nr, args...)
}

// QuietInjection makes every Syscall a SyscallQuiet: for a target that
// ignores SIGTRAP, whose action each single-step's trap would reset to
// SIG_DFL.
func (p *Process) QuietInjection(on bool) { p.quiet = on }

// SyscallQuiet is Syscall run to its end through the call's own entry and
// exit stops (PTRACE_SYSCALL) instead of single-stepping over it: no trap
// is forced on the thread. A single-step's SIGTRAP resets an ignored or
// blocked SIGTRAP to SIG_DFL, so this is how an ignored SIGTRAP is set
// again. The thread is left in a syscall-exit-stop, where no signal can be
// delivered on resuming: signals that arrive meanwhile are deferred.
func (t *Thread) SyscallQuiet(nr uintptr, args ...uintptr) (uintptr, error) {
	return t.inject(t.runSyscallStops, nr, args...)
}

func (t *Thread) inject(run func(insn uint64) (uintptr, error), nr uintptr, args ...uintptr) (uintptr, error) {
	if err := t.p.check(); err != nil {
		return 0, err
	}
	// A call on resume asked for before this one runs before it: the
	// protections end up as the calls were asked for.
	if err := t.flushPending(); err != nil {
		return 0, err
	}
	if err := failPoint(fmt.Sprintf("system call %d in thread %d", nr, t.Tid)); err != nil {
		return 0, err
	}
	insn, err := t.p.syscallInsn()
	if err != nil {
		return 0, err
	}
	var saved unix.PtraceRegs
	if err := t.Regs(&saved); err != nil {
		return 0, err
	}
	if t.sysEntry {
		// Stopped on its way into a call of its own: that call would
		// be lost under ours. Take it back to its `syscall`
		// instruction, skipped for now, to run again when resumed, as
		// the kernel restarts an interrupted call.
		saved.Rip -= 2
		saved.Rax = saved.Orig_rax
		saved.Orig_rax = ^uint64(0)
		if err := t.SetRegs(&saved); err != nil {
			return 0, err
		}
		t.sysEntry = false
	}
	var a [6]uint64
	for i, v := range args {
		a[i] = uint64(v)
	}
	release, err := t.holdSignals(&saved)
	if err != nil {
		return 0, err
	}
	ret, err := t.runInjected(run, insn, nr, &saved, &a)
	if rerr := release(); rerr != nil && err == nil {
		err = rerr
	}
	return ret, err
}

// runInjected runs the call of inject, retried on the ERESTART* family.
func (t *Thread) runInjected(run func(insn uint64) (uintptr, error), insn uint64, nr uintptr, saved *unix.PtraceRegs, a *[6]uint64) (uintptr, error) {
	for {
		r := *saved
		r.Rip = insn
		r.Rax = uint64(nr)
		// orig_rax -1: the kernel must not take our registers for an
		// interrupted syscall of the thread's own and "restart" it.
		r.Orig_rax = ^uint64(0)
		r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
		if err := t.SetRegs(&r); err != nil {
			return 0, err
		}
		if t.p.ownInsn {
			diePoint(dieAtInject, &injectCount)
		}
		// Ours: past the filters where memtrap may, else the listener
		// lets it run.
		suspended := t.suspendForInjection()
		if !suspended {
			t.p.notif.allow(t.Tid, int(nr))
		}
		ret, err := run(insn)
		if suspended {
			if rerr := t.resumeSeccomp(); rerr != nil && err == nil {
				err = rerr
			}
		} else {
			t.p.notif.settle(t.Tid)
		}
		if rerr := t.SetRegs(saved); rerr != nil && err == nil {
			err = rerr
		}
		if err != nil {
			return 0, err
		}
		if e := -int64(ret); e > 0 && e < 4096 {
			switch e {
			case errRestartSys, errRestartNoIntr, errRestartNoHand, errRestartRestartBl:
				continue
			}
			return 0, unix.Errno(e)
		}
		return ret, nil
	}
}

// runSyscallStops runs the syscall at insn (RIP there) to its exit stop.
func (t *Thread) runSyscallStops(insn uint64) (uintptr, error) {
	entered := false
	for {
		t.stopped, t.sigStop, t.sysEntry = false, false, false
		if err := ptraceRaw(unix.PTRACE_SYSCALL, t.Tid, 0, 0); err != nil {
			if err == unix.ESRCH {
				return 0, ErrThreadGone
			}
			return 0, fmt.Errorf("PTRACE_SYSCALL %d: %w", t.Tid, err)
		}
		_, ws, err := wait4(t.Tid)
		if err != nil {
			return 0, fmt.Errorf("wait4 %d: %w", t.Tid, err)
		}
		if ws.Exited() || ws.Signaled() {
			p := t.p
			p.dropThread(t.Tid)
			if t.Tid == p.Pid {
				p.exited, p.status = true, ws
				return 0, ErrProcessExited
			}
			return 0, ErrThreadGone
		}
		if !ws.Stopped() {
			continue
		}
		t.stopped = true
		switch {
		case ws.StopSignal() == unix.SIGTRAP|0x80:
			// Which stop it is, the kernel says: counting them is off
			// by one when the thread started at an entry stop of its
			// own (its call skipped first: that call's exit comes
			// before our entry).
			info, err := ptraceSyscallInfo(t.Tid)
			if err != nil {
				return 0, goneErr(err)
			}
			if info.Entry {
				entered = true
				continue
			}
			if !entered {
				continue // the skipped call's exit
			}
			var r unix.PtraceRegs
			if err := t.Regs(&r); err != nil {
				return 0, err
			}
			return uintptr(r.Rax), nil
		case event(ws) == unix.PTRACE_EVENT_STOP:
			t.interrupted = false
			continue
		case event(ws) == unix.PTRACE_EVENT_SECCOMP:
			// Our own filter stopped the injected call: the entry.
			if msg, err := ptraceEventMsg(t.Tid); err == nil && msg != filterMarker {
				if err := skipForeignTrace(t.Tid); err != nil {
					return 0, goneErr(err)
				}
			}
			continue
		case event(ws) == unix.PTRACE_EVENT_EXIT:
			t.exiting = true
			return 0, ErrThreadGone
		case event(ws) != 0:
			t.p.queue = append(t.p.queue, queued{t.Tid, ws})
			return 0, fmt.Errorf("thread %d: ptrace event %d during an injected syscall", t.Tid, event(ws))
		}
		// A signal before the call ran: keep it for later.
		var info Siginfo
		if err := ptraceGetSiginfo(t.Tid, &info); err != nil {
			return 0, fmt.Errorf("PTRACE_GETSIGINFO %d: %w", t.Tid, err)
		}
		if err := t.reclaim(&info); err != nil {
			return 0, goneErr(err)
		}
		if t.p.notif != nil && isNotifWake(&info) {
			continue // for a call of the thread's own: it comes again
		}
		t.Defer(info)
	}
}

func (t *Thread) runSyscall(insn uint64) (uintptr, error) {
	for {
		res, err := t.step()
		if err != nil {
			return 0, err
		}
		var r unix.PtraceRegs
		if err := t.Regs(&r); err != nil {
			return 0, err
		}
		if res.Done && r.Rip == insn+2 {
			return uintptr(r.Rax), nil
		}
		if res.Done && r.Rip == insn {
			// Stepped out of a syscall-stop back to user space, which
			// traps before running anything: step again.
			continue
		}
		if res.Done {
			return 0, fmt.Errorf("injected syscall: thread %d stepped to %#x, not %#x", t.Tid, r.Rip, insn+2)
		}
		// A signal arrived before the syscall ran; keep it for later.
		t.Defer(res.Info)
		if r.Rip != insn {
			return 0, fmt.Errorf("injected syscall at %#x: thread %d moved to %#x (signal %d, code %d)", insn, t.Tid, r.Rip, res.Sig, res.Info.Code())
		}
	}
}

// Mprotect changes the protection of [addr, addr+length) in the target, by
// making t call mprotect. Precondition: as for Syscall.
func (t *Thread) Mprotect(addr, length uint64, prot int) error {
	_, err := t.Syscall(unix.SYS_MPROTECT, uintptr(addr), uintptr(length), uintptr(prot))
	if err != nil {
		return fmt.Errorf("mprotect(%#x, %#x, %s) in %d: %w", addr, length, procmaps.ProtString(prot), t.Tid, err)
	}
	return nil
}
