package session

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	"github.com/memtrap/memtrap/internal/cond"
	"github.com/memtrap/memtrap/internal/report"
	"github.com/memtrap/memtrap/pkg/fastwatch"
	"github.com/memtrap/memtrap/pkg/pagewatch"
	"github.com/memtrap/memtrap/pkg/procmaps"
	"github.com/memtrap/memtrap/pkg/symbols"
	"github.com/memtrap/memtrap/pkg/tracer"
	"github.com/memtrap/memtrap/pkg/unwind"
	"golang.org/x/sys/unix"
)

// Spec is one region to watch, as the command line names it.
type Spec struct {
	// Symbol is NAME, NAME+OFF, module:NAME or a DWARF variable path
	// (session.token), looked up in the target; "" for an address.
	Symbol string
	Addr   uint64 // when Symbol is ""
	Len    uint64 // 0: the symbol's own size
}

// Options are what the command line asks of a session.
type Options struct {
	Specs []Spec
	// WhenValue, if set, keeps only the writes after which the watched
	// value equals it (see pagewatch.Options.WhenValue, and Width).
	WhenValue    *uint64
	Width        int    // 1, 2, 4 or 8
	Backtrace    int    // frames per write; 0 for none
	Engine       string // auto, page or hw
	Completer    string // emulate (simple stores emulated) or step
	KernelWrites bool   // follow syscalls that write into watched memory
	FollowForks  bool
	// Pending keeps a symbol not found at the start waiting for a library
	// that defines it (always so for module:NAME of a module not loaded).
	Pending bool
	// Heap selects heap blocks to watch from their allocation on; Freed
	// keeps watching a block after free() until the allocator hands its
	// memory out again (a write meanwhile is a use-after-free).
	Heap  []HeapSpec
	Freed bool
	// Redzone watches up to this many bytes after each block's requested
	// end (its slack and the next chunk's header): a write there is an
	// overflow.
	Redzone uint64
	// Args and Locals watch memory a call of a function is given or keeps
	// on its stack, while the call lasts.
	Args   []ArgSpec
	Locals []LocalSpec
	// When keeps only the writes it holds for (with WhenValue, both).
	When *cond.Expr
	// OnHit "stop": at the first kept write, hand the target off in
	// group-stop for another debugger. MaxWrites > 0: after that many
	// kept writes, stop watching and let the target run on untraced.
	OnHit     string
	MaxWrites int
	// Last > 0 keeps only the last Last writes, reported at the end;
	// Summary ends the report with a table of the writers.
	Last    int
	Summary bool
	Format  string // text or json
	// Color is auto (on a terminal, unless NO_COLOR is set), always or
	// never: colours in the text report.
	Color string
	Out   io.Writer // where the report goes
}

// session is one watch of one process, from its options to the final
// summary.
type session struct {
	opts     Options
	tty      bool // the report goes to a terminal
	attached bool // attach mode: the target outlives the session
	// sitesChecked: the --heap sites were looked up in the first
	// process's image (a child's or a new image's may lack them)
	sitesChecked bool
	// unwatchable counts, by --arg or --local region name, the calls
	// whose region could not be watched (noted for the first few)
	unwatchable map[string]int
	pending     []Spec // --symbol not found yet: waiting for a library
	rep         report.Reporter
	p           *tracer.Process
	w           *pagewatch.Watch
	fw          *fastwatch.Watch // the fast engine's, instead of w
	syms        *symbols.Table   // the first process's image
	unw         *unwind.Unwinder // over syms
	// execd holds the images of followed children that executed another
	// program, and imageOf remembers which image each writer uses.
	execd   map[int]*image
	imageOf map[int]*image
	sigs    chan os.Signal
	// heaps are the heap watches of each process (the first, followed
	// children), watches the watches their hooks work through, by pid.
	heaps   map[int]*heapWatch
	watches map[int]*pagewatch.Watch
	blocks  int // heap blocks numbered so far

	// The condition (--when, --when-value), how many writes it saw and
	// kept, the write that set off a hand-off, what predicates answered
	// per code address, and the last writer unwound.
	expr     *cond.Expr
	seen     int
	kept     int
	hit      *pagewatch.Write
	predMemo map[predKey]bool
	// params is args' scratch; argsMemo its memory, by frame.
	params   []symbols.Param
	argsMemo map[argsKey]argsMemo
	unwound  struct {
		w      *pagewatch.Write
		depth  int
		frames []unwind.Frame
		mem    *stackWindow
	}
	// last holds the --last writes, oldest first from lastHead, to be
	// made into events at the end; writers counts writes per writing
	// instruction for --summary.
	last       []pendingWrite
	lastHead   int
	lastEvents []*report.Write
	writers    map[writerKey]*writerCount
	table      []report.Writer
	// stopped is where --on-hit stop left the target, for the end.
	stopped string
	// named holds the --symbol each symbol region was resolved from, and
	// fields the member names of their offsets (see fieldName).
	named  map[*pagewatch.Region]string
	fields map[fieldKey]string
}

