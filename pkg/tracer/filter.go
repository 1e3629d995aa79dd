package tracer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	"golang.org/x/sys/unix"
)

// A syscall filter (seccomp) makes only the system calls a watcher cares
// about stop the target, instead of every call as TraceSyscalls does: each
// such call stops at its entry (StopSyscall with Seccomp set); the others
// run at full speed.
//
// The filter stays with the process, its later threads and children, and
// across execve: it cannot be removed, so it is for targets memtrap
// launched, never for attach. Its action is SECCOMP_RET_USER_NOTIF where
// the kernel allows (notify.go): children memtrap does not follow need
// nothing of memtrap then. Otherwise (a filter after the first, or a
// target whose filters have a listener already) it is SECCOMP_RET_TRACE: a
// call it traps while no tracer listens fails with ENOSYS, so memtrap
// keeps the children that carry one traced until they end (see KeepChild).

// FilterRule says when one syscall stops: always (no Args), or when one of
// the arguments Args holds a value in one of Ranges.
type FilterRule struct {
	Nr     int
	Args   []int
	Ranges []Range
	// Action, if not 0, is what a matching call gets instead of the
	// filter's stop (BuildProgram).
	Action uint32
}

// Range is [Lo, Hi).
type Range struct{ Lo, Hi uint64 }

// filterMarker is the SECCOMP_RET_DATA of memtrap's filters: a stop with
// other data comes from a filter of the target's own.
const filterMarker = 0x6d74

const (
	bpfLd  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	bpfJeq = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	bpfJgt = unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K
	bpfJge = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
	bpfRet = unix.BPF_RET | unix.BPF_K

	seccompNr   = 0
	seccompArch = 4
	seccompIP   = 8
	x32Bit      = 0x40000000
)

func seccompArg(i int, high bool) uint32 {
	off := uint32(16 + 8*i)
	if high {
		off += 4
	}
	return off
}

// asm is a classic BPF program with symbolic jump targets.
type asm struct {
	ins    []unix.SockFilter
	jt, jf []int // label numbers, -1 for "next instruction"
	ja     []int // an unconditional jump's label (its offset is 32 bits), -1
	labels []int // label -> instruction index
}

func (a *asm) label() int  { a.labels = append(a.labels, -1); return len(a.labels) - 1 }
func (a *asm) place(l int) { a.labels[l] = len(a.ins) }
func (a *asm) op(code uint16, k uint32, jt, jf int) {
	a.ins = append(a.ins, unix.SockFilter{Code: code, K: k})
	a.jt, a.jf, a.ja = append(a.jt, jt), append(a.jf, jf), append(a.ja, -1)
}

// jump jumps to l, however far ahead.
func (a *asm) jump(l int) {
	a.op(unix.BPF_JMP|unix.BPF_JA, 0, -1, -1)
	a.ja[len(a.ja)-1] = l
}

func (a *asm) link() ([]unix.SockFilter, error) {
	for i := range a.ins {
		if l := a.ja[i]; l >= 0 {
			off := a.labels[l] - i - 1
			if off < 0 {
				return nil, fmt.Errorf("syscall filter: jump of %d at %d", off, i)
			}
			a.ins[i].K = uint32(off)
		}
		for _, x := range []struct {
			l   int
			dst *uint8
		}{{a.jt[i], &a.ins[i].Jt}, {a.jf[i], &a.ins[i].Jf}} {
			if x.l < 0 {
				continue
			}
			off := a.labels[x.l] - i - 1
			if off < 0 || off > 255 {
				return nil, fmt.Errorf("syscall filter: jump of %d at %d", off, i)
			}
			*x.dst = uint8(off)
		}
	}
	if len(a.ins) > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("syscall filter: %d instructions, the kernel takes %d", len(a.ins), unix.BPF_MAXINSNS)
	}
	return a.ins, nil
}

// Filter is an assembled syscall filter (BuildFilter).
type Filter struct {
	prog   []unix.SockFilter
	rules  []FilterRule
	notify bool
}

