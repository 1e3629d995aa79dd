package unwind

import (
	"debug/elf"
	"slices"
	"testing"
)

// fileModules maps the text of one static executable (bias 0).
type fileModules struct {
	f      *elf.File
	path   string
	lo, hi uint64
}

func openFileModules(t testing.TB, path string) *fileModules {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	text := f.Section(".text")
	return &fileModules{f: f, path: path, lo: text.Addr, hi: text.Addr + text.Size}
}

func (m *fileModules) ModuleAt(pc uint64) (*elf.File, uint64, string, bool) {
	if pc < m.lo || pc >= m.hi {
		return nil, 0, "", false
	}
	return m.f, 0, m.path, true
}

func (m *fileModules) sym(t *testing.T, name string) uint64 {
	t.Helper()
	syms, err := m.f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range syms {
		if s.Name == name {
			return s.Value
		}
	}
	t.Fatalf("no symbol %s", name)
	return 0
}

// withoutRegs returns frames with their Regs and Valid cleared, for
// comparisons of the rest.
func withoutRegs(frames []Frame) []Frame {
	out := slices.Clone(frames)
	for i := range out {
		out[i].Regs, out[i].Valid = Regs{}, 0
	}
	return out
}

// checkRegs checks that a frame knows the registers valid, with the values
// regs gives them, and nothing else.
func checkRegs(t *testing.T, fr Frame, valid RegSet, regs Regs) {
	t.Helper()
	if fr.Valid != valid || fr.Regs != regs.only(valid) {
		t.Errorf("frame at %#x: registers %#x valid %#x; want %#x valid %#x", fr.PC, fr.Regs, fr.Valid, regs.only(valid), valid)
	}
}

// TestUnwindOddCFI unwinds made-up stacks through the functions of
// testdata/cfi.s, whose CFI exercises the unwinder's stopping rules and
// rarely used rules.
func TestUnwindOddCFI(t *testing.T) {
	mods := openFileModules(t, program(t, cfiAsm))
	const S = 0x7000 // rsp in frame 0
	for _, tc := range []struct {
		name  string
		setup func(m byteMem) Regs
		want  []Frame // compared without Regs and Valid
		// regs checks the registers of frame 1, if there is one.
		regs func(t *testing.T, fr Frame)
	}{
		{"CFA does not move", func(m byteMem) Regs {
			// CFA = rsp, return address at [rsp-8]: back into selfloop.
			m.put64(S-8, mods.sym(t, "selfloop")+2)
			return Regs{regRIP: mods.sym(t, "selfloop") + 1, regRSP: S}
		}, []Frame{
			{PC: mods.sym(t, "selfloop") + 1, CFA: S, Method: "cfi"},
			{PC: mods.sym(t, "selfloop") + 2, CFA: S},
		}, nil},
		{"return address undefined", func(byteMem) Regs {
			return Regs{regRIP: mods.sym(t, "outermost"), regRSP: S}
		}, []Frame{{PC: mods.sym(t, "outermost"), CFA: S + 8}}, nil},
		{"unknown CFA opcode", func(byteMem) Regs {
			return Regs{regRIP: mods.sym(t, "badcfi"), regRSP: S}
		}, []Frame{{PC: mods.sym(t, "badcfi")}}, nil},
		{"PLT entry before its push", func(m byteMem) Regs {
			m.put64(S, 0x1234)
			return Regs{regRIP: mods.sym(t, "pltlike") + 16 + 6, regRSP: S}
		}, []Frame{{PC: mods.sym(t, "pltlike") + 22, CFA: S + 8, Method: "cfi"}, {PC: 0x1234}}, nil},
		{"PLT entry after its push", func(m byteMem) Regs {
			m.put64(S+8, 0x1234)
			return Regs{regRIP: mods.sym(t, "pltlike") + 16 + 11, regRSP: S}
		}, []Frame{{PC: mods.sym(t, "pltlike") + 27, CFA: S + 16, Method: "cfi"}, {PC: 0x1234}},
			func(t *testing.T, fr Frame) {
				// rsp is the CFA, rip the return address; the callee-
				// saved registers are unchanged; the rest is lost.
				checkRegs(t, fr, calleeSaved|1<<regRIP, Regs{regRSP: S + 16, regRIP: 0x1234})
			}},
		{"signal frame: the next PC is exact", func(m byteMem) Regs {
			m.put64(S, mods.sym(t, "after_signal"))
			m.put64(S+8+16, 0x5678) // after_signal: CFA = rsp+24
			return Regs{regRIP: mods.sym(t, "sigtramp_like"), regRSP: S}
		}, []Frame{
			{PC: mods.sym(t, "sigtramp_like"), CFA: S + 8, Method: "cfi"},
			{PC: mods.sym(t, "after_signal"), CFA: S + 8 + 24, Signal: true, Method: "cfi"},
			{PC: 0x5678},
		}, nil},
		{"register and val_offset rules", func(m byteMem) Regs {
			// regrule's caller: rip from r11, rbp from r12, rbx = CFA-16;
			// then the frame pointer chain from that rbp.
			m.put64(S+0x100, 0)
			m.put64(S+0x108, 0)
			return Regs{regRIP: mods.sym(t, "regrule"), regRSP: S, 11: 0x9999, 12: S + 0x100}
		}, []Frame{
			{PC: mods.sym(t, "regrule"), CFA: S + 8, Method: "cfi"},
			{PC: 0x9999, CFA: S + 0x110, Method: "fp"},
		}, func(t *testing.T, fr Frame) {
			// r11 gave rip, but the caller's own r11 is lost: a scratch
			// register without a rule. r12 has no rule and is callee-saved.
			checkRegs(t, fr, calleeSaved|1<<regRIP,
				Regs{regRBX: S + 8 - 16, regRBP: S + 0x100, regRSP: S + 8, 12: S + 0x100, regRIP: 0x9999})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := byteMem{S - 0x100: make([]byte, 0x1000)}
			regs := tc.setup(m)
			got := New(mods).Unwind(regs, m, 16)
			if !slices.Equal(withoutRegs(got), tc.want) {
				t.Errorf("frames\n%+v\nwant\n%+v", got, tc.want)
			}
			if len(got) > 0 {
				checkRegs(t, got[0], AllRegs, regs)
			}
			if tc.regs != nil && len(got) > 1 {
				tc.regs(t, got[1])
			}
		})
	}
}
