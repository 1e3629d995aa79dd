package pagewatch

import (
	"fmt"
	"github.com/memtrap/memtrap/pkg/procmaps"
	"os"
	"strings"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
	"github.com/memtrap/memtrap/pkg/tracer"
	"github.com/memtrap/memtrap/pkg/x86/store"
	"golang.org/x/sys/unix"
)

type outcome struct {
	writes []*Write
	stats  Stats
	stdout string
	status unix.WaitStatus
	maps   []procmaps.Mapping // at the first write
}

// watchRun launches prog with args, watches regions from its entry point,
// runs it to its end and returns what happened.
func watchRun(t *testing.T, prog string, args []string, regions []*Region, tweak func(*Watch)) outcome {
	return watchRunOpts(t, prog, args, regions, Options{}, tweak)
}

func watchRunOpts(t *testing.T, prog string, args []string, regions []*Region, opts Options, tweak func(*Watch)) outcome {
	t.Helper()
	var out outcome
	err := tracer.Locked(func() error {
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		defer r.Close()
		p, err := tracer.Launch(append([]string{prog}, args...), tracer.LaunchOptions{Stdio: [3]*os.File{nil, w, nil}})
		w.Close()
		if err != nil {
			return err
		}
		defer p.Close()
		th, err := p.RunToEntry()
		if err != nil {
			return err
		}
		opts.Unwind = true
		opts.Report = func(wr *Write) (func() error, error) {
			if out.maps == nil {
				out.maps, _ = procmaps.Read(p.Pid)
			}
			return func() error {
				c := *wr
				c.Thread = nil
				c.Stack = nil
				out.writes = append(out.writes, &c)
				return nil
			}, nil
		}
		wt, err := New(p, regions, opts)
		if err != nil {
			return err
		}
		if tweak != nil {
			tweak(wt)
		}
		if err := wt.Arm(th); err != nil {
			p.Kill()
			return err
		}
		if err := p.ResumeAll(); err != nil {
			return err
		}
		st, err := wt.Run()
		if err != nil {
			p.Kill()
			return err
		}
		out.stats, out.status = wt.Stats(), st.Status
		b := make([]byte, 4096)
		n, _ := r.Read(b)
		out.stdout = string(b[:n])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !out.status.Exited() || out.status.ExitStatus() != 0 {
		t.Fatalf("target status %#x", uint32(out.status))
	}
	return out
}

func stores(t *testing.T) (string, uint64) {
	prog := fixture.Build(t, "pkg/pagewatch/testdata/stores.c", "-O1", "-no-pie")
	return prog, fixture.Symbol(t, prog, "area")
}

func TestStraddlingStore(t *testing.T) {
	prog, area := stores(t)
	o := watchRun(t, prog, []string{"straddle"}, []*Region{{Name: "edge", Addr: area + 4088, Len: 16}}, nil)
	if len(o.writes) != 1 {
		t.Fatalf("%d writes, want 1", len(o.writes))
	}
	w := o.writes[0]
	if w.Offset != 4 || w.Size != 8 || !w.Exact || leValue(w.New) != 0x1122334455667788 || leValue(w.Old) != 0 {
		t.Fatalf("write %+v", w)
	}
	if o.stdout != "straddle ok\n" {
		t.Fatalf("stdout %q", o.stdout)
	}
}

func TestRepStos(t *testing.T) {
	prog, area := stores(t)
	o := watchRun(t, prog, []string{"repstos"}, []*Region{{Name: "area", Addr: area, Len: 3 * 4096}}, nil)
	if len(o.writes) != 1 {
		t.Fatalf("%d writes, want 1 (one rep stosb)", len(o.writes))
	}
	w := o.writes[0]
	if w.Offset != 100 || w.Size != 10000 || !strings.HasPrefix(w.Insn, "rep stosb") {
		t.Fatalf("write at +%d size %d insn %q", w.Offset, w.Size, w.Insn)
	}
	for i, b := range w.New {
		if b != 0xab || w.Old[i] != 0 {
			t.Fatalf("byte %d: %#x -> %#x", i, w.Old[i], b)
		}
	}
}

func TestNeighboursOnPage(t *testing.T) {
	prog, area := stores(t)
	o := watchRun(t, prog, []string{"mixed"}, []*Region{{Name: "b", Addr: area + 64, Len: 1}}, nil)
	if len(o.writes) != 100 || o.stats.Faults != 200 || o.stats.Writes != 100 {
		t.Fatalf("%d writes, stats %+v; want 100 writes of 200 faults", len(o.writes), o.stats)
	}
	for i, w := range o.writes {
		if w.New[0] != byte(i) {
			t.Fatalf("write %d: new %#x", i, w.New[0])
		}
	}
}

func TestEqualValueStoresAreWrites(t *testing.T) {
	prog, area := stores(t)
	o := watchRun(t, prog, []string{"same"}, []*Region{{Name: "w", Addr: area, Len: 4}}, nil)
	if len(o.writes) != 5 {
		t.Fatalf("%d writes, want 5", len(o.writes))
	}
}

// TestWithoutDecoder: with a decoder that knows nothing, the before/after
// comparison still reports every write that changes a watched byte.
func TestWithoutDecoder(t *testing.T) {
	prog, area := stores(t)
	blind := func(w *Watch) {
		w.decode = func([]byte, *unix.PtraceRegs) (store.Store, error) { return store.Store{}, nil }
	}
	o := watchRun(t, prog, []string{"mixed"}, []*Region{{Name: "b", Addr: area + 64, Len: 1}}, blind)
	// The first store writes 0 over 0: invisible without a decoder.
	if len(o.writes) != 99 {
		t.Fatalf("%d writes, want 99", len(o.writes))
	}
	for i, w := range o.writes {
		if w.Exact || w.New[0] != byte(i+1) || w.Old[0] != byte(i) {
			t.Fatalf("write %d: %+v", i, w)
		}
	}
	o = watchRun(t, prog, []string{"repstos"}, []*Region{{Name: "area", Addr: area, Len: 3 * 4096}}, blind)
	total := uint64(0)
	for _, w := range o.writes {
		total += w.Size
	}
	if total != 10000 {
		t.Fatalf("rep stosb seen as %d bytes in %d writes, want 10000", total, len(o.writes))
	}
}

func TestArmErrors(t *testing.T) {
	for _, r := range []*Region{{Name: "zero", Addr: 0x1000, Len: 0}, {Name: "wrap", Addr: ^uint64(0) - 4, Len: 16}} {
		if _, err := New(nil, []*Region{r}, Options{}); err == nil {
			t.Errorf("New(%v) accepted", r)
		}
	}
	prog, _ := stores(t)
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
		w, _ := New(p, []*Region{{Name: "nowhere", Addr: 0x10000, Len: 8}}, Options{})
		return w.Arm(th)
	})
	if err == nil || !strings.Contains(err.Error(), "not mapped") {
		t.Fatalf("Arm on an unmapped address: %v", err)
	}
}

