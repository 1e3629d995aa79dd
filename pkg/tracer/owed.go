package tracer

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// Signals that arrive while the tracer works on a stopped thread.
//
// An injected syscall or a single-step lets the thread through the
// kernel's return to user space, where it takes its next pending signal:
// that signal stops the thread as a signal-delivery-stop instead of being
// delivered. So while the tracer works, the thread blocks every signal it
// can (holdSignals): they stay pending, and the kernel delivers them when
// and in the order it would have, honouring the thread's mask and
// handlers. What the tracer cannot block are the signals its own work may
// raise in the thread (a single-step's SIGTRAP, the SIGSEGV of a page the
// step writes): the kernel forces those, and a forced signal that is
// blocked has its handler reset. One of those sent from outside at that
// moment, or any signal met where the mask cannot be touched, is still
// taken (Defer).
//
// Holding a taken signal until the thread happens to stop at another
// signal-delivery-stop would lose it if none ever comes (a thread waiting
// in pause() for it). So when the thread is resumed, each one is given
// back to the kernel (giveBack): the tracer sends the thread that signal
// (a tgkill, the "carrier"), and when the thread takes it, its
// signal-delivery-stop is given the original siginfo (reclaim), so that
// the target, and the tracer's own caller, see the signal that was sent.
// Per signal number, the kernel keeps real-time signals in order, and a
// standard signal pending twice merges into one: the owed list of a
// real-time signal is first in, first out (one of the target's own
// arriving before a carrier is owed after the signals owed already), and a
// standard signal is owed at most once: one of the target's own taken
// while it is owed means that the carrier merged into it, and it brings
// the signal owed.

// forced are the signals the tracer's work can make the kernel force on
// the thread (see holdSignals); SIGKILL and SIGSTOP cannot be blocked.
const forced = 1<<(unix.SIGTRAP-1) | 1<<(unix.SIGSEGV-1) | 1<<(unix.SIGBUS-1) |
	1<<(unix.SIGILL-1) | 1<<(unix.SIGFPE-1) | 1<<(unix.SIGSYS-1)

// holdSignals blocks in the stopped thread every signal but the forced
// ones, for the tracer's work, and returns what puts its mask back.
//
// PTRACE_SETSIGMASK drops a mask that a waiting call (sigsuspend, ppoll)
// put in place for the wait: the caller that works at such a call's
// signal-delivery-stop sets it again (see WaitMask).
//
// A ThreadLog (SetThreadLog) is told the mask, and saved, the registers
// the thread is to get back (an injected call's caller changes them),
// before anything changes, and told when the mask is back.
func (t *Thread) holdSignals(saved *unix.PtraceRegs) (release func() error, err error) {
	m, err := t.SigMask()
	if err != nil {
		return nil, maskErr(err)
	}
	log := t.p.threadLog
	if log != nil {
		log.Changing(t.p.Pid, t.Tid, saved, m)
	}
	if err := t.SetSigMask(m | ^uint64(forced)); err != nil {
		if log != nil {
			log.Restored()
		}
		return nil, maskErr(err)
	}
	return func() error {
		if log != nil {
			defer log.Restored()
		}
		if m&forced == 0 {
			// None of them was blocked: forcing one only unblocks it,
			// and no call memtrap injects blocks one.
			return maskErr(t.SetSigMask(m))
		}
		// A forced signal the thread blocked was unblocked by the
		// kernel, which reset its handler (the signal guard of package
		// pagewatch puts both back): that stays as the kernel left it.
		now, err := t.SigMask()
		if err != nil {
			return maskErr(err)
		}
		return maskErr(t.SetSigMask(m&^forced | now&forced))
	}, nil
}

func maskErr(err error) error {
	if errors.Is(err, unix.ESRCH) {
		return ErrThreadGone
	}
	return err
}

// siTkill is SI_TKILL, the si_code of tgkill.
const siTkill = -6

// sigRTMin is the first real-time signal (the kernel's SIGRTMIN).
const sigRTMin = 32

// giveBack sends the signals kept by Defer back to the thread, and counts
// them as owed. One that cannot be sent stays kept.
func (t *Thread) giveBack() {
	var keep []Siginfo
	for _, info := range t.deferred {
		n := info.Signo()
		if n < sigRTMin && len(t.owed[n]) > 0 {
			// Its carrier would merge with the one owed: send it
			// once that one is taken.
			keep = append(keep, info)
			continue
		}
		if err := unix.Tgkill(t.p.Pid, t.Tid, unix.Signal(n)); err != nil {
			keep = append(keep, info)
			continue
		}
		if t.owed == nil {
			t.owed = map[int][]Siginfo{}
		}
		t.owed[n] = append(t.owed[n], info)
	}
	t.deferred = keep
}

// reclaim makes a signal-delivery-stop of an owed signal report the signal
// owed first, with its original siginfo, in info and at the stop.
func (t *Thread) reclaim(info *Siginfo) error {
	n := info.Signo()
	q := t.owed[n]
	if len(q) == 0 {
		return nil
	}
	first := q[0]
	q = q[1:]
	if n >= sigRTMin && !isCarrier(info) {
		// One of the target's own, queued after the carriers: it comes
		// after the signals owed, and the next carrier brings it.
		q = append(q, *info)
	}
	if len(q) == 0 {
		delete(t.owed, n)
	} else {
		t.owed[n] = q
	}
	*info = first
	return ptraceSetSiginfo(t.Tid, info)
}

// isCarrier tells a signal giveBack sent.
func isCarrier(info *Siginfo) bool {
	return info.Code() == siTkill && info.senderPid() == os.Getpid()
}
