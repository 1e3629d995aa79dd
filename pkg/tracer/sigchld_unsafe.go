package tracer

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// kernelSigaction is struct sigaction as rt_sigaction takes it on x86-64.
type kernelSigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

const saNoCldStop = 0x1 // SA_NOCLDSTOP

var quietChildStopsOnce sync.Once

// quietChildStops adds SA_NOCLDSTOP to this process's SIGCHLD action, so
// that a tracee's ptrace stops no longer send the tracer a SIGCHLD. wait4
// is woken all the same (do_notify_parent_cldstop wakes the parent whether
// or not it signals); exits still signal.
//
// Why: the Go runtime catches SIGCHLD, so every stop of every tracee
// interrupts one of memtrap's threads with a signal frame and a handler
// run, usually the ptrace thread polling in wait4. On a 2-vCPU VM this took
// a bare stop/resume round trip from 26 to 45-70 us. A C tracer, whose
// SIGCHLD is SIG_DFL, never pays it.
//
// The action is process-wide kernel state, hence the one package-level
// Once. The only thing given up is a SIGCHLD for a stopped child of this
// process, which job control shells want and memtrap does not; a Go program
// embedding this package that relies on it should know.
func quietChildStops() {
	quietChildStopsOnce.Do(func() {
		var sa kernelSigaction
		const size = 8 // sizeof(sigset_t) for rt_sigaction
		if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(unix.SIGCHLD), 0, uintptr(unsafe.Pointer(&sa)), size, 0, 0); e != 0 {
			return
		}
		if sa.flags&saNoCldStop != 0 {
			return
		}
		sa.flags |= saNoCldStop
		unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(unix.SIGCHLD), uintptr(unsafe.Pointer(&sa)), 0, size, 0, 0)
	})
}