// TestHardwareEngine: debug registers see every store to the slot, and
// none of the neighbours' (no faults for them at all).
func TestHardwareEngine(t *testing.T) {
	if err := tracer.CheckDebugRegisters(); err != nil {
		// pkg/tracer's TestCheckDebugRegistersAgreesWithPtrace holds the
		// check to what ptrace's debug registers do; cmd/memtrap's
		// TestEngineChoice, the refusal.
		t.Skipf("the hw engine cannot run here: %v", err)
	}
	prog, area := stores(t)
	hw := Options{Engine: EngineHW}
	o := watchRunOpts(t, prog, []string{"mixed"}, []*Region{{Name: "b", Addr: area + 64, Len: 1}}, hw, nil)
	if len(o.writes) != 100 || o.stats.Faults != 100 {
		t.Fatalf("%d writes, %d traps; want 100 and 100", len(o.writes), o.stats.Faults)
	}
	for i, w := range o.writes {
		if w.AfterPC || w.Size != 1 || w.New[0] != byte(i) || !strings.HasPrefix(w.Insn, "mov byte ptr") {
			t.Fatalf("write %d: %+v", i, w)
		}
	}
	o = watchRunOpts(t, prog, []string{"straddle"}, []*Region{{Name: "edge", Addr: area + 4088, Len: 16}}, hw, nil)
	if len(o.writes) != 1 || o.writes[0].Offset != 4 || o.writes[0].Size != 8 {
		t.Fatalf("straddle under hw: %+v", o.writes)
	}
}

