package bpfhook

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/memtrap/memtrap/pkg/procmaps"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// Call says where a function's call carries what a gate looks at, by
// argument (1-based, rdi, rsi, rdx: the registers a gate records).
type Call struct {
	// Size is the requested size: the product of these arguments (none:
	// the call asks for no size, like free's); PageRound rounds it up to
	// a page (pvalloc).
	Size      []int
	PageRound bool
	// Ptr is the argument that is the block given (realloc, free), or 0.
	Ptr int
	// Probe is where the uprobe goes, if not at the entry (0): an
	// instruction past it that every call reaches, with the arguments and
	// rsp as at the entry, and that the kernel need not single-step.
	Probe uint64
}

// Entry is a call as it was at the function's entry, before its first
// instruction ran.
type Entry struct {
	Addr          uint64 // the function's entry point
	Rsp           uint64 // the return address's slot
	Rdi, Rsi, Rdx uint64
	// Ret says the stop is at the call's return (the thread back in its
	// caller, Rax the result), not at its entry.
	Ret bool
	Rax uint64
	// RetAddr is the return address as it was when the program ran at
	// the uprobe (0: unreadable). The slot at Rsp may hold another
	// address by the stop: the kernel's uretprobe trampoline, where a
	// uprobe session asked for the call's return (Linux runs every
	// gate's session at a call of any process that maps the function,
	// and one scoped to another process asks for every return).
	RetAddr uint64
}

// ErrUnavailable means the kernel cannot run gates here (no BPF, no
// uprobes, no bpf_send_signal_thread, or not allowed).
var ErrUnavailable = errors.New("BPF uprobes are unavailable")

// Available says whether gates can work on this machine: the BPF helpers
// the programs call exist for uprobe programs (the uprobe itself is tried
// at Attach, whose failure the caller falls back from).
func Available() error {
	for _, fn := range []asm.BuiltinFunc{asm.FnSendSignalThread, asm.FnGetNsCurrentPidTgid, asm.FnGetAttachCookie, asm.FnMapLookupElem, asm.FnProbeReadUser} {
		if err := features.HaveProgramHelper(ebpf.Kprobe, fn); err != nil {
			if errors.Is(err, ebpf.ErrNotSupported) {
				return fmt.Errorf("%w: %v", ErrUnavailable, err)
			}
			return fmt.Errorf("%w: probing the kernel: %v", ErrUnavailable, err)
		}
	}
	return nil
}

// Gate is the probes of one process.
type Gate struct {
	tgid   int
	ns     pidNS // memtrap's, in which tgid and the tids are
	ranges [][2]uint64
	// blocks: the watched block addresses; pending: each stopped call's
	// Entry, by tid; calls: each call awaited at its return, by tid;
	// state: [0] stop every call, [1] stops the kernel failed to send.
	blocks, pending, calls, state *ebpf.Map
	progs                         []*ebpf.Program
	links                         []link.Link
	fns                           []uint64
	fcalls                        []Call
	all                           bool
	// entryOnly: no session (every call that matters stops at its
	// entry); session: the gate's program runs at the returns too.
	entryOnly, session bool
}

const (
	maxBlocks = 1 << 20 // allocated as they come
	// maxPending: a call is pending from its stop's sending to memtrap's
	// handling it, one per thread at most; preallocated, so that a stop
	// never fails for want of memory in the kernel.
	maxPending = 1 << 13
	siKernel   = 0x80
)

