package pagewatch

import (
	"fmt"

	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// A trapped write is a fault the kernel forces on the thread as SIGSEGV.
// When the thread has SIGSEGV blocked at that moment (it is inside a
// SIGSEGV handler, or blocks all signals, as Go's and the JVM's handlers
// do), force_sig_info resets the process's SIGSEGV handler to SIG_DFL and
// unblocks SIGSEGV in the thread, before memtrap even sees the stop. The
// target's next own SIGSEGV (a guard page, a null check) would then kill it.
//
// So memtrap keeps a copy of the target's SIGSEGV sigaction and, after each
// trapped write, looks at SigCgt: a handler that vanished is put back
// (rt_sigaction injected with the copy) and SIGSEGV blocked again in the
// thread (PTRACE_SETSIGMASK). The copy is taken at arming and whenever a
// handler appears.

const sigsegvBit = 1 << (unix.SIGSEGV - 1)

// sigactSize is the kernel's struct sigaction on x86-64: handler, flags,
// restorer, mask.
const sigactSize = 32

type segvGuard struct {
	caught bool
	act    [sigactSize]byte
	buf    uint64 // sigactSize bytes of target memory
}

func (w *Watch) snapshotSegv(t *tracer.Thread) error {
	g := &w.segv
	if _, err := t.Syscall(unix.SYS_RT_SIGACTION, uintptr(unix.SIGSEGV), 0, uintptr(g.buf), 8); err != nil {
		return fmt.Errorf("reading the target's SIGSEGV action: %w", err)
	}
	if err := w.p.ReadMemory(g.buf, g.act[:]); err != nil {
		return err
	}
	g.caught = true
	return nil
}

// checkSegv runs after a trapped write of thread t (stopped).
func (w *Watch) checkSegv(t *tracer.Thread) error {
	g := &w.segv
	if g.buf == 0 {
		return nil
	}
	// Every time, also while the target has no handler: one installed
	// since the last look can be reset by this very fault, and then its
	// copy would never have been taken. (About 5 us: a pread of /proc/PID/stat.)
	cg, err := w.p.CaughtSignals()
	if err != nil {
		return nil // the process is going away
	}
	has := cg&sigsegvBit != 0
	switch {
	case has && !g.caught:
		return w.snapshotSegv(t)
	case !has && g.caught:
		if err := w.p.WriteMemory(g.buf, g.act[:]); err != nil {
			return err
		}
		if _, err := t.Syscall(unix.SYS_RT_SIGACTION, uintptr(unix.SIGSEGV), uintptr(g.buf), 0, 8); err != nil {
			return fmt.Errorf("restoring the target's SIGSEGV action: %w", err)
		}
		m, err := t.SigMask()
		if err != nil {
			return err
		}
		return t.SetSigMask(m | sigsegvBit)
	}
	return nil
}
