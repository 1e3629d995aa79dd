package hook

import (
	"encoding/binary"
	"fmt"

	"github.com/memtrap/memtrap/pkg/bpfhook"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"
)

// UseGate has the set put the entry breakpoints of AddGated in g, the
// kernel's uprobes of the process, which stop only the calls that matter.
// The set closes g at Remove and Forget.
func (s *Set) UseGate(g *bpfhook.Gate) {
	s.gate = g
	if !s.goneHooked {
		s.goneHooked = true
		s.p.OnThreadGone(func(tid int) {
			if s.gate != nil {
				_ = s.gate.Forget(tid) // a map's delete: fails only if the map is gone
			}
		})
	}
}

// Gate is the set's gate, or nil.
func (s *Set) Gate() *bpfhook.Gate { return s.gate }

// AddGated hooks the function at addr like Add, but through the set's
// gate, so that only the calls c says matter stop the thread; the gate
// opens at OpenGate. Where there is no gate, or the function's first
// instruction changes a register hit may read, it is an int3 breakpoint
// as Add puts. length is the function's size in bytes (0: not known):
// the gate's uprobe may go a few bytes past the entry (probeSite).
func (s *Set) AddGated(addr, length uint64, hit HitFunc, c bpfhook.Call) error {
	if s.gate == nil || !s.gateable(addr) {
		return s.Add(addr, hit)
	}
	if _, ok := s.bps[addr]; ok || s.gated[addr] != nil {
		return fmt.Errorf("a breakpoint stands at %#x already", addr)
	}
	c.Probe = s.probeSite(addr, length)
	s.gated[addr] = hit
	s.gateFns = append(s.gateFns, addr)
	s.gateCalls = append(s.gateCalls, c)
	return nil
}

// Missed counts the gated calls that needed a stop and that the kernel
// could not stop (the gate's bpf_send_signal_thread failed): calls the
// watch did not see.
func (s *Set) Missed() uint64 {
	if s.gate == nil {
		return s.missed
	}
	return s.missed + s.gate.Missed()
}

// OpenGate attaches the gate to the functions AddGated gave it, and says
// whether it could. If it could not, they get int3 breakpoints instead,
// the gate is closed, and err says why.
func (s *Set) OpenGate() (bool, error) {
	if s.gate == nil || len(s.gateFns) == 0 {
		return false, nil
	}
	err := s.gate.Attach(s.gateFns, s.gateCalls)
	if err == nil {
		return true, nil
	}
	s.gate.Close()
	s.gate = nil
	for _, a := range s.gateFns {
		hit := s.gated[a]
		delete(s.gated, a)
		if aerr := s.Add(a, hit); aerr != nil {
			return false, aerr
		}
	}
	return false, err
}

// gateable says whether the first instruction at addr leaves what a gate
// stop's HitFunc reads as the gate recorded it at the entry: it runs
// before the stop, and writes no argument register nor one the unwinder
// follows (rsp it may move: the gate recorded the entry's).
func (s *Set) gateable(addr uint64) bool {
	code := make([]byte, 16)
	if err := s.p.ReadMemory(addr, code); err != nil {
		return false
	}
	if endbr64(code) {
		return true
	}
	inst, err := x86asm.Decode(code, 64)
	if err != nil || inst.Op == 0 {
		return false
	}
	switch inst.Op {
	case x86asm.NOP, x86asm.PUSH, x86asm.TEST, x86asm.CMP:
		return true
	case x86asm.MOV, x86asm.SUB:
		// Into a scratch register no argument is passed in, or rsp.
		if r, ok := inst.Args[0].(x86asm.Reg); ok {
			switch r {
			case x86asm.RAX, x86asm.EAX, x86asm.R10, x86asm.R11, x86asm.RSP:
				return inst.Op == x86asm.SUB || r != x86asm.RSP
			}
		}
	}
	return false
}

