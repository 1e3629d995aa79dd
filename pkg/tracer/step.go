package tracer

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// StepResult says how a single-step ended.
type StepResult struct {
	// Done: the thread executed one instruction (or one iteration of a
	// REP string instruction) and is stopped after it.
	Done bool
	// Signal: instead, a signal-delivery-stop (a fault of the instruction
	// itself, or a signal that arrived). Sig and Info describe it; the
	// signal was not delivered.
	Sig  int
	Info Siginfo
}

// Step executes one instruction of a stopped thread, without delivering any
// signal: one that arrives meanwhile stays pending (see holdSignals).
// Precondition: the thread is stopped and not in a group-stop.
func (t *Thread) Step() (StepResult, error) {
	if err := t.p.check(); err != nil {
		return StepResult{}, err
	}
	release, err := t.holdSignals(nil)
	if err != nil {
		return StepResult{}, err
	}
	res, err := t.step()
	if rerr := release(); rerr != nil && err == nil {
		err = rerr
	}
	return res, err
}

func (t *Thread) step() (StepResult, error) { return t.stepWith(0) }

// StepSignal delivers sig to a thread stopped at its signal-delivery-stop
// and stops it again at the first instruction of the handler, with the
// signal frame built (Done), or at whatever stop comes first.
func (t *Thread) StepSignal(sig int) (StepResult, error) {
	if err := t.p.check(); err != nil {
		return StepResult{}, err
	}
	return t.stepWith(sig)
}

func (t *Thread) stepWith(sig int) (StepResult, error) {
	// Stepping into a handler stops at its entry with a ptrace_notify
	// (SIGTRAP, si_code SIGTRAP), not a trap of the CPU.
	intoHandler := sig != 0
	for {
		t.stopped, t.sigStop, t.sysEntry = false, false, false
		err := ptraceStep(t.Tid, sig)
		sig = 0
		if err != nil {
			if err == unix.ESRCH {
				return StepResult{}, ErrThreadGone
			}
			return StepResult{}, fmt.Errorf("PTRACE_SINGLESTEP %d: %w", t.Tid, err)
		}
		_, ws, err := wait4(t.Tid)
		if err != nil {
			return StepResult{}, fmt.Errorf("wait4 %d: %w", t.Tid, err)
		}
		if ws.Exited() || ws.Signaled() {
			p := t.p
			if t.Tid == p.Pid {
				p.exited, p.status = true, ws
				p.dropThread(t.Tid)
				return StepResult{}, ErrProcessExited
			}
			p.dropThread(t.Tid)
			return StepResult{}, ErrThreadGone
		}
		if !ws.Stopped() {
			continue
		}
		t.stopped = true
		switch event(ws) {
		case unix.PTRACE_EVENT_STOP:
			// An interrupt from earlier; step again.
			t.interrupted = false
			continue
		case unix.PTRACE_EVENT_SECCOMP:
			// The syscall filter stopped the call being stepped over
			// (one memtrap injected): let it run.
			if msg, err := ptraceEventMsg(t.Tid); err == nil && msg != filterMarker {
				if err := skipForeignTrace(t.Tid); err != nil {
					return StepResult{}, goneErr(err)
				}
			}
			continue
		case unix.PTRACE_EVENT_EXIT:
			t.exiting = true
			return StepResult{}, ErrThreadGone
		case 0:
		default:
			// A clone/fork/exec in the middle of a step: hand it to Wait.
			t.p.queue = append(t.p.queue, queued{t.Tid, ws})
			return StepResult{}, fmt.Errorf("thread %d: ptrace event %d during single-step", t.Tid, event(ws))
		}
		t.sigStop = true
		var r StepResult
		if err := ptraceGetSiginfo(t.Tid, &r.Info); err != nil {
			return StepResult{}, fmt.Errorf("PTRACE_GETSIGINFO %d: %w", t.Tid, err)
		}
		r.Sig = int(ws.StopSignal())
		if ws.StopSignal() == unix.SIGTRAP && (isStepTrap(&r.Info) || intoHandler && r.Info.Code() == int(unix.SIGTRAP)) {
			return StepResult{Done: true}, nil
		}
		if err := t.reclaim(&r.Info); err != nil {
			return StepResult{}, goneErr(err)
		}
		if t.p.notif != nil && isNotifWake(&r.Info) {
			// The listener's, for a call the thread gave up waiting
			// in (it comes again): step on.
			continue
		}
		return r, nil
	}
}

// Regs reads the thread's registers.
func (t *Thread) Regs(r *unix.PtraceRegs) error {
	if err := ptraceGetRegs(t.Tid, r); err != nil {
		if err == unix.ESRCH {
			return ErrThreadGone
		}
		return fmt.Errorf("PTRACE_GETREGS %d: %w", t.Tid, err)
	}
	return nil
}

// SetRegs writes the thread's registers.
func (t *Thread) SetRegs(r *unix.PtraceRegs) error {
	if err := ptraceSetRegs(t.Tid, r); err != nil {
		if err == unix.ESRCH {
			return ErrThreadGone
		}
		return fmt.Errorf("PTRACE_SETREGS %d: %w", t.Tid, err)
	}
	return nil
}

// isStepTrap tells the trap of a single-step from a SIGTRAP someone sent.
// A step over an instruction traps with TRAP_TRACE; a step over `syscall`
// is reported from the syscall exit path, with TRAP_BRKPT or (the generic
// user_single_step_report) SI_USER from pid 0, which no kill() can forge.
func isStepTrap(si *Siginfo) bool {
	switch si.Code() {
	case trapTrace, trapBrkpt:
		return true
	case siUser:
		return si.senderPid() == 0
	}
	return false
}
