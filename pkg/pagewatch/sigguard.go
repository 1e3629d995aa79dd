package pagewatch

import (
	"encoding/binary"
	"fmt"

	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// The signal guard (see the package doc): a copy of the target's SIGSEGV
// and SIGTRAP actions, put back after a trap memtrap caused resets one.
// The kernel resets a forced signal's action to SIG_DFL when the signal is
// blocked (and unblocks it) or ignored: a handler that vanished was
// blocked, and is blocked again; an ignored signal is ignored again.

// guarded are the signals memtrap's traps are forced as (SIGTRAP second:
// restoreSig reads its index).
var guarded = [...]unix.Signal{unix.SIGSEGV, unix.SIGTRAP}

// sigactSize is the kernel's struct sigaction on x86-64: handler, flags,
// restorer, mask.
const sigactSize = 32

type segvGuard struct {
	// set: act holds the target's action, caught or ignored (not
	// SIG_DFL); ign: that action is SIG_IGN.
	set [len(guarded)]bool
	ign [len(guarded)]bool
	act [len(guarded)][sigactSize]byte
	buf uint64 // sigactSize bytes of target memory
	// ignoredAtArm: the guarded signals ignored before arming's own
	// injections (each a forced SIGTRAP) could reset them.
	ignoredAtArm uint64
}

func sigBit(s unix.Signal) uint64 { return 1 << (s - 1) }

func (w *Watch) snapshotSig(t *tracer.Thread, i int) error {
	g := &w.segv
	if err := w.gateQuiet(t, func() error {
		_, err := t.Syscall(unix.SYS_RT_SIGACTION, uintptr(guarded[i]), 0, uintptr(g.buf), 8)
		return err
	}); err != nil {
		return fmt.Errorf("reading the target's %v action: %w", guarded[i], err)
	}
	if err := w.p.ReadMemory(g.buf, g.act[i][:]); err != nil {
		return err
	}
	handler := binary.LittleEndian.Uint64(g.act[i][:])
	g.set[i], g.ign[i] = handler != 0, handler == 1
	return nil
}

// noteIgnored remembers, before arming injects anything, which guarded
// signals the target ignores.
//
// While the target ignores SIGTRAP, memtrap's injected calls run through
// syscall stops instead of single-steps (whose forced SIGTRAP would reset
// it): from before arming's first one to the unmapping of the scratch
// area at the end, so that no error path nor detach leaves it reset.
func (w *Watch) noteIgnored() {
	if _, ig, err := w.p.SignalDispositions(); err == nil {
		w.segv.ignoredAtArm = ig
		w.p.QuietInjection(ig&sigBit(unix.SIGTRAP) != 0)
	}
}

// snapshotSignals takes the copies at arming. A signal ignored before
// arming whose action arming's own traps reset is ignored again (with no
// flags or mask: an ignored signal's have no effect).
func (w *Watch) snapshotSignals(t *tracer.Thread) error {
	cg, ig, err := w.p.SignalDispositions()
	if err != nil {
		return nil
	}
	g := &w.segv
	for i, s := range guarded {
		switch {
		case cg&sigBit(s) != 0 || ig&sigBit(s) != 0:
			if err := w.snapshotSig(t, i); err != nil {
				return err
			}
		case g.ignoredAtArm&sigBit(s) != 0:
			g.act[i] = [sigactSize]byte{0: 1} // SIG_IGN
			g.set[i], g.ign[i] = true, true
			if err := w.restoreSig(t, i, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// restoreSig puts the target's action for guarded[i] back, and blocks the
// signal again in t when the kernel unblocked it to reset its handler.
func (w *Watch) restoreSig(t *tracer.Thread, i int, reblock bool) error {
	g := &w.segv
	s := guarded[i]
	if err := w.p.WriteMemory(g.buf, g.act[i][:]); err != nil {
		return err
	}
	inject := t.Syscall
	if g.ign[1] {
		// SIGTRAP is ignored: a single-step over the call would reset
		// it (again).
		inject = t.SyscallQuiet
	}
	if err := w.gateQuiet(t, func() error {
		_, err := inject(unix.SYS_RT_SIGACTION, uintptr(s), uintptr(g.buf), 0, 8)
		return err
	}); err != nil {
		return fmt.Errorf("restoring the target's %v action: %w", s, err)
	}
	if !reblock {
		return nil
	}
	m, err := t.SigMask()
	if err != nil {
		return err
	}
	return t.SetSigMask(m | sigBit(s))
}

// checkSegv runs after a trap memtrap caused in thread t (stopped).
func (w *Watch) checkSegv(t *tracer.Thread) error {
	g := &w.segv
	if g.buf == 0 {
		return nil
	}
	// While syscalls are followed, every rt_sigaction of a guarded signal
	// is seen (sigaction), so with no handler known there is nothing a
	// trap could have reset. Otherwise look every time, also while the
	// target has no handler: one installed since the last look can be
	// reset by this very fault, and then its copy would never have been
	// taken. (About 5 us: a pread of /proc/PID/stat.)
	if w.opts.KernelWrites && g.set == [len(guarded)]bool{} {
		return nil
	}
	cg, ig, err := w.p.SignalDispositions()
	if err != nil {
		return nil // the process is going away
	}
	for i, s := range guarded {
		has := (cg|ig)&sigBit(s) != 0
		switch {
		case has && !g.set[i]:
			if err := w.snapshotSig(t, i); err != nil {
				return err
			}
		case !has && g.set[i]:
			if err := w.restoreSig(t, i, !g.ign[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// sigaction records a handler the target is installing for a guarded
// signal (at the entry of its rt_sigaction), so that the guard can put it
// back even if a trap resets it before memtrap next looks.
func (w *Watch) sigaction(a [6]uint64) {
	g := &w.segv
	if a[1] == 0 || g.buf == 0 {
		return
	}
	for i, s := range guarded {
		if a[0] != uint64(s) {
			continue
		}
		var act [sigactSize]byte
		if w.p.ReadMemory(a[1], act[:]) != nil {
			return
		}
		handler := binary.LittleEndian.Uint64(act[:])
		g.act[i] = act
		g.set[i], g.ign[i] = handler != 0, handler == 1 // not SIG_DFL; SIG_IGN
		if s == unix.SIGTRAP {
			w.p.QuietInjection(g.ign[i])
		}
	}
}
