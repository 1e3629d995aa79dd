package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/memtrap/memtrap/pkg/pagewatch"
	"github.com/memtrap/memtrap/pkg/symbols"
	"github.com/memtrap/memtrap/pkg/tracer"
	"github.com/memtrap/memtrap/pkg/unwind"
	"golang.org/x/sys/unix"
)

// session is one watch of one process, from flags to the final summary.
type session struct {
	flags   *watchFlags
	pending []*regionSpec // --symbol not found yet: waiting for a library
	rep     Reporter
	p       *tracer.Process
	syms    *symbols.Table   // the first process's image
	unw     *unwind.Unwinder // over syms
	// execd holds the images of followed children that executed another
	// program, and imageOf remembers which image each writer uses.
	execd   map[int]*image
	imageOf map[int]*image
	sigs    chan os.Signal
	// unwound holds the stacks onStopped took, for onWrite.
	unwound map[*pagewatch.Write]unwound
}

// image symbolizes one address space: a symbol table over its maps and an
// unwinder over the table.
type image struct {
	syms *symbols.Table
	unw  *unwind.Unwinder
}

func newImage(p *tracer.Process, maps []tracer.Mapping) *image {
	syms := symbols.NewTable(maps, symbols.Options{
		Root:       fmt.Sprintf("/proc/%d/root", p.Pid),
		ReadMemory: p.ReadMemory,
	})
	return &image{syms, unwind.New(syms)}
}

// image returns the image pid's writes are symbolized with: its own once it
// executed a program, else its parent's (a forked child shares its
// parent's layout), up to the first process's.
func (se *session) image(pid int) *image {
	if img := se.imageOf[pid]; img != nil {
		return img
	}
	img := &image{se.syms, se.unw}
	if pid != se.p.Pid {
		if ppid := parentPid(pid); ppid > 1 && ppid != pid {
			img = se.image(ppid)
		}
	}
	if se.imageOf == nil {
		se.imageOf = map[int]*image{}
	}
	se.imageOf[pid] = img
	return img
}

// parentPid reads field 4 of /proc/PID/stat; 0 if it cannot.
func parentPid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	var state byte
	var ppid int
	if _, err := fmt.Sscanf(string(b[i+1:]), " %c %d", &state, &ppid); err != nil {
		return 0
	}
	return ppid
}

// unwound is a write's stack, taken while its writer was stopped: the
// frames, and the stack pages read for them, frozen.
type unwound struct {
	frames []unwind.Frame
	mem    *stackWindow
}

func newSession(f *watchFlags, out io.Writer) *session {
	return &session{flags: f, rep: newReporter(f.format, out)}
}

// watchSignals starts catching the signals that end a session, before any
// target exists, so none is lost in between.
func (se *session) watchSignals() {
	se.sigs = make(chan os.Signal, 4)
	signal.Notify(se.sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT)
}

func (se *session) stopSignals() {
	if se.sigs != nil {
		signal.Stop(se.sigs)
	}
}

// loadSymbols starts a symbol table and an unwinder over the target's
// current memory map (a new image after execve).
func (se *session) loadSymbols(maps []tracer.Mapping) {
	if se.syms != nil {
		se.syms.Close()
	}
	img := newImage(se.p, maps)
	se.syms, se.unw = img.syms, img.unw
	se.imageOf = nil
}

// start opens the report stream, builds the session and its watch options,
// and starts catching the signals that end a session. The returned func
// undoes what start did.
func start(f *watchFlags, s *Streams) (*session, pagewatch.Options, func(), error) {
	out, closeOut, err := openOutput(f.output, s.Err)
	if err != nil {
		return nil, pagewatch.Options{}, nil, err
	}
	se := newSession(f, out)
	wopts, err := se.watchOptions()
	if err != nil {
		closeOut()
		return nil, wopts, nil, err
	}
	se.watchSignals()
	return se, wopts, func() { se.stopSignals(); _ = se.rep.Flush(); closeOut() }, nil
}

