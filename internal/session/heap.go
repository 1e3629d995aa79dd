package session

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/memtrap/memtrap/internal/report"
	"github.com/memtrap/memtrap/pkg/bpfhook"
	"github.com/memtrap/memtrap/pkg/hook"
	"github.com/memtrap/memtrap/pkg/pagewatch"
	"github.com/memtrap/memtrap/pkg/symbols"
	"github.com/memtrap/memtrap/pkg/tracer"
	"github.com/memtrap/memtrap/pkg/unwind"
	"golang.org/x/sys/unix"
)

// HeapSpec selects heap blocks by their allocation (--heap).
type HeapSpec struct {
	// MinSize and MaxSize bound the requested size, inclusive; both 0
	// means any size.
	MinSize, MaxSize uint64
	// Site is a function of the allocation's backtrace ("" for any): its
	// name as memtrap shows it (C++ and Rust demangled, with or without
	// the parameter list).
	Site string
	// Nth keeps only the Nth block that matches the rest (1-based);
	// Every keeps every Every-th; 0 keeps all.
	Nth, Every int
}

func (h HeapSpec) String() string {
	var keys []string
	switch {
	case h.MaxSize == 0:
	case h.MinSize == h.MaxSize:
		keys = append(keys, fmt.Sprintf("size=%d", h.MinSize))
	default:
		keys = append(keys, fmt.Sprintf("size=%d-%d", h.MinSize, h.MaxSize))
	}
	if h.Site != "" {
		keys = append(keys, "site="+h.Site)
	}
	if h.Nth != 0 {
		keys = append(keys, fmt.Sprintf("nth=%d", h.Nth))
	}
	if h.Every != 0 {
		keys = append(keys, fmt.Sprintf("every=%d", h.Every))
	}
	return strings.Join(keys, ",")
}

// allocFn is one allocator entry point and where its call says what it
// is asked for.
type allocFn struct {
	name string
	// size is the requested size, from the arguments; ptr the block
	// realloc and free are given (0 for the others).
	size func(r *unix.PtraceRegs) uint64
	ptr  func(r *unix.PtraceRegs) uint64
	// out: posix_memalign returns the block through its first argument,
	// and 0 in rax.
	out bool
	// gate: the same, for the kernel's filter (package bpfhook).
	gate bpfhook.Call
}

func arg1(r *unix.PtraceRegs) uint64 { return r.Rdi }
func arg2(r *unix.PtraceRegs) uint64 { return r.Rsi }

// allocators are the entry points hooked, glibc's names; C++'s operator
// new and delete reach them.
var allocators = []allocFn{
	{name: "malloc", size: arg1, gate: bpfhook.Call{Size: []int{1}}},
	{name: "calloc", size: func(r *unix.PtraceRegs) uint64 { return r.Rdi * r.Rsi }, gate: bpfhook.Call{Size: []int{1, 2}}},
	{name: "realloc", size: arg2, ptr: arg1, gate: bpfhook.Call{Size: []int{2}, Ptr: 1}},
	{name: "reallocarray", size: func(r *unix.PtraceRegs) uint64 { return r.Rsi * r.Rdx }, ptr: arg1, gate: bpfhook.Call{Size: []int{2, 3}, Ptr: 1}},
	{name: "posix_memalign", size: func(r *unix.PtraceRegs) uint64 { return r.Rdx }, out: true, gate: bpfhook.Call{Size: []int{3}}},
	{name: "aligned_alloc", size: arg2, gate: bpfhook.Call{Size: []int{2}}},
	{name: "memalign", size: arg2, gate: bpfhook.Call{Size: []int{2}}},
	{name: "valloc", size: arg1, gate: bpfhook.Call{Size: []int{1}}},
	{name: "pvalloc", size: func(r *unix.PtraceRegs) uint64 { return (r.Rdi + 4095) &^ 4095 }, gate: bpfhook.Call{Size: []int{1}, PageRound: true}},
	{name: "free", ptr: arg1, gate: bpfhook.Call{Ptr: 1}},
}

