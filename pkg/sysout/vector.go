package sysout

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// Calls whose output buffers are listed in memory: an iovec array (readv,
// preadv, preadv2, process_vm_readv), a msghdr (recvmsg: its iovecs, name
// and control buffers, and the lengths and flags the kernel writes back
// into it) or an array of mmsghdr (recvmmsg: the same for each, and each
// message's length). A seccomp filter cannot look into memory, so whoever
// follows these must stop them all and read the layout at the call's
// entry.

// VecCall is a system call whose output buffers are listed in memory.
type VecCall struct {
	Name string
	// Iov is the argument holding the iovec array (-1: in the headers),
	// Cnt the one holding its length or the number of headers (-1: one).
	Iov, Cnt int
	// Hdr is the argument holding a msghdr, or an mmsghdr array when
	// Multi; -1 if none.
	Hdr   int
	Multi bool
	extra []outArg // plain outputs besides (recvmmsg's timeout)
}

var vecTable = map[int]VecCall{
	unix.SYS_READV:            {Name: "readv", Iov: 1, Cnt: 2, Hdr: -1},
	unix.SYS_PREADV:           {Name: "preadv", Iov: 1, Cnt: 2, Hdr: -1},
	unix.SYS_PREADV2:          {Name: "preadv2", Iov: 1, Cnt: 2, Hdr: -1},
	unix.SYS_PROCESS_VM_READV: {Name: "process_vm_readv", Iov: 1, Cnt: 2, Hdr: -1},
	unix.SYS_RECVMSG:          {Name: "recvmsg", Iov: -1, Cnt: -1, Hdr: 1},
	unix.SYS_RECVMMSG:         {Name: "recvmmsg", Iov: -1, Cnt: 2, Hdr: 1, Multi: true, extra: []outArg{{4, fixed(16)}}},
}

// LookupVec returns the vector call numbered nr, if it is one.
func LookupVec(nr int) (VecCall, bool) {
	c, ok := vecTable[nr]
	return c, ok
}

// VecNumbers lists the calls LookupVec knows.
func VecNumbers() []int {
	out := make([]int, 0, len(vecTable))
	for nr := range vecTable {
		out = append(out, nr)
	}
	return out
}

const (
	maxIov = 1024 // UIO_MAXIOV, also recvmmsg's cap on messages
	// MsghdrSize is struct msghdr's size; the iovec array's address is at
	// offset 16 in it, msg_name at 0 (its length at 8), msg_control at
	// 32 (its length at 40).
	MsghdrSize  = 56
	mmsghdrSize = 64 // a msghdr and the message's length, padded
)

// Msg is one iovec array and, for the recvmsg family, its header.
type Msg struct {
	Arr  uint64      // address of the iovec array
	Iov  [][2]uint64 // base, len
	Hdr  []byte      // the msghdr's bytes (within Layout.Raw), nil for readv and kin
	Name [2]uint64   // msg_name, msg_namelen
	Ctl  [2]uint64   // msg_control, msg_controllen
}

// Layout is what a vector call may write, as its arguments and memory say
// at its entry.
type Layout struct {
	Hdrs    uint64 // address of the msghdr (array), 0 if none
	HdrSize uint64 // bytes of it
	Raw     []byte // its bytes
	Msgs    []Msg
	Extra   []Output // plain outputs besides
}

func readIov(mem Reader, arr, cnt uint64) ([][2]uint64, bool) {
	if cnt > maxIov {
		return nil, false
	}
	raw := make([]byte, 16*cnt)
	if cnt > 0 && mem.ReadMemory(arr, raw) != nil {
		return nil, false
	}
	var out [][2]uint64
	for i := uint64(0); i < cnt; i++ {
		out = append(out, [2]uint64{binary.LittleEndian.Uint64(raw[16*i:]), binary.LittleEndian.Uint64(raw[16*i+8:])})
	}
	return out, true
}