// probeSite is where the gate's uprobe for the function at addr (length
// bytes long, 0 if unknown) goes. The kernel runs a few instructions in
// place of its breakpoint (x86: push of a register, nop, a conditional
// jump) and single-steps every other out of line, a second trap: on this
// project's VM a uprobe costs 0.7-0.9 us on the first kind and 12 us on
// the second, which glibc's free (test rdi, rdi; je) and every function
// built with CET (endbr64) begin with. So the uprobe goes on the first
// such instruction, when only endbr64, or test and cmp of registers and
// immediates, come before it (they change nothing a stop reads but the
// flags, and every call runs them), and no branch of the function lands
// past its entry up to it (the uprobe would see that jump as another
// call). Otherwise, or where a part of the function does not decode, at
// the entry, as an int3 would be.
func (s *Set) probeSite(addr, length uint64) uint64 {
	const window = 32 // the first instructions looked at
	if length == 0 || length > 1<<20 {
		return addr
	}
	code := make([]byte, length+15) // the last instruction whole
	if err := s.p.ReadMemory(addr, code); err != nil {
		return addr
	}
	var at uint64
	for off := uint64(0); ; {
		if off >= window || off >= length {
			return addr
		}
		b := code[off:]
		if emulated(b) {
			at = off
			break
		}
		if endbr64(b) {
			off += 4
			continue
		}
		inst, err := x86asm.Decode(b, 64)
		if err != nil || (inst.Op != x86asm.TEST && inst.Op != x86asm.CMP) {
			return addr
		}
		for _, a := range inst.Args {
			if _, ok := a.(x86asm.Mem); ok {
				return addr
			}
		}
		off += uint64(inst.Len)
	}
	if at == 0 {
		return addr
	}
	// Every direct branch of the function, and where it lands.
	for off := uint64(0); off < length; {
		if endbr64(code[off:]) { // x86asm does not know it
			off += 4
			continue
		}
		inst, err := x86asm.Decode(code[off:], 64)
		if err != nil {
			return addr
		}
		off += uint64(inst.Len)
		if rel, ok := inst.Args[0].(x86asm.Rel); ok {
			if to := int64(off) + int64(rel); to > 0 && to <= int64(at) {
				return addr
			}
		}
	}
	return addr + at
}

func endbr64(b []byte) bool {
	return len(b) >= 4 && b[0] == 0xf3 && b[1] == 0x0f && b[2] == 0x1e && b[3] == 0xfa
}

// emulated says whether the instruction b begins with is one x86 uprobes
// run in place of the breakpoint (no single-step): push of a register
// (push r12 is 41 54), nop and the 0f 1f nops, conditional jumps.
func emulated(b []byte) bool {
	if len(b) < 2 {
		return false
	}
	switch {
	case b[0] >= 0x50 && b[0] <= 0x57, b[0] == 0x41 && b[1] >= 0x50 && b[1] <= 0x57:
		return true
	case b[0] == 0x90, b[0] >= 0x70 && b[0] <= 0x7f:
		return true
	case b[0] == 0x0f && (b[1] == 0x1f || b[1] >= 0x80 && b[1] <= 0x8f):
		return true
	}
	return false
}

// gateOwns says whether a stop is the gate's, and remembers it for Handle.
func (s *Set) gateOwns(st tracer.Stop) bool {
	if s.gate == nil {
		return false
	}
	e, ok := s.gate.Owns(st)
	if ok {
		s.gateStops[st.Thread.Tid] = gateStop{st, e}
	}
	return ok
}

// gateStop is a stop of the gate's, and the call it is for.
type gateStop struct {
	st tracer.Stop
	e  bpfhook.Entry
}

// gateHit handles a gate's stop: the HitFunc sees the call as it was at
// the entry; the thread goes on from where it stopped, without the
// gate's signal (a signal of the target's own that came with it is
// delivered).
func (s *Set) gateHit(t *tracer.Thread, gs gateStop) error {
	delete(s.gateStops, t.Tid)
	if bpfhook.Foreign(gs.st) {
		t.Defer(gs.st.Info)
	}
	e := gs.e
	hit := s.gated[e.Addr]
	if hit == nil {
		return fmt.Errorf("thread %d stopped for a call of %#x, which memtrap did not hook", t.Tid, e.Addr)
	}
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return err
	}
	if !e.Ret {
		if err := s.restoreReturn(e, e.Rsp); err != nil {
			return err
		}
		regs.Rip, regs.Rsp, regs.Rdi, regs.Rsi, regs.Rdx = e.Addr, e.Rsp, e.Rdi, e.Rsi, e.Rdx
		return hit(t, &regs)
	}
	if err := s.finishReturn(t, e, &regs); err != nil {
		return err
	}
	if regs.Rsp == e.Rsp+8 && regs.Rip == e.RetAddr {
		// Back in the caller: the slot is below the stack now, kept
		// for the backtrace from the entry.
		if err := s.restoreReturn(e, e.Rsp); err != nil {
			return err
		}
	}
	// The result as the call returned it: the thread may be in a signal
	// handler by now (finishReturn).
	regs.Rax = e.Rax
	entry := regs
	entry.Rip, entry.Rsp, entry.Rdi, entry.Rsi, entry.Rdx = e.Addr, e.Rsp, e.Rdi, e.Rsi, e.Rdx
	s.atReturn = &returnStop{tid: t.Tid, slot: e.Rsp, regs: regs}
	defer func() { s.atReturn = nil }()
	return hit(t, &entry)
}