// heapWatch is the session's watch of heap blocks: the allocator's entry
// points hooked, the blocks being watched.
type heapWatch struct {
	se      *session
	w       *pagewatch.Watch // of the process whose heap this is
	p       *tracer.Process
	hooks   *hook.Set
	module  string            // where the hooked allocator lives
	matched []int             // blocks matching each spec so far
	live    map[uint64]*block // watched blocks, by address
	freed   map[uint64]*block // freed blocks still watched (--freed)
	regions map[*pagewatch.Region]*block
	// glibc: the hooked allocator is glibc's, whose chunk headers bound a
	// redzone; reds counts the live blocks that have one.
	glibc bool
	reds  int
	// depth: the allocator calls each thread is inside (followed to
	// their return), by tid. Writes a thread makes inside are the
	// allocator's; an allocator call inside one is the same allocation.
	depth map[int]int
}

// block is one watched heap block: the region of its requested bytes and,
// with --redzone, the region after them (red).
type block struct {
	id         int
	addr, size uint64
	region     *pagewatch.Region
	red        *pagewatch.Region
	freed      bool
}

// regionsOf lists a block's regions.
func (b *block) regionsOf() []*pagewatch.Region {
	if b.red != nil {
		return []*pagewatch.Region{b.region, b.red}
	}
	return []*pagewatch.Region{b.region}
}

// hook puts the breakpoints --heap, --arg and --local need; t is
// stopped, and so are the other threads. It returns lines for the watch
// header.
func (se *session) hook(w *pagewatch.Watch, t *tracer.Thread) ([]string, error) {
	if !se.hooking() {
		return nil, nil
	}
	if err := se.codePage(w, t); err != nil {
		return nil, err
	}
	hooks := w.Hooks().(*hook.Set)
	se.watches[w.Process().Pid] = w
	var lines []string
	if len(se.opts.Heap) > 0 {
		line, err := se.hookHeap(w, hooks)
		if err != nil {
			return nil, err
		}
		lines = append(lines, line)
	}
	more, err := se.hookFuncs(w, hooks)
	return append(lines, more...), err
}

// codePage maps the code page of the breakpoints in w's process, if it is
// not there yet. Before the watch arms, so that the syscall filters it
// installs let the calls of its code through (tracer.CallStub). A guarded
// attach maps it without breakpoints too, for the landing.
func (se *session) codePage(w *pagewatch.Watch, t *tracer.Thread) error {
	if !se.hooking() && !(se.attached && w.Guarded()) {
		return nil
	}
	if _, ok := w.Hooks().(*hook.Set); ok {
		return nil
	}
	hooks, err := hook.New(w.Process(), t)
	if err != nil {
		return err
	}
	// The watch takes them out again at a detach, also if what follows
	// fails half-way.
	w.SetHooks(hooks)
	// Injected calls run from the page's landing once the guardian
	// knows of the page: a thread that memtrap's death lets go in the
	// middle of one then waits there for the guardian. Without a
	// guardian it would wait for ever: an attached target then keeps
	// the vDSO's `syscall` (a launched one dies with memtrap).
	w.SyncGuard()
	if w.Guarded() || !se.attached {
		hooks.UseLanding()
	}
	return nil
}

// hooking says whether the session puts breakpoints.
func (se *session) hooking() bool {
	return len(se.opts.Heap)+len(se.opts.Args)+len(se.opts.Locals) > 0
}

// onArm hooks a new image (after execve) as the first one was.
func (se *session) onArm(w *pagewatch.Watch, t *tracer.Thread) error {
	if !se.hooking() {
		return nil
	}
	delete(se.heaps, w.Process().Pid)
	lines, err := se.hook(w, t)
	for _, l := range lines {
		_ = se.rep.Note(fmt.Sprintf("%s, in the new image of process %d", l, w.Process().Pid))
	}
	return err
}

// onFork gives a followed child hooks of its own: its code and stack are
// copies of its parent's, breakpoints and awaited returns included, and so
// are the heap blocks watched in it.
func (se *session) onFork(parent, child *pagewatch.Watch, forker *tracer.Thread) error {
	ph, _ := parent.Hooks().(*hook.Set)
	if ph == nil {
		return nil
	}
	c := child.Process()
	ch, err := ph.Fork(c, forker.Tid, c.Pid)
	if err != nil {
		return err
	}
	child.SetHooks(ch)
	se.watches[c.Pid] = child
	if h := se.heaps[parent.Process().Pid]; h != nil {
		se.heaps[c.Pid] = h.fork(child)
	}
	return nil
}

