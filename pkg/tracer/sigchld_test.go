package tracer

import (
	"os"
	"os/signal"
	"testing"
	"time"

	"github.com/memtrap/memtrap/internal/fixture"
	"golang.org/x/sys/unix"
)

// A tracee's ptrace stops must not signal memtrap (see quietChildStops):
// 500 breakpoint stops, then an exit, give at most the exit's SIGCHLD and
// the exit status is still there for wait4.
func TestChildStopsSendNoSigchld(t *testing.T) {
	prog := fixture.Build(t, "scripts/bench/workload.c", "-O1", "-pthread")
	const traps = 500
	ch := make(chan os.Signal, 2*traps)
	signal.Notify(ch, unix.SIGCHLD)
	defer signal.Stop(ch)
	stops := 0
	err := Locked(func() error {
		p, out := launch(t, prog, "int3", "500")
		defer p.Close()
		defer out.Close()
		if _, err := p.RunToEntry(); err != nil {
			return err
		}
		if err := p.ResumeAll(); err != nil {
			return err
		}
		for {
			st, err := p.Wait()
			if err != nil {
				return err
			}
			switch {
			case st.Kind == StopExited:
				if !st.Status.Exited() || st.Status.ExitStatus() != 0 {
					t.Errorf("exit status %#x, want exit 0", uint32(st.Status))
				}
				return nil
			case st.Kind == StopSignal && st.Sig == int(unix.SIGTRAP):
				stops++
				st.Thread.Resume(0)
			case st.Kind == StopSignal:
				st.Thread.Resume(st.Sig)
			default:
				st.Thread.Resume(0)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if stops != traps {
		t.Fatalf("%d breakpoint stops, want %d", stops, traps)
	}
	time.Sleep(50 * time.Millisecond) // let os/signal deliver what came
	if n := len(ch); n > 2 {
		t.Fatalf("%d SIGCHLDs for %d ptrace stops and one exit; want at most 2", n, traps)
	}
}