// New makes the gate of process tgid, whose calls matter when their size
// is in one of ranges (inclusive).
func New(tgid int, ranges [][2]uint64) (*Gate, error) {
	ns, err := ownPIDNS()
	if err != nil {
		return nil, err
	}
	g := &Gate{tgid: tgid, ns: ns, ranges: ranges}
	if g.blocks, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 1,
		MaxEntries: maxBlocks, Flags: unix.BPF_F_NO_PREALLOC}); err != nil {
		return nil, fmt.Errorf("%w: creating the map of watched blocks: %v", ErrUnavailable, err)
	}
	if g.pending, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: entrySize,
		MaxEntries: maxPending}); err != nil {
		g.Close()
		return nil, fmt.Errorf("%w: creating the map of stopped calls: %v", ErrUnavailable, err)
	}
	if g.calls, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: entrySize,
		MaxEntries: maxPending}); err != nil {
		g.Close()
		return nil, fmt.Errorf("%w: creating the map of calls awaited: %v", ErrUnavailable, err)
	}
	if g.state, err = newState(2); err != nil {
		g.Close()
		return nil, fmt.Errorf("%w: creating the gate's state: %v", ErrUnavailable, err)
	}
	return g, nil
}

// pidNS names a PID namespace as bpf_get_ns_current_pid_tgid wants it:
// the kernel's dev_t of nsfs and the namespace's inode.
type pidNS struct{ dev, ino uint64 }

// ownPIDNS is memtrap's PID namespace: the programs see threads by their
// ids there, which are memtrap's (a container's pids are not the
// kernel's first namespace's).
func ownPIDNS() (pidNS, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &st); err != nil {
		return pidNS{}, fmt.Errorf("%w: memtrap's PID namespace: %v", ErrUnavailable, err)
	}
	return pidNS{dev: uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev)), ino: st.Ino}, nil
}

// gateFile is a file the gate has uprobes in: offsets in it, and each
// one's cookie (the function's index).
type gateFile struct {
	path          string
	offs, cookies []uint64
}

