package tracer

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SigMask reads the thread's blocked-signal mask (bit n-1 for signal n).
func (t *Thread) SigMask() (uint64, error) {
	var m uint64
	if err := ptraceRaw(unix.PTRACE_GETSIGMASK, t.Tid, 8, uintptr(unsafe.Pointer(&m))); err != nil {
		return 0, fmt.Errorf("PTRACE_GETSIGMASK %d: %w", t.Tid, err)
	}
	return m, nil
}

// SetSigMask writes the thread's blocked-signal mask.
func (t *Thread) SetSigMask(m uint64) error {
	if err := ptraceRaw(unix.PTRACE_SETSIGMASK, t.Tid, 8, uintptr(unsafe.Pointer(&m))); err != nil {
		return fmt.Errorf("PTRACE_SETSIGMASK %d: %w", t.Tid, err)
	}
	return nil
}

// CaughtSignals reads the process's SigCgt from /proc/PID/status: the
// signals it has a handler for (bit n-1 for signal n).
func (p *Process) CaughtSignals() (uint64, error) {
	if p.statusFile == nil {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.Pid))
		if err != nil {
			return 0, err
		}
		p.statusFile = f
	}
	buf := make([]byte, 4096)
	n, err := p.statusFile.ReadAt(buf, 0)
	if n == 0 && err != nil {
		return 0, err
	}
	s := string(buf[:n])
	i := strings.Index(s, "SigCgt:")
	if i < 0 {
		return 0, fmt.Errorf("no SigCgt in /proc/%d/status", p.Pid)
	}
	line := s[i+len("SigCgt:"):]
	if j := strings.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	return strconv.ParseUint(strings.TrimSpace(line), 16, 64)
}
