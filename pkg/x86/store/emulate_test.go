package store

import (
	"testing"

	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"
)

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
		s, err := Decode(mustHex(t, c.code), &regs)
		if err != nil {
			t.Fatalf("%s: %v", c.code, err)
		}
		if _, why := Emulate(&s, &regs, fake); why != c.why {
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
		s, err := Decode(mustHex(t, c.code), &regs)
		if err != nil {
			t.Fatal(err)
		}
		em, why := Emulate(&s, &regs, fake)
		if why != "" {
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
