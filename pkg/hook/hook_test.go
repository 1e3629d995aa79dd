package hook

import (
	"errors"
	"os"
	"os/exec"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
	"github.com/memtrap/memtrap/pkg/bpfhook"
	"github.com/memtrap/memtrap/pkg/pagewatch"
	"github.com/memtrap/memtrap/pkg/procmaps"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// TestEntryAndReturn hooks twice (out of line; recursive; two threads) and
// ripfirst (stepped in place) in a program that runs on as if nothing
// stood there: every call seen at its entry, every return with the result
// of that very call.
func TestEntryAndReturn(t *testing.T) {
	prog := fixture.Build(t, "pkg/hook/testdata/calls.c", "-O1", "-g", "-pthread", "-no-pie")
	calls := map[string]int{}
	rets := map[string]int{}
	var bad []string
	hooked(t, prog, func(p *tracer.Process, s *Set) error {
		for _, fn := range []string{"twice", "ripfirst"} {
			want := func(arg uint64) uint64 { return 2 * arg }
			if fn == "ripfirst" {
				want = func(arg uint64) uint64 { return arg + 1 }
			}
			err := s.Add(fixture.Symbol(t, prog, fn), func(t *tracer.Thread, regs *unix.PtraceRegs) error {
				calls[fn]++
				arg := regs.Rdi
				return s.Return(t, regs, func(_ *tracer.Thread, regs *unix.PtraceRegs) error {
					rets[fn]++
					if regs.Rax != want(arg) {
						bad = append(bad, fn)
					}
					return nil
				})
			})
			if err != nil {
				return err
			}
		}
		if s.bps[fixture.Symbol(t, prog, "twice")].slot == 0 || s.bps[fixture.Symbol(t, prog, "ripfirst")].slot != 0 {
			t.Errorf("twice should run out of line, ripfirst in place")
		}
		return nil
	})
	// 100 calls of twice from the loops, and 9 recursive ones (1000,
	// 1010, ..., 1040 and 10, ..., 40); 100 of ripfirst.
	if calls["twice"] != 109 || rets["twice"] != 109 || calls["ripfirst"] != 100 || rets["ripfirst"] != 100 {
		t.Errorf("calls %v, returns %v; want twice 109, ripfirst 100", calls, rets)
	}
	if len(bad) > 0 {
		t.Errorf("%d returns paired with the wrong call: %v", len(bad), bad)
	}
}

// hooked runs prog to its end under a watch with a Set that hook fills
// first, and checks that the program's output and status are its own.
func hooked(t *testing.T, prog string, hook func(p *tracer.Process, s *Set) error) {
	t.Helper()
	native, err := exec.Command(prog).Output()
	if err != nil {
		t.Fatal(err)
	}
	var stdout []byte
	err = tracer.Locked(func() error {
		r, wr, err := os.Pipe()
		if err != nil {
			return err
		}
		defer r.Close()
		p, err := tracer.Launch([]string{prog}, tracer.LaunchOptions{Stdio: [3]*os.File{nil, wr, nil}})
		wr.Close()
		if err != nil {
			return err
		}
		defer p.Close()
		th, err := p.RunToEntry()
		if err != nil {
			return err
		}
		w, err := pagewatch.New(p, nil, pagewatch.Options{})
		if err != nil {
			return err
		}
		if err := w.Arm(th); err != nil {
			return err
		}
		s, err := New(p, th)
		if err != nil {
			return err
		}
		if err := hook(p, s); err != nil {
			return err
		}
		w.SetHooks(s)
		if err := p.ResumeAll(); err != nil {
			return err
		}
		st, err := w.Run()
		if err != nil {
			p.Kill()
			return err
		}
		if !st.Status.Exited() || st.Status.ExitStatus() != 0 {
			t.Errorf("target status %#x", uint32(st.Status))
		}
		stdout = make([]byte, 4096)
		n, _ := r.Read(stdout)
		stdout = stdout[:n]
		return nil
	})
	if errors.Is(err, bpfhook.ErrUnavailable) {
		t.Skipf("no BPF uprobes here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if string(stdout) != string(native) {
		t.Errorf("output under hooks %q, native %q", stdout, native)
	}
}

// TestRemoveRestoresCode: after Remove, the code is byte for byte the
// binary's and the code page is gone.
func TestRemoveRestoresCode(t *testing.T) {
	prog := fixture.Build(t, "pkg/hook/testdata/calls.c", "-O1", "-g", "-pthread", "-no-pie")
	err := tracer.Locked(func() error {
		p, err := tracer.Launch([]string{prog}, tracer.LaunchOptions{})
		if err != nil {
			return err
		}
		defer p.Kill()
		th, err := p.RunToEntry()
		if err != nil {
			return err
		}
		addr := fixture.Symbol(t, prog, "twice")
		before := make([]byte, 8)
		if err := p.ReadMemory(addr, before); err != nil {
			return err
		}
		s, err := New(p, th)
		if err != nil {
			return err
		}
		if err := s.Add(addr, func(*tracer.Thread, *unix.PtraceRegs) error { return nil }); err != nil {
			return err
		}
		mid := make([]byte, 1)
		if err := p.ReadMemory(addr, mid); err != nil || mid[0] != int3 {
			t.Errorf("no int3 at twice: %x %v", mid, err)
		}
		page := s.Trampoline()
		if err := s.Remove(th); err != nil {
			return err
		}
		after := make([]byte, 8)
		if err := p.ReadMemory(addr, after); err != nil {
			return err
		}
		if string(after) != string(before) {
			t.Errorf("code after Remove %x, before %x", after, before)
		}
		maps, err := procmaps.Read(p.Pid)
		if err != nil {
			return err
		}
		for _, m := range maps {
			if m.Contains(page) {
				t.Errorf("code page still mapped: %+v", m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