// fork is the heap watch of a followed child: the same blocks, watched in
// its copy of the heap.
func (h *heapWatch) fork(cw *pagewatch.Watch) *heapWatch {
	c := *h
	c.w, c.p = cw, cw.Process()
	c.hooks, _ = cw.Hooks().(*hook.Set)
	c.matched = append([]int(nil), h.matched...)
	c.live, c.freed, c.regions, c.depth = map[uint64]*block{}, map[uint64]*block{}, map[*pagewatch.Region]*block{}, map[int]int{}
	copies := map[*block]*block{}
	cp := func(b *block) *block {
		if copies[b] == nil {
			nb := *b
			copies[b] = &nb
		}
		return copies[b]
	}
	for a, b := range h.live {
		c.live[a] = cp(b)
	}
	for a, b := range h.freed {
		c.freed[a] = cp(b)
	}
	for r, b := range h.regions {
		c.regions[r] = cp(b)
	}
	return &c
}

// heapOf is the heap watch of t's process.
func (se *session) heapOf(t *tracer.Thread) *heapWatch { return se.heaps[t.Process().Pid] }

// watchOf is the watch of t's process.
func (se *session) watchOf(t *tracer.Thread) *pagewatch.Watch {
	if w := se.watches[t.Process().Pid]; w != nil {
		return w
	}
	return se.w
}

// hookHeap hooks the allocator the process's calls bind to. It returns a
// line for the watch header.
func (se *session) hookHeap(w *pagewatch.Watch, hooks *hook.Set) (string, error) {
	p := w.Process()
	syms := se.image(p.Pid).syms
	defs := syms.Definitions("malloc")
	if len(defs) == 0 {
		why := ""
		if len(syms.Definitions("runtime.mallocgc")) > 0 {
			why = ": a Go program's objects come from the Go runtime's own heap, which --heap does not hook"
		}
		return "", fmt.Errorf("--heap: no module of process %d defines malloc%s", p.Pid, why)
	}
	if !se.sitesChecked {
		se.sitesChecked = true
		for _, s := range se.opts.Heap {
			if s.Site == "" {
				continue
			}
			var amb *symbols.AmbiguousError
			if _, err := syms.Resolve(s.Site); err != nil && !errors.As(err, &amb) {
				return "", fmt.Errorf("--heap %s: %w", s, err)
			}
		}
	}
	module := pickAllocator(defs, exeOf(p.Pid))
	h := &heapWatch{se: se, w: w, p: p, hooks: hooks, module: module, matched: make([]int, len(se.opts.Heap)),
		live: map[uint64]*block{}, freed: map[uint64]*block{}, regions: map[*pagewatch.Region]*block{},
		glibc: strings.HasPrefix(filepath.Base(module), "libc.so"), depth: map[int]int{}}
	if se.opts.Redzone > 0 && !h.glibc {
		_ = se.rep.Note(fmt.Sprintf("--redzone: %s is not glibc's allocator, whose chunk headers tell where a block's slack ends; blocks are watched without a redzone", module))
	}
	gate := se.heapGate(p.Pid)
	if gate != nil {
		hooks.UseGate(gate)
	}
	var hooked, trapped []string
	seen := map[uint64]bool{}
	for _, fn := range allocators {
		def, ok := definedIn(syms.Definitions(fn.name), module)
		addr := def.Addr
		if !ok || seen[addr] {
			continue // not there, or an alias (glibc's memalign is aligned_alloc)
		}
		seen[addr] = true
		fn := fn
		if err := hooks.AddGated(addr, def.Size, func(t *tracer.Thread, regs *unix.PtraceRegs) error {
			// The process's own: a followed child has a copy.
			if hw := se.heapOf(t); hw != nil {
				return hw.call(fn, t, regs)
			}
			return nil
		}, fn.gate); err != nil {
			return "", fmt.Errorf("--heap: hooking %s: %w", fn.name, err)
		}
		hooked = append(hooked, fn.name)
		if hooks.Trapped(addr) {
			trapped = append(trapped, fn.name)
		}
	}
	if gate != nil {
		if ok, err := hooks.OpenGate(); !ok {
			if err != nil {
				_ = se.rep.Note(fmt.Sprintf("--heap: %v; every allocator call stops memtrap (int3 breakpoints)", err))
			}
			gate, trapped = nil, nil
		}
	}
	se.heaps[p.Pid] = h
	specs := make([]string, len(se.opts.Heap))
	for i, s := range se.opts.Heap {
		specs[i] = s.String()
	}
	how := "by int3 breakpoints, every call stopped"
	switch {
	case gate != nil && len(trapped) == 0:
		how = "by BPF uprobes, only the calls that matter stopped" + gateWhen(gate)
	case gate != nil:
		how = fmt.Sprintf("by BPF uprobes, only the calls that matter stopped%s (%s by int3 breakpoints)", gateWhen(gate), strings.Join(trapped, ", "))
	}
	return fmt.Sprintf("watching heap blocks (%s) from their allocation on: %s of %s hooked %s", strings.Join(specs, "; "), strings.Join(hooked, ", "), module, how), nil
}

