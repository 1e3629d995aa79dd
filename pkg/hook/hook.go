package hook

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/memtrap/memtrap/pkg/bpfhook"
	"github.com/memtrap/memtrap/pkg/guard"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"
)

// HitFunc runs at a breakpoint, on the thread that reached it, stopped
// with RIP at the function's first instruction (not run yet) and regs its
// registers; the arguments are in them, as the SysV ABI passes them. It may
// ask for the function's return with [Set.Return].
type HitFunc func(t *tracer.Thread, regs *unix.PtraceRegs) error

// ReturnFunc runs when the function returns, on the same thread, stopped
// at the return address with regs its registers (the result in Rax).
type ReturnFunc func(t *tracer.Thread, regs *unix.PtraceRegs) error

// Set is the breakpoints of one process.
type Set struct {
	p    *tracer.Process
	page uint64 // the code page: the return trampoline, then the slots
	next uint64 // next free slot
	bps  map[uint64]*breakpoint
	// rets: the calls of each thread whose return is awaited, innermost
	// last.
	rets map[int][]pending
	// replay: a thread whose stepped instruction was interrupted by a
	// signal comes back to its breakpoint for the same call, not a new
	// one.
	replay map[int]uint64
	// gate: the kernel's uprobes (UseGate), gated their HitFuncs by
	// entry address, gateStops the gate's stops Owns saw, by tid.
	gate      *bpfhook.Gate
	missed    uint64 // Missed of the gates closed so far
	gated     map[uint64]HitFunc
	gateStops map[int]gateStop
	atReturn  *returnStop // the gate's stop at a return being handled
	// goneHooked: the process tells the set of threads gone (UseGate).
	goneHooked bool
	// gateFns, gateCalls: what the gate is (to be) attached to.
	gateFns   []uint64
	gateCalls []bpfhook.Call
}

type breakpoint struct {
	addr uint64
	orig byte
	len  int
	slot uint64 // out-of-line copy of the instruction, 0 if it must be stepped
	hit  HitFunc
}

// pending is one awaited return: the stack slot that held the return
// address (the trampoline's address now), the real one, and what to run.
type pending struct {
	slot, ra uint64
	f        ReturnFunc
}

const (
	pageSize = 4096
	slotSize = 32 // an instruction (at most 15 bytes) and a 14-byte jmp
	int3     = 0xcc
	siKernel = 0x80 // si_code of the SIGTRAP an int3 raises
)

// ErrNoRoom means the code page has no slot left.
var ErrNoRoom = errors.New("memtrap's code page in the target is full")

