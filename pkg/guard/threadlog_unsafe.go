package guard

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// threadLog is a page shared with the guardian (a memfd): the one thread
// whose registers or signal mask memtrap has changed for an injected call
// or a single-step, and what they were (tracer.ThreadLog). memtrap's
// ptrace thread changes one thread at a time, so one record does; its
// stores are plain memory, no system call. The guardian reads it once
// memtrap is dead, when nothing writes it any more.
//
// Layout, 8-byte words: tid (0: no thread changed), pid, mask, whether the
// registers follow, then unix.PtraceRegs.
type threadLog struct{ words *[logWords]uint64 }

const (
	logTid = iota
	logPid
	logMask
	logHasRegs
	logRegs
	logWords = logRegs + int(unsafe.Sizeof(unix.PtraceRegs{})/8)
)

func newThreadLog(mem []byte) threadLog {
	return threadLog{(*[logWords]uint64)(unsafe.Pointer(&mem[0]))}
}

// Changing records the thread, its mask and its registers, the tid last.
func (l threadLog) Changing(pid, tid int, regs *unix.PtraceRegs, mask uint64) {
	w := l.words
	atomic.StoreUint64(&w[logTid], 0)
	w[logPid], w[logMask], w[logHasRegs] = uint64(pid), mask, 0
	if regs != nil {
		*(*unix.PtraceRegs)(unsafe.Pointer(&w[logRegs])) = *regs
		w[logHasRegs] = 1
	}
	atomic.StoreUint64(&w[logTid], uint64(tid))
}

// Restored clears the record.
func (l threadLog) Restored() { atomic.StoreUint64(&l.words[logTid], 0) }

// Changed is a record the guardian read: thread Tid of process Pid had its
// mask (and, with HasRegs, its registers) changed when memtrap died.
type Changed struct {
	Pid, Tid int
	Mask     uint64
	HasRegs  bool
	Regs     unix.PtraceRegs
}

// readThreadLog reads the record from the log's memfd; ok is false when
// it holds no thread.
func readThreadLog(fd int) (c Changed, ok bool) {
	var w [logWords]uint64
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), len(w)*8)
	if n, err := unix.Pread(fd, buf, 0); err != nil || n != len(buf) {
		return c, false
	}
	if w[logTid] == 0 {
		return c, false
	}
	c = Changed{Pid: int(w[logPid]), Tid: int(w[logTid]), Mask: w[logMask], HasRegs: w[logHasRegs] != 0}
	c.Regs = *(*unix.PtraceRegs)(unsafe.Pointer(&w[logRegs]))
	return c, true
}
