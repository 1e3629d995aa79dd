package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/memtrap/memtrap/pkg/x86/store"
	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"
)

// Memory is a target's memory, as /proc/PID/mem gives it.
type Memory interface {
	io.ReaderAt
	io.WriterAt
}

// ucontext_t on x86-64: the general registers after uc_flags, uc_link and
// uc_stack, then the pointer to the saved FPU state.
const (
	ucGRegs  = 40
	ucFPRegs = ucGRegs + NGReg*8
)

// gregs indices (sys/ucontext.h).
const (
	gR8 = iota
	gR9
	gR10
	gR11
	gR12
	gR13
	gR14
	gR15
	gRDI
	gRSI
	gRBP
	gRBX
	gRDX
	gRAX
	gRCX
	gRSP
	gRIP
	gEFL
	gCSGSFS
	gERR
	gTRAPNO
	gOLDMASK
	gCR2
)

// FaultAddr is the address whose access faulted, of a frame's registers
// g (REG_CR2: the kernel puts the fault's address there).
func FaultAddr(g *[NGReg]uint64) uint64 { return g[gCR2] }

// ptraceRegs is a frame's registers as the emulator takes them.
func ptraceRegs(g *[NGReg]uint64, q Request) unix.PtraceRegs {
	return unix.PtraceRegs{
		R8: g[gR8], R9: g[gR9], R10: g[gR10], R11: g[gR11], R12: g[gR12], R13: g[gR13], R14: g[gR14], R15: g[gR15],
		Rdi: g[gRDI], Rsi: g[gRSI], Rbp: g[gRBP], Rbx: g[gRBX], Rdx: g[gRDX], Rax: g[gRAX], Rcx: g[gRCX], Rsp: g[gRSP],
		Rip: g[gRIP], Eflags: g[gEFL], Fs_base: q.FSBase, Gs_base: q.GSBase,
	}
}

// setGRegs puts r back into a frame's registers.
func setGRegs(g *[NGReg]uint64, r *unix.PtraceRegs) {
	g[gR8], g[gR9], g[gR10], g[gR11], g[gR12], g[gR13], g[gR14], g[gR15] = r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15
	g[gRDI], g[gRSI], g[gRBP], g[gRBX], g[gRDX], g[gRAX], g[gRCX], g[gRSP] = r.Rdi, r.Rsi, r.Rbp, r.Rbx, r.Rdx, r.Rax, r.Rcx, r.Rsp
	g[gRIP], g[gEFL] = r.Rip, r.Eflags
}

// frame is the emulator's Target over a thread waiting in its signal
// frame: memory through /proc/PID/mem, the FPU state from the frame.
type frame struct {
	mem Memory
	fp  uint64 // the frame's fpstate (FXSAVE layout, then XSAVE's)
}

