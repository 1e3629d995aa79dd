package tracer

import (
	"errors"
	"fmt"
	"github.com/memtrap/memtrap/pkg/procmaps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		// CI runs as root; elsewhere ptrace may still be allowed for our
		// own children, so carry on and let the tests say what fails.
		os.Stderr.WriteString("tracer tests: not root; ptrace of children only\n")
	}
	os.Exit(m.Run())
}

func launch(t *testing.T, prog string, args ...string) (*Process, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	p, err := Launch(append([]string{prog}, args...), LaunchOptions{Stdio: [3]*os.File{nil, w, nil}})
	w.Close()
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	return p, r
}

// atThreadsExitEntry runs f on the ptrace thread with threads_exit.c
// launched and stopped at its entry point; f's error fails the test (a
// t.Fatal on that thread would hang it).
func atThreadsExitEntry(t *testing.T, f func(p *Process, out *os.File, th *Thread) error) {
	t.Helper()
	prog := fixture.Build(t, "pkg/tracer/testdata/threads_exit.c", "-O0", "-pthread")
	err := Locked(func() error {
		p, out := launch(t, prog)
		defer p.Close()
		th, err := p.RunToEntry()
		if err != nil {
			return fmt.Errorf("RunToEntry: %w", err)
		}
		return f(p, out, th)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestLaunchInjectExit(t *testing.T) {
	prog := fixture.Build(t, "pkg/tracer/testdata/threads_exit.c", "-O0", "-pthread")
	atThreadsExitEntry(t, func(p *Process, out *os.File, th *Thread) error {
		aux, _ := p.Auxv()
		var regs unix.PtraceRegs
		if err := th.Regs(&regs); err != nil {
			t.Fatal(err)
		}
		if regs.Rip != aux[AtEntry] {
			t.Fatalf("stopped at %#x, entry is %#x", regs.Rip, aux[AtEntry])
		}
		pid, err := th.Syscall(unix.SYS_GETPID)
		if err != nil || int(pid) != p.Pid {
			t.Fatalf("injected getpid = %d, %v; want %d", pid, err, p.Pid)
		}
		var after unix.PtraceRegs
		if err := th.Regs(&after); err != nil {
			t.Fatal(err)
		}
		if after != regs {
			t.Fatalf("registers changed by injection:\n%+v\n%+v", regs, after)
		}
		// An injected mprotect shows in the maps, and can be undone.
		maps, _ := procmaps.Read(p.Pid)
		var rw procmaps.Mapping
		for _, m := range maps {
			if m.Prot == unix.PROT_READ|unix.PROT_WRITE && m.Path == prog {
				rw = m
			}
		}
		if rw.Start == 0 {
			t.Fatalf("no rw- mapping of %s in %v", prog, maps)
		}
		if err := th.Mprotect(rw.Start, 4096, unix.PROT_READ); err != nil {
			t.Fatal(err)
		}
		maps, _ = procmaps.Read(p.Pid)
		for _, m := range maps {
			if m.Start == rw.Start && m.Prot != unix.PROT_READ {
				t.Fatalf("after mprotect: %+v", m)
			}
		}
		if err := th.Mprotect(rw.Start, 4096, rw.Prot); err != nil {
			t.Fatal(err)
		}
		if _, err := th.Syscall(unix.SYS_MPROTECT, 1, 4096, 0); err != unix.EINVAL {
			t.Fatalf("mprotect of an unaligned address: err %v, want EINVAL", err)
		}
		if err := p.ResumeAll(); err != nil {
			t.Fatal(err)
		}
		return finishThreadsExit(p, out)
	})
}

func TestLaunchErrors(t *testing.T) {
	for _, c := range []struct{ prog, want string }{
		{"/nonexistent/prog", "no such file"},
		{"/etc/passwd", "permission denied"},
		{"/etc", "is a directory"},
		{"no-such-command-memtrap", "command not found"},
	} {
		err := Locked(func() error {
			_, err := Launch([]string{c.prog}, LaunchOptions{})
			return err
		})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Launch(%s) = %v, want %q", c.prog, err, c.want)
		}
	}
}

func TestAttachErrors(t *testing.T) {
	err := Locked(func() error { _, err := Attach(1 << 30); return err })
	if err == nil || !strings.Contains(err.Error(), "no such process") {
		t.Fatalf("Attach(huge pid) = %v", err)
	}
}

// TestSignalsDuringInjection: a signal sent while the tracer injects a
// syscall is not lost to the injection's single-step: one the tracer can
// block (SIGUSR1) stays pending meanwhile; one it cannot (SIGSEGV, which
// its own work may raise) is taken and given back. Either way the next
// Wait reports it, once, with its own siginfo (kill(2) from this process).
func TestSignalsDuringInjection(t *testing.T) {
	atThreadsExitEntry(t, func(p *Process, out *os.File, th *Thread) error {
		for _, c := range []struct {
			sig   unix.Signal
			taken bool
		}{{unix.SIGUSR1, false}, {unix.SIGSEGV, true}} {
			if err := unix.Kill(p.Pid, c.sig); err != nil {
				return err
			}
			if pid, err := th.Syscall(unix.SYS_GETPID); err != nil || int(pid) != p.Pid {
				return fmt.Errorf("%v: injected getpid = %d, %v", c.sig, pid, err)
			}
			if th.Deferred() != c.taken {
				return fmt.Errorf("%v: taken by the injection: %v, want %v", c.sig, th.Deferred(), c.taken)
			}
			if err := th.Resume(0); err != nil {
				return err
			}
			st, err := p.Wait()
			if err != nil {
				return err
			}
			if st.Kind != StopSignal || st.Sig != int(c.sig) || st.Info.Code() != siUser || st.Info.senderPid() != os.Getpid() {
				return fmt.Errorf("%v: next stop %v signal %d code %d from %d; want it, from kill(2) by %d", c.sig, st.Kind, st.Sig, st.Info.Code(), st.Info.senderPid(), os.Getpid())
			}
			if si, err := st.Thread.Siginfo(); err != nil || si != st.Info {
				return fmt.Errorf("%v: the stop's siginfo is not the one reported (%v)", c.sig, err)
			}
			th = st.Thread // suppressed at the next Resume
		}
		if err := th.Resume(0); err != nil {
			return err
		}
		return finishThreadsExit(p, out)
	})
}

// finishThreadsExit runs threads_exit.c, resumed, to its end, which must be
// its own: exit 42, "3000" printed, no signal on the way.
func finishThreadsExit(p *Process, out *os.File) error {
	for {
		st, err := p.Wait()
		if err != nil {
			return fmt.Errorf("Wait: %w", err)
		}
		if st.Kind == StopExited {
			if !st.Status.Exited() || st.Status.ExitStatus() != 42 {
				return fmt.Errorf("exit status %#x, want exit 42", uint32(st.Status))
			}
			break
		}
		if st.Kind == StopSignal {
			return fmt.Errorf("unexpected signal %d", st.Sig)
		}
		st.Thread.Resume(0)
	}
	b := make([]byte, 64)
	if n, _ := out.Read(b); strings.TrimSpace(string(b[:n])) != "3000" {
		return fmt.Errorf("target printed %q, want 3000", b[:n])
	}
	return nil
}

// A call injected into a thread stopped at the entry of a system call of
// its own returns its own result, single-stepped or run through syscall
// stops (QuietInjection: the thread's skipped call's exit comes first
// then), and the thread's call still runs once it is resumed.
func TestInjectAtSyscallEntry(t *testing.T) {
	for _, quiet := range []bool{false, true} {
		atThreadsExitEntry(t, func(p *Process, out *os.File, th *Thread) error {
			p.TraceSyscalls(true)
			p.QuietInjection(quiet)
			if err := p.ResumeAll(); err != nil {
				return err
			}
			for n := 0; n < 3; {
				st, err := p.Wait()
				if err != nil {
					return err
				}
				if st.Kind == StopSyscall && st.Syscall.Entry {
					n++
					pid, err := st.Thread.Syscall(unix.SYS_GETPID)
					if err != nil || int(pid) != p.Pid {
						return fmt.Errorf("quiet %v: getpid injected at the entry of call %d = %d, %v; want %d", quiet, st.Syscall.Nr, pid, err, p.Pid)
					}
				}
				if err := st.Thread.Resume(0); err != nil {
					return err
				}
			}
			p.TraceSyscalls(false)
			p.QuietInjection(false)
			return finishThreadsExit(p, out)
		})
	}
}

// TestMprotectOnResume: a call on resume runs as the thread goes on,
// before its next instruction, and gives every register back; one that
// fails stops the thread at the stub's int3, and LeaveStub takes it back
// out, making the call once more.
func TestMprotectOnResume(t *testing.T) {
	atThreadsExitEntry(t, func(p *Process, out *os.File, th *Thread) error {
		page, err := th.Syscall(unix.SYS_MMAP, 0, 4096, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
		if err != nil {
			return err
		}
		if err := p.WriteMemory(uint64(page), StubCode); err != nil {
			return err
		}
		p.SetCallStub(uint64(page))
		maps, err := procmaps.Read(p.Pid)
		if err != nil {
			return err
		}
		var rw procmaps.Mapping
		for _, m := range maps {
			if m.Prot == unix.PROT_READ|unix.PROT_WRITE && strings.Contains(m.Path, "threads_exit") {
				rw = m
			}
		}
		if rw.Start == 0 {
			return fmt.Errorf("no rw- mapping of the program in %v", maps)
		}
		var before unix.PtraceRegs
		if err := th.Regs(&before); err != nil {
			return err
		}
		// An int3 at the entry point: the thread stops there again once
		// the call has run.
		var orig [1]byte
		if err := p.ReadMemory(before.Rip, orig[:]); err != nil {
			return err
		}
		if err := p.WriteMemory(before.Rip, []byte{0xcc}); err != nil {
			return err
		}
		back := func() (Stop, unix.PtraceRegs, error) {
			var regs unix.PtraceRegs
			st, err := p.Wait()
			if err != nil {
				return st, regs, err
			}
			if st.Kind != StopSignal || st.Sig != int(unix.SIGTRAP) {
				return st, regs, fmt.Errorf("stop %v signal %d, want a SIGTRAP", st.Kind, st.Sig)
			}
			return st, regs, st.Thread.Regs(&regs)
		}
		if !th.MprotectOnResume(rw.Start, 4096, unix.PROT_READ) {
			return fmt.Errorf("MprotectOnResume refused a thread stopped at the entry point")
		}
		if th.MprotectOnResume(rw.Start, 4096, unix.PROT_READ) {
			return fmt.Errorf("MprotectOnResume took a second call for the same resume")
		}
		if err := th.Resume(0); err != nil {
			return err
		}
		_, after, err := back()
		if err != nil {
			return err
		}
		want := before
		want.Rip++ // past the int3
		if after != want {
			return fmt.Errorf("registers after the call on resume:\n%+v\nwant\n%+v", after, want)
		}
		m, ok, err := func() (procmaps.Mapping, bool, error) {
			q, err := procmaps.OpenQuery(p.Pid)
			if err != nil {
				maps, err := procmaps.Read(p.Pid)
				for _, m := range maps {
					if m.Contains(rw.Start) {
						return m, true, err
					}
				}
				return procmaps.Mapping{}, false, err
			}
			defer q.Close()
			return q.At(rw.Start)
		}()
		if err != nil || !ok || m.Prot != unix.PROT_READ {
			return fmt.Errorf("after the call on resume the page is %+v (%v, %v), want r--", m, ok, err)
		}
		// A signal that comes before the call has run: its stop finds
		// the call made and the thread where it was, so that no handler
		// runs with the page as it was, nor in memtrap's code.
		after.Rip = before.Rip
		if err := th.SetRegs(&after); err != nil {
			return err
		}
		if !th.MprotectOnResume(rw.Start, 4096, rw.Prot) {
			return fmt.Errorf("MprotectOnResume refused the call that gives the page back")
		}
		if err := unix.Tgkill(p.Pid, th.Tid, unix.SIGUSR1); err != nil {
			return err
		}
		if err := th.Resume(0); err != nil {
			return err
		}
		st, err := p.Wait()
		if err != nil {
			return err
		}
		if st.Kind != StopSignal || st.Sig != int(unix.SIGUSR1) || st.Info.Code() != -6 /* SI_TKILL */ {
			return fmt.Errorf("stop %v signal %d code %d, want the SIGUSR1 sent by tgkill", st.Kind, st.Sig, st.Info.Code())
		}
		var sigRegs unix.PtraceRegs
		if err := th.Regs(&sigRegs); err != nil {
			return err
		}
		if sigRegs != before {
			return fmt.Errorf("registers at the signal's stop:\n%+v\nwant\n%+v", sigRegs, before)
		}
		info, err := th.Siginfo()
		if err != nil || info.Signo() != int(unix.SIGUSR1) || info.Code() != -6 {
			return fmt.Errorf("the signal's siginfo after the call: signal %d code %d (%v), want SIGUSR1 from tgkill", info.Signo(), info.Code(), err)
		}
		if maps, err = procmaps.Read(p.Pid); err != nil {
			return err
		}
		i := slices.IndexFunc(maps, func(m procmaps.Mapping) bool { return m.Contains(rw.Start) })
		if i < 0 || maps[i].Prot != rw.Prot {
			return fmt.Errorf("at the signal's stop the page is not %v, as the call gives it back: %v", rw.Prot, maps)
		}
		if err := th.Resume(0); err != nil { // the program has no handler
			return err
		}
		if _, after, err = back(); err != nil {
			return err
		}
		if after != want {
			return fmt.Errorf("registers after the signal's stop:\n%+v\nwant\n%+v", after, want)
		}
		// A call that fails: mprotect of nothing mapped (ENOMEM).
		after.Rip = before.Rip
		if err := th.SetRegs(&after); err != nil {
			return err
		}
		if !th.MprotectOnResume(0x10000, 4096, unix.PROT_READ) {
			return fmt.Errorf("MprotectOnResume refused the second call")
		}
		if err := th.Resume(0); err != nil {
			return err
		}
		st, regs, err := back()
		if err != nil {
			return err
		}
		if !p.StubFailed(st, regs.Rip) {
			return fmt.Errorf("the failed call stopped at %#x, not at the stub's int3 (%#x)", regs.Rip, uint64(page)+stubTrap)
		}
		if err := th.LeaveStub(); !errors.Is(err, unix.ENOMEM) {
			return fmt.Errorf("LeaveStub after a failed call: %v, want ENOMEM", err)
		}
		if err := th.Regs(&regs); err != nil {
			return err
		}
		if regs != before {
			return fmt.Errorf("registers after LeaveStub:\n%+v\nwant\n%+v", regs, before)
		}
		// The program runs on as it would: its page, its byte, its
		// output and status.
		if err := p.WriteMemory(before.Rip, orig[:]); err != nil {
			return err
		}
		if err := th.Mprotect(rw.Start, 4096, rw.Prot); err != nil {
			return err
		}
		if err := p.ResumeAll(); err != nil {
			return err
		}
		return finishThreadsExit(p, out)
	})
}
