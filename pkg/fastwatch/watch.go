// Package fastwatch is the fast engine (--engine fast, issue #15): the
// writes to a launched target's watched memory are completed inside the
// target by memtrap's agent (package agent), with no ptrace stop, and
// reported from the agent's records.
//
// New puts the agent into the stopped target at its entry point with
// injected system calls (the only ptrace work): it maps the agent and its
// area, hands it the armed pages and their own protections, makes it the
// SIGSEGV handler and write-protects the pages. Run lets every thread go
// untraced and serves the agent until the target ends: it answers the
// agent's requests (the recipe of a store site, a store only memtrap can do
// from the thread's signal frame), takes the records in the order the
// writes took effect and turns each into a [pagewatch.Write] for the
// regions it touched, with the registers and the top of the stack the
// agent copied for the backtrace.
//
// The target's own SIGSEGV action is virtualized (listener.go): its
// rt_sigaction calls for SIGSEGV set and read the action the agent chains
// to, never the agent's own.
package fastwatch

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/memtrap/memtrap/pkg/agent"
	"github.com/memtrap/memtrap/pkg/pagewatch"
	"github.com/memtrap/memtrap/pkg/procmaps"
	"github.com/memtrap/memtrap/pkg/sysout"
	"github.com/memtrap/memtrap/pkg/tracer"
	"github.com/memtrap/memtrap/pkg/x86/store"
	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"
)

// Engine is the fast engine's name (--engine fast).
const Engine = "fast"

// Options tunes a Watch; its callbacks run on Run's goroutine.
type Options struct {
	// Report gets each write, as pagewatch.Options.Report does; the
	// writer is not stopped (it went on long ago): Write.Thread is nil,
	// and Write.Stack holds agent.StackBytes of its stack from
	// Write.StackAddr (its RSP less the red zone) as they were at the write, valid until
	// the finish Report returns has run (it lies in the agent's ring).
	Report func(*pagewatch.Write) (func() error, error)
	// When keeps only the writes it says yes to (pagewatch.Options.When),
	// Width the word size of its values in regions over 8 bytes.
	When  func(*pagewatch.Write, []pagewatch.Word) bool
	Width int
	// Notify gets what the user should know (a line each).
	Notify func(string)
	// Idle runs when the target has nothing to report for now.
	Idle func()
	// KernelWrites follows the system calls that write into armed
	// pages (kernel.go); without it they fail with EFAULT.
	KernelWrites bool
	// OnUnmap hears of a region that lost memory to the target's own
	// munmap, mremap or mmap (how: "munmap(2)"...).
	OnUnmap func(r *pagewatch.Region, how string)
}

// Watch is the fast engine over one launched process.
type Watch struct {
	p       *tracer.Process
	opts    Options
	regions []*pagewatch.Region
	in      *agent.Installed
	mem     *os.File
	lis     *listener
	// shadow holds each region's bytes as the records left them: the
	// values --when looks at, exact with no read of the running target.
	shadow map[*pagewatch.Region][]byte
	insns  map[uint64]string
	done   bool     // LetGo: nothing more is reported
	pages  []uint64 // the armed pages
	kcalls map[uint32]*kcall
	// scratch is memtrap's area in the target for vector calls' copies
	// (vector.go), with kernel writes.
	scratch *sysout.Scratch
	// dropped are the armed pages the target unmapped or replaced.
	dropped map[uint64]bool
	stats   pagewatch.Stats
	// err is what went wrong where nothing could return it (while Lock
	// waited: serveMadvise); Run returns it.
	err error
}

// pageSize is the x86-64 page.
const pageSize = 4096

// ErrTooMany: the regions span more pages than the agent arms.
var ErrTooMany = errors.New("too many pages for the fast engine")

