package tracer

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// offsetof(struct user, u_debugreg) on x86-64.
const debugRegOffset = 848

// DebugReg reads debug register i (0-7) of a stopped thread.
func (t *Thread) DebugReg(i int) (uint64, error) {
	var buf [8]byte
	if _, err := unix.PtracePeekUser(t.Tid, uintptr(debugRegOffset+8*i), buf[:]); err != nil {
		return 0, fmt.Errorf("reading DR%d of %d: %w", i, t.Tid, err)
	}
	return leUint64(buf[:]), nil
}

// SetDebugReg writes debug register i (0-3 addresses, 6 status, 7 control)
// of a stopped thread. The kernel validates addresses and DR7 bits.
func (t *Thread) SetDebugReg(i int, v uint64) error {
	if err := failPoint(fmt.Sprintf("writing DR%d of %d", i, t.Tid)); err != nil {
		return err
	}
	var buf [8]byte
	for j := range buf {
		buf[j] = byte(v >> (8 * j))
	}
	if _, err := unix.PtracePokeUser(t.Tid, uintptr(debugRegOffset+8*i), buf[:]); err != nil {
		return fmt.Errorf("writing DR%d of %d: %w", i, t.Tid, err)
	}
	return nil
}
