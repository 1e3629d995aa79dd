package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
	"golang.org/x/sys/unix"
)

// CheckDebugRegisters must agree with what a debug register set through
// ptrace does: 5 traps for 5 stores where they work, none where the probe
// says they are dead. Either answer is a pass; disagreeing is the failure.
func TestCheckDebugRegistersAgreesWithPtrace(t *testing.T) {
	probe := CheckDebugRegisters()
	if probe != nil && !errors.Is(probe, ErrDebugRegsDead) {
		t.Fatalf("the probe could not run as root: %v", probe)
	}
	traps := 0
	err := Locked(func() error {
		p, addr, err := startDRWrite(t)
		if err != nil {
			return err
		}
		defer p.Close()
		armed := false
		for {
			st, err := p.Wait()
			if err != nil {
				return err
			}
			switch {
			case st.Kind == StopExited:
				if !armed {
					return errors.New("exited before its int3")
				}
				return nil
			case st.Kind == StopSignal && st.Sig == int(unix.SIGTRAP) && !armed:
				armed = true
				if err := st.Thread.SetDebugReg(0, addr); err != nil {
					return err
				}
				// L0, RW0 = 01 (writes), LEN0 = 10 (8 bytes).
				if err := st.Thread.SetDebugReg(7, 1|1<<16|2<<18); err != nil {
					return err
				}
				st.Thread.Resume(0)
			case st.Kind == StopSignal && st.Sig == int(unix.SIGTRAP):
				dr6, err := st.Thread.DebugReg(6)
				if err != nil {
					return err
				}
				if dr6&1 == 0 {
					return fmt.Errorf("SIGTRAP with DR6 %#x, not from DR0", dr6)
				}
				traps++
				st.Thread.SetDebugReg(6, 0)
				st.Thread.Resume(0)
			case st.Kind == StopSignal:
				return fmt.Errorf("signal %d", st.Sig)
			default:
				st.Thread.Resume(0)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case probe == nil && traps != 5:
		t.Fatalf("the probe says debug registers work, but ptrace's DR0 trapped %d of 5 stores", traps)
	case probe != nil && traps != 0:
		t.Fatalf("the probe says %v, but ptrace's DR0 trapped %d of 5 stores", probe, traps)
	case probe != nil:
		t.Logf("debug registers do not fire on this machine; the hw engine's own tests check the fallback instead")
	}
}

// startDRWrite launches testdata/drwrite.c and returns it running towards
// its int3, with the address of the variable it will then store to.
func startDRWrite(t *testing.T) (*Process, uint64, error) {
	prog := fixture.Build(t, "pkg/tracer/testdata/drwrite.c", "-O1")
	p, out := launch(t, prog)
	if _, err := p.RunToEntry(); err != nil {
		p.Close()
		return nil, 0, err
	}
	if err := p.ResumeAll(); err != nil {
		p.Close()
		return nil, 0, err
	}
	var addr uint64
	if _, err := fmt.Fscanf(bufio.NewReader(out), "0x%x\n", &addr); err != nil {
		p.Close()
		return nil, 0, fmt.Errorf("reading the variable's address: %w", err)
	}
	return p, addr, nil
}