// resolve turns the flags' region specs into regions of p.
func (se *session) resolve() ([]*pagewatch.Region, error) {
	maps, err := tracer.ReadMaps(se.p.Pid)
	if err != nil {
		return nil, fmt.Errorf("reading memory map of %d: %w", se.p.Pid, err)
	}
	se.loadSymbols(maps)
	var regions []*pagewatch.Region
	for _, s := range se.flags.specs {
		if s.addr != "" {
			a, _ := parseNumber(s.addr)
			regions = append(regions, &pagewatch.Region{Name: fmt.Sprintf("%#x", a), Addr: a, Len: s.length})
			continue
		}
		r, err := se.symbolRegion(s)
		var nf *symbols.NotFoundError
		if errors.As(err, &nf) && (nf.UnknownModule || se.flags.pending) {
			// Like gdb's pending breakpoints: armed when a library
			// that defines it is loaded.
			se.pending = append(se.pending, s)
			continue
		}
		if err != nil {
			return nil, err
		}
		regions = append(regions, r)
	}
	return regions, nil
}

func (se *session) symbolRegion(s *regionSpec) (*pagewatch.Region, error) {
	return symbolRegionIn(se.syms, s)
}

func symbolRegionIn(syms *symbols.Table, s *regionSpec) (*pagewatch.Region, error) {
	sym, err := syms.Resolve(s.symbol)
	if err != nil {
		return nil, err
	}
	n := sym.Size
	if s.hasLen {
		n = s.length
	}
	if n == 0 {
		return nil, fmt.Errorf("symbol %s has no size in the symbol table; give --len N", s.symbol)
	}
	return &pagewatch.Region{Name: s.symbol, Addr: sym.Addr, Len: n}, nil
}

// onExec resolves the --symbol regions again in the new image p executed
// (the first process, or a followed child); --addr regions meant the old
// one and are dropped.
func (se *session) onExec(p *tracer.Process) ([]*pagewatch.Region, error) {
	maps, err := tracer.ReadMaps(p.Pid)
	if err != nil {
		return nil, err
	}
	var syms *symbols.Table
	if p.Pid == se.p.Pid {
		se.loadSymbols(maps)
		syms = se.syms
	} else {
		img := newImage(p, maps)
		se.keepImage(p.Pid, img)
		syms = img.syms
	}
	var regions []*pagewatch.Region
	for _, s := range se.flags.specs {
		if s.symbol == "" {
			continue
		}
		r, err := symbolRegionIn(syms, s)
		if err != nil {
			_ = se.rep.Note(fmt.Sprintf("%s is not in the new image of process %d: %v", s.symbol, p.Pid, err))
			continue
		}
		regions = append(regions, r)
	}
	return regions, nil
}

// keepImage makes img pid's image, and closes those of children gone.
func (se *session) keepImage(pid int, img *image) {
	if se.execd == nil {
		se.execd = map[int]*image{}
	}
	for cpid, old := range se.execd {
		if cpid == pid || unix.Kill(cpid, 0) == unix.ESRCH {
			old.syms.Close()
			delete(se.execd, cpid)
		}
	}
	se.execd[pid] = img
	se.imageOf = map[int]*image{pid: img}
}

// watchPending arranges for pending symbols to be armed when a library
// defining them is loaded.
func (se *session) watchPending(w *pagewatch.Watch) error {
	if len(se.pending) == 0 {
		return nil
	}
	for _, s := range se.pending {
		_ = se.rep.Note(fmt.Sprintf("symbol %s not found yet: pending until a library that defines it is loaded", s.symbol))
	}
	sym, err := se.syms.Resolve("_dl_debug_state")
	if err != nil {
		return fmt.Errorf("cannot follow libraries loaded later (no _dl_debug_state in the dynamic loader): %w", err)
	}
	return w.WatchLibraries(sym.Addr)
}

// onLibraries resolves what it can of the pending symbols after the
// loader's list of objects changed.
func (se *session) onLibraries() ([]*pagewatch.Region, error) {
	if len(se.pending) == 0 {
		return nil, nil
	}
	maps, err := tracer.ReadMaps(se.p.Pid)
	if err != nil {
		return nil, err
	}
	se.syms.Update(maps)
	var regions []*pagewatch.Region
	still := se.pending[:0]
	for _, s := range se.pending {
		r, err := se.symbolRegion(s)
		if err != nil {
			still = append(still, s)
			continue
		}
		_ = se.rep.Note(fmt.Sprintf("pending symbol %s resolved at %#x (%d bytes): watching it now", s.symbol, r.Addr, r.Len))
		regions = append(regions, r)
	}
	se.pending = still
	return regions, nil
}

