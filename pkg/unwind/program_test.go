package unwind

import (
	"errors"
	"strings"
	"testing"

	"github.com/memtrap/memtrap/pkg/dwarf/op"
	"github.com/memtrap/memtrap/pkg/dwarf/reader"
)

// The CIE most x86-64 code uses: CFA = rsp+8, return address at CFA-8.
var cieX86 = cat([]byte{cfaDefCFA}, uleb(regRSP), uleb(8), []byte{cfaOffset | regRIP}, uleb(1))

func TestCFAProgram(t *testing.T) {
	const lo = 0x1000
	type want struct {
		pc   uint64
		cfa  string // "reg+off" or "exp"
		regs map[uint64]rule
	}
	ra := rule{kind: ruleOffset, off: -8}
	for _, tc := range []struct {
		name  string
		debug bool
		insns []byte
		want  []want
	}{
		{
			name: "push and sub prologue",
			insns: cat([]byte{cfaAdvanceLoc | 1, cfaDefCFAOffset}, uleb(16), []byte{cfaOffset | regRBX}, uleb(2),
				[]byte{cfaAdvanceLoc | 4, cfaDefCFAOffset}, uleb(48)),
			want: []want{
				{lo, "rsp+8", map[uint64]rule{regRIP: ra, regRBX: {}}},
				{lo + 1, "rsp+16", map[uint64]rule{regRBX: {kind: ruleOffset, off: -16}}},
				{lo + 4, "rsp+16", nil},
				{lo + 5, "rsp+48", map[uint64]rule{regRBX: {kind: ruleOffset, off: -16}}},
				{lo + 0xff, "rsp+48", nil},
			},
		},
		{
			name: "advance_loc1, 2, 4 and set_loc",
			insns: cat([]byte{cfaAdvanceLoc1, 0x10, cfaDefCFAOffset}, uleb(16),
				[]byte{cfaAdvanceLoc2}, u16le(0x100), []byte{cfaDefCFAOffset}, uleb(24),
				[]byte{cfaAdvanceLoc4}, u32le(0x1000), []byte{cfaDefCFAOffset}, uleb(32),
				[]byte{cfaSetLoc}, u32le(0), []byte{cfaDefCFAOffset}, uleb(40)), // set_loc patched below
			want: []want{
				{lo + 0xf, "rsp+8", nil},
				{lo + 0x10, "rsp+16", nil},
				{lo + 0x110, "rsp+24", nil},
				{lo + 0x1110, "rsp+32", nil},
				{lo + 0x2000, "rsp+40", nil},
			},
		},
		{
			name: "every register rule",
			insns: cat(
				[]byte{cfaOffsetExtended}, uleb(regR8), uleb(3),
				[]byte{cfaOffsetExtSF}, uleb(9), sleb(4),
				[]byte{cfaGNUNegOffsetExt}, uleb(10), uleb(2),
				[]byte{cfaValOffset}, uleb(11), uleb(1),
				[]byte{cfaValOffsetSF}, uleb(12), sleb(-1),
				[]byte{cfaRegister}, uleb(13), uleb(regRAX),
				[]byte{cfaUndefined}, uleb(14),
				[]byte{cfaSameValue}, uleb(15),
				[]byte{cfaExpression}, uleb(regRBX), uleb(2), []byte{op.Breg0 + regRSP, 0x10},
				[]byte{cfaValExpression}, uleb(regRBP), uleb(1), []byte{op.Lit0 + 5},
				[]byte{cfaGNUArgsSize}, uleb(32),
				[]byte{cfaOffsetExtended}, uleb(40), uleb(1), // an xmm register: ignored
				[]byte{cfaAdvanceLoc | 2, cfaRestoreExtended}, uleb(regR8), []byte{cfaRestore | 9, cfaRestore | regRIP},
			),
			want: []want{
				{lo, "rsp+8", map[uint64]rule{
					8:  {kind: ruleOffset, off: -24},
					9:  {kind: ruleOffset, off: -32},
					10: {kind: ruleOffset, off: 16},
					11: {kind: ruleValOffset, off: -8},
					12: {kind: ruleValOffset, off: 8},
					13: {kind: ruleRegister, reg: regRAX},
					14: {kind: ruleUndefined},
					15: {kind: ruleSameValue},
				}},
				{lo + 2, "rsp+8", map[uint64]rule{8: {}, 9: {}, regRIP: ra, 10: {kind: ruleOffset, off: 16}}},
			},
		},
		{
			name: "remember and restore state, CFA included",
			insns: cat([]byte{cfaAdvanceLoc | 1, cfaDefCFAOffset}, uleb(16), []byte{cfaOffset | regRBP}, uleb(2),
				[]byte{cfaAdvanceLoc | 1, cfaRememberState, cfaDefCFAOffset}, uleb(8), []byte{cfaRestore | regRBP},
				[]byte{cfaAdvanceLoc | 1, cfaRestoreState}),
			want: []want{
				{lo + 2, "rsp+8", map[uint64]rule{regRBP: {}}},
				{lo + 3, "rsp+16", map[uint64]rule{regRBP: {kind: ruleOffset, off: -16}}},
			},
		},
		{
			name: "def_cfa forms",
			insns: cat([]byte{cfaAdvanceLoc | 1, cfaDefCFARegister}, uleb(regRBP),
				[]byte{cfaAdvanceLoc | 1, cfaDefCFASF}, uleb(regRBX), sleb(-2),
				[]byte{cfaAdvanceLoc | 1, cfaDefCFAOffsetSF}, sleb(-4),
				[]byte{cfaAdvanceLoc | 1, cfaDefCFAExpr}, uleb(2), []byte{op.Breg0 + regRSP, 8},
				[]byte{cfaAdvanceLoc | 1, cfaDefCFA}, uleb(regRSP), uleb(8)),
			want: []want{
				{lo + 1, "rbp+8", nil},
				{lo + 2, "rbx+16", nil},
				{lo + 3, "rbx+32", nil},
				{lo + 4, "exp", nil},
				{lo + 5, "rsp+8", nil},
			},
		},
		{
			name:  ".debug_frame",
			debug: true,
			insns: cat([]byte{cfaAdvanceLoc | 3, cfaDefCFAOffset}, uleb(16), []byte{cfaSetLoc}, u64le(lo+0x20), []byte{cfaDefCFAOffset}, uleb(24)),
			want: []want{
				{lo + 2, "rsp+8", nil},
				{lo + 3, "rsp+16", nil},
				{lo + 0x20, "rsp+24", nil},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &ehBuilder{addr: 0x40000, debug: tc.debug}
			c := b.cie(cieX86)
			insns := tc.insns
			if strings.HasPrefix(tc.name, "advance_loc1") {
				// DW_CFA_set_loc is pcrel|sdata4 relative to its own operand.
				i := len(insns) - 2 - 4
				fdeOff := uint64(len(b.buf))
				operand := b.addr + fdeOff + 4 + 4 + 4 + 4 + 1 + uint64(i)
				copy(insns[i:], u32le(uint32(int32(lo+0x2000-operand))))
			}
			off := b.fde(c, lo, 0x10000, insns)
			s := b.section()
			f, err := s.fdeAt(off)
			if err != nil {
				t.Fatal(err)
			}
			var m machine
			for _, w := range tc.want {
				if err := m.rowFor(s, &f, w.pc); err != nil {
					t.Fatalf("at %#x: %v", w.pc, err)
				}
				got, _ := cell(&m.row, "CFA", 16)
				if got != w.cfa {
					t.Errorf("at %#x: CFA %s, want %s", w.pc, got, w.cfa)
				}
				for reg, r := range w.regs {
					g := m.row.regs[reg]
					if g.kind != r.kind || g.off != r.off || g.reg != r.reg {
						t.Errorf("at %#x: %s rule %+v, want %+v", w.pc, regNames[reg], g, r)
					}
				}
			}
		})
	}
}

func TestCFAProgramErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		insns []byte
		want  string
	}{
		{"unknown opcode", []byte{0x3f}, "unknown CFA opcode"},
		{"restore_state with nothing remembered", []byte{cfaRestoreState}, "nothing remembered"},
		{"truncated operand", []byte{cfaDefCFA, 0x87}, "truncated"},
		{"expression longer than the program", []byte{cfaDefCFAExpr, 0x20, 1}, "truncated"},
		{"remember_state without end", bytesRepeat(cfaRememberState, maxRememberDepth+1), "too deep"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &ehBuilder{}
			off := b.fde(b.cie(cieX86), 0x1000, 0x100, nil)
			s := b.section()
			f, err := s.fdeAt(off)
			if err != nil {
				t.Fatal(err)
			}
			f.insns = tc.insns // unpadded, so truncation is truncation
			var m machine
			err = m.rowFor(s, &f, 0x1000)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tc.want)
			}
			if tc.want == "truncated" && !errors.Is(err, reader.ErrTruncated) {
				t.Errorf("err = %v, want reader.ErrTruncated", err)
			}
		})
	}
}

func bytesRepeat(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}
