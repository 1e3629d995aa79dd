package session

import (
	"io"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
	"github.com/memtrap/memtrap/pkg/pagewatch"
	"github.com/memtrap/memtrap/pkg/tracer"
)

// BenchmarkUnwindSymbolize: what reporting costs per trapped write beyond
// the trap itself: a 10-frame CFI unwind of a live, stopped thread and the
// symbolization (function, module, file:line) of every frame.
func BenchmarkUnwindSymbolize(b *testing.B) {
	prog := fixture.Build(b, "cmd/memtrap/testdata/deep.c", "-O0", "-g")
	o := Options{Backtrace: 10, Format: "json", Out: io.Discard, Width: 8, Engine: "page", Completer: "emulate",
		Specs: []Spec{{Symbol: "value"}}}
	err := tracer.Locked(func() error {
		p, err := tracer.Launch([]string{prog}, tracer.LaunchOptions{})
		if err != nil {
			return err
		}
		defer p.Kill()
		se := newSession(o)
		se.p = p
		th, err := p.RunToEntry()
		if err != nil {
			return err
		}
		regions, err := se.resolve()
		if err != nil {
			return err
		}
		opts := se.watchOptions()
		var frames int
		opts.Unwind = true
		opts.Report = func(w *pagewatch.Write) (func() error, error) {
			// The writer stays stopped through all b.N reports.
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				finish, err := se.onReport(w)
				if err != nil {
					return nil, err
				}
				if err := finish(); err != nil {
					return nil, err
				}
			}
			b.StopTimer()
			frames = 10
			return nil, nil
		}
		w, err := pagewatch.New(p, regions, opts)
		if err != nil {
			return err
		}
		if err := w.Arm(th); err != nil {
			return err
		}
		if err := p.ResumeAll(); err != nil {
			return err
		}
		_, err = w.Run()
		if frames == 0 {
			b.Fatal("no write trapped")
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
}