// New maps the code page in p, with t (stopped, at a clean instruction
// boundary) making the call.
func New(p *tracer.Process, t *tracer.Thread) (*Set, error) {
	addr, err := t.Syscall(unix.SYS_MMAP, 0, pageSize, unix.PROT_READ|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
	if err != nil {
		return nil, fmt.Errorf("mapping memtrap's code page in the target: %w", err)
	}
	s := &Set{p: p, page: uint64(addr), next: uint64(addr) + slotSize,
		bps: map[uint64]*breakpoint{}, rets: map[int][]pending{}, replay: map[int]uint64{},
		gated: map[uint64]HitFunc{}, gateStops: map[int]gateStop{}}
	// The trampoline: a return lands on an int3. Then the landing of
	// injected calls; at the page's end, the code of the tracer's calls
	// on resume.
	err = p.WriteMemory(s.page, []byte{int3})
	if err == nil {
		err = p.WriteMemory(s.landing(), landingCode)
	}
	if err == nil {
		err = p.WriteMemory(s.stub(), tracer.StubCode)
	}
	if err != nil {
		if _, uerr := t.Syscall(unix.SYS_MUNMAP, addr, pageSize); uerr != nil {
			err = errors.Join(err, fmt.Errorf("unmapping the code page again: %w", uerr))
		}
		return nil, err
	}
	p.SetCallStub(s.stub())
	return s, nil
}

// landing is where the calls the tracer injects run from, once the
// guardian knows of it (UseLanding): landingCode, past the trampoline.
func (s *Set) landing() uint64 { return s.page + landingOff }

// landingCode is `syscall; jmp .`. The tracer single-steps the syscall and
// puts the thread's registers back. A thread that a dying memtrap lets go
// before the step makes the call and stays in the loop, its other
// registers as memtrap set them, until the guardian puts them back (it
// has them from tracer.ThreadLog). From a `syscall` of the target's, the
// thread would run on into the code after it: the vDSO's `leave; ret`
// returns from the function that the thread's frame pointer says, with the
// call's result.
var landingCode = []byte{0x0f, 0x05, 0xeb, 0xfe}

const landingOff = 16 // the trampoline's int3 is at 0, the slots from slotSize

// UseLanding has the calls the tracer injects run from the landing. Only
// once the guardian, if there is one, knows of the code page (GuardState):
// one that does not would leave a thread in the loop.
func (s *Set) UseLanding() { s.p.SetSyscallInsn(s.landing()) }

// stub is where the tracer's StubCode stands in the code page: at its
// end, after the slots.
func (s *Set) stub() uint64 { return s.page + pageSize - stubSize }

// stubSize is the room StubCode takes at the end of the code page.
const stubSize = 64

// Add puts a breakpoint at addr, the first byte of an instruction (a
// function's entry point).
func (s *Set) Add(addr uint64, hit HitFunc) error {
	if _, ok := s.bps[addr]; ok {
		return fmt.Errorf("a breakpoint stands at %#x already", addr)
	}
	code := make([]byte, 16)
	if err := s.p.ReadMemory(addr, code); err != nil {
		return fmt.Errorf("reading the code at %#x: %w", addr, err)
	}
	inst, err := x86asm.Decode(code, 64)
	if err != nil || inst.Op == 0 {
		return fmt.Errorf("the instruction at %#x cannot be decoded", addr)
	}
	bp := &breakpoint{addr: addr, orig: code[0], len: inst.Len, hit: hit}
	if relocatable(&inst) {
		if s.next+slotSize > s.stub() {
			return ErrNoRoom
		}
		bp.slot = s.next
		if err := s.p.WriteMemory(bp.slot, outOfLine(code[:inst.Len], addr+uint64(inst.Len))); err != nil {
			return err
		}
		s.next += slotSize
	}
	if err := s.p.WriteMemory(addr, []byte{int3}); err != nil {
		return err
	}
	s.bps[addr] = bp
	return nil
}

// outOfLine is an instruction copied out of line, followed by a jump to
// where it continues (jmp [rip+0] and the absolute address: no reach
// limit).
func outOfLine(insn []byte, cont uint64) []byte {
	b := append([]byte(nil), insn...)
	b = append(b, 0xff, 0x25, 0, 0, 0, 0)
	return binary.LittleEndian.AppendUint64(b, cont)
}

// relocatable says whether an instruction does the same at any address:
// it reads no RIP-relative memory and transfers no control.
func relocatable(inst *x86asm.Inst) bool {
	for _, a := range inst.Args {
		switch a := a.(type) {
		case x86asm.Mem:
			if a.Base == x86asm.RIP {
				return false
			}
		case x86asm.Rel:
			return false
		case x86asm.Reg:
			if a == x86asm.RIP {
				return false
			}
		}
	}
	switch inst.Op {
	case x86asm.JMP, x86asm.CALL, x86asm.RET, x86asm.LRET, x86asm.LCALL, x86asm.LJMP,
		x86asm.SYSCALL, x86asm.SYSENTER, x86asm.INT, x86asm.INTO, x86asm.IRET, x86asm.IRETD, x86asm.IRETQ,
		x86asm.LOOP, x86asm.LOOPE, x86asm.LOOPNE, x86asm.JCXZ, x86asm.JECXZ, x86asm.JRCXZ:
		return false
	}
	return true
}

// Return asks for the return of the function whose breakpoint t has just
// reached (RIP at its entry, the return address at [rsp]): the return
// address is pointed at the trampoline, the way the kernel's uretprobes do,
// so that no byte of the caller's code changes.
func (s *Set) Return(t *tracer.Thread, regs *unix.PtraceRegs, f ReturnFunc) error {
	if r := s.atReturn; r != nil && r.tid == t.Tid && r.slot == regs.Rsp {
		// The gate stopped the call at its return: it is now.
		ret := r.regs
		return f(t, &ret)
	}
	var b [8]byte
	if err := s.p.ReadMemory(regs.Rsp, b[:]); err != nil {
		return err
	}
	var tramp [8]byte
	binary.LittleEndian.PutUint64(tramp[:], s.page)
	if err := s.p.WriteMemory(regs.Rsp, tramp[:]); err != nil {
		return err
	}
	s.rets[t.Tid] = append(s.rets[t.Tid], pending{slot: regs.Rsp, ra: binary.LittleEndian.Uint64(b[:]), f: f})
	return nil
}

// Owns says whether a stop is one of the set's breakpoints, its
// trampoline, or its gate's.
func (s *Set) Owns(st tracer.Stop) bool {
	if s.gateOwns(st) {
		return true
	}
	if st.Kind != tracer.StopSignal || st.Sig != int(unix.SIGTRAP) || st.Info.Code() != siKernel {
		return false
	}
	var regs unix.PtraceRegs
	if st.Thread.Regs(&regs) != nil {
		return false
	}
	return regs.Rip-1 == s.page || s.bps[regs.Rip-1] != nil || s.p.StubFailed(st, regs.Rip)
}

// Handle runs what a stop that Owns is for, and leaves the thread stopped,
// ready to go on (the caller resumes it) as if nothing had stood there.
func (s *Set) Handle(t *tracer.Thread) error {
	if gs, ok := s.gateStops[t.Tid]; ok {
		return s.gateHit(t, gs)
	}
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return err
	}
	at := regs.Rip - 1
	if at == s.page {
		return s.returned(t, &regs)
	}
	if s.p.InStub(regs.Rip) {
		// A call on resume failed: made again, or the error.
		return t.LeaveStub()
	}
	bp := s.bps[at]
	regs.Rip = at
	if s.replay[t.Tid] == at {
		delete(s.replay, t.Tid)
	} else if err := bp.hit(t, &regs); err != nil {
		// Back on the breakpoint's instruction: whoever gives up on
		// this thread (restoring the byte, detaching) lets it run the
		// call as if nothing had stood there.
		regs.Rip = at
		if serr := t.SetRegs(&regs); serr != nil {
			err = errors.Join(err, serr)
		}
		return err
	}
	if bp.slot != 0 {
		regs.Rip = bp.slot
		return t.SetRegs(&regs)
	}
	if err := t.SetRegs(&regs); err != nil {
		return err
	}
	return s.step(t, bp)
}