// Size is the room in target memory that InstallFilter needs for f.
func (f *Filter) Size() uint64 { return uint64(8*len(f.prog) + 16) }

// BuildFilter assembles the seccomp program for rules: x86-64 calls that
// match a rule stop, everything else is allowed, and so is every call made
// from exempt (memtrap's code in the target: CallStub). With notify, they
// stop for memtrap's listener (SECCOMP_RET_USER_NOTIF), else for its
// tracer (SECCOMP_RET_TRACE).
func BuildFilter(rules []FilterRule, notify bool, exempt Range) (*Filter, error) {
	stop := uint32(unix.SECCOMP_RET_TRACE | filterMarker)
	if notify {
		stop = unix.SECCOMP_RET_USER_NOTIF
	}
	prog, err := BuildProgram(rules, stop, exempt)
	if err != nil {
		return nil, err
	}
	return &Filter{prog: prog, rules: rules, notify: notify}, nil
}

// BuildProgram assembles the seccomp program for rules: an x86-64 call
// that matches a rule returns the rule's Action, or stop; every other
// call, and every call made from an address in exempt (the calls of code
// memtrap put in the target), is allowed. exempt may not cross a 4 GiB
// line.
func BuildProgram(rules []FilterRule, stop uint32, exempt Range) ([]unix.SockFilter, error) {
	return BuildProgramFrom(rules, stop, exempt, nil)
}

// BuildProgramFrom is BuildProgram for calls made from an address in from
// (when from is not empty); a call made elsewhere matches only the rules
// with an Action of their own. A program executed since (the kernel keeps
// the filter across execve) runs its code elsewhere, but for a chance
// placement where the old one's was: a stop meant for code memtrap put in
// the old program (the fast engine's agent, which gets SIGSYS) would kill
// it.
func BuildProgramFrom(rules []FilterRule, stop uint32, exempt Range, from []Range) ([]unix.SockFilter, error) {
	if exempt.Hi > exempt.Lo && exempt.Lo>>32 != exempt.Hi>>32 {
		return nil, fmt.Errorf("syscall filter: the exempt range [%#x, %#x) crosses a 4 GiB line", exempt.Lo, exempt.Hi)
	}
	a := &asm{}
	native, x64, checked := a.label(), a.label(), a.label()
	a.op(bpfLd, seccompArch, -1, -1)
	a.op(bpfJeq, unix.AUDIT_ARCH_X86_64, native, -1)
	a.op(bpfRet, unix.SECCOMP_RET_ALLOW, -1, -1)
	a.place(native)
	a.op(bpfLd, seccompNr, -1, -1)
	a.op(bpfJge, x32Bit, -1, x64)
	a.op(bpfRet, unix.SECCOMP_RET_ALLOW, -1, -1)
	a.place(x64)
	if exempt.Hi > exempt.Lo {
		// seccomp_data.instruction_pointer, at 8: its high half, then
		// its low half in [Lo, Hi).
		a.op(bpfLd, seccompIP+4, -1, -1)
		a.op(bpfJeq, uint32(exempt.Lo>>32), -1, checked)
		a.op(bpfLd, seccompIP, -1, -1)
		a.op(bpfJge, uint32(exempt.Lo), -1, checked)
		a.op(bpfJge, uint32(exempt.Hi), checked, -1)
		a.op(bpfRet, unix.SECCOMP_RET_ALLOW, -1, -1)
	}
	a.place(checked)
	// A call that matched a rule whose action is stop goes on to
	// stopAt, which checks where it was made from (when from is set).
	stopAt := -1
	if len(from) > 0 {
		stopAt = a.label()
	}
	ruleBlocks(a, rules, stop, stopAt)
	if stopAt >= 0 {
		a.place(stopAt)
		hit := a.label()
		for _, rg := range from {
			rangeCheck(a, seccompIP, rg, hit)
		}
		a.op(bpfRet, unix.SECCOMP_RET_ALLOW, -1, -1)
		a.place(hit)
		a.op(bpfRet, stop, -1, -1)
	}
	return a.link()
}