type fieldKey struct {
	r         *pagewatch.Region
	off, size uint64
}

// nameRegion remembers that r is the --symbol expr, so that its writes can
// be named by member.
func (se *session) nameRegion(r *pagewatch.Region, expr string) {
	if se.named == nil {
		se.named = map[*pagewatch.Region]string{}
	}
	se.named[r] = expr
}

// fieldName is the member of a --symbol region a write falls in
// (cfg.limits.max), "" when DWARF does not say: once per offset and size.
func (se *session) fieldName(w *pagewatch.Write) string {
	expr, ok := se.named[w.Region]
	if !ok {
		return ""
	}
	k := fieldKey{w.Region, w.Offset, w.Size}
	if n, ok := se.fields[k]; ok {
		return n
	}
	n, _ := se.image(w.Pid).syms.Field(expr, w.Offset, w.Size)
	if se.fields == nil {
		se.fields = map[fieldKey]string{}
	}
	se.fields[k] = n
	return n
}

// image symbolizes one address space: a symbol table over its maps and an
// unwinder over the table.
type image struct {
	syms *symbols.Table
	unw  *unwind.Unwinder
}

func newImage(p *tracer.Process, maps []procmaps.Mapping) *image {
	syms := symbols.NewTable(maps, symbols.Options{
		Root:       fmt.Sprintf("/proc/%d/root", p.Pid),
		ReadMemory: p.ReadMemory,
		CacheDir:   cacheDir(),
	})
	return &image{syms, unwind.New(syms)}
}

// cacheDir is where the indexes of modules' DWARF are kept between runs
// (symbols.Options.CacheDir): $XDG_CACHE_HOME/memtrap, else
// ~/.cache/memtrap; "" when neither is known.
func cacheDir() string {
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "memtrap")
}

// image returns the image pid's writes are symbolized with: its own once it
// executed a program, else its parent's (a forked child shares its
// parent's layout), up to the first process's.
func (se *session) image(pid int) *image {
	if img := se.imageOf[pid]; img != nil {
		return img
	}
	img := &image{se.syms, se.unw}
	if pid != se.p.Pid && se.w != nil {
		if ppid := se.w.Parent(pid); ppid != 0 && ppid != pid {
			img = se.image(ppid)
		}
	}
	if se.imageOf == nil {
		se.imageOf = map[int]*image{}
	}
	se.imageOf[pid] = img
	return img
}

func newSession(opts Options) *session {
	se := &session{opts: opts, heaps: map[int]*heapWatch{}, watches: map[int]*pagewatch.Watch{}, unwatchable: map[string]int{}}
	se.tty = isTerminal(opts.Out)
	if opts.Format == "json" {
		se.rep = report.New("json", opts.Out)
	} else {
		to := report.TextOptions{Sync: se.tty}
		to.Dir, _ = os.Getwd()
		switch opts.Color {
		case "always":
			to.Color = true
		case "never":
		default:
			to.Color = se.tty && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"
		}
		se.rep = report.NewText(opts.Out, to)
	}
	se.expr = se.condition()
	return se
}

// isTerminal reports whether the report goes to a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
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
func (se *session) loadSymbols(maps []procmaps.Mapping) {
	if se.syms != nil {
		se.syms.Close()
	}
	img := newImage(se.p, maps)
	se.syms, se.unw = img.syms, img.unw
	se.imageOf = nil
}

// begin starts catching the signals that end a session; the func it
// returns stops that and sends what the report still buffers.
func (se *session) begin() (end func()) {
	se.watchSignals()
	return func() { se.stopSignals(); _ = se.rep.Flush() }
}

// resolve turns the region specs into regions of p.
// ErrUsage marks an error in what the user asked that only the target
// could reveal (a --when-value wider than the variable): exit 2.
var ErrUsage = errors.New("usage")

type usageError string

func (e usageError) Error() string        { return string(e) }
func (e usageError) Is(target error) bool { return target == ErrUsage }

