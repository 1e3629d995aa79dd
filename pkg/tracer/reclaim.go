package tracer

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Reclaim seizes every thread of process pid and stops them all, as Attach
// does, as soon as its current tracer lets it go: PTRACE_SEIZE is retried
// while it fails with EPERM (the process still has a tracer), until
// deadline or until gone says the process has ended (a zombie is EPERM
// too). It is how a guardian takes over from a tracer that is dying:
// the kernel releases a dead tracer's tracees while it exits, and the
// sooner they are seized again, the shorter they run unwatched. None of
// Attach's checks and messages are made on the way.
//
// Precondition: called on a goroutine locked to its OS thread (see Locked).
func Reclaim(pid int, deadline time.Time, gone func() bool) (*Process, error) {
	quietChildStops()
	p := newProcessNoMem(pid)
	p.options = baseOptions | unix.PTRACE_O_TRACEEXIT | unix.PTRACE_O_TRACESYSGOOD
	for {
		err := ptraceSeize(pid, p.options)
		if err == nil {
			break
		}
		switch {
		case err == unix.ESRCH:
			return nil, fmt.Errorf("process %d: %w", pid, ErrNoProcess)
		case err != unix.EPERM:
			return nil, fmt.Errorf("PTRACE_SEIZE %d: %w", pid, err)
		case gone():
			return nil, fmt.Errorf("process %d has ended: %w", pid, ErrNoProcess)
		case time.Now().After(deadline):
			return nil, fmt.Errorf("process %d is still traced: %w", pid, err)
		}
		_, _, _ = unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
	}
	p.addThread(pid)
	if err := p.seizeAllOpen(); err != nil {
		return nil, err
	}
	return p, nil
}