// New installs the agent in p (t its only thread, stopped at the entry
// point) and arms regions. Nothing traps until Run lets the target go.
func New(p *tracer.Process, t *tracer.Thread, regions []*pagewatch.Region, opts Options) (_ *Watch, err error) {
	for _, r := range regions {
		if err := r.Validate(); err != nil {
			return nil, err
		}
	}
	if n := len(p.Threads()); n != 1 {
		return nil, fmt.Errorf("engine fast: the target has %d threads at its entry point, the agent is installed with one", n)
	}
	maps, err := procmaps.Read(p.Pid)
	if err != nil {
		return nil, err
	}
	pages, prots, err := armedPages(regions, maps)
	if err != nil {
		return nil, err
	}
	if err := checkRseq(t, pages); err != nil {
		return nil, err
	}
	if err := checkASLR(p.Pid); err != nil {
		return nil, err
	}
	w := &Watch{p: p, opts: opts, regions: regions, shadow: map[*pagewatch.Region][]byte{}, insns: map[uint64]string{},
		pages: pages, kcalls: map[uint32]*kcall{}, dropped: map[uint64]bool{}}
	for _, r := range regions {
		b := make([]byte, r.Len)
		if err := p.ReadMemory(r.Addr, b); err != nil {
			return nil, fmt.Errorf("region %s: %w", r, err)
		}
		w.shadow[r] = b
	}
	if w.mem, err = os.OpenFile(fmt.Sprintf("/proc/%d/mem", p.Pid), os.O_RDWR, 0); err != nil {
		return nil, fmt.Errorf("engine fast: %w", err)
	}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	if w.in, err = agent.Install(p, t); err != nil {
		return nil, fmt.Errorf("engine fast: %w", err)
	}
	// memtrap's calls in the target from now on run from the agent's
	// code, which its filter lets through.
	off, err := agent.SyscallInsn()
	if err != nil {
		return nil, fmt.Errorf("engine fast: %w", err)
	}
	p.SetSyscallInsn(w.in.Base + uint64(off))
	a := w.in.Shared.Area()
	for i, pg := range pages {
		a.PageList[i], a.Prots[i] = pg, uint64(prots[i])
	}
	a.NPages = uint32(len(pages))
	if err := w.in.Arm(t); err != nil {
		return nil, fmt.Errorf("engine fast: %w", err)
	}
	if err := w.in.ArmSyscalls(t); err != nil {
		return nil, fmt.Errorf("engine fast: %w", err)
	}
	if opts.KernelWrites {
		if err := w.mapScratch(t); err != nil {
			return nil, fmt.Errorf("engine fast: %w", err)
		}
	}
	for i, pg := range pages {
		if err := t.Mprotect(pg, pageSize, prots[i]&^unix.PROT_WRITE); err != nil {
			return nil, fmt.Errorf("engine fast: %w", err)
		}
	}
	// The filter last: it traps memtrap's own injected calls too (the
	// mprotects above, an rt_sigaction).
	if w.lis, err = listen(w, t); err != nil {
		return nil, fmt.Errorf("engine fast: %w", err)
	}
	w.in.Shared.WhileLocked(w.serveMadvise)
	atomic.StoreUint32(&a.Served, 1)
	return w, nil
}

// ErrNoASLR: the target's address space is not randomized, so a program
// it executes would put its code where the filter traps calls for the
// agent (listener.go), and die of SIGSYS.
var ErrNoASLR = errors.New("address space randomization is off")

// checkASLR refuses a target whose address space is laid out the same
// every time (kernel.randomize_va_space 0, or its personality's
// ADDR_NO_RANDOMIZE: setarch -R, gdb's default).
func checkASLR(pid int) error {
	const addrNoRandomize = 0x0040000
	if b, err := os.ReadFile("/proc/sys/kernel/randomize_va_space"); err == nil && strings.TrimSpace(string(b)) == "0" {
		return fmt.Errorf("engine fast: %w (kernel.randomize_va_space is 0): a program the target executes could be killed by the agent's syscall filter; use --engine page", ErrNoASLR)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/personality", pid))
	if err != nil {
		return nil
	}
	if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 16, 32); err == nil && v&addrNoRandomize != 0 {
		return fmt.Errorf("engine fast: %w for the target (its personality has ADDR_NO_RANDOMIZE: setarch -R, or a debugger's launch): a program it executes could be killed by the agent's syscall filter; use --engine page", ErrNoASLR)
	}
	return nil
}