// Attach puts the gate at functions of the process: fns[i] is the
// address of one in the process (mapped from a file), calls[i] where its
// calls carry what the gate looks at. A gate is attached once.
func (g *Gate) Attach(fns []uint64, calls []Call) error {
	if len(g.links) > 0 || len(fns) == 0 {
		return fmt.Errorf("a gate is attached once, to at least one function")
	}
	maps, err := procmaps.Read(g.tgid)
	if err != nil {
		return err
	}
	// One link per file: closing one waits for the kernel's grace period
	// (about 0.1 s here) once for all its uprobes.
	var files []*gateFile
	byPath := map[string]*gateFile{}
	for i, entry := range fns {
		if calls[i].Probe != 0 {
			entry = calls[i].Probe
		}
		var m *procmaps.Mapping
		for j := range maps {
			if maps[j].Contains(entry) {
				m = &maps[j]
				break
			}
		}
		if m == nil || m.Path == "" || m.Path[0] != '/' {
			return fmt.Errorf("%#x is not in a file the process maps", entry)
		}
		f := byPath[m.Path]
		if f == nil {
			// The file as the process sees it, also from another
			// mount namespace or after it was replaced on disk.
			path := fmt.Sprintf("/proc/%d/map_files/%x-%x", g.tgid, m.Start, m.End)
			if _, err := os.Stat(path); err != nil {
				path = m.Path
			}
			f = &gateFile{path: path}
			byPath[m.Path] = f
			files = append(files, f)
		}
		f.offs = append(f.offs, entry-m.Start+m.Offset)
		f.cookies = append(f.cookies, uint64(i))
	}
	// A session first: the calls that matter for their result stop at
	// their return only. Where the kernel has no sessions, at their entry.
	var errs []error
	for _, session := range []bool{true, false} {
		if session && g.entryOnly {
			continue
		}
		err := g.attach(files, fns, calls, session)
		if err == nil {
			g.session = session
			g.fns, g.fcalls = fns, calls
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// attach loads the program (a session's or the entry's) and links it to
// the functions at offs in each file.
func (g *Gate) attach(files []*gateFile, fns []uint64, calls []Call, session bool) error {
	insns, err := program(g, fns, calls, session)
	if err != nil {
		return err
	}
	at := ebpf.AttachTraceUprobeMulti
	if session {
		at = attachUprobeSession
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Kprobe, AttachType: at,
		Instructions: insns, License: "GPL"})
	if err != nil {
		return fmt.Errorf("%w: loading the program: %v", ErrUnavailable, err)
	}
	for _, f := range files {
		var l link.Link
		if session {
			l, err = sessionLink(f.path, prog, f.offs, f.cookies, g.tgid)
		} else {
			var ex *link.Executable
			if ex, err = link.OpenExecutable(f.path); err == nil {
				l, err = ex.UprobeMulti(nil, prog, &link.UprobeMultiOptions{Addresses: f.offs, Cookies: f.cookies, PID: uint32(g.tgid)})
			}
		}
		if err != nil {
			g.Detach()
			prog.Close()
			return fmt.Errorf("%w: uprobes in %s: %v", ErrUnavailable, f.path, err)
		}
		g.links = append(g.links, l)
	}
	g.progs = append(g.progs, prog)
	return nil
}

// attachUprobeSession is BPF_TRACE_UPROBE_SESSION (Linux 6.13), which
// cilium/ebpf's link package does not create yet: sessionLink does.
const attachUprobeSession = ebpf.AttachType(57)

// sessionLink links prog as a uprobe session to the functions at offs in
// the file at path, in process pid: the link of uprobe_multi, with the
// session's attach type (bpf(2) BPF_LINK_CREATE, union bpf_attr's
// link_create.uprobe_multi).
func sessionLink(path string, prog *ebpf.Program, offs, cookies []uint64, pid int) (link.Link, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return nil, err
	}
	attr := struct {
		progFD, targetFD, attachType, flags uint32
		path, offsets, refCtr, cookies      uint64
		cnt, umFlags, pid, _                uint32
	}{
		progFD: uint32(prog.FD()), attachType: uint32(attachUprobeSession),
		path:    uint64(uintptr(unsafe.Pointer(p))),
		offsets: uint64(uintptr(unsafe.Pointer(&offs[0]))),
		cookies: uint64(uintptr(unsafe.Pointer(&cookies[0]))),
		cnt:     uint32(len(offs)), pid: uint32(pid),
	}
	const bpfLinkCreate = 28
	fd, _, errno := unix.Syscall(unix.SYS_BPF, bpfLinkCreate, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(p)
	runtime.KeepAlive(offs)
	runtime.KeepAlive(cookies)
	if errno != 0 {
		return nil, fmt.Errorf("creating a uprobe session: %w", errno)
	}
	l, err := link.NewFromFD(int(fd))
	if err != nil {
		unix.Close(int(fd))
		return nil, err
	}
	return l, nil
}

// AtReturn says whether the calls that matter for their result stop at
// their return (a session), not at their entry.
func (g *Gate) AtReturn() bool { return g.session }

// EntryOnly has the gate stop every call that matters at its entry, as
// where the kernel has no uprobe sessions (tests take both ways). Before
// Attach.
func (g *Gate) EntryOnly() { g.entryOnly = true }

// Forget drops what the gate holds for thread tid, which is gone: a call
// it awaited the return of (a new thread with its id must not inherit
// it).
func (g *Gate) Forget(tid int) error {
	if err := g.calls.Delete(uint32(tid)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("the gate's calls awaited: %w", err)
	}
	return nil
}

// Watch and Unwatch add and remove a block whose pointer, given to a
// function with a Call.Ptr, makes the call matter.
func (g *Gate) Watch(addr uint64) error {
	if err := g.blocks.Put(addr, uint8(1)); err != nil {
		return fmt.Errorf("the gate's watched blocks: %w", err)
	}
	return nil
}

func (g *Gate) Unwatch(addr uint64) error {
	if err := g.blocks.Delete(addr); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("the gate's watched blocks: %w", err)
	}
	return nil
}

// StopAll makes every call matter (on) or only those that match (off).
func (g *Gate) StopAll(on bool) error {
	if on == g.all {
		return nil
	}
	v := uint64(0)
	if on {
		v = 1
	}
	if err := g.state.Put(uint32(0), v); err != nil {
		return fmt.Errorf("the gate's state: %w", err)
	}
	g.all = on
	return nil
}

// Owns says whether a stop is the gate's: a SIGSTOP for a thread with a
// pending call, which it takes out and returns: ask once per stop, and
// handle or rewind the stop it owns. It is also when the signal is not
// the kernel's (a SIGSTOP the target was sent at the same time absorbed
// the gate's): see Foreign.
func (g *Gate) Owns(st tracer.Stop) (Entry, bool) {
	if st.Kind != tracer.StopSignal || st.Sig != int(unix.SIGSTOP) || st.Thread == nil {
		return Entry{}, false
	}
	// Taken out as it is looked up: the stop is the one it was for, and
	// the caller handles it or rewinds it (one bpf(2) call, not two).
	var b [entrySize]byte
	if g.pending.LookupAndDelete(uint32(st.Thread.Tid), b[:]) != nil {
		return Entry{}, false
	}
	return decodeEntry(b[:]), true
}

// Foreign says whether a stop the gate Owns also carries a signal of the
// target's own, which must be delivered.
func Foreign(st tracer.Stop) bool { return st.Info.Code() != siKernel }

// Pending lists the threads that have a call recorded whose stop has not
// been taken: their SIGSTOP is on its way.
func (g *Gate) Pending() []int {
	var tids []int
	var k uint32
	var v [entrySize]byte
	it := g.pending.Iterate()
	for it.Next(&k, v[:]) {
		tids = append(tids, int(k))
	}
	return tids
}

// Missed counts the calls that mattered but whose stop the kernel failed
// to send.
func (g *Gate) Missed() uint64 { return word(g.state, 1) }

// newState makes a gate's state: n words its program counts in, mapped
// into memtrap's memory too where the kernel allows (BPF_F_MMAPABLE), so
// that reading one after every stop costs no system call.
func newState(n uint32) (*ebpf.Map, error) {
	spec := ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: n, Flags: unix.BPF_F_MMAPABLE}
	m, err := ebpf.NewMap(&spec)
	if err != nil {
		spec.Flags = 0
		return ebpf.NewMap(&spec)
	}
	return m, nil
}

