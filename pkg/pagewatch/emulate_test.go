package pagewatch

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"
)

// TestEmulatorMatchesStepper runs a program that writes watched memory in
// every way the emulator handles (glibc's memset and memcpy, REP string
// ops, read-modify-writes, moves) once with the Stepper alone and once
// with the Emulator: the Writes and the program's output must be the same,
// and most faults must take the fast path.
func TestEmulatorMatchesStepper(t *testing.T) {
	prog := fixture.Build(t, "pkg/pagewatch/testdata/emustores.c", "-O1", "-no-pie", "-fno-builtin")
	buf, counter := symbolAddr(t, prog, "buf"), symbolAddr(t, prog, "counter")
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
	text := symbolAddr(t, prog, "main")
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
			if why := w.reachable(c.dst, c.src); why != c.why {
				t.Errorf("reachable(%#x, %#x) = %q, want %q", c.dst, c.src, why, c.why)
			}
		}
		w.pages[pageDown(area)].shared = true
		if why := w.reachable(span{area + 100, area + 101}, span{}); why != "armed page of a shared mapping" {
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
func modOffset(maps []tracer.Mapping, pc uint64) string {
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

func TestALUResult(t *testing.T) {
	for _, c := range []struct {
		op          x86asm.Op
		a, b, n     uint64
		flags       uint64
		res, wantFl uint64
	}{
		{x86asm.ADD, 0x7f, 1, 1, 0, 0x80, flagSF | flagOF | flagAF},
		{x86asm.ADD, 0xff, 1, 1, 0, 0, flagCF | flagZF | flagAF | flagPF},
		{x86asm.ADC, 0xffffffffffffffff, 0, 8, flagCF, 0, flagCF | flagZF | flagAF | flagPF},
		{x86asm.SUB, 0, 1, 2, 0, 0xffff, flagCF | flagSF | flagAF | flagPF},
		{x86asm.SBB, 0x8000, 0, 2, flagCF, 0x7fff, flagOF | flagAF | flagPF},
		{x86asm.SBB, 5, 0xffffffff, 4, flagCF, 5, flagCF | flagPF | flagAF},
		{x86asm.INC, 0xffffffff, 0, 4, flagCF, 0, flagCF | flagZF | flagAF | flagPF},
		{x86asm.DEC, 0, 0, 4, 0, 0xffffffff, flagSF | flagAF | flagPF},
		{x86asm.NEG, 0x80, 0, 1, 0, 0x80, flagCF | flagOF | flagSF},
		{x86asm.NEG, 0, 0, 8, flagCF, 0, flagZF | flagPF},
		{x86asm.AND, 0xf0, 0x0f, 1, flagCF | flagOF | flagAF, 0, flagZF | flagPF},
		{x86asm.XOR, 0x8000000000000000, 1, 8, 0, 0x8000000000000001, flagSF},
		{x86asm.NOT, 0x0f, 0, 1, flagCF | flagZF, 0xf0, flagCF | flagZF},
		// Sources come sign-extended: only the operand's bits count.
		{x86asm.ADD, 1, ^uint64(0), 2, 0, 0, flagCF | flagZF | flagAF | flagPF},
	} {
		res, fl := aluResult(c.op, c.a, c.b, c.n, c.flags|0x202)
		if res != c.res || fl != c.wantFl|0x202 {
			t.Errorf("%v %#x, %#x (%d bytes, flags %#x) = %#x flags %#x; want %#x flags %#x", c.op, c.a, c.b, c.n, c.flags, res, fl, c.res, c.wantFl|0x202)
		}
	}
}

// TestEmulateRefuses lists what must go to the fallback.
func TestEmulateRefuses(t *testing.T) {
	fake := &fakeTarget{}
	for _, c := range []struct {
		code string
		regs func(*unix.PtraceRegs)
		why  string
	}{
		{"f0 0f ab 07", nil, "locked"},                                   // lock bts [rdi], eax
		{"0f c7 0f", nil, "op CMPXCHG8B"},                                // cmpxchg8b [rdi]
		{"0f 29 07", func(r *unix.PtraceRegs) { r.Rdi++ }, "misaligned"}, // movaps [rdi+1], xmm0
		{"62 f2 7e 49 32 07", nil, "op VPMOVQB"},                         // vpmovqb [rdi]{k1}, zmm0
		{"62 f2 7d 49 8a 07", nil, "op VCOMPRESSPS"},                     // vcompressps [rdi]{k1}, zmm0
		{"62 f2 7d 49 a0 14 88", nil, "store not decoded"},               // vpscatterdd [rax+zmm1*4]{k1}, zmm2
		{"89 07", func(r *unix.PtraceRegs) { r.Eflags |= flagTF }, "trap flag set"},
		{"89 07", func(r *unix.PtraceRegs) { r.Eflags |= flagAC }, "alignment check on"},
		{"67 f3 aa", nil, "32-bit address size"},
		{"d1 27", nil, "op SHL"},
		{"8b 07", nil, "writes nothing"}, // mov eax, [rdi]
	} {
		regs := testRegs()
		regs.Rdi = 0x7f0000020000
		if c.regs != nil {
			c.regs(&regs)
		}
		s, err := DecodeStore(mustHex(t, c.code), &regs)
		if err != nil {
			t.Fatalf("%s: %v", c.code, err)
		}
		var em emulation
		if why := em.run(&s, &regs, fake); why != c.why {
			t.Errorf("%s (%v): %q, want %q", c.code, s.Inst, why, c.why)
		}
	}
}

// TestEmulateLongRep: a REP string op over more than maxEmulated bytes is
// emulated for its first maxEmulated bytes and left on its instruction, with
// RCX, RDI and RSI where an interrupted one leaves them, in both directions.
func TestEmulateLongRep(t *testing.T) {
	fake := &fakeTarget{}
	for _, c := range []struct {
		code string
		w    uint64
		down bool
	}{{"f3 aa", 1, false}, {"f3 aa", 1, true}, {"f3 48 a5", 8, false}, {"f3 48 a5", 8, true}} {
		regs := testRegs()
		regs.Rdi, regs.Rsi = 0x7f0000800000, 0x7f0010800000
		regs.Rcx = 3 * maxEmulated / c.w
		if c.down {
			regs.Eflags |= flagDF
		}
		s, err := DecodeStore(mustHex(t, c.code), &regs)
		if err != nil {
			t.Fatal(err)
		}
		var em emulation
		if why := em.run(&s, &regs, fake); why != "" {
			t.Fatalf("%s: %s", c.code, why)
		}
		n := uint64(maxEmulated)
		lo := regs.Rdi
		if c.down {
			lo = regs.Rdi + c.w - n
		}
		step := func(r uint64) uint64 {
			if c.down {
				return r - n
			}
			return r + n
		}
		if uint64(len(em.data)) != n || em.addr != lo || em.regs.Rip != regs.Rip || em.regs.Rcx != regs.Rcx-n/c.w ||
			em.regs.Rdi != step(regs.Rdi) || c.w == 8 && em.regs.Rsi != step(regs.Rsi) {
			t.Errorf("%s down=%v: %d bytes at %#x, rip %#x rcx %#x rdi %#x rsi %#x", c.code, c.down, len(em.data), em.addr, em.regs.Rip, em.regs.Rcx, em.regs.Rdi, em.regs.Rsi)
		}
	}
}
