package pagewatch

import (
	"errors"
	"fmt"
	"sort"

	"github.com/memtrap/memtrap/pkg/sysout"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// Which system calls stop (see the package doc, "Kernel writes"): a seccomp
// filter for what is watched now, or every call.

// filterGap: watched spans closer than this share one range of the filter.
const filterGap = 16 << 20

// filterWindow: a filter installed for new watched memory covers the
// aligned window of this size around it, so that the next block of a
// growing heap is covered already.
const filterWindow = 64 << 20

// maxFilters bounds the filters one watch installs: each is some 2,000 BPF
// instructions, and the kernel refuses more than 32,768 in all.
const maxFilters = 8

// maxFilterRanges is the most ranges a filter tries: each range costs 10
// instructions per pointer argument of each followed call, and the kernel
// takes 4096 (followSyscalls merges further until it fits).
const maxFilterRanges = 4

// mmSlack: a memory-management call starting this far below a watched page
// is still stopped (munmap of a large range over it); one starting further
// below covering it would be missed.
const mmSlack = 1 << 30

// memoryCalls are the memory-management calls that can change a watched
// page, with the arguments holding an address.
var memoryCalls = map[int][]int{
	unix.SYS_MPROTECT:      {0},
	unix.SYS_PKEY_MPROTECT: {0},
	unix.SYS_MUNMAP:        {0},
	unix.SYS_MADVISE:       {0},
	unix.SYS_MREMAP:        {0, 4},
	unix.SYS_MMAP:          {0},
}

// followSyscalls makes the target stop at the calls that matter for what
// is watched now (t stopped, the other threads too).
func (w *Watch) followSyscalls(t *tracer.Thread) error {
	if !w.opts.KernelWrites {
		return nil
	}
	defer w.publishQuick()
	if !w.opts.SyscallFilter {
		if !w.gateSyscalls() {
			w.p.TraceSyscalls(true)
		}
		return nil
	}
	// The filters installed so far keep stopping what they stop (they
	// cannot be taken back): only memory they do not cover needs a new
	// one, widened to its filterWindow so that a watch growing page by
	// page (heap blocks) does not stack up a filter per page against the
	// kernel's limit on their total size. Past maxFilters, one last filter
	// covers all of user space.
	var fresh []span
	for _, s := range w.eng.spans() {
		if !w.filterCovers([]span{s}) {
			fresh = append(fresh, span{s.lo &^ (filterWindow - 1), (s.hi + filterWindow - 1) &^ (filterWindow - 1)})
		}
	}
	if len(fresh) == 0 && w.filters > 0 {
		return nil
	}
	// The first filter goes in even with nothing watched yet (regions
	// that come at run time): the calls it always stops (rt_sigaction of
	// the guarded signals, sigaltstack, readv and kin) must be seen from
	// the start.
	if w.filters >= maxFilters-1 {
		fresh = []span{{pageSize, userTop}}
	}
	notify := w.filters == 0 && !w.p.Filtered() && !w.p.Notifying()
	windows := fresh
	if notify && (len(fresh) == 0 || w.opts.Anywhere) {
		// What is to be watched comes at run time (heap blocks,
		// arguments, locals), anywhere. The
		// listener's filter covers all of user space, so that no
		// later filter is needed, whose children would need a
		// tracer; the calls it stops that touch nothing watched are
		// let run by the listener at once (quick.go).
		fresh = []span{{pageSize, userTop}}
	}
	// The first filter answers to memtrap's listener, so that children
	// not followed need no tracer (tracer/notify.go); the kernel takes
	// one listener per process, so later ones stop for the tracer.
	err := w.installFilter(t, fresh, notify)
	if notify && errors.Is(err, tracer.ErrNoListener) {
		w.note(fmt.Sprintf("process %d: %v; children it starts stay traced by memtrap", w.p.Pid, err))
		err = w.installFilter(t, windows, false)
	}
	return err
}

// installFilter installs one filter stopping the calls for fresh (t
// stopped, the other threads too).
func (w *Watch) installFilter(t *tracer.Thread, fresh []span, notify bool) error {
	var spans []span
	var f *tracer.Filter
	var err error
	// Fewer, wider ranges until the program fits the kernel's limit.
	for n := maxFilterRanges; n >= 1; n-- {
		spans = mergeSpans(fresh, n)
		rules := filterRules(spans)
		if notify {
			// seccomp asking for a listener of its own, which the
			// kernel refuses under memtrap's: to say why
			// (noteRefusedListeners).
			rules = append(rules, tracer.ListenerRule(0))
		}
		// memtrap's calls on resume run past it (a filter from before
		// their code was there stops them: syscallEntry lets them run).
		if f, err = tracer.BuildFilter(rules, notify, w.p.CallStub()); err == nil {
			break
		}
	}
	if err != nil {
		return err
	}
	buf, ok := w.scratch.Alloc(f.Size())
	if !ok {
		return errScratchFull
	}
	defer w.scratch.Release(buf, f.Size())
	// Installed with every thread stopped: a filter synchronized into
	// threads that run (and clone) meanwhile lost new threads to the
	// tracer (seen with heap blocks armed from four threads).
	running := false
	for _, th := range w.p.Threads() {
		if th != t && !th.Stopped() {
			running = true
		}
	}
	if running {
		if err := w.p.StopOthers(t); err != nil {
			return err
		}
	}
	err = t.InstallFilter(f, buf)
	if running {
		if rerr := w.p.ResumeOthers(); rerr != nil && err == nil {
			err = rerr
		}
	}
	if err != nil {
		return err
	}
	w.filters++
	w.filtered = append(w.filtered, spans...)
	return nil
}

// mergeSpans sorts spans and merges those closer than filterGap, then the
// closest ones until at most most are left.
func mergeSpans(in []span, most int) []span {
	if len(in) == 0 {
		return nil
	}
	s := append([]span(nil), in...)
	sort.Slice(s, func(i, j int) bool { return s[i].lo < s[j].lo })
	out := []span{s[0]}
	for _, x := range s[1:] {
		if last := &out[len(out)-1]; x.lo <= last.hi+filterGap {
			last.hi = max(last.hi, x.hi)
		} else {
			out = append(out, x)
		}
	}
	for len(out) > most {
		best := 0
		for i := 1; i < len(out)-1; i++ {
			if out[i+1].lo-out[i].hi < out[best+1].lo-out[best].hi {
				best = i
			}
		}
		out[best].hi = out[best+1].hi
		out = append(out[:best+1], out[best+2:]...)
	}
	return out
}

// filterCovers says whether the filters installed so far already stop the
// calls for spans.
func (w *Watch) filterCovers(spans []span) bool {
	for _, s := range spans {
		in := false
		for _, f := range w.filtered {
			if s.lo >= f.lo && s.hi <= f.hi {
				in = true
				break
			}
		}
		if !in {
			return false
		}
	}
	return true
}

// filterRules: a call sysout knows stops when one of its output pointers
// lies in a watched span or up to maxBounce below it (larger outputs are
// not followed anyway); a memory-management call when its address lies in
// a span or up to mmSlack below.
func filterRules(spans []span) []tracer.FilterRule {
	ranges := func(slack uint64) []tracer.Range {
		var out []tracer.Range
		for _, s := range spans {
			lo := uint64(pageSize)
			if s.lo > slack+pageSize {
				lo = s.lo - slack
			}
			out = append(out, tracer.Range{Lo: lo, Hi: s.hi})
		}
		return out
	}
	var rules []tracer.FilterRule
	buffers := ranges(maxBounce)
	for _, nr := range sysout.Numbers() {
		c, _ := sysout.Lookup(nr)
		rules = append(rules, tracer.FilterRule{Nr: nr, Args: c.PointerArgs(), Ranges: buffers})
	}
	for _, nr := range sysout.VecNumbers() {
		// The buffers are listed in memory, out of the filter's sight.
		rules = append(rules, tracer.FilterRule{Nr: nr})
	}
	// sigaltstack setting a stack, whatever its buffers: the cache of
	// each thread's alternate stack must know (altStack).
	rules = append(rules, tracer.FilterRule{Nr: unix.SYS_SIGALTSTACK, Args: []int{0}, Ranges: []tracer.Range{{Lo: 1, Hi: ^uint64(0)}}})
	// ptrace requests making a new tracer (ptracecall.go).
	rules = append(rules, ptraceRule())
	// io_uring_setup, once per ring, to say io_uring is not followed.
	rules = append(rules, tracer.FilterRule{Nr: unix.SYS_IO_URING_SETUP})
	for _, sig := range guarded {
		// Handlers the guard must know (sigguard.go).
		rules = append(rules, tracer.FilterRule{Nr: unix.SYS_RT_SIGACTION, Args: []int{0}, Ranges: []tracer.Range{{Lo: uint64(sig), Hi: uint64(sig) + 1}}})
	}
	mm := ranges(mmSlack)
	for _, nr := range []int{unix.SYS_MPROTECT, unix.SYS_PKEY_MPROTECT, unix.SYS_MUNMAP, unix.SYS_MADVISE, unix.SYS_MREMAP, unix.SYS_MMAP} {
		rules = append(rules, tracer.FilterRule{Nr: nr, Args: memoryCalls[nr], Ranges: mm})
	}
	return rules
}

// noteKeptTracemes says which kept tasks memtrap let go because they asked
// their parent to trace them (tracer.Process.KeptTracemes).
func (w *Watch) noteKeptTracemes() {
	for _, tid := range w.p.KeptTracemes() {
		w.noteKeptGone(tid, "asks its parent to trace it (PTRACE_TRACEME)")
	}
}

// noteKeptGone says, the first time only, that memtrap let a kept task go
// for a tracer of its own.
func (w *Watch) noteKeptGone(tid int, why string) {
	root := w.rootWatch()
	if root.saidKeptGone {
		return
	}
	root.saidKeptGone = true
	w.note(fmt.Sprintf("process %d %s: memtrap, which kept it traced for the syscall filter it added after an execve, lets it go (and any other that asks); the calls that filter stops fail with ENOSYS in it from now on (see README, Limits)", tid, why))
}

// noteRefusedListeners says, once per process, that a seccomp filter with
// a listener of its own failed: the kernel allows one listener per filter
// chain, and every process the target starts carries memtrap's. The
// listener lets such calls run (they fail with EBUSY as they must); this
// is the only trace of them.
func (w *Watch) noteRefusedListeners() {
	pids := w.p.RefusedListeners()
	if len(pids) == 0 {
		return
	}
	root := w.rootWatch()
	if root.saidListener == nil {
		root.saidListener = map[int]bool{}
	}
	for _, pid := range pids {
		if root.saidListener[pid] {
			continue
		}
		root.saidListener[pid] = true
		w.note(fmt.Sprintf("process %d asked for a seccomp listener of its own (SECCOMP_FILTER_FLAG_NEW_LISTENER): the kernel refuses it (EBUSY) because memtrap's syscall filter holds the one listener a process may have (see README, Limits)", pid))
	}
}