// checkRseq refuses a page holding the thread's rseq area, as the page
// engine does: the kernel writes it at every preemption, and on a
// write-protected page that write fails and kills the thread.
func checkRseq(t *tracer.Thread, pages []uint64) error {
	addr, size, err := t.Rseq()
	if err != nil || addr == 0 {
		return nil
	}
	for _, pg := range pages {
		if pg < addr+uint64(max(size, 32)) && addr < pg+pageSize {
			return fmt.Errorf("page %#x holds the rseq area of thread %d (%#x), which the kernel writes at every preemption, so it cannot be write-protected; watch at most 32 bytes there with --engine hw: %w",
				pg, t.Tid, addr, pagewatch.ErrRseqPage)
		}
	}
	return nil
}

// armedPages lists the pages that hold the regions' bytes and may be
// written (a read-only page faults on its own), with their protections.
func armedPages(regions []*pagewatch.Region, maps []procmaps.Mapping) (pages []uint64, prots []int, err error) {
	seen := map[uint64]bool{}
	for _, r := range regions {
		for pg := r.Addr &^ (pageSize - 1); pg < r.End(); pg += pageSize {
			if seen[pg] {
				continue
			}
			seen[pg] = true
			m, ok := mappingAt(maps, pg)
			if !ok {
				return nil, nil, fmt.Errorf("region %s: %#x is not mapped", r, pg)
			}
			if m.Prot&unix.PROT_WRITE == 0 {
				continue
			}
			pages, prots = append(pages, pg), append(prots, m.Prot)
			if len(pages) > agent.Pages {
				return nil, nil, fmt.Errorf("%w: the regions lie on more than %d writable pages, which the agent arms at most; use --engine page", ErrTooMany, agent.Pages)
			}
		}
	}
	// In order: the agent looks them up by binary search.
	idx := make([]int, len(pages))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return pages[idx[a]] < pages[idx[b]] })
	sp, sprot := make([]uint64, len(pages)), make([]int, len(pages))
	for i, j := range idx {
		sp[i], sprot[i] = pages[j], prots[j]
	}
	return sp, sprot, nil
}

func mappingAt(maps []procmaps.Mapping, addr uint64) (procmaps.Mapping, bool) {
	for _, m := range maps {
		if m.Contains(addr) {
			return m, true
		}
	}
	return procmaps.Mapping{}, false
}

// Stats counts the writes reported and the faults the agent took (every
// store to an armed page, watched bytes or not).
func (w *Watch) Stats() pagewatch.Stats { return w.stats }

// Run lets the target go untraced (every thread detached: a tracer would
// see each of the agent's faults stop first) and serves the agent until
// the target ends, returning how it ended. It runs on the ptrace thread.
func (w *Watch) Run() (ws unix.WaitStatus, err error) {
	defer w.close()
	pid := w.p.Pid
	if err := w.p.Untrace(); err != nil {
		return 0, fmt.Errorf("engine fast: letting the target go: %w", err)
	}
	if w.lis != nil {
		go w.lis.serve()
	}
	s := w.in.Shared
	for {
		before := atomic.LoadUint64(&s.Area().Tail)
		if err := w.serve(); err != nil {
			return 0, err
		}
		busy := atomic.LoadUint64(&s.Area().Tail) != before
		// Polled here, on the ptrace thread: a wait of another
		// goroutine's would take the stops of a Retrace (step).
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if err == unix.ECHILD {
			// Reaped while traced again (step).
			if gone, st := w.p.Exited(); gone {
				wpid, ws, err = pid, st, nil
			}
		}
		if wpid == pid {
			// The target is gone: what it wrote before is in the ring.
			return ws, w.serve()
		} else if err != nil && err != unix.EINTR {
			return 0, fmt.Errorf("engine fast: waiting for the target: %w", err)
		}
		if atomic.LoadUint64(&s.Area().Head) == atomic.LoadUint64(&s.Area().Tail) {
			if w.opts.Idle != nil {
				w.opts.Idle()
			}
		}
		if busy {
			// Records came: more are likely on their way. Sleeping
			// a while, not on the futex, lets them gather, and spares
			// each writer the wake-up call (a write costs 30% more
			// with it).
			ts := unix.NsecToTimespec(int64(batchWait))
			_ = unix.Nanosleep(&ts, nil)
			continue
		}
		s.Wait(10 * time.Millisecond)
	}
}

