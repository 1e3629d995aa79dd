package tracer

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// A call on resume: an mprotect that a stopped thread makes on its way out
// of its stop, before it runs another instruction of its own, and with no
// stop of its own, where an injected call (Syscall) costs a single-step
// stop and a dozen ptrace requests. Heap watching arms a block's page
// at a stop the thread is in anyway (the allocator's return), and gives it
// back at the stop of its free. No signal handler of the thread runs
// before the call: a resume that delivers a signal makes the call at once
// instead, and a signal arriving meanwhile stops the thread (it is traced)
// with the call not made yet, which beforeHandler makes then.
//
// At the resume the thread's registers go to a frame on its stack, below
// its red zone (where a signal frame would go), and the thread is pointed
// at StubCode, in memtrap's code page (package hook writes it there and
// tells SetCallStub): the code makes the call, takes every register back
// from the frame and returns to where the thread was, rsp as it was; the
// flags are the call's own (syscall keeps them). A call that fails stops
// the thread at the code's int3 (StubFailed), for the tracer to make it
// again, or to give up. memtrap's syscall filters let the code's calls
// through (CallStub is their exempt range); a filter of the target's own
// could refuse them, as it could an injected call (those run past it, with
// PTRACE_O_SUSPEND_SECCOMP): not for a target that installed one
// (Seccomp_filters in its status, at the first call).

// StubCode is the code of a call on resume. The frame, at rsp: rax, rdi,
// rsi, rdx, rcx, r11, then the address to go on at; rax, rdi, rsi, rdx
// hold the call.
var StubCode = []byte{
	0x0f, 0x05, // syscall
	0x48, 0x89, 0xc1, // mov rcx, rax
	0xe3, 0x01, // jrcxz +1: 0 is success
	0xcc,                   // int3: the call failed
	0x48, 0x8b, 0x04, 0x24, // mov rax, [rsp]
	0x48, 0x8b, 0x7c, 0x24, 0x08, // mov rdi, [rsp+8]
	0x48, 0x8b, 0x74, 0x24, 0x10, // mov rsi, [rsp+16]
	0x48, 0x8b, 0x54, 0x24, 0x18, // mov rdx, [rsp+24]
	0x48, 0x8b, 0x4c, 0x24, 0x20, // mov rcx, [rsp+32]
	0x4c, 0x8b, 0x5c, 0x24, 0x28, // mov r11, [rsp+40]
	0x48, 0x8d, 0x64, 0x24, 0x30, // lea rsp, [rsp+48]
	0xc2, 0x80, 0x00, // ret 128: the frame, then the red zone
}

const (
	pageSize   = 4096
	stackGuard = 64 << 10 // how far below rsp a call on resume may not touch
	stubTrap   = 8        // StubCode's offset past its int3
	stubRet    = 42       // and of its ret, when rsp is 48 bytes into the frame
	stubFrame  = 56       // the frame's bytes
	redZone    = 128
)

// onResume is a call waiting for its thread's resume.
type onResume struct {
	addr, length uint64
	prot         int
}

// SetCallStub says where StubCode stands in the process (0: nowhere, as
// after execve).
func (p *Process) SetCallStub(addr uint64) {
	p.stub = addr
	p.quickView().stub.Store(addr) // for the listener (procQuick.stops)
}

// CallStub is the range of StubCode in the process, empty if there is
// none: the addresses a syscall filter of memtrap's lets calls from.
func (p *Process) CallStub() Range {
	if p.stub == 0 {
		return Range{}
	}
	return Range{Lo: p.stub, Hi: p.stub + uint64(len(StubCode))}
}

// MprotectOnResume has the stopped thread t change the protection of
// [addr, addr+length) as it next resumes (Resume), or, where that cannot
// be (no code for it, t at a system call's stop, or about to restart one,
// a call pending already, every call traced, a target with seccomp
// filters of its own), with Mprotect at that resume. It says whether the
// call was queued; if not, nothing is changed and the caller makes it.
//
// Only in a process of one thread: the thread runs the call before
// anything else of the process runs, so the protection is the one the
// caller's books say at every later stop. With threads, another could
// write the page (or arm it anew) before the call runs.
func (t *Thread) MprotectOnResume(addr, length uint64, prot int) bool {
	p := t.p
	if p.stub == 0 || t.pending != nil || t.sysEntry || t.held || p.traceSyscalls || !t.stopped ||
		len(p.threads) != 1 || p.ownFilters() {
		return false
	}
	t.pending = &onResume{addr, length, prot}
	return true
}

// ownFilters says whether the target has seccomp filters memtrap did not
// install, which could refuse a call on resume: its status is read once.
func (p *Process) ownFilters() bool {
	if p.filtersChecked {
		return p.foreignFilters
	}
	p.filtersChecked = true
	n, err := statusInt(p.Pid, "Seccomp_filters:")
	p.foreignFilters = err != nil || n > p.filters
	return p.foreignFilters
}

