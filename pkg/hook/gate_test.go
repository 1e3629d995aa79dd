package hook

import (
	"fmt"
	"sort"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
	"github.com/memtrap/memtrap/pkg/bpfhook"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// TestGate: behind a gate, only the calls the kernel's filter lets
// through stop: sized and looped with n in 10-12 or 50, take and guarded
// with the one cell watched, from both threads; their returns are caught
// with the result of that very call, and the program runs on as if
// nothing stood there. guarded's uprobe stands on the je past its entry's
// endbr64 and test; looped's, whose loop lands on its je, at its entry.
func TestGate(t *testing.T) {
	if err := bpfhook.Available(); err != nil {
		t.Skipf("no BPF uprobes here: %v", err)
	}
	prog := fixture.Build(t, "pkg/hook/testdata/gated.c", "-O0", "-g", "-pthread", "-no-pie")
	var calls, rets []string
	hooked(t, prog, func(p *tracer.Process, s *Set) error {
		g, err := bpfhook.New(p.Pid, [][2]uint64{{10, 12}, {50, 50}})
		if err != nil {
			return err
		}
		s.UseGate(g)
		sized, take := fixture.Symbol(t, prog, "sized"), fixture.Symbol(t, prog, "take")
		cells := fixture.Symbol(t, prog, "cells")
		record := func(fn string) HitFunc {
			return func(t *tracer.Thread, regs *unix.PtraceRegs) error {
				arg := regs.Rdi
				if fn == "take" || fn == "guarded" {
					arg = (arg - cells) / 8
				}
				calls = append(calls, fmt.Sprintf("%s(%d)", fn, arg))
				return s.Return(t, regs, func(_ *tracer.Thread, regs *unix.PtraceRegs) error {
					rets = append(rets, fmt.Sprintf("%s(%d)=%d", fn, arg, regs.Rax))
					return nil
				})
			}
		}
		guarded, looped := fixture.Symbol(t, prog, "guarded"), fixture.Symbol(t, prog, "looped")
		size := func(fn string) uint64 { return fixture.SymbolSize(t, prog, fn) }
		for _, c := range []struct {
			fn         string
			addr, want uint64
		}{{"sized", sized, sized}, {"guarded", guarded, guarded + 7}, {"looped", looped, looped}} {
			if got := s.probeSite(c.addr, size(c.fn)); got != c.want {
				t.Errorf("%s's uprobe at %s%+d, want %+d", c.fn, c.fn, int64(got-c.addr), int64(c.want-c.addr))
			}
		}
		if err := s.AddGated(sized, size("sized"), record("sized"), bpfhook.Call{Size: []int{1}}); err != nil {
			return err
		}
		if err := s.AddGated(take, size("take"), record("take"), bpfhook.Call{Ptr: 1}); err != nil {
			return err
		}
		if err := s.AddGated(guarded, size("guarded"), record("guarded"), bpfhook.Call{Ptr: 1}); err != nil {
			return err
		}
		if err := s.AddGated(looped, size("looped"), record("looped"), bpfhook.Call{Size: []int{1}}); err != nil {
			return err
		}
		for _, fn := range []uint64{sized, take, guarded, looped} {
			if s.Trapped(fn) {
				t.Errorf("%#x got an int3, not the gate", fn)
			}
		}
		if ok, err := s.OpenGate(); !ok {
			return fmt.Errorf("the gate did not open: %w", err)
		}
		return g.Watch(cells + 2*8)
	})
	sort.Strings(calls)
	sort.Strings(rets)
	wantCalls := "[guarded(2) guarded(2) looped(11) looped(11) sized(10) sized(10) sized(11) sized(11) sized(12) sized(12) sized(50) sized(50) take(2) take(2)]"
	wantRets := "[guarded(2)=0 guarded(2)=0 looped(11)=7 looped(11)=7 sized(10)=30 sized(10)=30 sized(11)=33 sized(11)=33 sized(12)=36 sized(12)=36 sized(50)=150 sized(50)=150 take(2)=2 take(2)=2]"
	if fmt.Sprint(calls) != wantCalls || fmt.Sprint(rets) != wantRets {
		t.Errorf("calls %v\nreturns %v\nwant %s\n %s", calls, rets, wantCalls, wantRets)
	}
}