// Read reads the call's layout; false if memory does not hold one (the
// call then fails in the kernel as it would have).
func (spec VecCall) Read(a *[6]uint64, mem Reader) (*Layout, bool) {
	l := &Layout{}
	for _, o := range (Call{outs: spec.extra}).Outputs(a, mem) {
		if o.Addr != 0 && o.Size != 0 {
			l.Extra = append(l.Extra, o)
		}
	}
	if spec.Hdr < 0 {
		iov, ok := readIov(mem, a[spec.Iov], a[spec.Cnt])
		if !ok {
			return nil, false
		}
		l.Msgs = []Msg{{Arr: a[spec.Iov], Iov: iov}}
		return l, true
	}
	n, stride := uint64(1), uint64(MsghdrSize)
	if spec.Multi {
		n, stride = a[spec.Cnt], mmsghdrSize
		if n > maxIov {
			n = maxIov // the kernel caps vlen likewise
		}
	}
	l.Hdrs, l.HdrSize = a[spec.Hdr], n*stride
	l.Raw = make([]byte, l.HdrSize)
	if l.Hdrs == 0 || n == 0 || mem.ReadMemory(l.Hdrs, l.Raw) != nil {
		return nil, false
	}
	le := binary.LittleEndian
	for i := uint64(0); i < n; i++ {
		h := l.Raw[i*stride : i*stride+MsghdrSize]
		m := Msg{Hdr: h, Arr: le.Uint64(h[16:])}
		m.Name = [2]uint64{le.Uint64(h[0:]), uint64(le.Uint32(h[8:]))}
		m.Ctl = [2]uint64{le.Uint64(h[32:]), le.Uint64(h[40:])}
		iov, ok := readIov(mem, m.Arr, le.Uint64(h[24:]))
		if !ok {
			return nil, false
		}
		m.Iov = iov
		l.Msgs = append(l.Msgs, m)
	}
	return l, true
}

// Outputs lists every range the kernel may write.
func (l *Layout) Outputs() []Output {
	out := append([]Output(nil), l.Extra...)
	add := func(p, n uint64) {
		if p != 0 && n != 0 && p+n > p {
			out = append(out, Output{Arg: -1, Addr: p, Size: n})
		}
	}
	add(l.Hdrs, l.HdrSize)
	for _, m := range l.Msgs {
		for _, v := range m.Iov {
			add(v[0], v[1])
		}
		add(m.Name[0], m.Name[1])
		add(m.Ctl[0], m.Ctl[1])
	}
	return out
}

// Redirect rewrites the call's lists so that the kernel writes the
// buffers move moves where move puts them: move(p, n) returns where the
// kernel is to write [p, p+n) (p if it stays), place(real, n, init) where
// a rewritten list of n bytes, a copy of the one at real that holds init,
// goes. It returns the arguments that must change, by number, to their
// new values: the list or header array's copy, and moved plain outputs.
func (l *Layout) Redirect(spec VecCall, move func(p, n uint64) (uint64, error), place func(real, n uint64, init []byte) (uint64, error)) (map[int]uint64, error) {
	args := map[int]uint64{}
	for _, e := range l.Extra {
		p, err := move(e.Addr, e.Size)
		if err != nil {
			return nil, err
		}
		if p != e.Addr && e.Arg >= 0 {
			args[e.Arg] = p
		}
	}
	le := binary.LittleEndian
	for _, m := range l.Msgs {
		arr := make([]byte, 16*len(m.Iov))
		for i, v := range m.Iov {
			p, err := move(v[0], v[1])
			if err != nil {
				return nil, err
			}
			le.PutUint64(arr[16*i:], p)
			le.PutUint64(arr[16*i+8:], v[1])
		}
		at := m.Arr
		if len(arr) > 0 {
			var err error
			if at, err = place(m.Arr, uint64(len(arr)), arr); err != nil {
				return nil, err
			}
		}
		if m.Hdr == nil {
			args[spec.Iov] = at
			continue
		}
		// The header (in l.Raw, whose copy is placed below) points at
		// the array's copy, and where move put its name and control
		// buffers.
		le.PutUint64(m.Hdr[16:], at)
		for _, f := range []struct {
			off int
			b   [2]uint64
		}{{0, m.Name}, {32, m.Ctl}} {
			p, err := move(f.b[0], f.b[1])
			if err != nil {
				return nil, err
			}
			le.PutUint64(m.Hdr[f.off:], p)
		}
	}
	if l.Hdrs != 0 {
		at, err := place(l.Hdrs, l.HdrSize, l.Raw)
		if err != nil {
			return nil, err
		}
		args[spec.Hdr] = at
	}
	return args, nil
}