// gateWhen says where the gate stops an allocation that matters.
func gateWhen(g *bpfhook.Gate) string {
	if g.AtReturn() {
		return ", an allocation at its return"
	}
	return ", at their entry"
}

// heapGate is the gate that filters the allocator calls of process pid
// in the kernel, or nil where the int3 path is the one to take: no BPF
// uprobes here, MEMTRAP_HOOKS=int3 (tests run both paths; =entry has
// the gate stop allocations at their entry, not their return), or a spec
// with no size (a site alone: every call needs its backtrace); or a
// target memtrap lets go before it ends (attach, --on-hit stop,
// --max-writes): a process that hit a uprobe keeps the kernel's
// "[uprobes]" page mapped until it exits or executes, and nothing of
// memtrap's may stay behind.
func (se *session) heapGate(pid int) *bpfhook.Gate {
	if os.Getenv("MEMTRAP_HOOKS") == "int3" || se.attached || se.handsOff() {
		return nil
	}
	var ranges [][2]uint64
	for _, s := range se.opts.Heap {
		if s.MaxSize == 0 {
			return nil
		}
		ranges = append(ranges, [2]uint64{s.MinSize, s.MaxSize})
	}
	if err := bpfhook.Available(); err != nil {
		_ = se.rep.Note(fmt.Sprintf("--heap: %v; every allocator call stops memtrap (int3 breakpoints)", err))
		return nil
	}
	g, err := bpfhook.New(pid, ranges)
	if err != nil {
		_ = se.rep.Note(fmt.Sprintf("--heap: %v; every allocator call stops memtrap (int3 breakpoints)", err))
		return nil
	}
	if os.Getenv("MEMTRAP_HOOKS") == "entry" {
		g.EntryOnly() // as where the kernel has no uprobe sessions
	}
	return g
}

// gateBooks tells the gate of the process what its filter needs from the
// watch: the watched blocks' addresses, and whether every call matters
// (its writes into a redzone or a freed block are the allocator's).
func (h *heapWatch) gateBooks(watch, unwatch uint64) error {
	g := h.hooks.Gate()
	if g == nil {
		return nil
	}
	if watch != 0 {
		if err := g.Watch(watch); err != nil {
			return err
		}
	}
	if unwatch != 0 {
		if err := g.Unwatch(unwatch); err != nil {
			return err
		}
	}
	return g.StopAll(h.reds > 0 || len(h.freed) > 0)
}

