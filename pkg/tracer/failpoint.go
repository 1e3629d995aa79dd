package tracer

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
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

// dieAtNotify is MEMTRAP_DIE_AT_NOTIFY, a testing aid like failAt: memtrap
// kills itself (SIGKILL) when its listener has received the N-th call of a
// process it does not trace, before it answers the call, so that a test
// can check that the keeper answers a call memtrap's death left waiting.
var (
	dieAtNotify = parseFailAt(os.Getenv("MEMTRAP_DIE_AT_NOTIFY"))
	notifyCount atomic.Int64
)

// dieAtInject is MEMTRAP_DIE_AT_INJECT: memtrap kills itself at the N-th
// call it injects from a `syscall` of its own (SetSyscallInsn), once the
// thread's registers are set for the call and before it runs, so that a
// test can check that the guardian puts a thread let go mid-call back.
var (
	dieAtInject = parseFailAt(os.Getenv("MEMTRAP_DIE_AT_INJECT"))
	injectCount atomic.Int64
)

// diePoint counts one event, and dies at the one that at (the value of
// MEMTRAP_DIE_AT_NOTIFY or MEMTRAP_DIE_AT_INJECT) names.
func diePoint(at int64, count *atomic.Int64) {
	if at == 0 || count.Add(1) != at {
		return
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	time.Sleep(time.Hour) // the kill ends every thread
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
