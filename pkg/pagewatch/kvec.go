package pagewatch

import (
	"fmt"

	"github.com/memtrap/memtrap/pkg/sysout"
	"github.com/memtrap/memtrap/pkg/tracer"
)

// Vector calls (readv, recvmsg, recvmmsg): their lists of buffers get
// copies in the scratch area that point at scratch buffers where the real
// ones are watched; at exit every byte the kernel changed goes to its real
// place, as for plain bounces.

// vecEntry bounces the watched buffers of a vector call (page engine). It
// returns with the thread resumed.
func (e *pageEngine) vecEntry(t *tracer.Thread, si tracer.SyscallInfo, spec sysout.VecCall) error {
	w := e.w
	l, ok := spec.Read(&si.Args, w.p)
	if !ok {
		return t.Resume(0)
	}
	touched := false
	for _, o := range l.Outputs() {
		if e.touchesArmed(o.Addr, o.Size) {
			touched = true
		}
	}
	if !touched {
		return t.Resume(0)
	}
	call := &kcall{nr: si.Nr, name: spec.Name}
	if err := t.Regs(&call.regs); err != nil {
		return err
	}
	fail := func(why string) error {
		e.releaseCall(call)
		w.note(fmt.Sprintf("%s(2) into watched memory: %s; it fails with EFAULT as the kernel sees it", spec.Name, why))
		return t.Resume(0)
	}
	// redirect bounces one buffer if it is watched; it returns the
	// address the kernel is to use.
	redirect := func(p, n uint64) (uint64, error) {
		if p == 0 || n == 0 || !e.touchesArmed(p, n) {
			return p, nil
		}
		if n > maxBounce {
			return 0, fmt.Errorf("%d bytes are too many to follow", n)
		}
		return e.bounceOut(call, -1, p, n, nil)
	}
	place := func(real, n uint64, init []byte) (uint64, error) { return e.bounceOut(call, -1, real, n, init) }
	args, err := l.Redirect(spec, redirect, place)
	if err != nil {
		return fail(err.Error())
	}
	// The arguments pointed elsewhere get theirs back at the exit.
	for i := range call.bounces {
		for arg, v := range args {
			if call.bounces[i].scratch == v {
				call.bounces[i].arg = arg
			}
		}
	}
	regs := call.regs
	for arg, v := range args {
		*argReg(&regs, arg) = v
	}
	if err := t.SetRegs(&regs); err != nil {
		return err
	}
	w.calls[t.Tid] = call
	return resumeToExit(t, si)
}

// bounceOut gives the call a scratch copy of [real, real+n): the real bytes,
// or init when set (a rewritten array); bytes the kernel changes there go
// back to real at exit.
func (e *pageEngine) bounceOut(call *kcall, arg int, real, n uint64, init []byte) (uint64, error) {
	w := e.w
	before := init
	if before == nil {
		before = make([]byte, n)
		if err := w.p.ReadMemory(real, before); err != nil {
			return 0, fmt.Errorf("%#x is not mapped", real)
		}
	}
	s, ok := w.scratch.Alloc(n)
	if !ok {
		return 0, errScratchFull
	}
	if err := w.p.WriteMemory(s, before); err != nil {
		w.scratch.Release(s, n)
		return 0, err
	}
	call.bounces = append(call.bounces, bounce{arg: arg, real: real, scratch: s, before: append([]byte(nil), before...)})
	return s, nil
}

// releaseCall gives back the scratch memory of a call that is not bounced
// after all.
func (e *pageEngine) releaseCall(call *kcall) {
	w := e.w
	for _, b := range call.bounces {
		w.scratch.Release(b.scratch, uint64(len(b.before)))
	}
	call.bounces = nil
}
