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
	if err := ptracePtr(unix.PTRACE_GETSIGMASK, t.Tid, 8, unsafe.Pointer(&m)); err != nil {
		return 0, fmt.Errorf("PTRACE_GETSIGMASK %d: %w", t.Tid, err)
	}
	return m, nil
}

// SetSigMask writes the thread's blocked-signal mask.
func (t *Thread) SetSigMask(m uint64) error {
	if err := ptracePtr(unix.PTRACE_SETSIGMASK, t.Tid, 8, unsafe.Pointer(&m)); err != nil {
		return fmt.Errorf("PTRACE_SETSIGMASK %d: %w", t.Tid, err)
	}
	return nil
}

// CaughtSignals reads the signals the process has a handler for (bit n-1
// for signal n; standard signals only): field 34 of /proc/PID/stat, which
// costs half of reading SigCgt from /proc/PID/status.
func (p *Process) CaughtSignals() (uint64, error) {
	caught, _, err := p.SignalDispositions()
	return caught, err
}

// SignalDispositions reads which signals the process catches (a handler)
// and which it ignores (SIG_IGN), from /proc/PID/stat's sigcatch and
// sigignore; the rest are SIG_DFL.
func (p *Process) SignalDispositions() (caught, ignored uint64, err error) {
	if p.statusFile == nil {
		f, err := os.Open(fmt.Sprintf("/proc/%d/stat", p.Pid))
		if err != nil {
			return 0, 0, err
		}
		p.statusFile = f
	}
	var buf [1024]byte
	n, err := p.statusFile.ReadAt(buf[:], 0)
	if n == 0 && err != nil {
		return 0, 0, err
	}
	s := string(buf[:n])
	// The command name (field 2) may hold spaces: count from its ')'.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", p.Pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3; sigignore is field 33, sigcatch 34.
	if len(f) < 32 {
		return 0, 0, fmt.Errorf("short /proc/%d/stat", p.Pid)
	}
	if ignored, err = strconv.ParseUint(f[30], 10, 64); err != nil {
		return 0, 0, err
	}
	caught, err = strconv.ParseUint(f[31], 10, 64)
	return caught, ignored, err
}