// ruleBlocks assembles rules, one block per syscall, reached by a binary
// search on the call's number (every call runs it: a chain of one test
// per number cost an unrelated call about twice as much); any other call
// is allowed.
func ruleBlocks(a *asm, rules []FilterRule, stop uint32, stopAt int) {
	exit := func(act uint32) {
		if act == stop && stopAt >= 0 {
			a.jump(stopAt)
			return
		}
		a.op(bpfRet, act, -1, -1)
	}
	// One block per syscall; its rules are tried in turn.
	byNr := map[int][]FilterRule{}
	for _, r := range rules {
		byNr[r.Nr] = append(byNr[r.Nr], r)
	}
	nrs := slices.Sorted(maps.Keys(byNr))
	blocks := map[int]int{}
	for _, nr := range nrs {
		blocks[nr] = a.label()
	}
	a.op(bpfLd, seccompNr, -1, -1)
	dispatch(a, nrs, blocks)
	for _, nr := range nrs {
		a.place(blocks[nr])
		// One exit per action: the rules of a call that share it
		// share its label.
		hits := map[uint32]int{}
		var actions []uint32
		for _, r := range byNr[nr] {
			act := stop
			if r.Action != 0 {
				act = r.Action
			}
			if len(r.Args) == 0 {
				exit(act)
				break
			}
			hit, ok := hits[act]
			if !ok {
				hit = a.label()
				hits[act] = hit
				actions = append(actions, act)
			}
			argChecks(a, r, hit)
		}
		a.op(bpfRet, unix.SECCOMP_RET_ALLOW, -1, -1)
		for _, act := range actions {
			a.place(hits[act])
			exit(act)
		}
	}
}

// dispatch jumps, on the call number in the accumulator, to blocks[nr]
// for each of nrs (sorted), and allows any other call.
func dispatch(a *asm, nrs []int, blocks map[int]int) {
	if len(nrs) <= 3 {
		for _, nr := range nrs {
			next := a.label()
			a.op(bpfJeq, uint32(nr), -1, next)
			a.jump(blocks[nr])
			a.place(next)
		}
		a.op(bpfRet, unix.SECCOMP_RET_ALLOW, -1, -1)
		return
	}
	mid := len(nrs) / 2
	right, left := a.label(), a.label()
	a.op(bpfJge, uint32(nrs[mid]), -1, left)
	a.jump(right)
	a.place(left)
	dispatch(a, nrs[:mid], blocks)
	a.place(right)
	dispatch(a, nrs[mid:], blocks)
}

// Program is f's instructions.
func (f *Filter) Program() []unix.SockFilter { return f.prog }

// argChecks jumps to hit when one of r's arguments lies in one of its
// ranges, and falls through otherwise.
func argChecks(a *asm, r FilterRule, hit int) {
	for _, arg := range r.Args {
		for _, rg := range r.Ranges {
			rangeCheck(a, seccompArg(arg, false), rg, hit)
		}
	}
}

// rangeCheck jumps to hit when the 64-bit value of seccomp_data at off
// lies in rg, and falls through otherwise.
func rangeCheck(a *asm, off uint32, rg Range, hit int) {
	// Lo <= v < Hi, compared as two 32-bit halves.
	next, upper := a.label(), a.label()
	lh, ll := uint32(rg.Lo>>32), uint32(rg.Lo)
	hh, hl := uint32(rg.Hi>>32), uint32(rg.Hi)
	a.op(bpfLd, off+4, -1, -1)
	a.op(bpfJgt, lh, upper, -1)
	a.op(bpfJeq, lh, -1, next)
	a.op(bpfLd, off, -1, -1)
	a.op(bpfJge, ll, -1, next)
	a.place(upper)
	a.op(bpfLd, off+4, -1, -1)
	a.op(bpfJgt, hh, next, -1)
	a.op(bpfJeq, hh, -1, hit)
	a.op(bpfLd, off, -1, -1)
	a.op(bpfJge, hl, next, hit)
	a.place(next)
}