func (se *session) resolve() ([]*pagewatch.Region, error) {
	maps, err := procmaps.Read(se.p.Pid)
	if err != nil {
		return nil, fmt.Errorf("reading memory map of %d: %w", se.p.Pid, err)
	}
	se.loadSymbols(maps)
	var regions []*pagewatch.Region
	for _, s := range se.opts.Specs {
		if s.Symbol == "" {
			regions = append(regions, &pagewatch.Region{Name: fmt.Sprintf("%#x", s.Addr), Addr: s.Addr, Len: s.Len})
			continue
		}
		r, err := se.symbolRegion(s)
		var nf *symbols.NotFoundError
		if errors.As(err, &nf) && (nf.UnknownModule || se.opts.Pending) {
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

func (se *session) symbolRegion(s Spec) (*pagewatch.Region, error) {
	r, err := symbolRegionIn(se.syms, s)
	if err == nil {
		se.nameRegion(r, s.Symbol)
	}
	return r, err
}

func symbolRegionIn(syms *symbols.Table, s Spec) (*pagewatch.Region, error) {
	sym, err := syms.Resolve(s.Symbol)
	if err != nil {
		return nil, err
	}
	n := sym.Size
	if s.Len != 0 {
		n = s.Len
	}
	if n == 0 {
		return nil, fmt.Errorf("symbol %s has no size in the symbol table; give --len N", s.Symbol)
	}
	return &pagewatch.Region{Name: s.Symbol, Addr: sym.Addr, Len: n}, nil
}

// onExec resolves the --symbol regions again in the new image p executed
// (the first process, or a followed child); --addr regions meant the old
// one and are dropped.
func (se *session) onExec(p *tracer.Process) ([]*pagewatch.Region, error) {
	maps, err := procmaps.Read(p.Pid)
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
	for _, s := range se.opts.Specs {
		if s.Symbol == "" {
			continue
		}
		r, err := symbolRegionIn(syms, s)
		if err != nil {
			_ = se.rep.Note(fmt.Sprintf("%s is not in the new image of process %d: %v", s.Symbol, p.Pid, err))
			continue
		}
		se.nameRegion(r, s.Symbol)
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
		_ = se.rep.Note(fmt.Sprintf("symbol %s not found yet: pending until a library that defines it is loaded", s.Symbol))
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
	maps, err := procmaps.Read(se.p.Pid)
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
		_ = se.rep.Note(fmt.Sprintf("pending symbol %s resolved at %#x (%d bytes): watching it now", s.Symbol, r.Addr, r.Len))
		regions = append(regions, r)
	}
	se.pending = still
	return regions, nil
}

func (se *session) watchOptions() pagewatch.Options {
	o := pagewatch.Options{
		Engine:       se.opts.Engine,
		KernelWrites: se.opts.KernelWrites,
		FollowForks:  se.opts.FollowForks,
		StackBytes:   stackPrefetch(se.opts.Backtrace),
		Width:        se.opts.Width,
		Report:       se.onReport,
		Unwind:       se.opts.Backtrace > 0,
		Notify:       func(m string) { _ = se.rep.Note(m) },
		OnUnmap:      func(r *pagewatch.Region, how string) { _ = se.rep.Unmapped(reportRegion(r), how) },
		OnLibraries:  se.onLibraries,
		OnExec:       se.onExec,
	}
	if se.opts.Completer == "step" {
		o.Completer = pagewatch.Stepper{}
	}
	if se.needsWhen() {
		o.When = se.when
	}
	// On a terminal the target's output and the report share the screen:
	// each report is out before its writer prints anything after it.
	o.Sync = se.tty
	if len(se.opts.Heap)+len(se.opts.Args)+len(se.opts.Locals) > 0 {
		// Blocks and frames come and go by the thousand: the debug
		// registers' four slots cannot hold them.
		o.Engine = pagewatch.EnginePage
		o.Keep = func(w *pagewatch.Write) bool { h := se.heaps[w.Pid]; return h == nil || h.keep(w) }
		o.OnFork, o.OnArm = se.onFork, se.onArm
		o.Anywhere = true
	}
	return o
}

// CheckSymbol says why a --symbol expression cannot be read
// ([module:]name[+offset]), or nil: before any target exists.
func CheckSymbol(expr string) error {
	var se *symbols.SyntaxError
	if err := symbols.CheckExpr(expr); errors.As(err, &se) {
		return errors.New(se.Why)
	} else if err != nil {
		return err
	}
	return nil
}

// exeOf is the path of a process's program, as its memory map shows it.
func exeOf(pid int) string {
	p, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return ""
	}
	return p
}

// onReport runs while the writer is stopped at the writing instruction
// (with a backtrace asked for): its stack is intact, so this is where it is
// unwound. It reads every stack page the frames span, so that the finish it
// returns, which runs once the writer is on its way again, finds the
// parameters as they were and reads nothing live: the rest of the report
// is made off the writer's critical path.
func (se *session) onReport(w *pagewatch.Write) (func() error, error) {
	if se.opts.Backtrace <= 0 {
		return func() error {
			ev := se.reportWrite(w)
			return se.deliver(w, func() *report.Write { return ev })
		}, nil
	}
	frames, mem := se.writerFrames(w, se.opts.Backtrace)
	frames = frames[:min(len(frames), se.opts.Backtrace)]
	// The writer's own frame may keep its locals below its stack
	// pointer: a leaf function's, in the 128-byte red zone.
	sp, lo := w.Regs.Rsp, w.Regs.Rsp-redZone
	for _, fr := range frames {
		// A frame's parameters lie between its stack pointer (its
		// callee's CFA) and a little above its own CFA (those passed on
		// the stack). Signal frames and stack switches break the chain:
		// skip what is not a plausible frame.
		if fr.CFA > sp && fr.CFA-sp <= maxFrameSpan {
			mem.load(min(lo, sp), fr.CFA+256)
		}
		lo = ^uint64(0)
		if fr.CFA != 0 {
			sp = fr.CFA
		}
	}
	mem.frozen = true
	if se.opts.Last > 0 {
		// Symbolized at the end: the pages the watch lent are its own
		// again after this write.
		mem.own(w.StackAddr, len(w.Stack))
	}
	img, pid := se.image(w.Pid), w.Pid
	return func() error {
		// The event now (its block's state is this write's), its
		// symbols when it is printed.
		ev := se.reportWrite(w)
		return se.deliver(w, func() *report.Write {
			ev.Backtrace = se.symbolizeFrames(img, pid, frames, mem)
			// The report has what it shows of them: they go back for
			// another write's (this write is done with).
			frames = frames[:0]
			framePool.Put(&frames)
			return ev
		})
	}, nil
}

// framePool holds the frame slices of writes reported already
// (writerFrames unwinds into them).
var framePool sync.Pool

// redZone is the x86-64 ABI's: the 128 bytes below the stack pointer a
// function may use without moving it.
const redZone = 128

// maxFrameSpan bounds the stack onReport reads for one frame.
const maxFrameSpan = 64 << 10

// symbolizeFrames names the frames of pid's stack in its image img; their
// parameters are read from mem, or not at all if it is nil.
func (se *session) symbolizeFrames(img *image, pid int, frames []unwind.Frame, mem *stackWindow) []report.Frame {
	refreshed := false
	out := make([]report.Frame, 0, len(frames))
	for i, fr := range frames {
		// A return address may sit just past its caller's end (a call
		// to a noreturn function): symbolize pc-1.
		look := fr.PC
		if i > 0 && !fr.Signal {
			look--
		}
		loc, ok := img.syms.Lookup(look)
		if !ok && !refreshed {
			// A library mapped since we last looked (dlopen).
			refreshed = true
			if maps, err := procmaps.Read(pid); err == nil {
				img.syms.Update(maps)
				loc, ok = img.syms.Lookup(look)
			}
		}
		f := report.Frame{PC: fr.PC}
		if ok {
			f.Func, f.Module = loc.Func, loc.Module
			f.Offset = fr.PC - (look - loc.Offset)
			// The line of the call (pc-1) for outer frames, as gdb
			// prints it.
			f.File, f.Line = loc.File, loc.Line
			if mem != nil {
				f.Args = se.args(img, fr, look, mem)
			}
		}
		out = append(out, f)
	}
	return out
}

// reportWrite copies what the report shows of a write: its registers, thread
// and stack stay with the watch. It runs in the finish, where the write is
// complete (pagewatch names the instruction once the writer runs again).
func (se *session) reportWrite(w *pagewatch.Write) *report.Write {
	ev := &report.Write{
		Seq: w.Seq, Pid: w.Pid, Tid: w.Tid, Region: w.Region.Name, Offset: w.Offset,
		Addr: w.Addr, Size: w.Size, Old: w.Old, New: w.New, PC: w.PC, Insn: w.Insn,
		Exact: w.Exact, Syscall: w.Syscall, Signal: w.Signal, AfterPC: w.AfterPC,
		Field: se.fieldName(w),
	}
	if h := se.heaps[w.Pid]; h != nil {
		h.annotate(ev, w.Region)
	}
	return ev
}

func reportRegion(r *pagewatch.Region) report.Region {
	return report.Region{Name: r.Name, Addr: r.Addr, Len: r.Len}
}

func reportRegions(rs []*pagewatch.Region) []report.Region {
	out := make([]report.Region, len(rs))
	for i, r := range rs {
		out[i] = reportRegion(r)
	}
	return out
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
func summary(w *pagewatch.Watch, st tracer.Stop) report.Summary {
	s := report.Summary{}
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
func exitCode(s report.Summary) int {
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
	// span is stack the fast engine's agent copied, from spanAddr: it
	// is served before the pages.
	spanAddr uint64
	span     []byte
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

// own replaces the pages of [base, base+n), lent by the watch, with
// copies, so the window outlives the fault it was read at; and the stack
// the fast engine's agent copied, likewise lent.
func (s *stackWindow) own(base uint64, n int) {
	s.span = append([]byte(nil), s.span...)
	for a := base; a < base+uint64(n); a += stackPage {
		if pg := s.pages[a]; pg != nil {
			s.pages[a] = append([]byte(nil), pg...)
		}
	}
}

// load reads the pages of [lo, hi) the window lacks.
func (s *stackWindow) load(lo, hi uint64) {
	var b [1]byte
	for a := lo &^ (stackPage - 1); a < hi; a += stackPage {
		_ = s.ReadMemory(a, b[:])
	}
}

// ReadUint implements op.Memory, for the parameters' locations: a buffer
// of its own, where a slice handed through a function value would be
// allocated for each read.
func (s *stackWindow) ReadUint(addr uint64, size int) (uint64, error) {
	if size < 1 || size > 8 {
		return 0, fmt.Errorf("read of %d bytes: not 1 to 8", size)
	}
	var b [8]byte
	if err := s.ReadMemory(addr, b[:size]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

func (s *stackWindow) ReadMemory(addr uint64, b []byte) error {
	const pageSize = stackPage
	if addr >= s.spanAddr && addr-s.spanAddr <= uint64(len(s.span)) && uint64(len(b)) <= uint64(len(s.span))-(addr-s.spanAddr) {
		copy(b, s.span[addr-s.spanAddr:])
		return nil
	}
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
func (se *session) args(img *image, fr unwind.Frame, pc uint64, mem *stackWindow) []report.Arg {
	regs := symbols.FrameRegs{PC: pc, CFA: fr.CFA, Regs: fr.Regs, RegsValid: uint32(fr.Valid)}
	ps, err := img.syms.AppendParams(se.params[:0], regs, mem)
	se.params = ps[:0] // its room, for the next frame
	if err != nil || len(ps) == 0 {
		return nil
	}
	// A store site writes again and again with its callers' arguments
	// unchanged: the same values give the same Args, formatted once
	// (the reports only read them).
	key := argsKey{img, pc}
	if m, ok := se.argsMemo[key]; ok && slices.Equal(m.ps, ps) {
		return m.out
	}
	out := se.formatArgs(ps)
	if se.argsMemo == nil || len(se.argsMemo) >= maxArgsMemo {
		se.argsMemo = map[argsKey]argsMemo{}
	}
	se.argsMemo[key] = argsMemo{slices.Clone(ps), out}
	return out
}

// argsKey and argsMemo are args' memory of a frame's last arguments.
type argsKey struct {
	img *image
	pc  uint64
}

type argsMemo struct {
	ps  []symbols.Param
	out []report.Arg
}

// maxArgsMemo bounds args' memory (frames with parameters).
const maxArgsMemo = 4096

// formatArgs is parameters as a report shows them.
func (se *session) formatArgs(ps []symbols.Param) []report.Arg {
	out := make([]report.Arg, len(ps))
	for j, p := range ps {
		out[j].Name = p.Name
		if p.Known {
			if p.Size > 0 && p.Size <= 4 {
				// int-sized: signed decimal, as gdb prints an int.
				shift := 64 - 8*uint(p.Size)
				out[j].Value = strconv.FormatInt(int64(p.Value<<shift)>>shift, 10)
			} else {
				out[j].Value = "0x" + strconv.FormatUint(p.Value, 16)
			}
		}
	}
	return out
}
