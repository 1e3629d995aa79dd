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

// drProbe keeps the probe's answer. Whether debug registers fire is a
// fact about the machine, the same for every watch of this process, hence
// the package-level cache; "could not tell" is never kept, so a probe that
// failed runs again next time (cilium/ebpf's feature tests do the same).
var drProbe struct {
	mu     sync.Mutex
	known  bool
	answer error // nil or ErrDebugRegsDead
}

// CheckDebugRegisters tells whether a debug-register write watchpoint
// fires on this machine: nil if it does, ErrDebugRegsDead if it is
// accepted but silent, another error if the check itself could not run
// (no perf_event_open, or perf_event_paranoid forbids it). A yes or no is
// found once per process; a failed check is tried again at the next call.
//
// How: a perf hardware breakpoint (the kernel's hw_breakpoint layer, which
// PTRACE_POKEUSER of DR7 also goes through) on a variable of memtrap's own,
// counted while this thread stores to it 8 times.
func CheckDebugRegisters() error {
	drProbe.mu.Lock()
	defer drProbe.mu.Unlock()
	if drProbe.known {
		return drProbe.answer
	}
	err := probeDebugRegisters()
	if err == nil || errors.Is(err, ErrDebugRegsDead) {
		drProbe.known, drProbe.answer = true, err
	}
	return err
}

func probeDebugRegisters() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// What the probe watches and writes: 8 bytes of a page of its own,
	// which no garbage collector or stack growth moves.
	page, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("checking debug registers: %w", err)
	}
	defer unix.Munmap(page)
	target := (*atomic.Uint64)(unsafe.Pointer(&page[0]))
	attr := unix.PerfEventAttr{
		Type:    unix.PERF_TYPE_BREAKPOINT,
		Size:    uint32(unsafe.Sizeof(unix.PerfEventAttr{})),
		Bits:    unix.PerfBitDisabled | unix.PerfBitExcludeKernel | unix.PerfBitExcludeHv,
		Bp_type: 2, // HW_BREAKPOINT_W
		Ext1:    uint64(uintptr(unsafe.Pointer(target))),
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
		target.Store(i)
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
