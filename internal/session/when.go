package session

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/memtrap/memtrap/internal/cond"
	"github.com/memtrap/memtrap/pkg/pagewatch"
	"github.com/memtrap/memtrap/pkg/unwind"
)

// condDepth is how deep a backtrace in(FUNC) searches, whatever
// --backtrace prints.
const condDepth = 64

// condition is the expression --when and --when-value make together, nil
// for none.
func (se *session) condition() *cond.Expr {
	var e *cond.Expr
	if v := se.opts.WhenValue; v != nil {
		e = cond.Equal(*v)
	}
	return cond.And(e, se.opts.When)
}

// checkWhen refuses a condition no watched value can meet: a --when-value
// or a literal compared with old or new wider than a region of at most 8
// bytes, or than --width.
func (se *session) checkWhen(regions []*pagewatch.Region) error {
	for _, r := range regions {
		n := uint64(se.opts.Width)
		if r.Len <= 8 {
			n = r.Len
		}
		if v := se.opts.WhenValue; v != nil && n < 8 && *v >= 1<<(8*n) {
			return usageError(fmt.Sprintf("--when-value %#x does not fit %s, whose watched value is %d byte(s)", *v, r.Name, n))
		}
		if se.opts.When != nil {
			if err := se.opts.When.CheckWidth(int(n)); err != nil {
				return usageError(fmt.Sprintf("--when: %v, in %s", err, r.Name))
			}
		}
	}
	return nil
}

// needsWhen reports whether the watch must decide on each write while
// its writer is stopped: for a condition, or to hand the target off
// right after a write.
func (se *session) needsWhen() bool {
	return se.condition() != nil || se.opts.OnHit != "" || se.opts.MaxWrites > 0
}

// when is pagewatch.Options.When: the condition, then the actions a
// kept write sets off (--on-hit stop, --max-writes).
func (se *session) when(wr *pagewatch.Write, words []pagewatch.Word) bool {
	se.seen++
	if e := se.expr; e != nil && !se.eval(e, wr, words) {
		return false
	}
	se.kept++
	switch {
	case se.opts.OnHit == "stop" && se.kept == 1:
		se.hit = wr
		se.w.HandOff(wr, true)
	case se.opts.MaxWrites > 0 && se.kept == se.opts.MaxWrites && se.fw != nil:
		se.hit = wr
		se.fw.LetGo()
	case se.opts.MaxWrites > 0 && se.kept == se.opts.MaxWrites:
		se.hit = wr
		se.w.HandOff(wr, false)
	}
	return true
}

// eval says whether one of the words wr touched meets e.
func (se *session) eval(e *cond.Expr, wr *pagewatch.Write, words []pagewatch.Word) bool {
	env := cond.Env{Match: func(i int) bool { return se.match(e.Preds()[i], i, wr) }}
	env.Vars[cond.Addr], env.Vars[cond.Off], env.Vars[cond.Size] = wr.Addr, wr.Offset, wr.Size
	env.Vars[cond.Tid], env.Vars[cond.Pid], env.Vars[cond.Seq] = uint64(wr.Tid), uint64(wr.Pid), uint64(se.seen)
	if wr.Syscall != "" || wr.Signal != 0 {
		env.Vars[cond.Kernel] = 1
	}
	if h := se.heaps[wr.Pid]; h != nil {
		if b := h.regions[wr.Region]; b != nil {
			// As the report names it: off from the block's start.
			env.Vars[cond.Block] = uint64(b.id)
			switch {
			case b.freed:
				env.Vars[cond.Freed] = 1
			case wr.Region == b.red:
				env.Vars[cond.Overflow] = 1
				env.Vars[cond.Off] += b.size
			}
		}
	}
	for _, wd := range words {
		env.Vars[cond.Old], env.Vars[cond.New] = wd.Old, wd.New
		env.Vars[cond.Changed] = 0
		if wd.Old != wd.New {
			env.Vars[cond.Changed] = 1
		}
		if e.Eval(&env) {
			return true
		}
	}
	return false
}

// predKey memoizes a predicate's answer for one code address of one image:
// a function's range, a line's file do not change while it is mapped.
type predKey struct {
	img  *image
	pred int
	pc   uint64
}

// match answers predicate i of the condition for wr, from its backtrace.
func (se *session) match(p cond.PredUse, i int, wr *pagewatch.Write) bool {
	frames, _ := se.writerFrames(wr, condDepth)
	img := se.image(wr.Pid)
	for j, fr := range frames {
		if p.Pred != cond.In && j > 0 {
			break
		}
		look := fr.PC
		if j > 0 && !fr.Signal {
			look--
		}
		k := predKey{img, i, look}
		ok, seen := se.predMemo[k]
		if !seen {
			ok = matchFrame(p, img, look)
			if se.predMemo == nil {
				se.predMemo = map[predKey]bool{}
			}
			se.predMemo[k] = ok
		}
		if ok {
			return true
		}
	}
	return false
}

// matchFrame answers a predicate for one code address.
func matchFrame(p cond.PredUse, img *image, pc uint64) bool {
	loc, ok := img.syms.Lookup(pc)
	if !ok {
		return false
	}
	if p.Pred == cond.File {
		return loc.File != "" && (cond.Glob(p.Pattern, loc.File) || cond.Glob(p.Pattern, filepath.Base(loc.File)) ||
			cond.Glob("*/"+p.Pattern, loc.File))
	}
	if loc.Func == "" {
		return false
	}
	if cond.Glob(p.Pattern, loc.Func) {
		return true
	}
	// A C++ name with its parameters (ns::f(int)) also answers to ns::f.
	if i := strings.IndexByte(loc.Func, '('); i > 0 && !strings.Contains(loc.Func[:i], "operator") {
		return cond.Glob(p.Pattern, loc.Func[:i])
	}
	return false
}

// writerFrames unwinds wr's writer, stopped at the write, at least depth
// frames deep, once per write: a condition and the report share it.
func (se *session) writerFrames(wr *pagewatch.Write, depth int) ([]unwind.Frame, *stackWindow) {
	if se.unwound.w == wr && se.unwound.depth >= depth {
		return se.unwound.frames, se.unwound.mem
	}
	var mem *stackWindow
	if wr.Thread == nil {
		// The fast engine's: the writer ran on long ago, its stack is
		// what the agent copied at the write, and nothing else.
		mem = &stackWindow{p: se.p, frozen: true, spanAddr: wr.StackAddr, span: wr.Stack}
	} else {
		mem = &stackWindow{p: wr.Thread.Process()}
		for off := 0; off+stackPage <= len(wr.Stack); off += stackPage {
			mem.keep(wr.StackAddr+uint64(off), wr.Stack[off:off+stackPage])
		}
	}
	var buf []unwind.Frame
	if b, ok := framePool.Get().(*[]unwind.Frame); ok {
		buf = *b
	}
	frames := se.image(wr.Pid).unw.UnwindInto(buf, unwind.RegsFromPtrace(&wr.Regs), mem, depth)
	if len(frames) > 0 {
		// The writing instruction, also when the registers are those
		// after it (debug registers).
		frames[0].PC = wr.PC
	}
	se.unwound.w, se.unwound.depth, se.unwound.frames, se.unwound.mem = wr, depth, frames, mem
	return frames, mem
}
