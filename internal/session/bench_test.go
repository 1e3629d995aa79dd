package session

import (
	"io"
	"os"
	"strconv"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
	"github.com/memtrap/memtrap/pkg/pagewatch"
	"github.com/memtrap/memtrap/pkg/procmaps"
	"github.com/memtrap/memtrap/pkg/tracer"
	"github.com/memtrap/memtrap/pkg/unwind"
)

// BenchmarkUnwindSymbolize: what reporting costs per trapped write beyond
// the trap itself: the CFI unwind of a live, stopped thread, the
// symbolization (function, module, file:line, parameters) of every frame
// and the JSON event. Two stacks:
//
//   - deep: deep.c at -O0, a store ten frames deep (--backtrace 10);
//   - main: the bench workload's store in main at -O1, with the default
//     8 frames, through libc's start-up code, whose parameters are in
//     location lists.
//
// and two kinds of write:
//
//   - same-site: the 2nd..Nth write from one store site, as in a hot loop;
//   - new-site: a write from a site not seen before, every module already
//     indexed (the symbol table's per-pc answers and the unwinder's CFI rows
//     are started over at each write).
func BenchmarkUnwindSymbolize(b *testing.B) {
	stacks := []struct {
		name   string
		src    string
		flags  []string
		args   []string
		symbol string
		frames int
	}{
		{"deep", "cmd/memtrap/testdata/deep.c", []string{"-O0", "-g"}, nil, "value", 10},
		{"main", "scripts/bench/workload.c", []string{"-O1", "-g", "-pthread"}, []string{"write", "1"}, "hot", 8},
	}
	for _, st := range stacks {
		prog := fixture.Build(b, st.src, st.flags...)
		for _, kind := range []string{"same-site", "new-site"} {
			b.Run(st.name+"/"+kind, func(b *testing.B) {
				o := Options{Backtrace: st.frames, Format: "json", Out: io.Discard, Width: 8, Engine: "page",
					Completer: "emulate", Specs: []Spec{{Symbol: st.symbol, Len: 8}}}
				benchReports(b, append([]string{prog}, st.args...), o, kind == "new-site")
			})
		}
	}
}

// benchReports times the report of the first write argv makes to o's
// region, b.N times over; newSite starts the per-pc caches over before
// each.
func benchReports(b *testing.B, argv []string, o Options, newSite bool) {
	b.Setenv("XDG_CACHE_HOME", b.TempDir())
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer null.Close()
	err = tracer.Locked(func() error {
		p, err := tracer.Launch(argv, tracer.LaunchOptions{Stdio: [3]*os.File{nil, null, nil}})
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
		reported := false
		opts.Unwind = true
		opts.Report = func(w *pagewatch.Write) (func() error, error) {
			maps, err := procmaps.Read(w.Pid)
			if err != nil {
				return nil, err
			}
			report := func() error {
				finish, err := se.onReport(w)
				if err != nil {
					return err
				}
				return finish()
			}
			// Index every module the stack goes through.
			if err := report(); err != nil {
				return nil, err
			}
			// The writer stays stopped through all b.N reports.
			for b.Loop() {
				if newSite {
					// Another map and back: nothing learnt
					// about a pc survives.
					se.syms.Update(nil)
					se.syms.Update(maps)
					se.unw = unwind.New(se.syms)
					se.imageOf = nil
				}
				if err := report(); err != nil {
					return nil, err
				}
			}
			reported = true
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
		if !reported {
			b.Fatal("no write trapped")
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkFastSession: a whole `memtrap run --engine fast` of the bench
// workload, b.N writes with the defaults (text, 8-frame backtrace), the
// report discarded: per write, what the target waits and what memtrap's
// consumer (unwind, symbols, parameters, text) costs; with -cpuprofile,
// where the consumer's time goes.
func BenchmarkFastSession(b *testing.B) {
	prog := fixture.Build(b, "scripts/bench/workload.c", "-O1", "-g", "-pthread")
	b.Setenv("XDG_CACHE_HOME", b.TempDir())
	o := Options{Backtrace: 8, Format: "text", Color: "never", Out: io.Discard, Width: 8, Engine: "fast",
		KernelWrites: true, Specs: []Spec{{Symbol: "hot", Len: 8}}}
	b.ReportAllocs()
	code, err := Run(o, []string{prog, "write", strconv.Itoa(b.N)})
	if err != nil || code != 0 {
		b.Fatalf("exit %d, %v", code, err)
	}
}