// pickAllocator chooses, of the modules that define malloc, the one a
// program's calls bind to: its own (a static binary, or one linking an
// allocator in), else a library in front of libc (jemalloc, mimalloc,
// tcmalloc, linked or preloaded), else libc.
func pickAllocator(defs []symbols.Symbol, exe string) string {
	for _, d := range defs {
		if d.Module == exe {
			return d.Module
		}
	}
	for _, d := range defs {
		if !strings.HasPrefix(filepath.Base(d.Module), "libc.so") && !strings.HasPrefix(filepath.Base(d.Module), "ld-linux") {
			return d.Module
		}
	}
	for _, d := range defs {
		if strings.HasPrefix(filepath.Base(d.Module), "libc.so") {
			return d.Module
		}
	}
	return defs[0].Module
}

func definedIn(defs []symbols.Symbol, module string) (symbols.Symbol, bool) {
	for _, d := range defs {
		if d.Module == module {
			return d, true
		}
	}
	return symbols.Symbol{}, false
}

// call runs at an allocator's entry, with the thread stopped there.
func (h *heapWatch) call(fn allocFn, t *tracer.Thread, regs *unix.PtraceRegs) error {
	if h.depth[t.Tid] > 0 {
		return nil // the allocator calling itself: one call
	}
	var ptr uint64
	if fn.ptr != nil {
		ptr = fn.ptr(regs)
	}
	if fn.name == "free" {
		return h.free(t, regs, fn.name, ptr)
	}
	size := fn.size(regs)
	if fn.name == "realloc" && ptr != 0 && size == 0 {
		// glibc's realloc(p, 0) frees p.
		return h.free(t, regs, fn.name, ptr)
	}
	old := h.live[ptr]
	sel, frames := h.selects(t, regs, size)
	if !sel && old == nil && len(h.freed) == 0 && h.reds == 0 {
		// Nothing to see at the return. (With redzones or freed blocks
		// watched, every call is followed to its return: its writes into
		// them are the allocator's.)
		return nil
	}
	if old != nil && frames == nil && h.se.opts.Backtrace > 0 {
		// A watched block moves: its realloc is reported with its
		// backtrace, whatever the new size.
		frames = h.se.image(h.p.Pid).unw.Unwind(unwind.RegsFromPtrace(regs), &stackWindow{p: h.p}, h.se.opts.Backtrace)
	}
	memptr := regs.Rdi
	h.depth[t.Tid]++
	return h.hooks.Return(t, regs, func(t *tracer.Thread, regs *unix.PtraceRegs) error {
		h.returned(t)
		addr := regs.Rax
		if fn.out {
			addr = 0
			var b [8]byte
			if regs.Rax == 0 && h.p.ReadMemory(memptr, b[:]) == nil {
				addr = binary.LittleEndian.Uint64(b[:])
			}
		}
		if addr == 0 {
			return nil // failed: nothing allocated, nothing moved
		}
		if err := h.reused(t, addr, size); err != nil {
			return err
		}
		if old != nil {
			return h.moved(t, fn.name, old, addr, size, frames)
		}
		if !sel {
			return nil
		}
		return h.allocated(t, fn.name, addr, size, frames)
	})
}

// selects says whether an allocation of size matches a spec, and returns
// its backtrace when one was needed (a site) or asked for.
func (h *heapWatch) selects(t *tracer.Thread, regs *unix.PtraceRegs, size uint64) (bool, []unwind.Frame) {
	bySize := false
	for _, s := range h.se.opts.Heap {
		if s.MaxSize == 0 || size >= s.MinSize && size <= s.MaxSize {
			bySize = true
		}
	}
	if !bySize {
		return false, nil
	}
	var frames []unwind.Frame
	depth := max(h.se.opts.Backtrace, 0)
	for _, s := range h.se.opts.Heap {
		if s.Site != "" {
			depth = max(depth, 32)
		}
	}
	var funcs []string
	if depth > 0 {
		img := h.se.image(h.p.Pid)
		frames = img.unw.Unwind(unwind.RegsFromPtrace(regs), &stackWindow{p: t.Process()}, depth)
		for i, fr := range frames {
			look := fr.PC
			if i > 0 && !fr.Signal {
				look--
			}
			if loc, ok := img.syms.Lookup(look); ok {
				funcs = append(funcs, loc.Func)
			}
		}
	}
	any := false
	for i, s := range h.se.opts.Heap {
		if s.MaxSize != 0 && (size < s.MinSize || size > s.MaxSize) {
			continue
		}
		if s.Site != "" && !hasFunc(funcs, s.Site) {
			continue
		}
		h.matched[i]++
		n := h.matched[i]
		if s.Nth != 0 && n != s.Nth || s.Every != 0 && n%s.Every != 0 {
			continue
		}
		any = true
	}
	if depth > h.se.opts.Backtrace {
		frames = frames[:min(len(frames), h.se.opts.Backtrace)]
	}
	return any, frames
}

