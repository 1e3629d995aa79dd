package seccompnotify

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A Ledger holds the ids of the last calls a listener received, in a page
// of shared memory (a memfd) that a keeper maps too: a call received by a
// listener that died before it answered waits for an answer no one else
// knows to give, until the listener's last descriptor closes, and a keeper
// holds one. The keeper answers every id the ledger holds (AnswerLeft):
// the kernel refuses the ones answered already (ENOENT), as ids are never
// reused. Recording costs an atomic store, no system call.
type Ledger struct {
	fd    int
	slots []uint64
	next  atomic.Uint64
}

// ledgerSlots is how many of the last ids a Ledger keeps. memtrap's
// listeners answer each call before they receive the next (Serve), so one
// is unanswered at most; the rest is margin.
const ledgerSlots = 4096 / 8

// NewLedger makes an empty Ledger.
func NewLedger() (*Ledger, error) {
	fd, err := unix.MemfdCreate("memtrap-listener-ledger", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("a ledger of the listener's calls: %w", err)
	}
	if err := unix.Ftruncate(fd, 4096); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("a ledger of the listener's calls: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("a ledger of the listener's calls: %w", err)
	}
	return &Ledger{fd: fd, slots: unsafe.Slice((*uint64)(unsafe.Pointer(&mem[0])), ledgerSlots)}, nil
}

// Fd is the Ledger's memfd, for a keeper to map (AnswerLeft).
func (l *Ledger) Fd() int { return l.fd }

// record keeps id; a nil Ledger keeps nothing.
func (l *Ledger) record(id uint64) {
	if l == nil {
		return
	}
	i := (l.next.Add(1) - 1) % ledgerSlots
	atomic.StoreUint64(&l.slots[i], id)
}

// AnswerLeft answers "run it as it is" every call whose id the ledger in
// memfd ledgerFd holds that listener fd has not answered, and returns how
// many there were.
func AnswerLeft(fd, ledgerFd int) int {
	mem, err := unix.Mmap(ledgerFd, 0, 4096, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0
	}
	defer unix.Munmap(mem)
	slots := unsafe.Slice((*uint64)(unsafe.Pointer(&mem[0])), ledgerSlots)
	n := 0
	for i := range slots {
		if id := atomic.LoadUint64(&slots[i]); id != 0 && Continue(fd, id) == nil {
			n++
		}
	}
	return n
}