func (f frame) ReadMemory(addr uint64, b []byte) error {
	n, err := f.mem.ReadAt(b, int64(addr))
	if n == len(b) {
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (f frame) FPRegs(out *[512]byte) error {
	if f.fp == 0 {
		return errors.New("no FPU state in the frame")
	}
	return f.ReadMemory(f.fp, out[:])
}

func (f frame) XState(buf []byte) (int, error) {
	if f.fp == 0 {
		return 0, errors.New("no FPU state in the frame")
	}
	n, err := f.mem.ReadAt(buf, int64(f.fp))
	if n > 0 {
		err = nil
	}
	return n, err
}

// ErrRingFull: Complete found no room for its record; the request stays
// posted, to be completed once the caller has taken the records.
var ErrRingFull = errors.New("the agent's ring is full")

// ErrCannot: the store is one memtrap's emulator does not do either.
var ErrCannot = errors.New("the store cannot be emulated")

// Complete does the store of the ReqComplete request in slot i, as the CPU
// would have, from the thread's frozen signal frame: decoded with the
// frame's registers and emulated, the memory written through mem and the
// registers after it written into the frame, and its record appended to
// the ring, all with the Area's lock held (so that it is ordered with the
// agent's own writes), then answers. The handler returns past the store.
// On an error the request is answered "not done", and the agent passes the
// fault on.
func (s *Shared) Complete(i int, mem Memory) (rec Record, err error) {
	rec, _, err = s.complete(i, mem)
	s.answerComplete(i, err)
	return rec, err
}

// answerComplete answers the ReqComplete request in slot i: done if err is
// nil; an ErrRingFull leaves it posted, to be asked again once the records
// are taken.
func (s *Shared) answerComplete(i int, err error) {
	if errors.Is(err, ErrRingFull) {
		return
	}
	res := uint32(0)
	if err != nil {
		res = 1
	}
	atomic.StoreUint32(&s.a.Requests[i].Result, res)
	atomic.StoreUint32(&s.a.Requests[i].State, ReqAnswered)
	futex(unsafe.Pointer(&s.a.Requests[i].State), futexWake, 1, nil)
}

// complete is Complete but the answer; it also returns the bytes of the
// store's instruction it read (nil if it read none).
func (s *Shared) complete(i int, mem Memory) (rec Record, code []byte, err error) {
	q := s.Request(i)
	if q.Kind != ReqComplete || q.UC == 0 {
		return Record{}, nil, fmt.Errorf("request %d is not one to complete", i)
	}
	var raw [NGReg*8 + 8]byte
	f := frame{mem: mem}
	if err := f.ReadMemory(q.UC+ucGRegs, raw[:]); err != nil {
		return Record{}, nil, fmt.Errorf("reading the thread's signal frame: %w", err)
	}
	var g [NGReg]uint64
	for k := range g {
		g[k] = binary.LittleEndian.Uint64(raw[8*k:])
	}
	before := g // the record's registers: as the fault left them, as the agent's are
	f.fp = binary.LittleEndian.Uint64(raw[NGReg*8:])
	regs := ptraceRegs(&g, q)
	code = make([]byte, maxInsn)
	n, _ := mem.ReadAt(code, int64(regs.Rip))
	code = code[:n]
	st, err := store.Decode(code, &regs)
	if err != nil || !st.Known || st.Size == 0 {
		return Record{}, code, fmt.Errorf("%w: at %#x", ErrCannot, regs.Rip)
	}
	// The lock before the emulation reads the memory: a read-modify-write
	// must not interleave with the agent's writes (or another's).
	s.lock()
	defer s.unlock()
	if atomic.LoadUint64(&s.a.Head)-atomic.LoadUint64(&s.a.Tail) >= Ring {
		return Record{}, code, ErrRingFull
	}
	em, why := store.Emulate(&st, &regs, f)
	if em == nil {
		return Record{}, code, fmt.Errorf("%w: %s", ErrCannot, why)
	}
	lo, hi := em.Written()
	old := make([]byte, hi-lo)
	if err := f.ReadMemory(lo, old); err != nil {
		return Record{}, code, err
	}
	data := em.Data()
	if err := em.Runs(func(a, b uint64) error {
		_, err := mem.WriteAt(data[a:b], int64(em.Addr()+a))
		return err
	}); err != nil {
		return Record{}, code, fmt.Errorf("writing the store: %w", err)
	}
	after := em.Regs()
	setGRegs(&g, &after)
	for k := range g {
		binary.LittleEndian.PutUint64(raw[8*k:], g[k])
	}
	if _, err := mem.WriteAt(raw[:NGReg*8], int64(q.UC+ucGRegs)); err != nil {
		return Record{}, code, fmt.Errorf("writing the thread's signal frame: %w", err)
	}
	rec = Record{Tid: q.Tid, Width: uint32(hi - lo), PC: regs.Rip, Addr: lo, GRegs: before}
	var o, nw [8]byte
	stored := data[lo-em.Addr() : hi-em.Addr()]
	copy(o[:], old)
	copy(nw[:], stored)
	rec.Old, rec.New = binary.LittleEndian.Uint64(o[:]), binary.LittleEndian.Uint64(nw[:])
	_ = f.ReadMemory(StackAddr(regs.Rsp), rec.Stack[:])
	s.append(&rec)
	if len(old) > 8 {
		// Wider than a record holds (a vector store, a rep stos):
		// the bytes wait for Bytes.
		s.keep(rec.Seq, side{old: old, new: append([]byte(nil), stored...)})
	}
	return rec, code, nil
}

// Bytes are the bytes a record's write found and left, Width of each: a
// write memtrap did that is wider than 8 bytes has them kept aside, until
// the record is Done (or, taken by Next, for ever: Next is for tests).
func (s *Shared) Bytes(rec *Record) (old, new []byte) {
	if sd, ok := s.sides[rec.Seq]; ok && sd.old != nil && int(rec.Width) == len(sd.old) {
		return sd.old, sd.new
	}
	n := min(int(rec.Width), 8)
	old, new = make([]byte, 8), make([]byte, 8)
	binary.LittleEndian.PutUint64(old, rec.Old)
	binary.LittleEndian.PutUint64(new, rec.New)
	return old[:n], new[:n]
}

// FrameGRegs reads the general registers of the signal frame whose
// ucontext_t is at uc.
func FrameGRegs(mem Memory, uc uint64) (g [NGReg]uint64, err error) {
	var raw [NGReg * 8]byte
	if err := (frame{mem: mem}).ReadMemory(uc+ucGRegs, raw[:]); err != nil {
		return g, fmt.Errorf("reading the thread's signal frame: %w", err)
	}
	for k := range g {
		g[k] = binary.LittleEndian.Uint64(raw[8*k:])
	}
	return g, nil
}

// FrameFPState is where the FPU state of the signal frame whose
// ucontext_t is at uc lies (uc_mcontext.fpregs: an XSAVE image), 0 if it
// has none.
func FrameFPState(mem Memory, uc uint64) (uint64, error) {
	var b [8]byte
	if err := (frame{mem: mem}).ReadMemory(uc+ucFPRegs, b[:]); err != nil {
		return 0, fmt.Errorf("reading the thread's signal frame: %w", err)
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// SetFrameGRegs writes r into the general registers of the signal frame
// whose ucontext_t is at uc: what the thread resumes with at its
// sigreturn.
func SetFrameGRegs(mem Memory, uc uint64, r *unix.PtraceRegs) error {
	g, err := FrameGRegs(mem, uc)
	if err != nil {
		return err
	}
	setGRegs(&g, r)
	var raw [NGReg * 8]byte
	for k := range g {
		binary.LittleEndian.PutUint64(raw[8*k:], g[k])
	}
	if _, err := mem.WriteAt(raw[:], int64(uc+ucGRegs)); err != nil {
		return fmt.Errorf("writing the thread's signal frame: %w", err)
	}
	return nil
}

// RequestRegs are the registers of the thread of request q at its fault,
// as its signal frame holds them, with its FS and GS bases.
func RequestRegs(mem Memory, q Request) (unix.PtraceRegs, error) {
	g, err := FrameGRegs(mem, q.UC)
	if err != nil {
		return unix.PtraceRegs{}, err
	}
	return ptraceRegs(&g, q), nil
}

// GRegsPtrace is gregs as ptrace's registers (FS and GS bases 0).
func GRegsPtrace(g *[NGReg]uint64) unix.PtraceRegs { return ptraceRegs(g, Request{}) }

// Regs are a record's registers as the fault left them (FS and GS bases
// unknown: 0).
func (rec *Record) Regs() unix.PtraceRegs { return ptraceRegs(&rec.GRegs, Request{}) }

// lock takes the Area's lock, which the agent takes around each write;
// while it waits, what WhileLocked gave runs.
func (s *Shared) lock() {
	for !atomic.CompareAndSwapUint32(&s.a.Lock, 0, 1) {
		if s.spin != nil {
			s.spin()
		}
		runtime.Gosched()
	}
}

// WhileLocked gives what Lock runs while it waits: it answers the
// requests whose threads hold the lock for memtrap while they wait
// (ReqMadvise), and must not take the lock itself.
func (s *Shared) WhileLocked(f func()) { s.spin = f }

func (s *Shared) unlock() { atomic.StoreUint32(&s.a.Lock, 0) }

// append puts rec in the ring as the next record (the lock held, room
// checked).
func (s *Shared) append(rec *Record) {
	head := atomic.LoadUint64(&s.a.Head)
	rec.Seq = head
	s.a.Records[head%Ring] = *rec
	atomic.StoreUint64(&s.a.Head, head+1)
}

// Decline answers a ReqComplete request in slot i "not done".
func (s *Shared) Decline(i int) {
	atomic.StoreUint32(&s.a.Requests[i].Result, 1)
	atomic.StoreUint32(&s.a.Requests[i].State, ReqAnswered)
	futex(unsafe.Pointer(&s.a.Requests[i].State), futexWake, 1, nil)
}

// maxInsn is the longest x86 instruction.
const maxInsn = 15

// Served is one request Serve answered.
type Served struct {
	Request
	Done bool  // a recipe given (RECIPE), the store done (COMPLETE)
	Err  error // COMPLETE: why it was not done
	// Code is the instruction at PC as it was read while its thread
	// waited (RECIPE, COMPLETE): the process may be gone by the time
	// its records are reported.
	Code []byte
}

// Stepper does a store the emulator cannot (Complete's ErrCannot) by other
// means, while its thread waits in its signal frame for the answer: it
// writes the registers after the store into the frame (SetFrameGRegs),
// appends the write's record (AppendWrite) and returns nil, or says why
// not (ErrRingFull: ask again once the records are taken).
type Stepper func(q Request) error

// Serve answers the posted requests: the recipe of a pc from the code at
// it (RecipeFor; width 0 where the agent cannot do the store), and the
// stores the agent cannot do (Complete). System calls (ReqKernel,
// ReqKernelDone) are left posted for the caller. refuse, if set, says which pcs
// get neither (their faults go to the target's own action). A COMPLETE
// request that finds the ring full stays posted: the caller takes the
// records (Next) and serves again. It returns what it answered.
func (s *Shared) Serve(mem Memory, refuse func(pc uint64) bool, step Stepper) ([]Served, error) {
	var out []Served
	for _, i := range s.Posted() {
		q := s.Request(i)
		no := refuse != nil && refuse(q.PC)
		switch {
		case q.Kind == ReqComplete && no:
			s.Decline(i)
			out = append(out, Served{Request: q})
		case q.Kind == ReqComplete:
			_, code, err := s.complete(i, mem)
			if code == nil {
				code = make([]byte, maxInsn)
				n, _ := mem.ReadAt(code, int64(q.PC))
				code = code[:n]
			}
			if errors.Is(err, ErrCannot) && step != nil {
				if serr := step(q); serr == nil || errors.Is(serr, ErrRingFull) {
					err = serr
				} else {
					err = fmt.Errorf("%w; stepping it: %w", err, serr)
				}
			}
			s.answerComplete(i, err)
			if errors.Is(err, ErrRingFull) {
				continue
			}
			out = append(out, Served{Request: q, Done: err == nil, Err: err, Code: code})
		case q.Kind == ReqRecipe:
			r := Recipe{PC: q.PC}
			code := make([]byte, maxInsn)
			n, _ := mem.ReadAt(code, int64(q.PC))
			code = code[:n]
			if !no {
				if inst, err := x86asm.Decode(code, 64); err == nil {
					if rr, ok := RecipeFor(q.PC, inst); ok {
						r = rr
					}
				}
			}
			if err := s.Answer(i, r); errors.Is(err, ErrFull) {
				r.Width = 0 // memtrap does this one's stores
			} else if err != nil {
				return out, err
			}
			out = append(out, Served{Request: q, Done: r.Width != 0, Code: code})
		}
	}
	return out, nil
}