// hasFunc says whether name is one of funcs: equal, or equal but for a
// C++ parameter list.
func hasFunc(funcs []string, name string) bool {
	for _, f := range funcs {
		if f == name {
			return true
		}
		if i := strings.IndexByte(f, '('); i > 0 && f[:i] == name {
			return true
		}
	}
	return false
}

// allocated starts watching a new block, before its thread runs one more
// instruction of its own.
func (h *heapWatch) allocated(t *tracer.Thread, fn string, addr, size uint64, frames []unwind.Frame) error {
	if size == 0 {
		return nil // nothing the program may write
	}
	h.se.blocks++ // one numbering across the processes followed
	b := &block{id: h.se.blocks, addr: addr, size: size}
	b.region = &pagewatch.Region{Name: fmt.Sprintf("heap#%d", b.id), Addr: addr, Len: size}
	b.red = h.redzone(addr, size, b.region.Name)
	if err := h.w.AddRegions(t, b.regionsOf()); err != nil {
		return fmt.Errorf("watching heap#%d: %w", b.id, err)
	}
	if err := h.track(b); err != nil {
		return err
	}
	return h.se.rep.Heap(&report.Heap{Event: "alloc", Block: b.id, Addr: addr, Size: size, Fn: fn,
		Pid: t.Process().Pid, Tid: t.Tid, Backtrace: h.se.symbolizeFrames(h.se.image(t.Process().Pid), t.Process().Pid, frames, nil)})
}

// redzone is the region after a block's requested bytes, up to --redzone
// of them: its slack and the next chunk's header, never the next block's
// bytes. glibc keeps a chunk's size, with flags in its low 3 bits, in the
// word before the block; the next block starts that many bytes on (an
// mmapped chunk, flag 2, ends there, 16 bytes sooner).
func (h *heapWatch) redzone(addr, size uint64, name string) *pagewatch.Region {
	if h.se.opts.Redzone == 0 || !h.glibc {
		return nil
	}
	var b [8]byte
	if h.p.ReadMemory(addr-8, b[:]) != nil {
		return nil
	}
	head := binary.LittleEndian.Uint64(b[:])
	end := addr + head&^7
	if head&2 != 0 {
		end -= 16
	}
	hi := min(addr+size+h.se.opts.Redzone, end)
	if hi <= addr+size || hi-addr > 1<<40 {
		return nil // no slack, or not a chunk glibc would make
	}
	return &pagewatch.Region{Name: name, Addr: addr + size, Len: hi - addr - size}
}

// track and untrack keep the books of a block's regions, the gate's
// too.
func (h *heapWatch) track(b *block) error {
	h.live[b.addr] = b
	for _, r := range b.regionsOf() {
		h.regions[r] = b
	}
	if b.red != nil {
		h.reds++
	}
	return h.gateBooks(b.addr, 0)
}

func (h *heapWatch) untrack(b *block) error {
	delete(h.live, b.addr)
	for _, r := range b.regionsOf() {
		delete(h.regions, r)
	}
	if b.red != nil {
		h.reds--
	}
	return h.gateBooks(0, b.addr)
}

// moved follows a block realloc moved or resized.
func (h *heapWatch) moved(t *tracer.Thread, fn string, b *block, addr, size uint64, frames []unwind.Frame) error {
	if err := h.w.RemoveRegions(t, b.regionsOf()); err != nil {
		return err
	}
	if err := h.untrack(b); err != nil {
		return err
	}
	from := b.addr
	b.addr, b.size = addr, size
	b.region = &pagewatch.Region{Name: b.region.Name, Addr: addr, Len: size}
	b.red = h.redzone(addr, size, b.region.Name)
	if err := h.w.AddRegions(t, b.regionsOf()); err != nil {
		return fmt.Errorf("watching heap#%d: %w", b.id, err)
	}
	if err := h.track(b); err != nil {
		return err
	}
	return h.se.rep.Heap(&report.Heap{Event: "realloc", Block: b.id, From: from, Addr: addr, Size: size, Fn: fn,
		Pid: t.Process().Pid, Tid: t.Tid, Backtrace: h.se.symbolizeFrames(h.se.image(t.Process().Pid), t.Process().Pid, frames, nil)})
}