// word reads word i of a state, from its memory where it is mapped.
func word(m *ebpf.Map, i uint32) uint64 {
	if mem, err := m.Memory(); err == nil {
		var b [8]byte
		if _, err := mem.ReadAt(b[:], 8*int64(i)); err == nil {
			return binary.LittleEndian.Uint64(b[:])
		}
	}
	var v uint64
	if m.Lookup(i, &v) != nil {
		return 0
	}
	return v
}

// Detach closes the links: no call stops from then on, and the kernel
// takes its breakpoints out of the process.
func (g *Gate) Detach() error {
	// Each close waits for the kernel's grace period (about 0.1 s here):
	// together they wait for one.
	errs := make([]error, len(g.links))
	var wg sync.WaitGroup
	for i, l := range g.links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.Close()
		}()
	}
	wg.Wait()
	g.links = nil
	return errors.Join(errs...)
}

// Close detaches the gate and frees its programs and maps.
func (g *Gate) Close() error {
	err := g.Detach()
	for _, p := range g.progs {
		p.Close()
	}
	g.progs = nil
	for _, m := range []*ebpf.Map{g.blocks, g.pending, g.calls, g.state} {
		if m != nil {
			m.Close()
		}
	}
	return err
}

// Fork is the gate of a forked child, pid: the same functions, ranges,
// watched blocks and state, scoped to the child.
func (g *Gate) Fork(pid int) (*Gate, error) {
	c, err := New(pid, g.ranges)
	if err != nil {
		return nil, err
	}
	var k uint64
	var v uint8
	it := g.blocks.Iterate()
	for it.Next(&k, &v) {
		if err := c.Watch(k); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := it.Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("the gate's watched blocks: %w", err)
	}
	if err := c.StopAll(g.all); err != nil {
		c.Close()
		return nil, err
	}
	c.entryOnly = g.entryOnly
	if err := c.Attach(g.fns, g.fcalls); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
