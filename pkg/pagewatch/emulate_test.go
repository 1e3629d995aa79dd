package pagewatch

import (
	"bytes"
	"fmt"
	"github.com/memtrap/memtrap/pkg/procmaps"
	"strings"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
	"github.com/memtrap/memtrap/pkg/tracer"
)

// TestEmulatorMatchesStepper runs a program that writes watched memory in
// every way the emulator handles (glibc's memset and memcpy, REP string
// ops, read-modify-writes, moves) once with the Stepper alone and once
// with the Emulator: the Writes and the program's output must be the same,
// and most faults must take the fast path.
func TestEmulatorMatchesStepper(t *testing.T) {
	prog := fixture.Build(t, "pkg/pagewatch/testdata/emustores.c", "-O1", "-no-pie", "-fno-builtin")
	buf, counter := fixture.Symbol(t, prog, "buf"), fixture.Symbol(t, prog, "counter")
	t.Run("all", func(t *testing.T) {
		compareCompleters(t, prog, func() []*Region {
			return []*Region{{Name: "buf", Addr: buf, Len: 3 * 4096}, {Name: "counter", Addr: counter, Len: 8}}
		})
	})
	// Stores that run on from the armed page into unwatched ones.
	t.Run("page edge", func(t *testing.T) {
		compareCompleters(t, prog, func() []*Region { return []*Region{{Name: "edge", Addr: buf + 4000, Len: 96}} })
	})
}

func compareCompleters(t *testing.T, prog string, regions func() []*Region) {
	slow := watchRunOpts(t, prog, nil, regions(), Options{Completer: Stepper{}}, nil)
	var st EmulatorStats
	fast := watchRunOpts(t, prog, nil, regions(), Options{Completer: Emulator{Stats: &st}}, nil)

	if !strings.Contains(slow.stdout, "rmw ") || fast.stdout != slow.stdout {
		t.Errorf("output with the stepper:\n%s\nwith the emulator:\n%s", slow.stdout, fast.stdout)
	}
	if len(fast.writes) != len(slow.writes) || fast.stats != slow.stats {
		t.Fatalf("%d writes (%+v) with the emulator, %d (%+v) with the stepper", len(fast.writes), fast.stats, len(slow.writes), slow.stats)
	}
	for i, a := range slow.writes {
		b := fast.writes[i]
		// Libraries and stacks move between runs: PCs compare as module
		// offsets.
		if a.Region.Name != b.Region.Name || a.Addr != b.Addr || a.Size != b.Size || a.Insn != b.Insn ||
			modOffset(slow.maps, a.PC) != modOffset(fast.maps, b.PC) ||
			a.Exact != b.Exact || a.Seq != b.Seq || !bytes.Equal(a.Old, b.Old) || !bytes.Equal(a.New, b.New) {
			t.Fatalf("write %d differs:\nstepper  %s\nemulator %s", i, describeWrite(a), describeWrite(b))
		}
	}
	t.Logf("%d faults, %d writes: %d emulated, %d to the fallback %v", fast.stats.Faults, len(fast.writes), st.Emulated, st.Fallback, st.Why)
	if st.Emulated+st.Fallback != fast.stats.Faults {
		t.Errorf("the emulator saw %d faults of %d", st.Emulated+st.Fallback, fast.stats.Faults)
	}
	// Whatever variant of memset and memcpy glibc picks (SSE2, AVX2,
	// EVEX with masked tails), all its stores are emulated.
	if st.Emulated < 10 || st.Fallback != 0 {
		t.Errorf("%d emulated, fallbacks %v", st.Emulated, st.Why)
	}
	ops := map[string]int{}
	for _, w := range fast.writes {
		ops[strings.Fields(w.Insn)[0]]++
	}
	t.Logf("instructions: %v", ops)
	if len(regions()) > 1 {
		for _, op := range []string{"rep", "add", "inc", "neg", "sbb", "movbe", "setl"} {
			if ops[op] == 0 {
				t.Errorf("no write by %s among %v", op, ops)
			}
		}
	}
}

// TestReachable: the emulator writes only where the target could.
func TestReachable(t *testing.T) {
	prog, area := stores(t)
	text := fixture.Symbol(t, prog, "main")
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
		w, err := New(p, []*Region{{Name: "a", Addr: area + 100, Len: 8}}, Options{})
		if err != nil {
			return err
		}
		if err := w.Arm(th); err != nil {
			return err
		}
		for _, c := range []struct {
			dst, src span
			why      string
		}{
			{span{area + 100, area + 108}, span{}, ""},
			{span{area + 4000, area + 4200}, span{}, ""},                                  // on into an unwatched page
			{span{area + 100, area + 108}, span{text, text + 8}, ""},                      // reading code
			{span{text, text + 8}, span{}, "destination not writable"},                    // code
			{span{area + 4090, area + 4098}, span{0x1000, 0x1008}, "source not readable"}, // not mapped
			{span{0x1000, 0x1008}, span{}, "destination not writable"},
		} {
			if why := w.eng.(*pageEngine).reachable(c.dst, c.src); why != c.why {
				t.Errorf("reachable(%#x, %#x) = %q, want %q", c.dst, c.src, why, c.why)
			}
		}
		w.eng.(*pageEngine).pages[pageDown(area)].shared = true
		if why := w.eng.(*pageEngine).reachable(span{area + 100, area + 101}, span{}); why != "armed page of a shared mapping" {
			t.Errorf("shared armed page: %q", why)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// modOffset names pc as the offset from the start of its file's first
// mapping.
func modOffset(maps []procmaps.Mapping, pc uint64) string {
	m, ok := findMapping(maps, pc)
	if !ok {
		return fmt.Sprintf("%#x", pc)
	}
	base := m.Start - m.Offset
	for _, o := range maps {
		if o.Path == m.Path && o.Offset == 0 {
			base = o.Start
			break
		}
	}
	return fmt.Sprintf("%s+%#x", m.Path, pc-base)
}

func describeWrite(w *Write) string {
	return fmt.Sprintf("#%d %s+%d size %d pc %#x %q exact %v old % x new % x", w.Seq, w.Region.Name, w.Offset, w.Size, w.PC, w.Insn, w.Exact, w.Old, w.New)
}
