package pagewatch

import (
	"encoding/binary"
	"fmt"

	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// The signal guard (see the package doc): a copy of the target's SIGSEGV
// and SIGTRAP actions, put back after a trap memtrap caused resets one.

// guarded are the signals memtrap's traps are forced as.
var guarded = [...]unix.Signal{unix.SIGSEGV, unix.SIGTRAP}

// sigactSize is the kernel's struct sigaction on x86-64: handler, flags,
// restorer, mask.
const sigactSize = 32

type segvGuard struct {
	caught [len(guarded)]bool
	act    [len(guarded)][sigactSize]byte
	buf    uint64 // sigactSize bytes of target memory
}

func sigBit(s unix.Signal) uint64 { return 1 << (s - 1) }

func (w *Watch) snapshotSig(t *tracer.Thread, i int) error {
	g := &w.segv
	if _, err := t.Syscall(unix.SYS_RT_SIGACTION, uintptr(guarded[i]), 0, uintptr(g.buf), 8); err != nil {
		return fmt.Errorf("reading the target's %v action: %w", guarded[i], err)
	}
	if err := w.p.ReadMemory(g.buf, g.act[i][:]); err != nil {
		return err
	}
	g.caught[i] = true
	return nil
}

// snapshotSignals takes the copies at arming.
func (w *Watch) snapshotSignals(t *tracer.Thread) error {
	cg, err := w.p.CaughtSignals()
	if err != nil {
		return nil
	}
	for i, s := range guarded {
		if cg&sigBit(s) != 0 {
			if err := w.snapshotSig(t, i); err != nil {
				return err
			}
		}
	}
	return nil
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
	if w.opts.KernelWrites && g.caught == [len(guarded)]bool{} {
		return nil
	}
	cg, err := w.p.CaughtSignals()
	if err != nil {
		return nil // the process is going away
	}
	for i, s := range guarded {
		has := cg&sigBit(s) != 0
		switch {
		case has && !g.caught[i]:
			if err := w.snapshotSig(t, i); err != nil {
				return err
			}
		case !has && g.caught[i]:
			if err := w.p.WriteMemory(g.buf, g.act[i][:]); err != nil {
				return err
			}
			if _, err := t.Syscall(unix.SYS_RT_SIGACTION, uintptr(s), uintptr(g.buf), 0, 8); err != nil {
				return fmt.Errorf("restoring the target's %v action: %w", s, err)
			}
			m, err := t.SigMask()
			if err != nil {
				return err
			}
			if err := t.SetSigMask(m | sigBit(s)); err != nil {
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
		g.caught[i] = handler > 1 // not SIG_DFL, SIG_IGN
	}
}
