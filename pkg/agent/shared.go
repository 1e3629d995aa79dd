package agent

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Shared is memtrap's side of an Area: the same memory as the target's
// (a memfd both map), read and written while the agent runs in the target.
type Shared struct {
	mem []byte
	a   *Area
	// sides holds, by record seq, what a Record cannot: the old and new
	// bytes of the writes memtrap did that are wider than 8 bytes, and
	// the system call of a kernel write (Bytes, Syscall). Serve, Next,
	// Peek and AppendKernel run on one goroutine.
	sides map[uint64]side
	spin  func() // WhileLocked's
}

type side struct {
	old, new []byte
	syscall  string
	// inexact: a store whose bytes nobody could bound (an XSAVE): old
	// and new span the pages it may have written, and only the bytes
	// that differ are its write.
	inexact bool
}

func (s *Shared) keep(seq uint64, sd side) {
	if s.sides == nil {
		s.sides = map[uint64]side{}
	}
	s.sides[seq] = sd
}

// AreaSize is the bytes an Area's mapping takes (whole pages).
var AreaSize = (int(unsafe.Sizeof(Area{})) + 4095) &^ 4095

// MapShared maps the Area held by memfd fd (AreaSize bytes from offset 0).
func MapShared(fd int) (*Shared, error) {
	s, err := mapArea(fd)
	if err != nil {
		return nil, err
	}
	if atomic.LoadUint64(&s.a.Magic) != Magic {
		s.Close()
		return nil, errors.New("mapping the agent's area: no agent's area there")
	}
	return s, nil
}

// mapArea maps fd's Area, whatever it holds.
func mapArea(fd int) (*Shared, error) {
	mem, err := unix.Mmap(fd, 0, AreaSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping the agent's area: %w", err)
	}
	return &Shared{mem: mem, a: (*Area)(unsafe.Pointer(&mem[0]))}, nil
}

// Close unmaps the Area.
func (s *Shared) Close() {
	if s.mem != nil {
		_ = unix.Munmap(s.mem)
		s.mem, s.a = nil, nil
	}
}

// Area is the shared memory itself, for what is set up before the agent
// runs, and its counters.
func (s *Shared) Area() *Area { return s.a }

// Next takes the next record the agent wrote into r, in the order the
// writes took effect, and says whether there was one. A full ring makes
// writers wait: taking a record from one wakes them.
func (s *Shared) Next(r *Record) bool {
	tail := atomic.LoadUint64(&s.a.Tail)
	head := atomic.LoadUint64(&s.a.Head)
	if tail == head {
		return false
	}
	*r = s.a.Records[tail%Ring]
	atomic.StoreUint64(&s.a.Tail, tail+1)
	if head-tail == Ring {
		futex(unsafe.Pointer(&s.a.Tail), futexWake, ^uint32(0)>>1, nil)
	}
	return true
}

// Peek is the next record the agent wrote, in place in the ring, or nil:
// it stays the agent's to keep (its slot is not reused) until Done.
func (s *Shared) Peek() *Record {
	tail := atomic.LoadUint64(&s.a.Tail)
	if tail == atomic.LoadUint64(&s.a.Head) {
		return nil
	}
	return &s.a.Records[tail%Ring]
}

// Done gives the slot of the record Peek returned back to the agent.
func (s *Shared) Done() {
	tail := atomic.LoadUint64(&s.a.Tail)
	delete(s.sides, tail)
	atomic.StoreUint64(&s.a.Tail, tail+1)
	if atomic.LoadUint64(&s.a.Head)-tail == Ring {
		futex(unsafe.Pointer(&s.a.Tail), futexWake, ^uint32(0)>>1, nil)
	}
}

// Posted lists the slots of the requests waiting for an answer.
func (s *Shared) Posted() []int {
	var out []int
	for i := range s.a.Requests {
		if atomic.LoadUint32(&s.a.Requests[i].State) == ReqPosted {
			out = append(out, i)
		}
	}
	return out
}

// Request is the request in slot i.
func (s *Shared) Request(i int) Request {
	q := &s.a.Requests[i]
	state := atomic.LoadUint32(&q.State) // the rest was written before it
	return Request{PC: atomic.LoadUint64(&q.PC), Tid: atomic.LoadUint32(&q.Tid), State: state,
		Kind: atomic.LoadUint32(&q.Kind), Result: atomic.LoadUint32(&q.Result), UC: atomic.LoadUint64(&q.UC),
		FSBase: atomic.LoadUint64(&q.FSBase), GSBase: atomic.LoadUint64(&q.GSBase),
		Scratch: atomic.LoadUint64(&q.Scratch), Ret: atomic.LoadInt64(&q.Ret)}
}

// ErrFull: the Area's recipe table has no slot left.
var ErrFull = errors.New("the agent's recipe table is full")