// step runs a displaced instruction that cannot run out of line in place:
// the other threads stopped, the byte put back for one single-step.
func (s *Set) step(t *tracer.Thread, bp *breakpoint) (err error) {
	if err := s.p.StopOthers(t); err != nil {
		return err
	}
	defer func() {
		if rerr := s.p.ResumeOthers(); rerr != nil && err == nil {
			err = rerr
		}
	}()
	if err := s.p.WriteMemory(bp.addr, []byte{bp.orig}); err != nil {
		return err
	}
	res, err := t.Step()
	if werr := s.p.WriteMemory(bp.addr, []byte{int3}); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	if !res.Done {
		// A signal came first: delivered when the thread goes on, it
		// comes back here after its handler, for this same call.
		t.Defer(res.Info)
		s.replay[t.Tid] = bp.addr
	}
	return nil
}

// returned handles a return onto the trampoline.
func (s *Set) returned(t *tracer.Thread, regs *unix.PtraceRegs) error {
	stack := s.rets[t.Tid]
	// The ret popped the slot: rsp is one word above it. Calls left by a
	// longjmp lie below it; they never return.
	for len(stack) > 0 && stack[len(stack)-1].slot+8 < regs.Rsp {
		stack = stack[:len(stack)-1]
	}
	if len(stack) == 0 || stack[len(stack)-1].slot+8 != regs.Rsp {
		return fmt.Errorf("thread %d returned to memtrap's trampoline with no call awaited at rsp %#x", t.Tid, regs.Rsp)
	}
	c := stack[len(stack)-1]
	s.rets[t.Tid] = stack[:len(stack)-1]
	regs.Rip = c.ra
	if err := t.SetRegs(regs); err != nil {
		return err
	}
	// Once the thread is back at its real return address: it must be
	// there whatever fails next.
	if err := s.restoreSlot(c); err != nil {
		return err
	}
	return c.f(t, regs)
}

// restoreSlot puts the real return address back in the slot the return
// popped it from (below rsp now): natively, that is what the slot holds
// after the return, not the trampoline's address.
func (s *Set) restoreSlot(c pending) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], c.ra)
	return s.p.WriteMemory(c.slot, b[:])
}

