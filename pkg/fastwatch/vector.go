package fastwatch

import (
	"errors"
	"fmt"

	"github.com/memtrap/memtrap/pkg/agent"
	"github.com/memtrap/memtrap/pkg/sysout"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// Vector calls (readv, preadv, preadv2, process_vm_readv, recvmsg,
// recvmmsg) list their output buffers in memory, which a seccomp filter
// cannot read: the filter traps them all. memtrap reads the lists, and
// where a listed buffer reaches an armed page it gives the call copies of
// the lists in a scratch area of its own in the target, pointing at
// scratch buffers instead of the watched ones (as the page engine does);
// the agent makes the call with the arguments pointing at those copies
// (SET bounces), and at the call's end memtrap puts back every byte the
// kernel changed, as for a plain bounce (putBack).

// vbounce is one copy in memtrap's scratch: of real, its bytes before the
// call (a rewritten list's bytes, for a list).
type vbounce struct {
	real, scratch uint64
	before        []byte
}

// vecScratchSize is the scratch area's size (the page engine's).
const vecScratchSize = 4 << 20

// errVecRoom: the scratch area has no room left for a call's copies.
var errVecRoom = errors.New("memtrap's scratch area is full")

// mapScratch maps the scratch area, t stopped at the entry point.
func (w *Watch) mapScratch(t *tracer.Thread) error {
	addr, err := t.Syscall(unix.SYS_MMAP, 0, vecScratchSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE, ^uintptr(0), 0)
	if err != nil {
		return fmt.Errorf("mapping a scratch area for vector calls: %w", err)
	}
	w.scratch = sysout.NewScratch(uint64(addr), vecScratchSize)
	return nil
}

// vecRules trap every vector call.
func vecRules() []tracer.FilterRule {
	var rules []tracer.FilterRule
	for _, nr := range sysout.VecNumbers() {
		rules = append(rules, tracer.FilterRule{Nr: nr})
	}
	return rules
}

// planVec answers request i, a trapped vector call with arguments args:
// its lists copied and bounced where a buffer reaches an armed page,
// else run as it is.
func (w *Watch) planVec(i int, q agent.Request, spec sysout.VecCall, args *[6]uint64, g [agent.NGReg]uint64) {
	s := w.in.Shared
	l, ok := spec.Read(args, memReader{w})
	touched := false
	if ok {
		for _, o := range l.Outputs() {
			touched = touched || w.reachesArmed(o)
		}
	}
	if !touched || w.scratch == nil {
		// Not near watched memory, or memory holds no lists: the call
		// fails in the kernel as it would have.
		s.AnswerKernel(i, 0, nil)
		return
	}
	kc := &kcall{name: spec.Name, gregs: g}
	plan, err := w.bounceVec(kc, spec, l)
	if err == nil && len(plan) > agent.Bounces {
		err = errors.New("it has too many lists")
	}
	if err != nil {
		w.releaseVec(kc)
		w.note(fmt.Sprintf("engine fast: %s(2) in thread %d into watched memory: %v; it fails with EFAULT as the kernel sees it", spec.Name, q.Tid, err))
		s.AnswerKernel(i, 0, nil)
		return
	}
	w.kcalls[q.Tid] = kc
	s.AnswerKernel(i, 0, plan)
}

// bounceVec makes the scratch copies of a vector call's lists and watched
// buffers, and returns the arguments the agent is to point at them.
func (w *Watch) bounceVec(kc *kcall, spec sysout.VecCall, l *sysout.Layout) ([]agent.Bounce, error) {
	var plan []agent.Bounce
	set := func(arg int, addr uint64) {
		plan = append(plan, agent.Bounce{Arg: uint32(arg), Flags: agent.BounceSet, Off: addr})
	}
	// redirect copies one buffer if it reaches an armed page, and
	// returns the address the kernel is to use.
	redirect := func(p, n uint64) (uint64, error) {
		if p == 0 || n == 0 || !w.reachesArmed(sysout.Output{Addr: p, Size: n}) {
			return p, nil
		}
		if n > maxBounce {
			return 0, fmt.Errorf("%d bytes are more than the %d memtrap moves aside", n, maxBounce)
		}
		return w.copyOut(kc, p, n, nil)
	}
	place := func(real, n uint64, init []byte) (uint64, error) { return w.copyOut(kc, real, n, init) }
	args, err := l.Redirect(spec, redirect, place)
	if err != nil {
		return nil, err
	}
	for arg, v := range args {
		set(arg, v)
	}
	return plan, nil
}

// copyOut gives a call a scratch copy of [real, real+n): the real bytes,
// or init (a rewritten list).
func (w *Watch) copyOut(kc *kcall, real, n uint64, init []byte) (uint64, error) {
	before := init
	if before == nil {
		before = make([]byte, n)
		if !w.read(before, real) {
			return 0, fmt.Errorf("%#x is not mapped", real)
		}
	}
	at, ok := w.scratch.Alloc(n)
	if !ok {
		return 0, errVecRoom
	}
	if _, err := w.mem.WriteAt(before, int64(at)); err != nil {
		w.scratch.Release(at, n)
		return 0, fmt.Errorf("writing memtrap's scratch area: %w", err)
	}
	kc.vec = append(kc.vec, vbounce{real: real, scratch: at, before: append([]byte(nil), before...)})
	return at, nil
}

// releaseVec gives back a call's scratch copies.
func (w *Watch) releaseVec(kc *kcall) {
	for _, v := range kc.vec {
		w.scratch.Release(v.scratch, uint64(len(v.before)))
	}
	kc.vec = nil
}

// forget drops thread tid's call in flight (settled, or left unsettled by
// an agent that ran it as it was), and its scratch copies.
func (w *Watch) forget(tid uint32) {
	if kc := w.kcalls[tid]; kc != nil {
		w.releaseVec(kc)
		delete(w.kcalls, tid)
	}
}
