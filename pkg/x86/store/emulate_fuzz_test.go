package store

import (
	"testing"

	"github.com/memtrap/memtrap/pkg/x86/xsave"
	"golang.org/x/arch/x86/x86asm"
)

// fakeTarget is a process without a process: memory whose bytes are a
// function of their address, and vector registers full of a pattern.
type fakeTarget struct{ reads int }

func (f *fakeTarget) ReadMemory(addr uint64, b []byte) error {
	f.reads++
	for i := range b {
		a := addr + uint64(i)
		b[i] = byte(a*31 ^ a>>8)
	}
	return nil
}

func (f *fakeTarget) FPRegs(out *[512]byte) error {
	for i := range out {
		out[i] = byte(i * 7)
	}
	return nil
}

func (f *fakeTarget) XState(buf []byte) (int, error) {
	for i := range buf {
		buf[i] = byte(i * 13)
	}
	if len(buf) >= xsave.BVOffset+8 {
		putLE(buf[xsave.BVOffset:], ^uint64(0))
	}
	return len(buf), nil
}

// FuzzEmulate: whatever the bytes and registers, the emulator does not
// panic, and what it emulates writes exactly the decoded store and leaves
// the registers an instruction may change.
func FuzzEmulate(f *testing.F) {
	for _, c := range storeCases {
		f.Add(mustHex(f, c.code), uint64(len(c.name)), uint64(0x246))
		f.Add(mustHex(f, c.code), uint64(len(c.name)), uint64(0x246|flagDF|flagCF))
	}
	for _, code := range []string{
		"f3 a4", "f3 48 a5", "64 a4", "48 01 07", "f6 1f", "80 17 ff", "66 0f 3a 16 0f 07",
		"62 e1 fe 48 7f 0f", "c4 63 7d 39 27 01", "0f 7f 1f", "62 f3 fd 48 3b 1f 01", "66 0f 38 f1 0f",
	} {
		f.Add(mustHex(f, code), uint64(7), uint64(0x202))
	}
	fake := &fakeTarget{}
	f.Fuzz(func(t *testing.T, code []byte, seed, eflags uint64) {
		regs := fuzzRegs(seed, eflags)
		s, err := Decode(code, &regs)
		if err != nil {
			return
		}
		em, why := Emulate(&s, &regs, fake)
		if why != "" {
			return
		}
		// A long REP op is emulated in part, left on its instruction.
		partial := s.Rep && uint64(len(em.data)) < s.Size
		if partial && (em.addr < s.Addr || em.addr+uint64(len(em.data)) > s.Addr+s.Size || em.regs.Rip != regs.Rip || em.regs.Rcx == 0) {
			t.Fatalf("% x (%v): part of %d bytes at %#x of the store's %d at %#x, rip %#x rcx %#x", code, s.Inst, len(em.data), em.addr, s.Size, s.Addr, em.regs.Rip, em.regs.Rcx)
		}
		if !partial && (uint64(len(em.data)) != s.Size || em.addr != s.Addr) || s.Known == em.masked ||
			em.masked && (em.mask == 0 || s.Size < 64 && em.mask>>s.Size != 0) {
			t.Fatalf("% x (%v): emulated %d bytes at %#x; the store is %d at %#x", code, s.Inst, len(em.data), em.addr, s.Size, s.Addr)
		}
		if em.old != nil && len(em.old) != len(em.data) {
			t.Fatalf("% x (%v): %d old bytes for %d", code, s.Inst, len(em.old), len(em.data))
		}
		want := regs
		if !partial {
			want.Rip += uint64(s.Len)
		}
		want.Eflags = em.regs.Eflags
		want.Rcx, want.Rsi, want.Rdi = em.regs.Rcx, em.regs.Rsi, em.regs.Rdi
		exchange := s.Inst.Op == x86asm.XCHG || s.Inst.Op == x86asm.XADD || s.Inst.Op == x86asm.CMPXCHG
		if exchange {
			// They write their register operand (CMPXCHG: the
			// accumulator) too.
			for _, a := range s.Inst.Args[:2] {
				if r, ok := a.(x86asm.Reg); ok {
					if i, ok := gprIndex(r); ok {
						*gprPtr(&want, i) = *gprPtr(&em.regs, i)
					}
				}
			}
			want.Rax = em.regs.Rax
		}
		if s.Inst.Op == x86asm.PUSH || s.Inst.Op == x86asm.CALL {
			// They move RSP down by the slot they write; CALL jumps.
			want.Rsp = regs.Rsp - s.Size
			if s.Inst.Op == x86asm.CALL {
				want.Rip = em.regs.Rip
			}
		}
		if want != em.regs {
			t.Fatalf("% x (%v): registers %+v, from %+v", code, s.Inst, em.regs, regs)
		}
		if changed := (em.regs.Eflags ^ regs.Eflags) &^ (arithFlags | flagRF); changed != 0 {
			t.Fatalf("% x (%v): EFLAGS %#x -> %#x", code, s.Inst, regs.Eflags, em.regs.Eflags)
		}
		if (em.regs.Rcx != regs.Rcx || em.regs.Rsi != regs.Rsi || em.regs.Rdi != regs.Rdi) && !isStos(s.Inst.Op) && !isMovs(s.Inst.Op) && !exchange {
			t.Fatalf("% x (%v): a string register changed", code, s.Inst)
		}
	})
}

var _ Target = (*fakeTarget)(nil)

// gprIndex is the encoding-order index (gpr) of general register r, any
// width.
func gprIndex(r x86asm.Reg) (int, bool) {
	switch {
	case r >= x86asm.RAX && r <= x86asm.R15:
		return int(r - x86asm.RAX), true
	case r >= x86asm.EAX && r <= x86asm.R15L:
		return int(r - x86asm.EAX), true
	case r >= x86asm.AX && r <= x86asm.R15W:
		return int(r - x86asm.AX), true
	case r >= x86asm.AH && r <= x86asm.BH:
		return int(r - x86asm.AH), true
	case r >= x86asm.AL && r <= x86asm.BL:
		return int(r - x86asm.AL), true
	case r >= x86asm.SPB && r <= x86asm.R15B:
		return int(r-x86asm.SPB) + 4, true
	}
	return 0, false
}