// Rewind undoes a stop that Owns which will not be handled (a detach came
// first): the thread goes back to the breakpoint's instruction, or on to
// the real return address.
func (s *Set) Rewind(t *tracer.Thread) error {
	if gs, ok := s.gateStops[t.Tid]; ok {
		return s.gateRewind(t, gs)
	}
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return err
	}
	at := regs.Rip - 1
	if at == s.page {
		stack := s.rets[t.Tid]
		for i := len(stack) - 1; i >= 0; i-- {
			if stack[i].slot+8 == regs.Rsp {
				regs.Rip = stack[i].ra
				s.rets[t.Tid] = stack[:i]
				if err := t.SetRegs(&regs); err != nil {
					return err
				}
				return s.restoreSlot(stack[i])
			}
		}
		return fmt.Errorf("thread %d at memtrap's trampoline with no call awaited", t.Tid)
	}
	if s.p.InStub(regs.Rip) {
		return t.LeaveStub()
	}
	regs.Rip = at
	return t.SetRegs(&regs)
}

// Remove takes every breakpoint out and gives every awaited call its real
// return address back; t (stopped, the others too) unmaps the code page.
// Threads stopped at one of the set's stops must be rewound first.
//
// A step that fails does not stop the others: as much of the target as
// can be is given back, and the errors are returned together.
func (s *Set) Remove(t *tracer.Thread) error {
	var errs []error
	if err := s.closeGate(); err != nil {
		errs = append(errs, err)
	}
	if err := s.leavePage(); err != nil {
		errs = append(errs, err)
	}
	if err := s.restore(s.p); err != nil {
		errs = append(errs, err)
	}
	for tid, stack := range s.rets {
		for _, c := range stack {
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], c.ra)
			if err := s.p.WriteMemory(c.slot, b[:]); err != nil && s.p.WriteMemory(c.slot, b[:]) != nil {
				errs = append(errs, fmt.Errorf("thread %d: giving a return address back: %w", tid, err))
			}
		}
	}
	if len(errs) > 0 {
		// A return address or a breakpoint still points at the code
		// page: it must stay.
		return errors.Join(errs...)
	}
	s.rets, s.bps = map[int][]pending{}, map[uint64]*breakpoint{}
	s.p.SetCallStub(0)
	s.p.SetSyscallInsn(0) // not from the page being unmapped
	if t == nil {
		return nil
	}
	_, err := t.Syscall(unix.SYS_MUNMAP, uintptr(s.page), pageSize)
	return err
}

