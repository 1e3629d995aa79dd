package store

import (
	"errors"
	"math/rand/v2"
	"testing"

	"golang.org/x/sys/unix"
)

// fuzzRegs derives a register file from seed, with values of every
// magnitude so that small counts and near-wrapping addresses both occur.
func fuzzRegs(seed, eflags uint64) unix.PtraceRegs {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	v := func() uint64 { return r.Uint64() >> r.UintN(65) }
	return unix.PtraceRegs{
		Rax: v(), Rbx: v(), Rcx: v(), Rdx: v(), Rsi: v(), Rdi: v(), Rbp: v(), Rsp: v(),
		R8: v(), R9: v(), R10: v(), R11: v(), R12: v(), R13: v(), R14: v(), R15: v(),
		Rip: v(), Eflags: eflags, Fs_base: v(), Gs_base: v(),
	}
}

func FuzzDecodeStore(f *testing.F) {
	for _, c := range storeCases {
		f.Add(mustHex(f, c.code), uint64(len(c.name)), uint64(0x246))
		f.Add(mustHex(f, c.code), uint64(len(c.name)), uint64(0x246|dfFlag))
	}
	f.Add([]byte{0x66, 0x0f, 0x04}, uint64(1), uint64(0))
	f.Add([]byte{0xc5, 0xfe, 0x7f}, uint64(2), uint64(0))
	f.Fuzz(func(t *testing.T, code []byte, seed, eflags uint64) {
		regs := fuzzRegs(seed, eflags)
		s, err := Decode(code, &regs)
		if err != nil {
			if !errors.Is(err, ErrUndecodable) || s.Known || s.Len != 0 || s.Size != 0 {
				t.Fatalf("% x: %+v, %v", code, s, err)
			}
			return
		}
		if s.Len < 1 || s.Len > maxInstLen || s.Len > len(code) || s.Len != s.Inst.Len || s.Inst.Op == 0 {
			t.Fatalf("% x: Len %d, Inst %v", code, s.Len, s.Inst)
		}
		if s.Known && !s.Rep && s.Size > 1<<40 {
			t.Fatalf("% x (%v): Size %d", code, s.Inst, s.Size)
		}
		if s.Size > 0 && s.Addr+s.Size < s.Addr {
			t.Fatalf("% x (%v): [%#x, +%d) wraps", code, s.Inst, s.Addr, s.Size)
		}
		if s.Rep && !WritesMemory(s.Inst.Op) && s.Size != 0 {
			t.Fatalf("% x (%v): a REP read op writes %d bytes", code, s.Inst, s.Size)
		}
		// The bytes after the instruction must not matter.
		again, err := Decode(code[:s.Len], &regs)
		if err != nil || again.Len != s.Len || again.Addr != s.Addr || again.Size != s.Size || again.Known != s.Known || again.Rep != s.Rep {
			t.Fatalf("% x: %+v; its first %d bytes alone: %+v, %v", code, s, s.Len, again, err)
		}
	})
}