// finishReturn takes a thread the gate stopped at the return of call e
// to the state the return leaves natively: back in its caller, at the
// return address, rsp one word above the slot (regs, set in the thread
// too). The kernel's uretprobe stops it either there (it returned through
// iret, or an int3 trampoline) or in its trampoline page, before that
// page's last instructions: pop r11, pop rcx, ret, with the slot holding
// the return address (x86's uretprobe syscall, Linux 6.11).
//
// Or a signal of the target's own, pending too, came first: the thread
// stopped at its handler's first instruction, the return's state saved in
// the signal frame, which sigreturn takes it back to. A thread anywhere
// else is left as it is.
func (s *Set) finishReturn(t *tracer.Thread, e bpfhook.Entry, regs *unix.PtraceRegs) error {
	switch regs.Rsp {
	case e.Rsp + 8:
		return nil
	case e.Rsp - 16:
		var b [24]byte
		if err := s.p.ReadMemory(regs.Rsp, b[:]); err != nil {
			return err
		}
		regs.R11 = binary.LittleEndian.Uint64(b[0:])
		regs.Rcx = binary.LittleEndian.Uint64(b[8:])
		regs.Rip = binary.LittleEndian.Uint64(b[16:])
		regs.Rsp = e.Rsp + 8
		return t.SetRegs(regs)
	}
	return nil
}

// restoreReturn puts the call's return address, as the gate's program
// read it at the uprobe, back in its slot where something else stands
// there now: the kernel's uretprobe trampoline, which a uprobe session
// of another process's gate puts there for every call it sees (the
// kernel runs a session scoped to one process at every process's call,
// and one whose program does not run asks for the return). The call
// then returns straight to its caller; the kernel's record of it is left
// over, like one a longjmp leaves, which Linux's uretprobe code (as read,
// not watched) drops by its stack address at the thread's next uretprobe. Left
// there, the trampoline ended every backtrace from the call, and under
// memtrap's own return trampoline (Return) a tail call from the
// function into another hooked one (reallocarray's into realloc) made
// the kernel drop that record too early: the thread returned into the
// kernel's trampoline with nothing left to return to, and died of
// SIGILL.
func (s *Set) restoreReturn(e bpfhook.Entry, slot uint64) error {
	if e.RetAddr == 0 {
		return nil
	}
	var b [8]byte
	if err := s.p.ReadMemory(slot, b[:]); err != nil {
		return err
	}
	if binary.LittleEndian.Uint64(b[:]) == e.RetAddr {
		return nil
	}
	binary.LittleEndian.PutUint64(b[:], e.RetAddr)
	return s.p.WriteMemory(slot, b[:])
}

// returnStop is a gate's stop at a call's return, while its HitFunc runs:
// a Return it asks for is the call's return, now.
type returnStop struct {
	tid  int
	slot uint64 // the return address's slot at the entry
	regs unix.PtraceRegs
}

// gateRewind forgets a gate's stop that will not be handled.
func (s *Set) gateRewind(t *tracer.Thread, gs gateStop) error {
	delete(s.gateStops, t.Tid)
	if bpfhook.Foreign(gs.st) {
		t.Defer(gs.st.Info)
	}
	return nil
}

// closeGate detaches the gate and takes the SIGSTOPs it sent that are
// still on their way to their threads (stopped, the others too): each
// thread is stepped into its signal-delivery-stop, and the signal
// dropped.
func (s *Set) closeGate() error {
	if s.gate == nil {
		return nil
	}
	g := s.gate
	s.gate = nil
	defer g.Close()
	if err := g.Detach(); err != nil {
		return err
	}
	return bpfhook.TakeSignals(s.p, g.Pending(), nil)
}

// Trapped says whether the function at addr has an int3 breakpoint.
func (s *Set) Trapped(addr uint64) bool { return s.bps[addr] != nil }