func (se *session) watchOptions() (pagewatch.Options, error) {
	o := pagewatch.Options{
		Engine:       se.flags.engine,
		KernelWrites: se.flags.kernel,
		FollowForks:  se.flags.follow,
		StackBytes:   stackPrefetch(se.flags.backtrace),
		Width:        se.flags.width,
		Sink:         se.onWrite,
		Notify:       func(m string) { _ = se.rep.Note(m) },
		OnUnmap:      func(r *pagewatch.Region, how string) { _ = se.rep.Unmapped(r, how) },
		OnLibraries:  se.onLibraries,
		OnExec:       se.onExec,
	}
	if se.flags.backtrace > 0 {
		o.Stopped = se.onStopped
	}
	if se.flags.completer == "step" {
		o.Completer = pagewatch.Stepper{}
	}
	if se.flags.whenValue != "" {
		v, err := parseNumber(se.flags.whenValue)
		if err != nil {
			return o, usagef("--when-value: %v", err)
		}
		o.WhenValue = &v
	}
	return o, nil
}

// onStopped runs while the writer is stopped at the writing instruction:
// its stack is intact, so this is where it is unwound. It reads every stack
// page the frames span, so that onWrite, which runs once the writer is on
// its way again, finds the parameters as they were, and reads nothing
// live: the rest of the report is made off the writer's critical path.
func (se *session) onStopped(w *pagewatch.Write) error {
	mem := &stackWindow{p: w.Thread.Process()}
	for off := 0; off+stackPage <= len(w.Stack); off += stackPage {
		mem.keep(w.StackAddr+uint64(off), w.Stack[off:off+stackPage])
	}
	frames := se.image(w.Pid).unw.Unwind(unwind.RegsFromPtrace(&w.Regs), mem, se.flags.backtrace)
	if len(frames) > 0 {
		// The writing instruction, also when the registers are those
		// after it (debug registers).
		frames[0].PC = w.PC
	}
	sp := w.Regs.Rsp
	for _, fr := range frames {
		// A frame's parameters lie between its stack pointer (its
		// callee's CFA) and a little above its own CFA (those passed on
		// the stack). Signal frames and stack switches break the chain:
		// skip what is not a plausible frame.
		if fr.CFA > sp && fr.CFA-sp <= maxFrameSpan {
			mem.load(sp, fr.CFA+256)
		}
		if fr.CFA != 0 {
			sp = fr.CFA
		}
	}
	mem.frozen = true
	if se.unwound == nil {
		se.unwound = map[*pagewatch.Write]unwound{}
	}
	se.unwound[w] = unwound{frames, mem}
	return nil
}

// maxFrameSpan bounds the stack onStopped reads for one frame.
const maxFrameSpan = 64 << 10

// onWrite reports a write, with the backtrace onStopped took.
func (se *session) onWrite(w *pagewatch.Write) error {
	ev := &WriteEvent{Write: w}
	if u, ok := se.unwound[w]; ok {
		delete(se.unwound, w)
		frames, mem := u.frames, u.mem
		img := se.image(w.Pid)
		refreshed := false
		for i, fr := range frames {
			// A return address may sit just past its caller's end (a
			// call to a noreturn function): symbolize pc-1.
			look := fr.PC
			if i > 0 && !fr.Signal {
				look--
			}
			loc, ok := img.syms.Lookup(look)
			if !ok && !refreshed {
				// A library mapped since we last looked (dlopen).
				refreshed = true
				if maps, err := tracer.ReadMaps(w.Pid); err == nil {
					img.syms.Update(maps)
					loc, ok = img.syms.Lookup(look)
				}
			}
			f := Frame{PC: fr.PC}
			if ok {
				f.Func, f.Module = loc.Func, loc.Module
				f.Offset = fr.PC - (look - loc.Offset)
				// The line of the call (pc-1) for outer frames,
				// as gdb prints it.
				f.File, f.Line = loc.File, loc.Line
				f.Args = se.args(img, fr, look, mem)
			}
			ev.Backtrace = append(ev.Backtrace, f)
		}
	}
	return se.rep.Write(ev)
}

// setProcess makes p the session's target. Reported writes are buffered
// and flushed whenever memtrap waits idle for the target (and by any other
// event and at the end): a write(2) per trapped write, on a path where each
// system call delays the stopped writer, costs more than the rest of the
// report. Output lags by at most one buffer while the target writes
// without pause.
func (se *session) setProcess(p *tracer.Process) {
	se.p = p
	p.OnIdle(func() { _ = se.rep.Flush() })
}

