package pagewatch

import (
	"debug/elf"
	"fmt"
	"os"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
	"github.com/memtrap/memtrap/pkg/tracer"
)

// BenchmarkTrappedWrite: the whole cost of one trapped write to a watched
// counter, from the target's store to its resumption, for each completer,
// with the options `memtrap run --backtrace 0` uses.
func BenchmarkTrappedWrite(b *testing.B) {
	prog := fixture.Build(b, "scripts/bench/workload.c", "-O1", "-no-pie", "-pthread")
	f, err := elf.Open(prog)
	if err != nil {
		b.Fatal(err)
	}
	syms, err := f.Symbols()
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	var hot uint64
	for _, s := range syms {
		if s.Name == "hot" {
			hot = s.Value
		}
	}
	for _, c := range []struct {
		name string
		c    Completer
	}{{"emulator", Emulator{}}, {"stepper", Stepper{}}} {
		b.Run(c.name, func(b *testing.B) {
			var stats Stats
			var end tracer.Stop
			var est EmulatorStats
			if e, ok := c.c.(Emulator); ok {
				e.Stats = &est
				c.c = e
			}
			err := tracer.Locked(func() error {
				devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
				if err != nil {
					return err
				}
				defer devnull.Close()
				p, err := tracer.Launch([]string{prog, "write", fmt.Sprint(b.N)}, tracer.LaunchOptions{Stdio: [3]*os.File{nil, devnull, nil}})
				if err != nil {
					return err
				}
				defer p.Close()
				th, err := p.RunToEntry()
				if err != nil {
					return err
				}
				// As `memtrap run --backtrace 0` does.
				opts := Options{Completer: c.c, KernelWrites: true, SyscallFilter: true}
				w, err := New(p, []*Region{{Name: "counter", Addr: hot, Len: 8}}, opts)
				if err != nil {
					return err
				}
				if err := w.Arm(th); err != nil {
					return err
				}
				b.ResetTimer()
				if err := p.ResumeAll(); err != nil {
					return err
				}
				if end, err = w.Run(); err != nil {
					return err
				}
				b.StopTimer()
				stats = w.Stats()
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			if stats.Writes != b.N {
				b.Fatalf("%d writes reported, want %d (%+v; target ended with %#x; emulator %+v)", stats.Writes, b.N, stats, uint32(end.Status), est)
			}
		})
	}
}