// ErrNoFilter means the kernel refused the syscall filter.
var ErrNoFilter = errors.New("the kernel refused memtrap's syscall filter")

// ErrNoListener means the kernel refused a SECCOMP_RET_USER_NOTIF filter
// (the process has one with a listener already, or the kernel is too old):
// build it again without notify.
var ErrNoListener = errors.New("the kernel refused a listener for memtrap's syscall filter")

// InstallFilter makes the process's threads install f and reports its
// stops from now on. buf is room for f.Size() bytes of target memory that
// the call may use. If the target lacks CAP_SYS_ADMIN, no_new_privs is set
// first, as seccomp requires (under ptrace a set-user-ID execve gains
// nothing anyway).
//
// Precondition: as for Syscall, with every thread stopped.
func (t *Thread) InstallFilter(f *Filter, buf uint64) error {
	p := t.p
	if err := p.check(); err != nil {
		return err
	}
	prog := f.prog
	code := make([]byte, 8*len(prog)+16)
	for i, f := range prog {
		binary.LittleEndian.PutUint16(code[8*i:], f.Code)
		code[8*i+2], code[8*i+3] = f.Jt, f.Jf
		binary.LittleEndian.PutUint32(code[8*i+4:], f.K)
	}
	fprog := buf + uint64(8*len(prog))
	binary.LittleEndian.PutUint16(code[8*len(prog):], uint16(len(prog)))
	binary.LittleEndian.PutUint64(code[8*len(prog)+8:], buf)
	if err := p.WriteMemory(buf, code); err != nil {
		return err
	}
	if f.notify {
		if p.notif != nil {
			return ErrNoListener // one listener per chain of filters
		}
		if err := t.installListener(fprog, f.rules); err != nil {
			if errors.Is(err, ErrNoFilter) {
				return err
			}
			return fmt.Errorf("%w: %w", ErrNoListener, err)
		}
		p.filters++
		return nil
	}
	opts := p.options | unix.PTRACE_O_TRACESECCOMP
	for _, th := range p.threads {
		if err := ptraceRaw(unix.PTRACE_SETOPTIONS, th.Tid, 0, uintptr(opts)); err != nil && err != unix.ESRCH {
			return fmt.Errorf("PTRACE_SETOPTIONS %d: %w", th.Tid, err)
		}
	}
	p.options = opts
	install := func() (uintptr, error) {
		return t.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(fprog))
	}
	r, err := install()
	if errors.Is(err, unix.EACCES) {
		if _, err := t.Syscall(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("%w: prctl(PR_SET_NO_NEW_PRIVS): %w", ErrNoFilter, err)
		}
		r, err = install()
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoFilter, err)
	}
	if r != 0 {
		return fmt.Errorf("%w: thread %d could not take it", ErrNoFilter, r)
	}
	p.filtered = true
	p.filters++
	return nil
}

// Filtered reports whether a SECCOMP_RET_TRACE filter is installed in the
// process: its children need a tracer (KeepChild).
func (p *Process) Filtered() bool { return p.filtered }

// skipForeignTrace answers a stop of the target's own SECCOMP_RET_TRACE
// filter as the kernel does when no tracer listens: the call fails with
// ENOSYS without running.
func skipForeignTrace(tid int) error {
	var r unix.PtraceRegs
	if err := ptraceGetRegs(tid, &r); err != nil {
		return err
	}
	r.Orig_rax = ^uint64(0)
	r.Rax = ^uint64(unix.ENOSYS) + 1
	return ptraceSetRegs(tid, &r)
}

func goneErr(err error) error {
	if err == unix.ESRCH {
		return ErrThreadGone
	}
	return err
}

