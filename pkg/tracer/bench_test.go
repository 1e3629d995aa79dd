package tracer

import (
	"fmt"
	"os"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
	"golang.org/x/sys/unix"
)

// BenchmarkPtraceFloor measures the bare cost of one ptrace stop and
// resume, with the register round trip every trapped write needs at least:
// stop, GETREGS, SETREGS, CONT. Nothing memtrap does per write can be
// cheaper; scripts/bench/bench reports its ratios against this.
func BenchmarkPtraceFloor(b *testing.B) {
	prog := fixture.Build(b, "scripts/bench/workload.c", "-O1", "-pthread")
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devnull.Close()
	err = Locked(func() error {
		p, err := Launch([]string{prog, "int3", fmt.Sprint(b.N)}, LaunchOptions{Stdio: [3]*os.File{nil, devnull, nil}})
		if err != nil {
			return err
		}
		defer p.Close()
		if _, err := p.RunToEntry(); err != nil {
			return err
		}
		b.ResetTimer()
		if err := p.ResumeAll(); err != nil {
			return err
		}
		var regs unix.PtraceRegs
		for {
			st, err := p.Wait()
			if err != nil {
				return err
			}
			switch st.Kind {
			case StopExited:
				return nil
			case StopSignal:
				if st.Sig == int(unix.SIGTRAP) {
					if err := st.Thread.Regs(&regs); err != nil {
						return err
					}
					if err := st.Thread.SetRegs(&regs); err != nil {
						return err
					}
					st.Thread.Resume(0)
					continue
				}
				st.Thread.Resume(st.Sig)
			default:
				st.Thread.Resume(0)
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
}