// batchWait is how long Run sleeps after it took records, before it looks
// again: about 30 writes' time, well inside what the ring holds.
const batchWait = 200 * time.Microsecond

// execd says whether the target executed another program: the memory
// memtrap opened (and the agent in it) is gone, and the process still has
// some (an exiting one has none).
func (w *Watch) execd() bool {
	var b [8]byte
	if n, _ := w.mem.ReadAt(b[:], int64(w.in.Base+agent.CodeSpan)); n == len(b) {
		return false
	}
	maps, err := procmaps.Read(w.p.Pid)
	return err == nil && len(maps) > 0
}

// Listener is the descriptor of the filter's listener, for a keeper that
// answers its calls once memtrap is gone (children of the target left
// running): guard.StartKeeper.
func (w *Watch) Listener() int { return w.lis.fd }

// ListenerLedger is the memfd of the ledger of the listener's calls
// (seccompnotify.Ledger), -1 if there is none.
func (w *Watch) ListenerLedger() int {
	if w.lis.ledger == nil {
		return -1
	}
	return w.lis.ledger.Fd()
}

// serve answers the agent's requests and reports its records.
func (w *Watch) serve() error {
	s := w.in.Shared
	if w.lis != nil {
		for _, m := range w.lis.takeNotes() {
			w.note(m)
		}
	}
	for {
		// The records first: a request (an unmapping, a kernel
		// write) comes after the writes already in the ring.
		n := 0
		for rec := s.Peek(); rec != nil; rec = s.Peek() {
			n++
			err := w.record(rec)
			s.Done()
			if err != nil {
				return err
			}
		}
		settled, err := w.serveKernel()
		if err != nil {
			return err
		}
		answered, err := s.Serve(w.mem, nil, w.step)
		if err != nil {
			return fmt.Errorf("engine fast: serving the agent: %w", err)
		}
		if err := w.err; err != nil {
			return err
		}
		for _, a := range answered {
			if _, ok := w.insns[a.PC]; !ok && a.Code != nil {
				w.insns[a.PC] = insnText(a.PC, a.Code)
			}
			if a.Err != nil {
				w.note(fmt.Sprintf("engine fast: the store at %#x in thread %d could not be completed (%v): its fault went to the target's own SIGSEGV action", a.PC, a.Tid, a.Err))
			}
		}
		if n == 0 && len(answered) == 0 && settled == 0 {
			return nil
		}
	}
}

// LetGo stops watching (--max-writes): the agent gives the pages their
// protections back at their next fault and serves nothing more, and the
// writes still in the ring, made after the one LetGo was called for, are
// not reported. Run goes on until the target ends.
func (w *Watch) LetGo() {
	a := w.in.Shared.Area()
	atomic.StoreUint32(&a.Served, 0)
	atomic.StoreUint32(&a.Gone, 1)
	w.done = true
}