// KeepChild keeps a new process reported by StopFork traced in pass-through
// instead of detaching it: it inherited the syscall filter, whose stops need
// a tracer. Its tasks, their children and their threads are resumed at
// every stop, signals delivered and group-stops kept, until they exit or
// ReleaseKept lets them go; Wait never reports them. EXITKILL is cleared for them: if memtrap goes, they
// live on. The child must have been given its pages back before.
func (p *Process) KeepChild(pid int) error {
	if err := p.check(); err != nil {
		return err
	}
	p.keep(pid)
	p.notif.untrack(pid)
	if err := ptraceRaw(unix.PTRACE_SETOPTIONS, pid, 0, uintptr(p.options&^unix.PTRACE_O_EXITKILL)); err != nil {
		p.unkeep(pid)
		return ignoreGone(err)
	}
	return ignoreGone(ptraceCont(pid, 0))
}

// keep and unkeep add and drop a kept task, for the listener too (its
// PTRACE_TRACEME is the ptrace thread's to settle: releaseTraceme).
func (p *Process) keep(tid int) {
	p.kept[tid] = true
	p.notif.keep(tid, true)
}

func (p *Process) unkeep(tid int) {
	delete(p.kept, tid)
	p.notif.keep(tid, false)
}

// Kept returns how many tasks of kept children are still traced.
func (p *Process) Kept() int { return len(p.kept) }

// handleKept does what a tracer that only keeps a filter company does with
// a stop of a kept task: let it go on as if untraced.
func (p *Process) handleKept(w waitInfo) error {
	ws, tid := w.ws, w.tid
	if ws.Exited() || ws.Signaled() {
		p.unkeep(tid)
		return nil
	}
	if !ws.Stopped() {
		return nil
	}
	sig := ws.StopSignal()
	switch event(ws) {
	case unix.PTRACE_EVENT_CLONE, unix.PTRACE_EVENT_FORK, unix.PTRACE_EVENT_VFORK:
		if msg, err := ptraceEventMsg(tid); err == nil {
			child := int(msg)
			p.keep(child)
			if early, ok := p.early[child]; ok {
				// Its first stop came before this event.
				delete(p.early, child)
				if err := p.handleKept(early); err != nil {
					return err
				}
			}
		}
		return ignoreGone(ptraceCont(tid, 0))
	case unix.PTRACE_EVENT_SECCOMP:
		if msg, err := ptraceEventMsg(tid); err == nil && msg != filterMarker {
			if err := skipForeignTrace(tid); err != nil {
				return ignoreGone(err)
			}
		}
		return ignoreGone(ptraceCont(tid, 0))
	case unix.PTRACE_EVENT_STOP:
		if sig == unix.SIGTRAP {
			return ignoreGone(ptraceCont(tid, 0))
		}
		return ignoreGone(ptraceListen(tid))
	case 0:
		if sig == unix.SIGTRAP|0x80 {
			return ignoreGone(ptraceCont(tid, 0))
		}
		if sig == unix.SIGSTOP && p.notif.releasing(tid) {
			return p.releaseTraceme(tid)
		}
		return ignoreGone(ptraceCont(tid, int(sig)))
	}
	// exec, exit and anything else: on it goes.
	return ignoreGone(ptraceCont(tid, 0))
}

// ReleaseKept lets every task of the kept children go untraced: the end
// of a run whose target exited before the children it started. Each task
// is interrupted and detached at its next stop, with the signal it stopped
// for delivered (a group-stop stays stopped); a task one of them creates
// meanwhile is let go at its first stop. From then on, the calls their
// inherited syscall filter stops fail with ENOSYS. It returns how many
// tasks it let go.
func (p *Process) ReleaseKept() (int, error) {
	if err := p.check(); err != nil {
		return 0, err
	}
	for tid := range p.kept {
		// ESRCH: gone, its end waiting for wait4.
		_ = ptraceInterrupt(tid)
	}
	n := 0
	for len(p.kept) > 0 {
		var w waitInfo
		for tid, e := range p.early {
			if p.kept[tid] {
				w = e
				delete(p.early, tid)
				break
			}
		}
		if w.tid == 0 {
			tid, ws, err := wait4(-1)
			if err != nil {
				if err == unix.ECHILD {
					p.kept = map[int]bool{}
					return n, nil
				}
				return n, fmt.Errorf("wait4: %w", err)
			}
			w = waitInfo{tid, ws}
		}
		if !p.kept[w.tid] {
			if w.ws.Stopped() {
				p.early[w.tid] = w
			}
			continue
		}
		if released, err := p.releaseKept(w); err != nil {
			return n, err
		} else if released {
			n++
		}
	}
	return n, nil
}