func TestHWSlots(t *testing.T) {
	for _, c := range []struct {
		regions []*Region
		slots   int
		ok      bool
	}{
		{[]*Region{{Addr: 0x1000, Len: 8}}, 1, true},
		{[]*Region{{Addr: 0x1004, Len: 8}}, 2, true},
		{[]*Region{{Addr: 0x1000, Len: 32}}, 4, true},
		{[]*Region{{Addr: 0x1001, Len: 7}}, 3, true},
		{[]*Region{{Addr: 0x1000, Len: 33}}, 0, false},
		{[]*Region{{Addr: 0x1000, Len: 8}, {Addr: 0x2000, Len: 24}}, 4, true},
	} {
		s, ok := hwSlots(c.regions)
		if ok != c.ok || len(s) != c.slots {
			t.Errorf("hwSlots(%v) = %d slots, %v", c.regions, len(s), ok)
		}
	}
	if got := dr7([]slot{{0x1000, 8, nil}, {0x2000, 1, nil}}); got != 0x190005 {
		t.Errorf("dr7 = %#x", got)
	}
}

// TestRegionSetChanges: regions added and removed at a write's stop. b is
// watched from the third write to a on, a until its write of 6; a's page
// is disarmed then (no fault for its stores after), b's armed from then.
func TestRegionSetChanges(t *testing.T) {
	prog := fixture.Build(t, "pkg/pagewatch/testdata/regionset.c", "-O1", "-no-pie")
	ra := &Region{Name: "a", Addr: fixture.Symbol(t, prog, "a"), Len: 8}
	rb := &Region{Name: "b", Addr: fixture.Symbol(t, prog, "b"), Len: 8}
	for _, engine := range []string{EnginePage, EngineHW} {
		t.Run(engine, func(t *testing.T) {
			if err := tracer.CheckDebugRegisters(); engine == EngineHW && err != nil {
				t.Skipf("the hw engine cannot run here: %v", err)
			}
			change := func(w *Watch) {
				report := w.opts.Report
				w.opts.Report = func(wr *Write) (func() error, error) {
					finish, err := report(wr)
					if err != nil {
						return nil, err
					}
					switch v := leValue(wr.New); {
					case wr.Region == ra && v == 2:
						err = w.AddRegions(wr.Thread, []*Region{rb})
					case wr.Region == ra && v == 6:
						err = w.RemoveRegions(wr.Thread, []*Region{ra})
					}
					return finish, err
				}
			}
			o := watchRunOpts(t, prog, nil, []*Region{ra}, Options{Engine: engine}, change)
			var got []string
			for _, wr := range o.writes {
				got = append(got, fmt.Sprintf("%s=%d", wr.Region.Name, leValue(wr.New)))
			}
			want := "a=0 a=1 a=2 b=2 a=3 b=3 a=4 b=4 a=5 b=5 a=6 b=6 b=7 b=8 b=9"
			if strings.Join(got, " ") != want {
				t.Errorf("writes %s\nwant   %s", strings.Join(got, " "), want)
			}
			if o.stats.Faults != 15 || o.stats.Writes != 15 {
				t.Errorf("stats %+v, want 15 faults for 15 writes", o.stats)
			}
			if o.stdout != "a=9 b=9\n" {
				t.Errorf("stdout %q", o.stdout)
			}
		})
	}
}
