package pagewatch

import (
	"encoding/binary"
	"fmt"

	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// Syscalls whose output buffers are listed in memory: an iovec array
// (readv, preadv, preadv2, process_vm_readv) or a msghdr (recvmsg: its
// iovecs, name and control buffers, and the lengths and flags the kernel
// writes back into it). A filter cannot look into memory, so these always
// stop. A bounced call gets copies of the array (and msghdr) in the scratch
// area, pointing at scratch buffers where the real ones are watched; at
// exit every byte the kernel changed goes to its real place, as for plain
// bounces.

type vecSpec struct {
	name   string
	iov    int // argument holding the iovec array, or -1
	cnt    int // argument holding its length
	msghdr int // argument holding a msghdr, or -1
}

var vecTable = map[int]vecSpec{
	unix.SYS_READV:            {"readv", 1, 2, -1},
	unix.SYS_PREADV:           {"preadv", 1, 2, -1},
	unix.SYS_PREADV2:          {"preadv2", 1, 2, -1},
	unix.SYS_PROCESS_VM_READV: {"process_vm_readv", 1, 2, -1},
	unix.SYS_RECVMSG:          {"recvmsg", -1, -1, 1},
}

const (
	maxIov     = 1024 // UIO_MAXIOV
	msghdrSize = 56
)

// vecLayout is what a vector call may write: the buffers, and the msghdr.
type vecLayout struct {
	arr    uint64      // address of the iovec array
	iov    [][2]uint64 // base, len
	msg    uint64      // address of the msghdr, 0 if none
	msgRaw []byte
	name   [2]uint64 // msg_name, msg_namelen
	ctl    [2]uint64 // msg_control, msg_controllen
}

func (w *Watch) readVec(spec vecSpec, a *[6]uint64) (*vecLayout, bool) {
	l := &vecLayout{}
	cnt := uint64(0)
	if spec.msghdr >= 0 {
		l.msg = a[spec.msghdr]
		l.msgRaw = make([]byte, msghdrSize)
		if l.msg == 0 || w.p.ReadMemory(l.msg, l.msgRaw) != nil {
			return nil, false
		}
		le := binary.LittleEndian
		l.name = [2]uint64{le.Uint64(l.msgRaw[0:]), uint64(le.Uint32(l.msgRaw[8:]))}
		l.arr, cnt = le.Uint64(l.msgRaw[16:]), le.Uint64(l.msgRaw[24:])
		l.ctl = [2]uint64{le.Uint64(l.msgRaw[32:]), le.Uint64(l.msgRaw[40:])}
	} else {
		l.arr, cnt = a[spec.iov], a[spec.cnt]
	}
	if cnt > maxIov {
		return nil, false
	}
	raw := make([]byte, 16*cnt)
	if cnt > 0 && w.p.ReadMemory(l.arr, raw) != nil {
		return nil, false
	}
	for i := uint64(0); i < cnt; i++ {
		l.iov = append(l.iov, [2]uint64{binary.LittleEndian.Uint64(raw[16*i:]), binary.LittleEndian.Uint64(raw[16*i+8:])})
	}
	return l, true
}

// spans lists every range the kernel may write.
func (l *vecLayout) spans() []span {
	var out []span
	add := func(p, n uint64) {
		if p != 0 && n != 0 && p+n > p {
			out = append(out, span{p, p + n})
		}
	}
	for _, v := range l.iov {
		add(v[0], v[1])
	}
	if l.msg != 0 {
		add(l.msg, msghdrSize)
		add(l.name[0], l.name[1])
		add(l.ctl[0], l.ctl[1])
	}
	return out
}

// vecEntry bounces the watched buffers of a vector call (page engine). It
// returns with the thread resumed.
func (w *Watch) vecEntry(t *tracer.Thread, si tracer.SyscallInfo, spec vecSpec) error {
	l, ok := w.readVec(spec, &si.Args)
	if !ok {
		return t.Resume(0)
	}
	touched := false
	for _, s := range l.spans() {
		if w.touchesArmed(s.lo, s.hi-s.lo) {
			touched = true
		}
	}
	if !touched {
		return t.Resume(0)
	}
	call := &kcall{nr: si.Nr, name: spec.name}
	if err := t.Regs(&call.regs); err != nil {
		return err
	}
	fail := func(why string) error {
		w.releaseCall(call)
		w.note(fmt.Sprintf("%s(2) into watched memory: %s; it fails with EFAULT as the kernel sees it", spec.name, why))
		return t.Resume(0)
	}
	// redirect bounces one buffer if it is watched; it returns the
	// address the kernel is to use.
	redirect := func(p, n uint64) (uint64, error) {
		if p == 0 || n == 0 || !w.touchesArmed(p, n) {
			return p, nil
		}
		if n > maxBounce {
			return 0, fmt.Errorf("%d bytes are too many to follow", n)
		}
		return w.bounceOut(call, -1, p, n, nil)
	}
	arr := make([]byte, 16*len(l.iov))
	for i, v := range l.iov {
		p, err := redirect(v[0], v[1])
		if err != nil {
			return fail(err.Error())
		}
		binary.LittleEndian.PutUint64(arr[16*i:], p)
		binary.LittleEndian.PutUint64(arr[16*i+8:], v[1])
	}
	arrArg := spec.iov
	if l.msg != 0 {
		arrArg = -1
	}
	newArr := l.arr
	if len(arr) > 0 {
		var err error
		if newArr, err = w.bounceOut(call, arrArg, l.arr, uint64(len(arr)), arr); err != nil {
			return fail(err.Error())
		}
	}
	if l.msg != 0 {
		msg := append([]byte(nil), l.msgRaw...)
		binary.LittleEndian.PutUint64(msg[16:], newArr)
		for _, f := range []struct {
			off int
			b   [2]uint64
		}{{0, l.name}, {32, l.ctl}} {
			p, err := redirect(f.b[0], f.b[1])
			if err != nil {
				return fail(err.Error())
			}
			binary.LittleEndian.PutUint64(msg[f.off:], p)
		}
		if _, err := w.bounceOut(call, spec.msghdr, l.msg, msghdrSize, msg); err != nil {
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
func (w *Watch) bounceOut(call *kcall, arg int, real, n uint64, init []byte) (uint64, error) {
	before := init
	if before == nil {
		before = make([]byte, n)
		if err := w.p.ReadMemory(real, before); err != nil {
			return 0, fmt.Errorf("%#x is not mapped", real)
		}
	}
	s, ok := w.scratch.alloc(n)
	if !ok {
		return 0, errScratchFull
	}
	if err := w.p.WriteMemory(s, before); err != nil {
		w.scratch.release(s, n)
		return 0, err
	}
	call.bounces = append(call.bounces, bounce{arg: arg, real: real, scratch: s, before: before})
	return s, nil
}

// releaseCall gives back the scratch memory of a call that is not bounced
// after all.
func (w *Watch) releaseCall(call *kcall) {
	for _, b := range call.bounces {
		w.scratch.release(b.scratch, uint64(len(b.before)))
	}
	call.bounces = nil
}

// vecOuts lists what a vector call may write (hw engine).
func (w *Watch) vecOuts(si tracer.SyscallInfo, spec vecSpec) []span {
	l, ok := w.readVec(spec, &si.Args)
	if !ok {
		return nil
	}
	return l.spans()
}