// startPending sets up t's call on resume, if it has one, just before the
// resume: its frame on the stack, and the registers that run StubCode;
// where the stop does not allow it, the call is made now instead.
func (t *Thread) startPending() error {
	c := t.pending
	if c == nil {
		return nil
	}
	t.pending = nil
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return err
	}
	// Not near the stack: a signal arriving before the call ran would
	// have its frame written there while the page is as it was.
	nearStack := c.addr < regs.Rsp+pageSize && c.addr+c.length > regs.Rsp-stackGuard
	if regs.Orig_rax != ^uint64(0) || t.notifRestart || t.suspended || len(t.p.threads) != 1 || nearStack {
		return t.Mprotect(c.addr, c.length, c.prot)
	}
	frame := regs.Rsp - redZone - stubFrame
	var b [stubFrame]byte
	for i, v := range []uint64{regs.Rax, regs.Rdi, regs.Rsi, regs.Rdx, regs.Rcx, regs.R11, regs.Rip} {
		binary.LittleEndian.PutUint64(b[8*i:], v)
	}
	if err := t.p.WriteMemory(frame, b[:]); err != nil {
		return t.Mprotect(c.addr, c.length, c.prot)
	}
	call := regs
	call.Rip, call.Rsp = t.p.stub, frame
	call.Rax, call.Rdi, call.Rsi, call.Rdx = unix.SYS_MPROTECT, c.addr, c.length, uint64(c.prot)
	if err := t.SetRegs(&call); err != nil {
		return err
	}
	t.inStub = true
	return nil
}

// beforeHandler, at a signal-delivery-stop of t, makes a call on resume
// that t has not run yet (it is at StubCode's first byte) now, by
// injection, and puts t back where the call would have returned it: the
// signal's handler would run before the call otherwise, its frame pointing
// into memtrap's code, and its writes to a page the call gives back would
// fault on a page the caller's books no longer hold. Every signal a traced
// thread takes comes through such a stop first (SIGKILL aside, which runs
// no handler).
func (t *Thread) beforeHandler(info Siginfo) error {
	if !t.inStub {
		return nil
	}
	switch {
	case info.Signo() == int(unix.SIGSTOP):
		// No handler; one a BPF program sent (a gate's) comes from the
		// thread's own code, past the stub.
		if info.Code() == siKernel {
			t.inStub = false
		}
		return nil
	case syncFault(&info):
		t.inStub = false // raised by an instruction the thread ran
		return nil
	}
	t.inStub = false
	if t.p.stub == 0 {
		return nil // the code went with an execve
	}
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return err
	}
	if regs.Rip != t.p.stub {
		return nil
	}
	if err := t.LeaveStub(); err != nil {
		return err
	}
	// The injected call's own trap left its siginfo at this stop.
	return t.SetSiginfo(info)
}

// FlushPending makes every call on resume of the process now, for a
// watch about to disarm (and so to take the protections back to the books
// those calls were queued for), or to let a thread go.
func (p *Process) FlushPending() error {
	var errs []error
	for _, t := range p.Threads() {
		if err := t.flushPending(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// flushPending makes t's call on resume now.
func (t *Thread) flushPending() error {
	c := t.pending
	if c == nil {
		return nil
	}
	t.pending = nil
	if err := t.Mprotect(c.addr, c.length, c.prot); err != nil && !errors.Is(err, ErrThreadGone) {
		return err
	}
	return nil
}

// InStub says whether addr is in StubCode in the process.
func (p *Process) InStub(addr uint64) bool {
	r := p.CallStub()
	return addr >= r.Lo && addr < r.Hi
}

// StubFailed says whether a stop is a call on resume that failed: the
// thread's SIGTRAP from StubCode's int3.
func (p *Process) StubFailed(st Stop, rip uint64) bool {
	return p.stub != 0 && st.Kind == StopSignal && st.Sig == int(unix.SIGTRAP) &&
		st.Info.Code() == siKernel && rip == p.stub+stubTrap
}

// LeaveStub takes a thread whose next instruction is in StubCode back to
// where the code would return it, its registers from the frame; a call
// that has not run yet, or that failed, is made with Mprotect first (its
// arguments are still in rdi, rsi, rdx). For a failed call (StubFailed),
// and for memtrap's code page to go with no thread in it.
func (t *Thread) LeaveStub() error {
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return err
	}
	if !t.p.InStub(regs.Rip) {
		return nil
	}
	at := regs.Rip - t.p.stub
	frame := regs.Rsp
	if at == stubRet {
		frame -= 48
	}
	call := regs // the call's arguments (rdi, rsi, rdx) and result (rax)
	var b [stubFrame]byte
	if err := t.p.ReadMemory(frame, b[:]); err != nil {
		return err
	}
	u := func(i int) uint64 { return binary.LittleEndian.Uint64(b[8*i:]) }
	regs.Rax, regs.Rdi, regs.Rsi, regs.Rdx, regs.Rcx, regs.R11, regs.Rip = u(0), u(1), u(2), u(3), u(4), u(5), u(6)
	regs.Rsp = frame + stubFrame + redZone
	if err := t.SetRegs(&regs); err != nil {
		return err
	}
	// Not run yet, or failed (a stop between the call and the int3 sees
	// its result in rax): now, from where the thread is.
	if at == 0 || at == stubTrap || at < stubTrap && call.Rax != 0 {
		if err := t.Mprotect(call.Rdi, call.Rsi, int(call.Rdx)); err != nil {
			return fmt.Errorf("memtrap's call on resume: %w", err)
		}
	}
	return nil
}
