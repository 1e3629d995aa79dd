package pagewatch

import (
	"encoding/binary"
	"fmt"

	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// Syscalls whose output buffers are listed in memory: an iovec array
// (readv, preadv, preadv2, process_vm_readv), a msghdr (recvmsg: its
// iovecs, name and control buffers, and the lengths and flags the kernel
// writes back into it) or an array of mmsghdr (recvmmsg: the same for each,
// and each message's length). A filter cannot look into memory, so these
// always stop. A bounced call gets copies of the arrays (and headers) in
// the scratch area, pointing at scratch buffers where the real ones are
// watched; at exit every byte the kernel changed goes to its real place, as
// for plain bounces.

type vecSpec struct {
	name  string
	iov   int // argument holding the iovec array, or -1
	cnt   int // argument holding its length, or the number of headers
	hdr   int // argument holding a msghdr or an mmsghdr array, or -1
	multi bool
	extra []outArg // plain outputs besides (recvmmsg's timeout)
}

var vecTable = map[int]vecSpec{
	unix.SYS_READV:            {name: "readv", iov: 1, cnt: 2, hdr: -1},
	unix.SYS_PREADV:           {name: "preadv", iov: 1, cnt: 2, hdr: -1},
	unix.SYS_PREADV2:          {name: "preadv2", iov: 1, cnt: 2, hdr: -1},
	unix.SYS_PROCESS_VM_READV: {name: "process_vm_readv", iov: 1, cnt: 2, hdr: -1},
	unix.SYS_RECVMSG:          {name: "recvmsg", iov: -1, cnt: -1, hdr: 1},
	unix.SYS_RECVMMSG:         {name: "recvmmsg", iov: -1, cnt: 2, hdr: 1, multi: true, extra: []outArg{{4, fixed(16)}}},
}

const (
	maxIov      = 1024 // UIO_MAXIOV, also recvmmsg's cap on messages
	msghdrSize  = 56
	mmsghdrSize = 64 // a msghdr and the message's length, padded
)

// msgLayout is one iovec array and, for the recvmsg family, its header.
type msgLayout struct {
	arr  uint64      // address of the iovec array
	iov  [][2]uint64 // base, len
	hdr  []byte      // the msghdr's bytes, nil for readv and kin
	name [2]uint64   // msg_name, msg_namelen
	ctl  [2]uint64   // msg_control, msg_controllen
}

// vecLayout is what a vector call may write.
type vecLayout struct {
	hdrs    uint64 // address of the msghdr (array), 0 if none
	hdrSize uint64 // bytes of it
	raw     []byte // its bytes
	msgs    []msgLayout
	extra   []span
}

func (w *Watch) readIov(arr, cnt uint64) ([][2]uint64, bool) {
	if cnt > maxIov {
		return nil, false
	}
	raw := make([]byte, 16*cnt)
	if cnt > 0 && w.p.ReadMemory(arr, raw) != nil {
		return nil, false
	}
	var out [][2]uint64
	for i := uint64(0); i < cnt; i++ {
		out = append(out, [2]uint64{binary.LittleEndian.Uint64(raw[16*i:]), binary.LittleEndian.Uint64(raw[16*i+8:])})
	}
	return out, true
}

func (w *Watch) readVec(spec vecSpec, a *[6]uint64) (*vecLayout, bool) {
	l := &vecLayout{}
	read32 := func(addr uint64) uint32 {
		var b [4]byte
		if w.p.ReadMemory(addr, b[:]) != nil {
			return 0
		}
		return binary.LittleEndian.Uint32(b[:])
	}
	for _, o := range spec.extra {
		if p, n := a[o.ptr], o.size(a, read32); p != 0 && n != 0 {
			l.extra = append(l.extra, span{p, p + n})
		}
	}
	if spec.hdr < 0 {
		iov, ok := w.readIov(a[spec.iov], a[spec.cnt])
		if !ok {
			return nil, false
		}
		l.msgs = []msgLayout{{arr: a[spec.iov], iov: iov}}
		return l, true
	}
	n, stride := uint64(1), uint64(msghdrSize)
	if spec.multi {
		n, stride = a[spec.cnt], mmsghdrSize
		if n > maxIov {
			n = maxIov // the kernel caps vlen likewise
		}
	}
	l.hdrs, l.hdrSize = a[spec.hdr], n*stride
	l.raw = make([]byte, l.hdrSize)
	if l.hdrs == 0 || n == 0 || w.p.ReadMemory(l.hdrs, l.raw) != nil {
		return nil, false
	}
	le := binary.LittleEndian
	for i := uint64(0); i < n; i++ {
		h := l.raw[i*stride : i*stride+msghdrSize]
		m := msgLayout{hdr: h, arr: le.Uint64(h[16:])}
		m.name = [2]uint64{le.Uint64(h[0:]), uint64(le.Uint32(h[8:]))}
		m.ctl = [2]uint64{le.Uint64(h[32:]), le.Uint64(h[40:])}
		iov, ok := w.readIov(m.arr, le.Uint64(h[24:]))
		if !ok {
			return nil, false
		}
		m.iov = iov
		l.msgs = append(l.msgs, m)
	}
	return l, true
}

// spans lists every range the kernel may write.
func (l *vecLayout) spans() []span {
	out := append([]span(nil), l.extra...)
	add := func(p, n uint64) {
		if p != 0 && n != 0 && p+n > p {
			out = append(out, span{p, p + n})
		}
	}
	add(l.hdrs, l.hdrSize)
	for _, m := range l.msgs {
		for _, v := range m.iov {
			add(v[0], v[1])
		}
		add(m.name[0], m.name[1])
		add(m.ctl[0], m.ctl[1])
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
	for _, e := range l.extra {
		if _, err := redirect(e.lo, e.hi-e.lo); err != nil {
			return fail(err.Error())
		}
	}
	// Where a plain extra output was bounced, its argument must follow.
	for i := range call.bounces {
		for _, o := range spec.extra {
			if call.bounces[i].real == si.Args[o.ptr] {
				call.bounces[i].arg = o.ptr
			}
		}
	}
	for _, m := range l.msgs {
		arr := make([]byte, 16*len(m.iov))
		for i, v := range m.iov {
			p, err := redirect(v[0], v[1])
			if err != nil {
				return fail(err.Error())
			}
			binary.LittleEndian.PutUint64(arr[16*i:], p)
			binary.LittleEndian.PutUint64(arr[16*i+8:], v[1])
		}
		arrArg := -1
		if m.hdr == nil {
			arrArg = spec.iov
		}
		newArr := m.arr
		if len(arr) > 0 {
			var err error
			if newArr, err = w.bounceOut(call, arrArg, m.arr, uint64(len(arr)), arr); err != nil {
				return fail(err.Error())
			}
		}
		if m.hdr == nil {
			continue
		}
		// Rewrite the header in l.raw: its copy goes to scratch below.
		binary.LittleEndian.PutUint64(m.hdr[16:], newArr)
		for _, f := range []struct {
			off int
			b   [2]uint64
		}{{0, m.name}, {32, m.ctl}} {
			p, err := redirect(f.b[0], f.b[1])
			if err != nil {
				return fail(err.Error())
			}
			binary.LittleEndian.PutUint64(m.hdr[f.off:], p)
		}
	}
	if l.hdrs != 0 {
		if _, err := w.bounceOut(call, spec.hdr, l.hdrs, l.hdrSize, l.raw); err != nil {
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
	call.bounces = append(call.bounces, bounce{arg: arg, real: real, scratch: s, before: append([]byte(nil), before...)})
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
