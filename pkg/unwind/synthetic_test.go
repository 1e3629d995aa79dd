package unwind

import (
	"debug/elf"
	"encoding/binary"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// noModules maps no code: every frame is unwound without CFI.
type noModules struct{}

func (noModules) ModuleAt(uint64) (*elf.File, uint64, string, bool) { return nil, 0, "", false }

// byteMem is memory made of a few byte ranges.
type byteMem map[uint64][]byte

func (m byteMem) ReadMemory(addr uint64, p []byte) error {
	for base, b := range m {
		if addr >= base && addr+uint64(len(p)) <= base+uint64(len(b)) && addr+uint64(len(p)) >= addr {
			copy(p, b[addr-base:])
			return nil
		}
	}
	return errUnreadable
}

func (m byteMem) put64(addr, v uint64) {
	for base, b := range m {
		if addr >= base && addr+8 <= base+uint64(len(b)) {
			binary.LittleEndian.PutUint64(b[addr-base:], v)
			return
		}
	}
	panic("put64 outside memory")
}

func pcs(frames []Frame) []uint64 {
	var out []uint64
	for _, f := range frames {
		out = append(out, f.PC)
	}
	return out
}

func TestFramePointerChain(t *testing.T) {
	const stack = 0x7000
	newMem := func() byteMem { return byteMem{stack: make([]byte, 0x1000)} }
	for _, tc := range []struct {
		name  string
		setup func(m byteMem) Regs
		want  []uint64
	}{
		{"chain to rbp 0", func(m byteMem) Regs {
			m.put64(stack+0x100, stack+0x200) // frame 0's saved rbp
			m.put64(stack+0x108, 0x401111)    // its return address
			m.put64(stack+0x200, 0)
			m.put64(stack+0x208, 0x402222)
			return Regs{regRIP: 0x400000, regRSP: stack + 0x80, regRBP: stack + 0x100}
		}, []uint64{0x400000, 0x401111, 0x402222}},
		{"zero return address", func(m byteMem) Regs {
			m.put64(stack+0x100, stack+0x200)
			m.put64(stack+0x108, 0)
			return Regs{regRIP: 0x400000, regRSP: stack + 0x80, regRBP: stack + 0x100}
		}, []uint64{0x400000}},
		{"rbp points at itself", func(m byteMem) Regs {
			m.put64(stack+0x100, stack+0x100)
			m.put64(stack+0x108, 0x401111)
			return Regs{regRIP: 0x400000, regRSP: stack + 0x80, regRBP: stack + 0x100}
		}, []uint64{0x400000, 0x401111}},
		{"rbp points down the stack", func(m byteMem) Regs {
			m.put64(stack+0x100, stack+0x40)
			m.put64(stack+0x108, 0x401111)
			m.put64(stack+0x40, stack+0x300)
			m.put64(stack+0x48, 0x402222)
			return Regs{regRIP: 0x400000, regRSP: stack + 0x80, regRBP: stack + 0x100}
		}, []uint64{0x400000, 0x401111}},
		{"rbp below rsp", func(byteMem) Regs {
			return Regs{regRIP: 0x400000, regRSP: stack + 0x80, regRBP: stack + 0x40}
		}, []uint64{0x400000}},
		{"rbp unreadable", func(byteMem) Regs {
			return Regs{regRIP: 0x400000, regRSP: stack + 0x80, regRBP: 0x900000}
		}, []uint64{0x400000}},
		{"misaligned rbp", func(byteMem) Regs {
			return Regs{regRIP: 0x400000, regRSP: stack + 0x80, regRBP: stack + 0x101}
		}, []uint64{0x400000}},
		{"pc 0", func(byteMem) Regs { return Regs{regRSP: stack} }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMem()
			regs := tc.setup(m)
			frames := New(noModules{}).Unwind(regs, m, 16)
			if got := pcs(frames); !slices.Equal(got, tc.want) {
				t.Fatalf("PCs %#x, want %#x", got, tc.want)
			}
			for i, f := range frames {
				if i > 0 {
					// The chain gives rbp, rsp and rip, nothing more.
					checkRegs(t, f, 1<<regRBP|1<<regRSP|1<<regRIP, Regs{regRBP: f.Regs[regRBP], regRSP: frames[i-1].CFA, regRIP: f.PC})
				}
				wantMethod := "fp"
				if i == len(frames)-1 && (tc.name != "zero return address") {
					wantMethod = ""
				}
				if f.Method != wantMethod {
					t.Errorf("frame %d method %q, want %q", i, f.Method, wantMethod)
				}
			}
		})
	}
}

func TestSigtrampWithoutCFI(t *testing.T) {
	const (
		code  = 0x500000
		stack = 0x7000
		uc    = stack + 0x100
	)
	for _, tc := range []struct {
		name string
		pc   uint64
	}{
		{"at the trampoline", code},
		{"stopped at its syscall", code + sigreturnSyscallOffset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := byteMem{code: sigreturnCode[:], stack: make([]byte, 0x1000)}
			// The interrupted registers, in struct sigcontext order.
			g := uint64(uc + ucMcontextOffset)
			m.put64(g+10*8, stack+0x800) // rbp
			m.put64(g+11*8, 0xb0b)       // rbx
			m.put64(g+15*8, stack+0x700) // rsp
			m.put64(g+16*8, 0x401234)    // rip
			m.put64(stack+0x800, 0)      // the interrupted frame's caller: none
			m.put64(stack+0x808, 0)
			frames := New(noModules{}).Unwind(Regs{regRIP: tc.pc, regRSP: uc}, m, 8)
			want := []Frame{
				{PC: tc.pc, CFA: stack + 0x700, Method: "sigframe"},
				{PC: 0x401234, CFA: stack + 0x810, Signal: true, Method: "fp"},
			}
			if !slices.Equal(withoutRegs(frames), want) {
				t.Errorf("frames\n%+v\nwant\n%+v", frames, want)
			}
			// The kernel saved every register of the interrupted frame.
			if len(frames) == 2 {
				checkRegs(t, frames[1], AllRegs, Regs{regRBP: stack + 0x800, regRBX: 0xb0b, regRSP: stack + 0x700, regRIP: 0x401234})
			}
		})
	}
	t.Run("not a trampoline", func(t *testing.T) {
		code2 := slices.Clone(sigreturnCode[:])
		code2[3] = 0x0e // mov $14: rt_sigprocmask, not sigreturn
		m := byteMem{code: code2, stack: make([]byte, 0x1000)}
		frames := New(noModules{}).Unwind(Regs{regRIP: code, regRSP: uc}, m, 8)
		if len(frames) != 1 || frames[0].Method != "" {
			t.Errorf("frames %+v, want frame 0 alone", frames)
		}
	})
}

func TestRegsFromPtrace(t *testing.T) {
	r := unix.PtraceRegs{Rax: 1, Rdx: 2, Rcx: 3, Rbx: 4, Rsi: 5, Rdi: 6, Rbp: 7, Rsp: 8,
		R8: 9, R9: 10, R10: 11, R11: 12, R12: 13, R13: 14, R14: 15, R15: 16, Rip: 17}
	want := Regs{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}
	if got := RegsFromPtrace(&r); got != want {
		t.Errorf("RegsFromPtrace = %v, want %v", got, want)
	}
}