// leavePage moves every thread whose next instruction is in the code page
// back into the program, to the instruction of its own that it stands
// for: a thread at a displaced instruction's copy (handled, or stopped
// there by another thread's stop) to the original, one past the copy to
// the instruction after the original, one about to trap on the trampoline
// to the return address it stands for. The page can then go.
func (s *Set) leavePage() error {
	var errs []error
	for _, th := range s.p.Threads() {
		var regs unix.PtraceRegs
		if th.Regs(&regs) != nil || regs.Rip < s.page || regs.Rip >= s.page+pageSize {
			continue
		}
		if s.p.InStub(regs.Rip) {
			if err := th.LeaveStub(); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		to := uint64(0)
		if regs.Rip == s.page || regs.Rip == s.page+1 { // before or after the trampoline's int3
			for _, c := range s.rets[th.Tid] {
				if c.slot+8 == regs.Rsp {
					to = c.ra
				}
			}
		}
		for _, bp := range s.bps {
			switch regs.Rip {
			case bp.slot:
				to = bp.addr
			case bp.slot + uint64(bp.len):
				to = bp.addr + uint64(bp.len)
			}
		}
		if to == 0 {
			errs = append(errs, fmt.Errorf("thread %d is at %#x in memtrap's code page, at no instruction of its own", th.Tid, regs.Rip))
			continue
		}
		regs.Rip = to
		if err := th.SetRegs(&regs); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Release takes the breakpoints out of a forked child of the process that
// memtrap lets go, or follows without hooks: its code is a copy of the
// parent's, int3s included, and its stack the forking thread's, return
// addresses pointed at the trampoline included. Then t, the child's
// thread (stopped, in its fork), unmaps the child's copy of the code
// page; the calls injected in it run from the vDSO again (no guardian
// knows of the child's landing).
func (s *Set) Release(child *tracer.Process, t *tracer.Thread, forker int) error {
	if err := s.restore(child); err != nil {
		return err
	}
	for _, c := range s.rets[forker] {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], c.ra)
		if err := child.WriteMemory(c.slot, b[:]); err != nil {
			return fmt.Errorf("child %d: giving a return address back: %w", child.Pid, err)
		}
	}
	child.SetSyscallInsn(0)
	child.SetCallStub(0)
	if t == nil {
		return nil
	}
	if _, err := t.Syscall(unix.SYS_MUNMAP, uintptr(s.page), pageSize); err != nil {
		return fmt.Errorf("child %d: unmapping memtrap's code page: %w", child.Pid, err)
	}
	return nil
}

func (s *Set) restore(p *tracer.Process) error {
	var errs []error
	for _, bp := range s.bps {
		// Once more if it fails: an int3 left behind kills the
		// target at its next call there.
		if err := p.WriteMemory(bp.addr, []byte{bp.orig}); err != nil && p.WriteMemory(bp.addr, []byte{bp.orig}) != nil {
			errs = append(errs, fmt.Errorf("taking the breakpoint at %#x out: %w", bp.addr, err))
		}
	}
	return errors.Join(errs...)
}

// Forget drops everything: the process executed a new image, or ended;
// the old code and the code page are gone.
func (s *Set) Forget() {
	s.bps, s.rets, s.replay = map[uint64]*breakpoint{}, map[int][]pending{}, map[int]uint64{}
	s.p.SetCallStub(0)
	if g := s.gate; g != nil {
		s.missed += g.Missed()
		// Closing waits for the kernel's grace period. After an execve
		// it must be done before the new image runs, or the old
		// uprobes would stop its calls; after the process's end nothing
		// is in a hurry.
		if exited, _ := s.p.Exited(); exited {
			go g.Close()
		} else {
			g.Close()
		}
		s.gate = nil
	}
	s.gated, s.gateStops, s.gateFns, s.gateCalls = map[uint64]HitFunc{}, map[int]gateStop{}, nil, nil
}

// Trampoline is the address awaited calls return to.
func (s *Set) Trampoline() uint64 { return s.page }

// Fork is the set of a forked child c of the process (the thread that
// forked, parentTid, is c's only one, childTid): the child has the
// parent's code, breakpoints and code page included, and the forking
// thread's stack, awaited returns included. A gate is made anew for the
// child: the kernel's uprobes are the parent's.
func (s *Set) Fork(c *tracer.Process, parentTid, childTid int) (*Set, error) {
	cs := &Set{p: c, page: s.page, next: s.next, bps: map[uint64]*breakpoint{}, rets: map[int][]pending{}, replay: map[int]uint64{},
		gated: map[uint64]HitFunc{}, gateStops: map[int]gateStop{}}
	for a, bp := range s.bps {
		cs.bps[a] = bp
	}
	if stack := s.rets[parentTid]; len(stack) > 0 {
		cs.rets[childTid] = append([]pending(nil), stack...)
	}
	if s.gate == nil {
		return cs, nil
	}
	// No int3 can stand in for a gate that fails here: the child's code
	// holds the kernel's breakpoints of the parent's uprobes until it
	// runs into them.
	g, err := s.gate.Fork(c.Pid)
	if err != nil {
		return nil, fmt.Errorf("child %d: %w", c.Pid, err)
	}
	cs.gate, cs.gateFns, cs.gateCalls = g, s.gateFns, s.gateCalls
	for a, hit := range s.gated {
		cs.gated[a] = hit
	}
	return cs, nil
}

// GuardState adds the breakpoints, the awaited returns and the code page
// to s, for a guardian (package guard) to take out if memtrap dies.
func (s *Set) GuardState(g *guard.State) {
	addrs := make([]uint64, 0, len(s.bps))
	for a := range s.bps {
		addrs = append(addrs, a)
	}
	slices.Sort(addrs)
	for _, a := range addrs {
		bp := s.bps[a]
		g.Breakpoints = append(g.Breakpoints, guard.Breakpoint{Addr: bp.addr, Orig: bp.orig, Len: bp.len, Slot: bp.slot})
	}
	tids := make([]int, 0, len(s.rets))
	for tid := range s.rets {
		tids = append(tids, tid)
	}
	slices.Sort(tids)
	for _, tid := range tids {
		for _, c := range s.rets[tid] {
			g.Returns = append(g.Returns, guard.Return{Tid: tid, Slot: c.slot, RA: c.ra})
		}
	}
	g.Trampoline = s.page
	g.Landing = s.landing()
	g.Stub = s.p.CallStub().Lo // 0: none
	g.Unmap = append(g.Unmap, guard.Span{Addr: s.page, Len: pageSize})
}
