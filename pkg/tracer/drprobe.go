package tracer

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrDebugRegsDead means this machine accepts debug-register watchpoints
// but never fires them: some hypervisors do not pass DR0-DR7 through (seen
// on a PVM guest, where gdb's `watch -l` is silent too).
var ErrDebugRegsDead = errors.New("hardware watchpoints do not fire on this machine")

var drProbe struct {
	once sync.Once
	err  error
}

// probeTarget is what the probe watches and writes.
var probeTarget atomic.Uint64

// CheckDebugRegisters tells whether a debug-register write watchpoint
// fires on this machine: nil if it does, ErrDebugRegsDead if it is
// accepted but silent, another error if the check itself could not run
// (no perf_event_open, or perf_event_paranoid forbids it). The answer is a
// fact about the machine, so it is found once per process.
//
// How: a perf hardware breakpoint (the kernel's hw_breakpoint layer, which
// PTRACE_POKEUSER of DR7 also goes through) on a variable of memtrap's own,
// counted while this thread stores to it 8 times.
func CheckDebugRegisters() error {
	drProbe.once.Do(func() { drProbe.err = probeDebugRegisters() })
	return drProbe.err
}

func probeDebugRegisters() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	attr := unix.PerfEventAttr{
		Type:    unix.PERF_TYPE_BREAKPOINT,
		Size:    uint32(unsafe.Sizeof(unix.PerfEventAttr{})),
		Bits:    unix.PerfBitDisabled | unix.PerfBitExcludeKernel | unix.PerfBitExcludeHv,
		Bp_type: 2, // HW_BREAKPOINT_W
		Ext1:    uint64(uintptr(unsafe.Pointer(&probeTarget))),
		Ext2:    8, // HW_BREAKPOINT_LEN_8
	}
	fd, err := unix.PerfEventOpen(&attr, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("checking debug registers with perf_event_open: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_ENABLE, 0); err != nil {
		return fmt.Errorf("checking debug registers: enabling the breakpoint: %w", err)
	}
	const stores = 8
	for i := range uint64(stores) {
		probeTarget.Store(i)
	}
	if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_DISABLE, 0); err != nil {
		return fmt.Errorf("checking debug registers: disabling the breakpoint: %w", err)
	}
	var buf [8]byte
	if n, err := unix.Read(fd, buf[:]); err != nil || n != 8 {
		return fmt.Errorf("checking debug registers: reading the count: %d bytes, %v", n, err)
	}
	if got := leUint64(buf[:]); got == 0 {
		return ErrDebugRegsDead
	}
	return nil
}
