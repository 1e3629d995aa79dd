package session

import (
	"errors"
	"fmt"

	"github.com/memtrap/memtrap/pkg/hook"
	"github.com/memtrap/memtrap/pkg/pagewatch"
	"github.com/memtrap/memtrap/pkg/symbols"
	"github.com/memtrap/memtrap/pkg/tracer"
	"github.com/memtrap/memtrap/pkg/unwind"
	"golang.org/x/sys/unix"
)

// ArgSpec is --arg FUNC:N[:LEN]: at each call of Func, Len bytes at its
// N-th argument (1-based), until that call returns; Len 0 is the size of
// what the parameter points to, from DWARF.
type ArgSpec struct {
	Func string
	N    int
	Len  uint64
}

// LocalSpec is --local FUNC:VAR: Func's local variable Var, while a call's
// frame lives (every active frame in recursion).
type LocalSpec struct {
	Func, Var string
}

// argValue is the N-th integer argument at a function's entry, as the SysV
// ABI passes it: rdi, rsi, rdx, rcx, r8, r9, then the stack above the
// return address.
func argValue(p *tracer.Process, regs *unix.PtraceRegs, n int) (uint64, error) {
	switch n {
	case 1:
		return regs.Rdi, nil
	case 2:
		return regs.Rsi, nil
	case 3:
		return regs.Rdx, nil
	case 4:
		return regs.Rcx, nil
	case 5:
		return regs.R8, nil
	case 6:
		return regs.R9, nil
	}
	var b [8]byte
	if err := p.ReadMemory(regs.Rsp+8*uint64(n-6), b[:]); err != nil {
		return 0, err
	}
	return leUint64(b[:]), nil
}

func leUint64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// hookFuncs puts the breakpoints of --arg and --local. It returns lines for
// the watch header.
func (se *session) hookFuncs(w *pagewatch.Watch, hooks *hook.Set) ([]string, error) {
	var lines []string
	syms := se.image(w.Process().Pid).syms
	for _, a := range se.opts.Args {
		sym, err := syms.Resolve(a.Func)
		if err != nil {
			return nil, fmt.Errorf("--arg %s:%d: %w", a.Func, a.N, err)
		}
		name, params, pointee, err := syms.ParamPointee(sym.Addr, a.N)
		if err == nil && params > 0 && a.N > params {
			return nil, fmt.Errorf("--arg %s:%d: %s has %d parameter(s)", a.Func, a.N, a.Func, params)
		}
		size := a.Len
		if size == 0 {
			if pointee == 0 {
				return nil, fmt.Errorf("--arg %s:%d: its DWARF does not say the size of what it points to; give --arg %s:%d:LEN", a.Func, a.N, a.Func, a.N)
			}
			size = pointee
		}
		label := fmt.Sprintf("%s:%d", a.Func, a.N)
		if name != "" {
			label += " (" + name + ")"
		}
		spec := a
		if err := hooks.Add(sym.Addr, func(t *tracer.Thread, regs *unix.PtraceRegs) error {
			ptr, err := argValue(t.Process(), regs, spec.N)
			if err != nil || ptr == 0 {
				return nil
			}
			r := &pagewatch.Region{Name: fmt.Sprintf("%s:%d", spec.Func, spec.N), Addr: ptr, Len: size}
			return se.watchCall(t, regs, r)
		}); err != nil {
			return nil, fmt.Errorf("--arg %s: %w", label, err)
		}
		lines = append(lines, fmt.Sprintf("watching %d bytes at argument %s of each call, until it returns", size, label))
	}
	for _, l := range se.opts.Locals {
		sym, err := syms.Resolve(l.Func)
		if err != nil {
			return nil, fmt.Errorf("--local %s:%s: %w", l.Func, l.Var, err)
		}
		// Asked once now, with the frame of a call that has just begun
		// (CFA = rsp+8), so that a variable with no DWARF is refused
		// before the target runs.
		probe := symbols.FrameRegs{PC: sym.Addr, CFA: 0x7fff00000008, RegsValid: 1 << 7}
		probe.Regs[7] = 0x7fff00000000
		if _, _, err := syms.LocalAddress(probe, l.Var, w.Process().ReadMemory); err != nil {
			if errors.Is(err, symbols.ErrNoLocal) || errors.Is(err, symbols.ErrNoFunction) {
				return nil, fmt.Errorf("--local %s:%s: %w", l.Func, l.Var, err)
			}
			return nil, fmt.Errorf("--local %s:%s: %w (build it with -O0 -g, or watch it with --addr)", l.Func, l.Var, err)
		}
		spec := l
		if err := hooks.Add(sym.Addr, func(t *tracer.Thread, regs *unix.PtraceRegs) error {
			fr := symbols.FrameRegs{PC: regs.Rip, CFA: regs.Rsp + 8, Regs: unwind.RegsFromPtrace(regs), RegsValid: 1<<17 - 1}
			addr, size, err := se.image(t.Process().Pid).syms.LocalAddress(fr, spec.Var, t.Process().ReadMemory)
			if err != nil {
				return nil
			}
			r := &pagewatch.Region{Name: fmt.Sprintf("%s:%s", spec.Func, spec.Var), Addr: addr, Len: size}
			return se.watchCall(t, regs, r)
		}); err != nil {
			return nil, fmt.Errorf("--local %s:%s: %w", l.Func, l.Var, err)
		}
		lines = append(lines, fmt.Sprintf("watching %s's local %s in each of its frames, while it lives", l.Func, l.Var))
	}
	return lines, nil
}

// maxUnwatchableNotes is how many calls of one --arg or --local whose
// region cannot be watched are each said in a note.
const maxUnwatchableNotes = 3

// watchCall watches r for the call t is at the entry of, until it returns.
func (se *session) watchCall(t *tracer.Thread, regs *unix.PtraceRegs, r *pagewatch.Region) error {
	w := se.watchOf(t)
	hooks, _ := w.Hooks().(*hook.Set)
	if hooks == nil {
		return nil
	}
	if err := w.AddRegions(t, []*pagewatch.Region{r}); err != nil {
		// Said for the first calls of each --arg or --local; a hot
		// function whose argument is no pointer would say it at every
		// call.
		n := se.unwatchable[r.Name] + 1
		se.unwatchable[r.Name] = n
		switch {
		case n <= maxUnwatchableNotes:
			_ = se.rep.Note(fmt.Sprintf("%s at %#x: %v", r.Name, r.Addr, err))
		case n == maxUnwatchableNotes+1:
			_ = se.rep.Note(fmt.Sprintf("%s: more calls whose region memtrap cannot watch; it says no more of them", r.Name))
		}
		return nil
	}
	return hooks.Return(t, regs, func(t *tracer.Thread, _ *unix.PtraceRegs) error {
		// The watch of the process that returns: a child forked
		// inside the call returns in its own.
		return se.watchOf(t).RemoveRegions(t, []*pagewatch.Region{r})
	})
}
