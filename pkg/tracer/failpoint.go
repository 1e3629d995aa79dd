package tracer

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
)

// ErrInjected is the failure MEMTRAP_FAIL_AT asked for.
var ErrInjected = errors.New("injected failure")

// failAt is the number (from 1) of the change to a target that fails, as
// the environment variable MEMTRAP_FAIL_AT says: a testing aid, so that a
// test can make each step of arming fail in turn and check that memtrap
// undoes what it did before the step. The changes counted are the ones a
// tracer makes to a target: injected system calls, debug register writes
// and memory writes. Only that one fails; 0 (unset) fails none.
var (
	failAt    = parseFailAt(os.Getenv("MEMTRAP_FAIL_AT"))
	failCount atomic.Int64
)

func parseFailAt(s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// failPoint counts one change to a target, and fails it if it is the one
// MEMTRAP_FAIL_AT names.
func failPoint(what string) error {
	if failAt == 0 {
		return nil
	}
	if failCount.Add(1) == failAt {
		return fmt.Errorf("%s: %w (MEMTRAP_FAIL_AT=%d)", what, ErrInjected, failAt)
	}
	return nil
}