// record reports a record's write to each region it touched.
func (w *Watch) record(rec *agent.Record) error {
	if w.done {
		return nil
	}
	call := w.in.Shared.Syscall(rec)
	if call == "" {
		w.stats.Faults++
	}
	old, nw := w.in.Shared.Bytes(rec)
	exact := w.in.Shared.Exact(rec)
	lo, hi := rec.Addr, rec.Addr+uint64(len(old))
	for _, r := range w.regions {
		a, b := max(lo, r.Addr), min(hi, r.End())
		if !exact {
			// Only the bytes that changed are known to be the store's.
			for a < b && old[a-lo] == nw[a-lo] {
				a++
			}
			for a < b && old[b-1-lo] == nw[b-1-lo] {
				b--
			}
		}
		if a >= b {
			continue
		}
		wr := &pagewatch.Write{
			Pid: w.p.Pid, Tid: int(rec.Tid), Region: r, Offset: a - r.Addr, Addr: a, Size: b - a,
			Old: old[a-lo : b-lo], New: nw[a-lo : b-lo], PC: rec.PC, Exact: exact,
			Regs: rec.Regs(), StackAddr: rec.StackAddr(), Stack: rec.Stack[:], Syscall: call,
		}
		sh := w.shadow[r]
		copy(sh[a-r.Addr:], wr.New)
		if w.opts.When != nil && !w.opts.When(wr, words(wr, sh, w.opts.Width)) {
			continue
		}
		w.stats.Writes++
		wr.Seq = w.stats.Writes
		if wr.Syscall == "" {
			wr.Insn = w.insn(rec)
		}
		if w.opts.Report == nil {
			continue
		}
		fin, err := w.opts.Report(wr)
		if err != nil {
			return err
		}
		if fin != nil {
			if err := fin(); err != nil {
				return err
			}
		}
		if w.done {
			break
		}
	}
	return nil
}

// words are the watched values wr touched, before and after it
// (pagewatch's words), from the region's shadow after it: a word before
// the write is the word after it with wr.Old in place.
func words(wr *pagewatch.Write, after []byte, width int) []pagewatch.Word {
	r := wr.Region
	word := func(lo, hi uint64) pagewatch.Word {
		nw := after[lo-r.Addr : hi-r.Addr]
		old := append([]byte(nil), nw...)
		for x := max(lo, wr.Addr); x < min(hi, wr.Addr+wr.Size); x++ {
			old[x-lo] = wr.Old[x-wr.Addr]
		}
		return pagewatch.Word{Addr: lo, Size: int(hi - lo), Old: le(old), New: le(nw)}
	}
	if r.Len <= 8 {
		return []pagewatch.Word{word(r.Addr, r.End())}
	}
	wd := uint64(width)
	if wd == 0 {
		wd = 8
	}
	var out []pagewatch.Word
	for a := wr.Addr &^ (wd - 1); a < wr.Addr+wr.Size; a += wd {
		out = append(out, word(max(a, r.Addr), min(a+wd, r.End())))
	}
	return out
}

func le(b []byte) uint64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// insn is the writing instruction in Intel syntax, "" if undecodable.
func (w *Watch) insn(rec *agent.Record) string {
	if s, ok := w.insns[rec.PC]; ok {
		return s
	}
	// Not seen at a request (a recipe the agent had before memtrap
	// served it: none today): the code as it is now.
	code := make([]byte, 15)
	n, _ := w.mem.ReadAt(code, int64(rec.PC))
	text := insnText(rec.PC, code[:n])
	if len(w.insns) >= maxInsns {
		w.insns = map[uint64]string{}
	}
	w.insns[rec.PC] = text
	return text
}

// maxInsns bounds the instructions' texts kept: more than the agent's
// recipes.
const maxInsns = 4 * agent.Recipes

// insnText is the instruction in code (at pc) in Intel syntax, "" if
// undecodable.
func insnText(pc uint64, code []byte) string {
	var regs unix.PtraceRegs // the text does not depend on them
	st, err := store.Decode(code, &regs)
	if err != nil || st.Inst.Op == 0 {
		return ""
	}
	return x86asm.IntelSyntax(st.Inst, pc, nil)
}

func (w *Watch) note(m string) {
	if w.opts.Notify != nil {
		w.opts.Notify(m)
	}
}

func (w *Watch) close() {
	if w.lis != nil {
		w.lis.close()
	}
	if w.in != nil && w.in.Shared != nil {
		w.in.Shared.Close()
	}
	if w.mem != nil {
		w.mem.Close()
	}
}