// releaseKept detaches a kept task at a stop (see ReleaseKept), and says
// whether it let a running task go (not one on its way out).
func (p *Process) releaseKept(w waitInfo) (bool, error) {
	ws, tid := w.ws, w.tid
	if ws.Exited() || ws.Signaled() {
		p.unkeep(tid)
		return false, nil
	}
	if !ws.Stopped() {
		return false, nil
	}
	sig, running := 0, true
	switch event(ws) {
	case unix.PTRACE_EVENT_EXIT:
		running = false
	case unix.PTRACE_EVENT_CLONE, unix.PTRACE_EVENT_FORK, unix.PTRACE_EVENT_VFORK:
		if msg, err := ptraceEventMsg(tid); err == nil {
			p.keep(int(msg)) // attached: let go at its first stop
		}
	case unix.PTRACE_EVENT_SECCOMP:
		if msg, err := ptraceEventMsg(tid); err == nil && msg != filterMarker {
			if err := skipForeignTrace(tid); err != nil && err != unix.ESRCH {
				return false, err
			}
		}
		// Our own filter's: detached here, the call runs on.
	case 0:
		if s := ws.StopSignal(); s == unix.SIGSTOP && p.notif.releasing(tid) {
			// The listener's, for a PTRACE_TRACEME: dropped (unkeep
			// ends the release).
		} else if s != unix.SIGTRAP|0x80 {
			sig = int(s)
		}
	}
	p.unkeep(tid)
	if err := ptraceDetach(tid, sig); err != nil && err != unix.ESRCH {
		return false, fmt.Errorf("PTRACE_DETACH %d: %w", tid, err)
	}
	return running, nil
}

// releaseTraceme lets a kept task go that asks its parent to trace it
// (PTRACE_TRACEME: a debugger's or strace's child, started after memtrap
// added a SECCOMP_RET_TRACE filter). The listener turned the call back,
// not run, with the SIGSTOP the task stopped for here; detached, without
// that signal, the task makes the call again, which the listener lets run:
// its parent traces it. From then on, the calls of that filter fail with
// ENOSYS in it, as in every task the filter's tracer let go (ReleaseKept);
// they are the calls writing into memory memtrap watched in the image
// that added the filter, rare in a task that goes on to run a program of
// its own, as a debugger's child does.
func (p *Process) releaseTraceme(tid int) error {
	p.unkeep(tid) // and the listener's release of it
	if err := ptraceDetach(tid, 0); err != nil && err != unix.ESRCH {
		return fmt.Errorf("PTRACE_DETACH %d: %w", tid, err)
	}
	p.tracemes = append(p.tracemes, tid)
	return nil
}

// LetKeptGo lets kept task tid go untraced now, for a tracer of its own
// (the target attaching it): interrupted, and detached at its stop with
// the signal it stopped for, as ReleaseKept does. ok says tid was kept.
func (p *Process) LetKeptGo(tid int) (ok bool, err error) {
	if !p.kept[tid] {
		return false, nil
	}
	_ = ptraceInterrupt(tid) // ESRCH: gone, its end waiting for wait4
	for p.kept[tid] {
		_, ws, err := wait4(tid)
		if err != nil {
			if err == unix.ECHILD {
				p.unkeep(tid)
				break
			}
			return true, fmt.Errorf("wait4 %d: %w", tid, err)
		}
		if _, err := p.releaseKept(waitInfo{tid, ws}); err != nil {
			return true, err
		}
	}
	return true, nil
}

// KeptTracemes returns, once each, the kept tasks let go since the last
// call because they asked their parent to trace them (releaseTraceme).
func (p *Process) KeptTracemes() []int {
	out := p.tracemes
	p.tracemes = nil
	return out
}
