package pagewatch

import (
	"encoding/binary"
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
	for _, e := range l.Extra {
		if _, err := redirect(e.Addr, e.Size); err != nil {
			return fail(err.Error())
		}
	}
	// Where a plain extra output was bounced, its argument must follow.
	for i := range call.bounces {
		for _, e := range l.Extra {
			if call.bounces[i].real == e.Addr {
				call.bounces[i].arg = e.Arg
			}
		}
	}
	for _, m := range l.Msgs {
		arr := make([]byte, 16*len(m.Iov))
		for i, v := range m.Iov {
			p, err := redirect(v[0], v[1])
			if err != nil {
				return fail(err.Error())
			}
			binary.LittleEndian.PutUint64(arr[16*i:], p)
			binary.LittleEndian.PutUint64(arr[16*i+8:], v[1])
		}
		arrArg := -1
		if m.Hdr == nil {
			arrArg = spec.Iov
		}
		newArr := m.Arr
		if len(arr) > 0 {
			var err error
			if newArr, err = e.bounceOut(call, arrArg, m.Arr, uint64(len(arr)), arr); err != nil {
				return fail(err.Error())
			}
		}
		if m.Hdr == nil {
			continue
		}
		// Rewrite the header in l.Raw: its copy goes to scratch below.
		binary.LittleEndian.PutUint64(m.Hdr[16:], newArr)
		for _, f := range []struct {
			off int
			b   [2]uint64
		}{{0, m.Name}, {32, m.Ctl}} {
			p, err := redirect(f.b[0], f.b[1])
			if err != nil {
				return fail(err.Error())
			}
			binary.LittleEndian.PutUint64(m.Hdr[f.off:], p)
		}
	}
	if l.Hdrs != 0 {
		if _, err := e.bounceOut(call, spec.Hdr, l.Hdrs, l.HdrSize, l.Raw); err != nil {
			return fail(err.Error())
		}
	}
	regs := call.regs
	for _, b := range call.bounces {
		if b.arg >= 0 {
			*argReg(&regs, b.arg) = b.scratch
		}
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