// Add puts r in the recipe table (r.Width 0: the store at r.PC is not the
// agent's). The agent may be looking meanwhile: r's pc goes in last, so
// that it never sees half a recipe.
func (s *Shared) Add(r Recipe) error {
	pc := r.PC
	h := Slot(pc)
	for i := uint32(0); i < Recipes; i++ {
		slot := &s.a.Recipes[(h+i)&(Recipes-1)]
		switch atomic.LoadUint64(&slot.PC) {
		case pc:
			return nil
		case 0:
			r.PC = 0
			*slot = r
			atomic.StoreUint64(&slot.PC, pc)
			return nil
		}
	}
	return ErrFull
}

// Answer adds r and answers the request in slot i with it. A full table
// answers with no recipe (the agent then asks for the store to be done,
// ReqComplete) and says so.
func (s *Shared) Answer(i int, r Recipe) error {
	err := s.Add(r)
	atomic.StoreUint32(&s.a.Requests[i].State, ReqAnswered)
	futex(unsafe.Pointer(&s.a.Requests[i].State), futexWake, 1, nil)
	return err
}

// Wait sleeps until the agent writes a record or posts a request, or for
// at most d.
func (s *Shared) Wait(d time.Duration) {
	atomic.StoreUint32(&s.a.Waiting, 1)
	defer atomic.StoreUint32(&s.a.Waiting, 0)
	head := atomic.LoadUint64(&s.a.Head)
	if head != atomic.LoadUint64(&s.a.Tail) || len(s.Posted()) > 0 {
		return
	}
	ts := unix.NsecToTimespec(d.Nanoseconds())
	futex(unsafe.Pointer(&s.a.Head), futexWait, uint32(head), &ts)
}

// futex(2) operations on a word both processes map (not private).
const (
	futexWait = 0
	futexWake = 1
)

func futex(addr unsafe.Pointer, op int, val uint32, ts *unix.Timespec) {
	_, _, _ = unix.Syscall6(unix.SYS_FUTEX, uintptr(addr), uintptr(op), uintptr(val), uintptr(unsafe.Pointer(ts)), 0, 0)
}

// AnswerKernel answers the ReqKernel request in slot i: the agent maps size
// bytes of scratch (twice what the buffers take: their copies to compare
// with are in its upper half) and moves the buffers of outs there; no outs:
// the call runs as it is.
func (s *Shared) AnswerKernel(i int, size uint64, outs []Bounce) {
	q := &s.a.Requests[i]
	n := copy(q.Out[:], outs)
	q.Size, q.NOut = 0, uint32(n)
	if n > 0 {
		q.Size = size
	}
	atomic.StoreUint32(&q.Result, 0)
	atomic.StoreUint32(&q.State, ReqAnswered)
	futex(unsafe.Pointer(&q.State), futexWake, 1, nil)
}

// DoneKernel answers the ReqKernelDone request in slot i.
func (s *Shared) DoneKernel(i int) {
	q := &s.a.Requests[i]
	atomic.StoreUint32(&q.Result, 0)
	atomic.StoreUint32(&q.State, ReqAnswered)
	futex(unsafe.Pointer(&q.State), futexWake, 1, nil)
}

// Lock takes the Area's lock, which the agent takes around each write: what
// memtrap writes meanwhile is ordered with the agent's writes.
func (s *Shared) Lock() { s.lock() }

// Unlock releases it.
func (s *Shared) Unlock() { s.unlock() }

// Room is how many records the ring can take now.
func (s *Shared) Room() int {
	return Ring - int(atomic.LoadUint64(&s.a.Head)-atomic.LoadUint64(&s.a.Tail))
}

// AppendKernel appends rec, a write the kernel made for the system call
// named call, whose bytes are old and new (Bytes gives them back, and
// Syscall the name). The lock held, Room checked.
func (s *Shared) AppendKernel(rec *Record, old, new []byte, call string) {
	s.append(rec)
	s.keep(rec.Seq, side{old: old, new: new, syscall: call})
}

// AppendWrite appends rec, a store memtrap did (a Stepper's), whose bytes
// are old and new; inexact if nobody knew which bytes it would write (see
// Exact). The lock held, Room checked.
func (s *Shared) AppendWrite(rec *Record, old, new []byte, inexact bool) {
	s.append(rec)
	s.keep(rec.Seq, side{old: old, new: new, inexact: inexact})
}

// Exact says whether rec's bytes are all its store's; if not, only
// those that changed are known to be.
func (s *Shared) Exact(rec *Record) bool { return !s.sides[rec.Seq].inexact }

// Syscall names the system call whose write rec is ("": the target's
// store).
func (s *Shared) Syscall(rec *Record) string { return s.sides[rec.Seq].syscall }