// free runs at free's entry, before the allocator touches the block.
func (h *heapWatch) free(t *tracer.Thread, regs *unix.PtraceRegs, fn string, ptr uint64) error {
	b := h.live[ptr]
	if b == nil {
		if h.reds == 0 && len(h.freed) == 0 {
			return nil
		}
		// Its writes into watched redzones or freed blocks are the
		// allocator's.
		return h.inside(t)
	}
	var frames []unwind.Frame
	if n := h.se.opts.Backtrace; n > 0 {
		frames = h.se.image(h.p.Pid).unw.Unwind(unwind.RegsFromPtrace(regs), &stackWindow{p: h.p}, n)
	}
	if err := h.se.rep.Heap(&report.Heap{Event: "free", Block: b.id, Addr: ptr, Fn: fn, Pid: t.Process().Pid, Tid: t.Tid,
		Backtrace: h.se.symbolizeFrames(h.se.image(h.p.Pid), h.p.Pid, frames, nil)}); err != nil {
		return err
	}
	if !h.se.opts.Freed {
		if err := h.untrack(b); err != nil {
			return err
		}
		return h.w.RemoveRegions(t, b.regionsOf())
	}
	// Freed: the redzone goes (the allocator owns the chunk now), the
	// block's bytes stay watched.
	if b.red != nil {
		if err := h.w.RemoveRegions(t, []*pagewatch.Region{b.red}); err != nil {
			return err
		}
	}
	if err := h.untrack(b); err != nil {
		return err
	}
	b.red = nil
	h.regions[b.region] = b
	b.freed = true
	h.freed[ptr] = b
	if err := h.gateBooks(0, 0); err != nil {
		return err
	}
	return h.inside(t)
}

// inside marks t as inside the allocator until the call it is at the
// entry of returns: awaiting its return is what keep looks at.
func (h *heapWatch) inside(t *tracer.Thread) error {
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return err
	}
	h.depth[t.Tid]++
	return h.hooks.Return(t, &regs, func(t *tracer.Thread, _ *unix.PtraceRegs) error {
		h.returned(t)
		return nil
	})
}

// returned counts an allocator call's return.
func (h *heapWatch) returned(t *tracer.Thread) {
	if h.depth[t.Tid]--; h.depth[t.Tid] <= 0 {
		delete(h.depth, t.Tid)
	}
}

// reused stops watching freed blocks the allocator hands out again.
func (h *heapWatch) reused(t *tracer.Thread, addr, size uint64) error {
	for a, b := range h.freed {
		if a < addr+max(size, 1) && addr < a+b.size {
			delete(h.freed, a)
			delete(h.regions, b.region)
			if err := h.w.RemoveRegions(t, b.regionsOf()); err != nil {
				return err
			}
		}
	}
	return h.gateBooks(0, 0)
}

// keep drops the allocator's own writes: those a thread makes inside an
// allocator call, into the blocks the allocator manages.
func (h *heapWatch) keep(w *pagewatch.Write) bool {
	if h.regions[w.Region] == nil || w.Thread == nil || w.Syscall != "" || w.Signal != 0 {
		return true
	}
	return h.depth[w.Thread.Tid] == 0
}

// annotate names a write into a block by the block.
func (h *heapWatch) annotate(ev *report.Write, r *pagewatch.Region) {
	if b := h.regions[r]; b != nil {
		ev.Block = b.id
		switch {
		case b.freed:
			ev.Kind = "use-after-free"
		case r == b.red:
			ev.Kind = "overflow"
			ev.Offset += b.size // from the block's start
		}
	}
}