func (se *session) close() {
	if se.syms != nil {
		se.syms.Close()
	}
	for _, img := range se.execd {
		img.syms.Close()
	}
	if se.p != nil {
		se.p.Close()
	}
}

// summary builds the final line from how the target ended.
func summary(w *pagewatch.Watch, st tracer.Stop) Summary {
	s := Summary{}
	if w != nil {
		s.Writes, s.Faults = w.Stats().Writes, w.Stats().Faults
	}
	switch {
	case st.Kind == tracer.StopWake:
		s.Detached = true
	case st.Status.Signaled():
		s.Signaled, s.Signal = true, int(st.Status.Signal())
	default:
		s.Code = st.Status.ExitStatus()
	}
	return s
}

// exitCode is what a shell would report for the target's end.
func exitCode(s Summary) int {
	if s.Signaled {
		return 128 + s.Signal
	}
	return s.Code
}

// stackWindow serves an unwind's reads of the target's memory from whole
// pages read once: a 10-frame unwind makes dozens of 8-byte reads, each a
// pread of /proc/PID/mem otherwise.
type stackWindow struct {
	p     *tracer.Process
	pages map[uint64][]byte // nil entry: unreadable
	// frozen: the thread is running again; only pages already read
	// can be served.
	frozen bool
}

const stackPage = 4096

// stackPrefetch is how much stack the fault's own read brings along for a
// backtrace of n frames (pagewatch.Options.StackBytes): two pages cover the
// frames of most programs, and save the unwinder a pread each (about 4 us
// on a small VM). Deeper stacks read the rest as the unwinder needs it.
func stackPrefetch(n int) int {
	if n <= 0 {
		return 0
	}
	return 2 * stackPage
}

// keep gives the window a page of the target's stack already read.
func (s *stackWindow) keep(base uint64, page []byte) {
	if s.pages == nil {
		s.pages = map[uint64][]byte{}
	}
	s.pages[base] = page
}

// load reads the pages of [lo, hi) the window lacks.
func (s *stackWindow) load(lo, hi uint64) {
	var b [1]byte
	for a := lo &^ (stackPage - 1); a < hi; a += stackPage {
		_ = s.ReadMemory(a, b[:])
	}
}

func (s *stackWindow) ReadMemory(addr uint64, b []byte) error {
	const pageSize = stackPage
	for len(b) > 0 {
		base := addr &^ (pageSize - 1)
		pg, seen := s.pages[base]
		if !seen && s.frozen {
			// The thread runs again: its stack is not what it was.
			return tracer.ErrNotMapped
		}
		if !seen {
			if s.pages == nil {
				s.pages = map[uint64][]byte{}
			}
			pg = make([]byte, pageSize)
			if s.p.ReadMemory(base, pg) != nil {
				pg = nil
			}
			s.pages[base] = pg
		}
		if pg == nil && s.frozen {
			return tracer.ErrNotMapped
		}
		if pg == nil {
			return s.p.ReadMemory(addr, b)
		}
		n := copy(b, pg[addr-base:])
		b, addr = b[n:], addr+uint64(n)
	}
	return nil
}

// args reads a frame's parameters, as gdb's bt shows them, from the
// registers the unwinder recovered for the frame: all of them in frame 0;
// in an outer frame its stack and instruction pointers, its CFA and the
// callee-saved registers, which covers parameters kept in the stack frame
// (-O0) or in rbx, rbp, r12-r15 (-O2), but not those in scratch registers.
func (se *session) args(img *image, fr unwind.Frame, pc uint64, mem *stackWindow) []Arg {
	regs := symbols.FrameRegs{PC: pc, CFA: fr.CFA, Regs: fr.Regs, RegsValid: uint32(fr.Valid)}
	ps, err := img.syms.Params(regs, mem.ReadMemory)
	if err != nil || len(ps) == 0 {
		return nil
	}
	out := make([]Arg, len(ps))
	for j, p := range ps {
		out[j].Name = p.Name
		if p.Known {
			if p.Size > 0 && p.Size <= 4 {
				// int-sized: signed decimal, as gdb prints an int.
				shift := 64 - 8*uint(p.Size)
				out[j].Value = fmt.Sprint(int64(p.Value<<shift) >> shift)
			} else {
				out[j].Value = fmt.Sprintf("%#x", p.Value)
			}
		}
	}
	return out
}
