package store

import (
	"bytes"
	"debug/elf"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

// The harness's fixed addresses (testdata/emuharness.c).
const (
	hCode    = 0x10000000
	hData    = 0x20000000
	hDataLen = 4 * 4096
	hEnd     = hCode + 0x800 // every instruction ends here, and an int3 follows
	hMid     = hData + 0x1000
)

// diffCase is one instruction of the differential corpus, with the state
// it starts from.
type diffCase struct {
	asm   string          // Intel syntax, as GNU as takes it
	regs  unix.PtraceRegs // RIP aside
	seed  uint64          // fills the data pages
	ea    uint64          // where val goes, if any
	val   []byte
	slow  bool // the emulator must leave it to the fallback
	fault bool // and the CPU faults (#GP: SIGSEGV)
	code  []byte
}

// amode is an addressing mode: it renders a memory operand whose
// effective address is ea and sets the registers that make it so.
type amode struct {
	name   string
	rex    bool // needs a REX prefix: no AH, CH, DH, BH alongside
	legacy bool // has a segment or address-size prefix, which x86asm cannot decode before VEX/EVEX
	mem    func(ea uint64, r *unix.PtraceRegs) string
}

var amodes = []amode{
	{"base", false, false, func(ea uint64, r *unix.PtraceRegs) string { r.Rdi = ea; return "[rdi]" }},
	{"r13+disp8", true, false, func(ea uint64, r *unix.PtraceRegs) string { r.R13 = ea - 0x10; return "[r13+0x10]" }},
	{"rsp+disp8", false, false, func(ea uint64, r *unix.PtraceRegs) string { r.Rsp = ea - 8; return "[rsp+8]" }},
	{"base+index*4+disp8", false, false, func(ea uint64, r *unix.PtraceRegs) string {
		r.Rcx, r.Rbx = 5, ea-20-0x10
		return "[rbx+rcx*4+0x10]"
	}},
	{"negative disp8", false, false, func(ea uint64, r *unix.PtraceRegs) string { r.Rbp = ea + 0x40; return "[rbp-0x40]" }},
	{"base+index*8-disp32", true, false, func(ea uint64, r *unix.PtraceRegs) string {
		r.R15, r.R12 = 3, ea+0x12345-24
		return "[r12+r15*8-0x12345]"
	}},
	{"base+disp32, base wraps", false, false, func(ea uint64, r *unix.PtraceRegs) string { r.Rax = ea - 0x7ffff000; return "[rax+0x7ffff000]" }},
	{"disp32 alone", false, false, func(ea uint64, r *unix.PtraceRegs) string { return fmt.Sprintf("[%#x]", ea) }},
	{"rip-relative", false, false, func(ea uint64, r *unix.PtraceRegs) string { return fmt.Sprintf("[rip+%#x]", ea-hEnd) }},
	{"fs:base", false, true, func(ea uint64, r *unix.PtraceRegs) string {
		r.Fs_base, r.Rdi = 0x7f1234560000, ea-0x7f1234560000
		return "fs:[rdi]"
	}},
	{"gs:base+index*2", false, true, func(ea uint64, r *unix.PtraceRegs) string {
		r.Gs_base, r.Rsi, r.Rdx = 0x10000, 0x100, ea-0x10000-0x200
		return "gs:[rdx+rsi*2]"
	}},
	{"addr32", false, true, func(ea uint64, r *unix.PtraceRegs) string {
		// EBX and EAX only: the upper halves are garbage.
		r.Rbx, r.Rax = 0xffffffff00000008, 0xdead00000000|(ea-0x10-16)&0xffffffff
		return "[eax+ebx*2+0x10]"
	}},
	{"disp8*N", false, false, func(ea uint64, r *unix.PtraceRegs) string { r.Rdi = ea - 0x40; return "[rdi+0x40]" }},
}

// corpus builds the cases.
type corpus struct {
	cases []*diffCase
	rng   *rand.Rand
	base  unix.PtraceRegs
	n     int // rotates addressing modes
}

// regs is a register file of random values (segments and bases from the
// harness) with flags f.
func (c *corpus) regs(f uint64) unix.PtraceRegs {
	r := c.base
	for _, p := range []*uint64{&r.Rax, &r.Rbx, &r.Rcx, &r.Rdx, &r.Rsi, &r.Rdi, &r.Rbp, &r.Rsp,
		&r.R8, &r.R9, &r.R10, &r.R11, &r.R12, &r.R13, &r.R14, &r.R15} {
		*p = c.rng.Uint64()
	}
	r.Rsp = c.base.Rsp // see setReg
	r.Eflags = 0x202 | f
	r.Orig_rax = ^uint64(0)
	return r
}

// mode picks the next addressing mode that allows high-byte registers if
// asked to.
func (c *corpus) mode(highByte bool) amode { return c.modeFor(highByte, false) }

// modeFor also skips the modes with legacy prefixes for VEX and EVEX.
func (c *corpus) modeFor(highByte, vex bool) amode {
	for {
		m := amodes[c.n%len(amodes)]
		c.n++
		if (!highByte || !m.rex) && (!vex || !m.legacy) {
			return m
		}
	}
}

// add renders tmpl (with M for the memory operand) at ea in mode m.
func (c *corpus) add(tmpl string, m amode, ea uint64, r unix.PtraceRegs, val []byte, slow bool) {
	asm := strings.Replace(tmpl, "M", m.mem(ea, &r), 1)
	c.cases = append(c.cases, &diffCase{asm: asm, regs: r, seed: c.rng.Uint64(), ea: ea, val: val, slow: slow})
}

func le(v uint64, n int) []byte {
	b := make([]byte, 8)
	putLE(b, v)
	return b[:n]
}

var widthPtr = map[int]string{1: "byte ptr", 2: "word ptr", 4: "dword ptr", 8: "qword ptr"}

// gprRegs are store sources by width; a set value goes in their register.
var gprRegs = map[int][]string{
	1: {"al", "ah", "bl", "ch", "dh", "sil", "dil", "r9b", "r15b", "bpl", "spl"},
	2: {"ax", "si", "r10w", "sp"},
	4: {"eax", "edx", "r11d", "esp"},
	8: {"rax", "rbp", "r14", "rsp"},
}

func isHighByte(r string) bool { return r == "ah" || r == "bh" || r == "ch" || r == "dh" }

// setReg gives the register named name (any width) value v in r, keeping
// the bits it does not cover, as the CPU would see them.
func setReg(r *unix.PtraceRegs, name string, v uint64) {
	names := [][]string{
		{"rax", "eax", "ax", "al", "ah"}, {"rcx", "ecx", "cx", "cl", "ch"}, {"rdx", "edx", "dx", "dl", "dh"},
		{"rbx", "ebx", "bx", "bl", "bh"}, {"rsp", "esp", "sp", "spl"}, {"rbp", "ebp", "bp", "bpl"},
		{"rsi", "esi", "si", "sil"}, {"rdi", "edi", "di", "dil"},
	}
	ptr := []*uint64{&r.Rax, &r.Rcx, &r.Rdx, &r.Rbx, &r.Rsp, &r.Rbp, &r.Rsi, &r.Rdi,
		&r.R8, &r.R9, &r.R10, &r.R11, &r.R12, &r.R13, &r.R14, &r.R15}
	idx, form := -1, 0
	for i, ns := range names {
		for j, n := range ns {
			if n == name {
				idx, form = i, j
			}
		}
	}
	if idx < 0 {
		var n int
		var suffix string
		fmt.Sscanf(name, "r%d%s", &n, &suffix)
		idx, form = n, map[string]int{"": 0, "d": 1, "w": 2, "b": 3}[suffix]
	}
	p := ptr[idx]
	switch form {
	case 0:
		*p = v
	case 1:
		*p = *p&^0xffffffff | v&0xffffffff
	case 2:
		*p = *p&^0xffff | v&0xffff
	case 3:
		*p = *p&^0xff | v&0xff
	case 4:
		*p = *p&^0xff00 | (v&0xff)<<8
	}
	if idx == 4 {
		// Some kernels will not return to user space with a
		// non-canonical RSP, whatever the next instruction (seen on
		// 6.18 under a PVM hypervisor: SIGSEGV, SI_KERNEL, before the
		// store). Keep it canonical.
		*p = uint64(int64(*p<<16) >> 16)
	}
}

// edges are operand values at the boundaries flags care about, for an
// n-byte operand.
func edges(n int) []uint64 {
	w := uint(8 * n)
	mask := ^uint64(0) >> (64 - w)
	sign := uint64(1) << (w - 1)
	return []uint64{0, 1, mask, sign, sign - 1, 0x0f, 0x10 & mask, 0x5a5a5a5a5a5a5a5a & mask}
}

// moves: MOV of every width from registers (high bytes and REX bytes
// included) and immediates, moffs, MOVNTI, MOVBE, segment registers, SETcc.
func (c *corpus) moves() {
	for _, n := range []int{1, 2, 4, 8} {
		for _, src := range gprRegs[n] {
			for range 3 {
				m := c.mode(isHighByte(src))
				r := c.regs(0)
				setReg(&r, src, c.rng.Uint64())
				c.add(fmt.Sprintf("mov %s M, %s", widthPtr[n], src), m, hMid+0x40+uint64(c.rng.IntN(64)), r, nil, false)
			}
		}
		imms := map[int][]string{1: {"0x7f", "0x80"}, 2: {"0x1234", "0x8001"}, 4: {"0x7fffffff", "0x80000000"}, 8: {"-2", "0x7fffffff", "-0x80000000"}}[n]
		for _, imm := range imms {
			for range 4 {
				c.add(fmt.Sprintf("mov %s M, %s", widthPtr[n], imm), c.mode(false), hMid+0x80+uint64(c.rng.IntN(64)), c.regs(0), nil, false)
			}
		}
	}
	for _, reg := range []string{"al", "ax", "eax", "rax"} {
		c.cases = append(c.cases, &diffCase{asm: fmt.Sprintf("movabs [%#x], %s", hMid+0x123, reg), regs: c.regs(0), seed: c.rng.Uint64()})
	}
	// Straddling a page boundary.
	for _, n := range []int{2, 4, 8} {
		c.add(fmt.Sprintf("mov %s M, %s", widthPtr[n], gprRegs[n][0]), c.mode(false), hMid+0x1000-1, c.regs(0), nil, false)
	}
	for _, tmpl := range []string{"movnti dword ptr M, r8d", "movnti qword ptr M, r9", "movbe word ptr M, cx", "movbe dword ptr M, r10d", "movbe qword ptr M, r11"} {
		for range 4 {
			r := c.regs(0)
			r.Rcx, r.R10, r.R11, r.R8, r.R9 = 0x0102030405060708, 0x1112131415161718, 0x2122232425262728, 0x31323334, 0x4142434445464748
			c.add(tmpl, c.mode(false), hMid+0x200+uint64(c.rng.IntN(32)), r, nil, false)
		}
	}
	for _, seg := range []string{"es", "cs", "ss", "ds", "fs", "gs"} {
		c.add("mov word ptr M, "+seg, c.mode(false), hMid+0x300, c.regs(0), nil, false)
	}
	conds := []string{"o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g"}
	flagSets := []uint64{0, arithFlags, flagCF | flagZF, flagSF, flagOF, flagSF | flagOF | flagPF, flagZF | flagSF}
	for _, cc := range conds {
		for _, f := range flagSets {
			c.add("set"+cc+" byte ptr M", c.mode(false), hMid+0x400+uint64(c.rng.IntN(16)), c.regs(f), nil, false)
		}
	}
}

// alu: the read-modify-write ops at the flags' edge values, and what must
// not be emulated.
func (c *corpus) alu() {
	binary := []string{"add", "adc", "sub", "sbb", "and", "or", "xor"}
	for _, op := range binary {
		for _, n := range []int{1, 2, 4, 8} {
			srcs := map[int][]string{1: {"dl", "ah", "sil", "r14b"}, 2: {"r8w", "bp"}, 4: {"esi", "r13d"}, 8: {"r9", "rdx"}}[n]
			vals := edges(n)
			for _, a := range vals {
				for _, b := range vals[:5] {
					for _, cf := range []uint64{0, flagCF} {
						if c.rng.IntN(3) != 0 {
							continue // a third of the grid, all ops and widths
						}
						src := srcs[c.rng.IntN(len(srcs))]
						r := c.regs(cf | uint64(c.rng.IntN(2))*(flagZF|flagSF|flagAF))
						setReg(&r, src, b)
						ea := hMid + 0x500 + uint64(c.rng.IntN(64))
						c.add(fmt.Sprintf("%s %s M, %s", op, widthPtr[n], src), c.mode(isHighByte(src)), ea, r, le(a, n), false)
					}
				}
				imms := []string{"-1", "0x7f"}
				switch n {
				case 1:
					imms = append(imms, "0x80")
				case 2:
					imms = append(imms, "0x8000")
				default:
					imms = append(imms, "0x7fffffff", "-0x80000000")
				}
				for _, imm := range imms {
					cf := uint64(c.rng.IntN(2)) * flagCF
					c.add(fmt.Sprintf("%s %s M, %s", op, widthPtr[n], imm), c.mode(false), hMid+0x600+uint64(c.rng.IntN(64)), c.regs(cf), le(a, n), false)
				}
			}
		}
	}
	for _, op := range []string{"inc", "dec", "neg", "not"} {
		for _, n := range []int{1, 2, 4, 8} {
			for _, a := range edges(n) {
				for _, cf := range []uint64{0, flagCF} {
					f := cf | uint64(c.rng.IntN(2))*(flagOF|flagPF)
					c.add(fmt.Sprintf("%s %s M", op, widthPtr[n]), c.mode(false), hMid+0x700+uint64(c.rng.IntN(64)), c.regs(f), le(a, n), false)
				}
			}
		}
	}
	// Locked, and the exchanges: emulated too (see lockable).
	srcs := map[int][]string{1: {"dl", "ah", "sil", "r14b", "al"}, 2: {"r8w", "bp", "ax"}, 4: {"esi", "r13d", "eax"}, 8: {"r9", "rdx", "rax"}}
	acc := map[int]string{1: "al", 2: "ax", 4: "eax", 8: "rax"}
	for _, n := range []int{1, 2, 4, 8} {
		vals := edges(n)
		for _, op := range []string{"lock add", "lock sub", "lock and", "lock or", "lock xor", "lock adc", "lock sbb"} {
			a, b := vals[c.rng.IntN(len(vals))], vals[c.rng.IntN(len(vals))]
			src := srcs[n][c.rng.IntN(len(srcs[n]))]
			r := c.regs(uint64(c.rng.IntN(2)) * flagCF)
			setReg(&r, src, b)
			c.add(fmt.Sprintf("%s %s M, %s", op, widthPtr[n], src), c.mode(isHighByte(src)), hMid+0x740+uint64(c.rng.IntN(32)), r, le(a, n), false)
		}
		for _, op := range []string{"lock inc", "lock dec", "lock neg", "lock not"} {
			c.add(fmt.Sprintf("%s %s M", op, widthPtr[n]), c.mode(false), hMid+0x740+uint64(c.rng.IntN(32)), c.regs(uint64(c.rng.IntN(2))*flagCF), le(vals[c.rng.IntN(len(vals))], n), false)
		}
		for _, a := range vals {
			for _, tmpl := range []string{"xchg %s M, %s", "xchg %[2]s, %[1]s M", "lock xchg %s M, %s", "xadd %s M, %s", "lock xadd %s M, %s", "cmpxchg %s M, %s", "lock cmpxchg %s M, %s"} {
				src := srcs[n][c.rng.IntN(len(srcs[n]))]
				b := vals[c.rng.IntN(len(vals))]
				r := c.regs(uint64(c.rng.IntN(2)) * (flagCF | flagZF))
				setReg(&r, src, b)
				if strings.Contains(tmpl, "cmpxchg") && src != acc[n] {
					// Half equal (memory gets the source), half not
					// (the accumulator gets memory).
					v := a
					if c.rng.IntN(2) == 0 {
						v = vals[c.rng.IntN(len(vals))]
					}
					setReg(&r, acc[n], v)
				}
				c.add(fmt.Sprintf(tmpl, widthPtr[n], src), c.mode(isHighByte(src)), hMid+0x7c0+uint64(c.rng.IntN(32)), r, le(a, n), false)
			}
		}
	}
	// What must go to the fallback.
	for _, tmpl := range []string{
		"shl dword ptr M, 3", "bts qword ptr M, 5", "lock bts qword ptr M, 5", "rol word ptr M, 1",
		"lock cmpxchg16b xmmword ptr M", "lock cmpxchg8b qword ptr M",
	} {
		for range 2 {
			c.add(tmpl, c.mode(false), hMid+0x780, c.regs(0), le(c.rng.Uint64(), 8), true)
		}
	}
}

// stackOps: PUSH of registers, immediates and memory, and CALL (relative
// to the next instruction, through a register, through memory), with RSP
// in the data pages, aligned or not; a push from [rsp+8] computes its
// address before RSP moves.
func (c *corpus) stackOps() {
	sp := func() uint64 {
		return hMid + 0x900 + 8*uint64(c.rng.IntN(16)) + uint64(c.rng.IntN(2))*3
	}
	for _, src := range []string{"rax", "rsp", "rbp", "r12", "r15", "ax", "r9w", "sp"} {
		for range 2 {
			r := c.regs(0)
			r.Rsp = sp()
			if src != "rsp" && src != "sp" {
				setReg(&r, src, c.rng.Uint64())
			}
			c.cases = append(c.cases, &diffCase{asm: "push " + src, regs: r, seed: c.rng.Uint64()})
		}
	}
	for _, push := range []string{"push -1", "push 0x7f", "push 0x12345678", "push -0x80000000", "pushw 0x1234"} {
		r := c.regs(0)
		r.Rsp = sp()
		c.cases = append(c.cases, &diffCase{asm: push, regs: r, seed: c.rng.Uint64()})
	}
	for _, w := range []string{"qword ptr", "word ptr"} {
		for range 6 {
			r := c.regs(0)
			r.Rsp = sp()
			c.add("push "+w+" M", c.mode(false), hMid+0x200+uint64(c.rng.IntN(64)), r, nil, false)
		}
	}
	for range 3 {
		r := c.regs(0)
		r.Rsp = sp()
		// To the next instruction: the int3 after it.
		c.cases = append(c.cases, &diffCase{asm: fmt.Sprintf("call c%d", len(c.cases)+1), regs: r, seed: c.rng.Uint64()})
		r = c.regs(0)
		r.Rsp = sp()
		r.R11 = hEnd
		c.cases = append(c.cases, &diffCase{asm: "call r11", regs: r, seed: c.rng.Uint64()})
		r = c.regs(0)
		r.Rsp = sp()
		c.add("call qword ptr M", c.mode(false), hMid+0x300+uint64(c.rng.IntN(64)), r, le(hEnd, 8), false)
	}
}

// strings: STOS and MOVS of each width, with and without REP, both
// directions, disjoint and overlapping.
func (c *corpus) stringOps() {
	suffix := map[int]string{1: "b", 2: "w", 4: "d", 8: "q"}
	for _, n := range []int{1, 2, 4, 8} {
		w := uint64(n)
		for _, rep := range []bool{false, true} {
			for _, df := range []uint64{0, flagDF} {
				counts := []uint64{1}
				if rep {
					counts = []uint64{1, 2, 7, 33, 5000 / w}
				}
				for _, cnt := range counts {
					pre := ""
					if rep {
						pre = "rep "
					}
					// STOS: the range starts at 0x20000800 going up, or ends
					// there going down.
					r := c.regs(df)
					r.Rdi, r.Rcx = hData+0x800+uint64(c.rng.IntN(8)), cnt
					if df != 0 {
						r.Rdi = hData + 0x2800 + uint64(c.rng.IntN(8))
					}
					if !rep {
						r.Rcx = c.rng.Uint64()
					}
					c.cases = append(c.cases, &diffCase{asm: pre + "stos" + suffix[n], regs: r, seed: c.rng.Uint64()})
					// MOVS: disjoint, and overlapping by a few bytes either way.
					for _, delta := range []int64{0x1800, 1, 3, 8, 64, -1, -5, -8, -64, 0} {
						r := c.regs(df)
						r.Rsi = hData + 0x1000 + uint64(c.rng.IntN(8))
						if df != 0 {
							r.Rsi += 0x1400
						}
						r.Rdi, r.Rcx = r.Rsi+uint64(delta), cnt
						if !rep {
							r.Rcx = c.rng.Uint64()
						}
						c.cases = append(c.cases, &diffCase{asm: pre + "movs" + suffix[n], regs: r, seed: c.rng.Uint64()})
					}
				}
			}
		}
	}
	// A source behind FS.
	for _, pre := range []string{"", "rep "} {
		r := c.regs(0)
		r.Fs_base, r.Rsi, r.Rdi, r.Rcx = hData+0x2000, 0x10, hData+0x100, 100
		c.cases = append(c.cases, &diffCase{asm: pre + "movs byte ptr es:[rdi], byte ptr fs:[rsi]", regs: r, seed: c.rng.Uint64()})
	}
	// Left to the CPU: nothing to write, 32-bit addresses.
	r := c.regs(0)
	r.Rdi, r.Rcx = hData+0x100, 0
	c.cases = append(c.cases, &diffCase{asm: "rep stosb", regs: r, seed: c.rng.Uint64(), slow: true})
	r = c.regs(0)
	r.Rdi, r.Rcx = 0xffffffff00000000|(hData+0x100), 0xffffffff00000010
	c.cases = append(c.cases, &diffCase{asm: "addr32 rep stosd", regs: r, seed: c.rng.Uint64(), slow: true})
}

// vecCase adds tmpl at an aligned, a misaligned and a page-straddling
// address (n: the store's size; aligned: the op faults when misaligned).
func (c *corpus) vecCase(tmpl string, n int, aligned bool) {
	vex := tmpl[0] == 'v'
	for _, off := range []uint64{0x40, 0x43, 0x1000 - uint64(n)/2} {
		slow := aligned && off%uint64(n) != 0
		if n == 1 && off != 0x43 {
			continue
		}
		m := c.modeFor(false, vex)
		if strings.Contains(tmpl, "{k") && m.name == "disp32 alone" {
			m = c.modeFor(false, vex) // GNU as takes no mask after [disp32]
		}
		c.add(tmpl, m, hMid+off, c.regs(0), nil, slow)
		c.cases[len(c.cases)-1].fault = slow
	}
	if vex && c.rng.IntN(4) == 0 {
		// FS, GS and address-size prefixes before VEX/EVEX, which
		// x86asm v0.32.0 cannot decode alone (decodePrefixedVEX).
		for _, m := range amodes {
			if m.legacy {
				c.add(tmpl, m, hMid+0x40, c.regs(0), nil, false)
			}
		}
	}
}

// vectors: SSE, MMX, AVX and AVX-512 stores, whole and partial, masked.
func (c *corpus) vectors() {
	for _, reg := range []string{"xmm0", "xmm7", "xmm9", "xmm15"} {
		for _, op := range []string{"movaps", "movapd", "movdqa", "movntps", "movntpd", "movntdq"} {
			c.vecCase(op+" M, "+reg, 16, true)
		}
		for _, op := range []string{"movups", "movupd", "movdqu"} {
			c.vecCase(op+" M, "+reg, 16, false)
		}
	}
	for _, reg := range []string{"xmm1", "xmm12"} {
		for _, op := range []struct {
			name string
			n    int
		}{{"movq", 8}, {"movd", 4}, {"movss", 4}, {"movsd", 8}, {"movlps", 8}, {"movlpd", 8}, {"movhps", 8}, {"movhpd", 8}} {
			c.vecCase(op.name+" M, "+reg, op.n, false)
		}
		if cpu.X86.HasSSE41 {
			for _, op := range []struct {
				name string
				n    int
			}{{"pextrb", 1}, {"pextrw", 2}, {"pextrd", 4}, {"pextrq", 8}, {"extractps", 4}} {
				for _, imm := range []int{1, 3, 17} {
					c.vecCase(fmt.Sprintf("%s %s M, %s, %d", op.name, widthPtr[op.n], reg, imm), op.n, false)
				}
			}
		}
	}
	if hasSSE4a() {
		c.vecCase("movntss M, xmm3", 4, false)
		c.vecCase("movntsd M, xmm11", 8, false)
	}
	for _, top := range []string{"", "fincstp", "fdecstp"} {
		if top != "" {
			// Move the x87 stack top: the image's register order moves
			// with it, MMi does not (the next MMX op resets TOP to 0).
			c.cases = append(c.cases, &diffCase{asm: top, regs: c.regs(0), seed: c.rng.Uint64(), slow: true})
		}
		for _, tmpl := range []string{"movq M, mm3", "movd M, mm5", "movntq M, mm7"} {
			n := 8
			if strings.HasPrefix(tmpl, "movd") {
				n = 4
			}
			c.add(tmpl, c.mode(false), hMid+0x48, c.regs(0), nil, false)
			if top == "" {
				c.vecCase(tmpl, n, false)
			}
		}
	}
	if !cpu.X86.HasAVX {
		return
	}
	for _, reg := range []string{"xmm2", "xmm14", "ymm3", "ymm13"} {
		n := 16
		if reg[0] == 'y' {
			n = 32
		}
		for _, op := range []string{"vmovaps", "vmovapd", "vmovdqa", "vmovntdq", "vmovntps", "vmovntpd"} {
			c.vecCase(op+" M, "+reg, n, true)
		}
		for _, op := range []string{"vmovups", "vmovupd", "vmovdqu"} {
			c.vecCase(op+" M, "+reg, n, false)
		}
	}
	for _, op := range []struct {
		name string
		n    int
	}{{"vmovq", 8}, {"vmovd", 4}, {"vmovss", 4}, {"vmovsd", 8}, {"vmovlps", 8}, {"vmovlpd", 8}, {"vmovhps", 8}, {"vmovhpd", 8}} {
		c.vecCase(op.name+" M, xmm6", op.n, false)
	}
	for _, op := range []struct {
		name string
		n    int
	}{{"vpextrb", 1}, {"vpextrw", 2}, {"vpextrd", 4}, {"vpextrq", 8}, {"vextractps", 4}} {
		c.vecCase(fmt.Sprintf("%s %s M, xmm10, 3", op.name, widthPtr[op.n]), op.n, false)
	}
	for _, tmpl := range []string{"vextractf128 M, ymm4, 1", "vextracti128 M, ymm12, 0", "vextracti128 M, ymm15, 3"} {
		c.vecCase(tmpl, 16, false)
	}
	if !cpu.X86.HasAVX512F || !cpu.X86.HasAVX512BW || !cpu.X86.HasAVX512VL {
		return
	}
	for _, reg := range []string{"zmm1", "zmm17", "zmm31", "ymm5", "ymm20", "xmm8", "xmm31"} {
		n := map[byte]int{'x': 16, 'y': 32, 'z': 64}[reg[0]]
		for _, op := range []string{"vmovdqa32", "vmovdqa64"} {
			c.vecCase(op+" M, "+reg, n, true)
		}
		for _, op := range []string{"vmovdqu8", "vmovdqu16", "vmovdqu32", "vmovdqu64"} {
			c.vecCase(op+" M, "+reg, n, false)
		}
		for _, op := range []string{"vmovaps", "vmovntdq", "vmovntpd"} {
			c.vecCase(op+" M, "+reg, n, true)
		}
		for _, op := range []string{"vmovups", "vmovupd"} {
			c.vecCase(op+" M, "+reg, n, false)
		}
	}
	for _, op := range []struct {
		name string
		n    int
	}{{"vmovq", 8}, {"vmovd", 4}, {"vmovss", 4}, {"vmovsd", 8}, {"vmovlps", 8}, {"vmovhpd", 8}} {
		c.vecCase(op.name+" M, xmm20", op.n, false)
	}
	for _, op := range []struct {
		name string
		n    int
	}{{"vpextrb", 1}, {"vpextrw", 2}, {"vpextrd", 4}, {"vpextrq", 8}, {"vextractps", 4}} {
		c.vecCase(fmt.Sprintf("%s %s M, xmm21, 2", op.name, widthPtr[op.n]), op.n, false)
	}
	for _, tmpl := range []struct {
		s string
		n int
	}{
		{"vextracti32x4 M, zmm3, 3", 16}, {"vextractf64x2 M, ymm18, 1", 16}, {"vextractf32x4 M, zmm25, 2", 16},
		{"vextracti64x4 M, zmm9, 1", 32}, {"vextractf32x8 M, zmm22, 1", 32},
	} {
		c.vecCase(tmpl.s, tmpl.n, false)
	}
	// Under a write mask (k1: all, k2: element 0, k3: the first and the
	// last, k4-k7: patterns): element by element.
	for _, op := range []struct {
		name    string
		aligned bool
	}{
		{"vmovdqu8", false}, {"vmovdqu16", false}, {"vmovdqu32", false}, {"vmovdqu64", false},
		{"vmovdqa32", true}, {"vmovdqa64", true}, {"vmovups", false}, {"vmovapd", true},
	} {
		for _, reg := range []string{"zmm2", "ymm19", "xmm29"} {
			n := map[byte]int{'x': 16, 'y': 32, 'z': 64}[reg[0]]
			k := 1 + c.rng.IntN(7)
			c.vecCase(fmt.Sprintf("%s M{k%d}, %s", op.name, k, reg), n, op.aligned)
		}
	}
	c.vecCase("vmovss M{k3}, xmm17", 4, false)
	c.vecCase("vmovsd M{k4}, xmm2", 8, false)
	// The masked-out elements run off the end of the mapping: no fault.
	c.add("vmovdqu32 M{k2}, zmm5", amodes[0], hData+hDataLen-4, c.regs(0), nil, false)
	// Masked stores the emulator leaves to the CPU.
	c.add("vpmovqb M{k1}, zmm1", amodes[0], hMid+0x40, c.regs(0), nil, true)
	c.add("vcompressps M{k2}, zmm3", amodes[0], hMid+0x40, c.regs(0), nil, true)
}

// hasSSE4a: MOVNTSS/MOVNTSD exist on AMD only.
func hasSSE4a() bool {
	b, err := os.ReadFile("/proc/cpuinfo")
	return err == nil && bytes.Contains(b, []byte(" sse4a"))
}

// assembleCases runs GNU as once over the whole corpus, each instruction
// under its own label, and gives each case its bytes.
func assembleCases(dir string, cases []*diffCase) error {
	var src strings.Builder
	src.WriteString(".intel_syntax noprefix\n.text\n")
	for i, c := range cases {
		fmt.Fprintf(&src, "c%d:\n\t%s\n", i, c.asm)
	}
	fmt.Fprintf(&src, "c%d:\n", len(cases))
	s, o := filepath.Join(dir, "corpus.s"), filepath.Join(dir, "corpus.o")
	if err := os.WriteFile(s, []byte(src.String()), 0o644); err != nil {
		return err
	}
	if out, err := exec.Command("as", "--64", "-o", o, s).CombinedOutput(); err != nil {
		return fmt.Errorf("as: %v\n%s", err, out)
	}
	f, err := elf.Open(o)
	if err != nil {
		return err
	}
	defer f.Close()
	text, err := f.Section(".text").Data()
	if err != nil {
		return err
	}
	syms, err := f.Symbols()
	if err != nil {
		return err
	}
	at := map[int]uint64{}
	for _, sym := range syms {
		var i int
		if _, err := fmt.Sscanf(sym.Name, "c%d", &i); err == nil {
			at[i] = sym.Value
		}
	}
	for i, c := range cases {
		lo, ok1 := at[i]
		hi, ok2 := at[i+1]
		if !ok1 || !ok2 || hi <= lo {
			return fmt.Errorf("no bytes for case %d (%s)", i, c.asm)
		}
		c.code = text[lo:hi]
	}
	return nil
}

// harness is the traced emuharness, stopped at an int3. It is the
// emulator's Target.
type harness struct {
	p  *tracer.Process
	th *tracer.Thread
}

func (h *harness) ReadMemory(addr uint64, b []byte) error { return h.p.ReadMemory(addr, b) }
func (h *harness) FPRegs(out *[512]byte) error            { return h.th.FPRegs(out) }
func (h *harness) XState(buf []byte) (int, error)         { return h.th.XState(buf) }

func startHarness(prog string) (*harness, unix.PtraceRegs, error) {
	var regs unix.PtraceRegs
	p, err := tracer.Launch([]string{prog}, tracer.LaunchOptions{})
	if err != nil {
		return nil, regs, err
	}
	if _, err := p.RunToEntry(); err != nil {
		p.Kill()
		return nil, regs, err
	}
	if err := p.ResumeAll(); err != nil {
		p.Kill()
		return nil, regs, err
	}
	st, err := p.Wait()
	if err != nil {
		p.Kill()
		return nil, regs, err
	}
	if st.Kind != tracer.StopSignal || st.Sig != int(unix.SIGTRAP) {
		p.Kill()
		return nil, regs, fmt.Errorf("harness stopped with %v %d", st.Kind, st.Sig)
	}
	if err := st.Thread.Regs(&regs); err != nil {
		p.Kill()
		return nil, regs, err
	}
	return &harness{p: p, th: st.Thread}, regs, nil
}

// diffOutcome is the state after one instruction.
type diffOutcome struct {
	regs unix.PtraceRegs
	mem  []byte
	sig  int    // native: the signal the instruction raised (SIGTRAP: none)
	why  string // emulated: why not
}

// load puts c's initial state in the harness.
func (h *harness) load(c *diffCase, regs *unix.PtraceRegs) error {
	mem := make([]byte, hDataLen)
	r := rand.New(rand.NewPCG(c.seed, 1))
	for i := range mem {
		mem[i] = byte(r.Uint32())
	}
	if c.val != nil {
		copy(mem[c.ea-hData:], c.val)
	}
	if err := h.p.WriteMemory(hData, mem); err != nil {
		return err
	}
	*regs = c.regs
	regs.Rip = hEnd - uint64(len(c.code))
	return h.th.SetRegs(regs)
}

func (h *harness) result(o *diffOutcome) error {
	if err := h.th.Regs(&o.regs); err != nil {
		return err
	}
	o.mem = make([]byte, hDataLen)
	return h.p.ReadMemory(hData, o.mem)
}

func (h *harness) native(c *diffCase) (diffOutcome, error) {
	var o diffOutcome
	var regs unix.PtraceRegs
	if err := h.p.WriteMemory(hEnd-uint64(len(c.code)), append(append([]byte(nil), c.code...), 0xcc)); err != nil {
		return o, err
	}
	if err := h.load(c, &regs); err != nil {
		return o, err
	}
	if err := h.th.Resume(0); err != nil {
		return o, err
	}
	st, err := h.p.Wait()
	if err != nil {
		return o, err
	}
	if st.Kind != tracer.StopSignal {
		return o, fmt.Errorf("harness: %v stop", st.Kind)
	}
	o.sig = st.Sig
	if err := h.result(&o); err != nil {
		return o, err
	}
	if o.sig == int(unix.SIGTRAP) {
		o.regs.Rip-- // past the int3
	}
	return o, nil
}

func (h *harness) emulated(c *diffCase) (diffOutcome, error) {
	var o diffOutcome
	var regs unix.PtraceRegs
	if err := h.load(c, &regs); err != nil {
		return o, err
	}
	s, err := Decode(c.code, &regs)
	if err != nil {
		o.why = err.Error()
		return o, nil
	}
	if s.Len != len(c.code) {
		return o, fmt.Errorf("decoded %d bytes of %d", s.Len, len(c.code))
	}
	em, why := Emulate(&s, &regs, h)
	if o.why = why; o.why != "" {
		return o, nil
	}
	if len(em.data) != int(s.Size) || em.addr != s.Addr {
		return o, fmt.Errorf("emulation writes %d bytes at %#x, the store is %d at %#x", len(em.data), em.addr, s.Size, s.Addr)
	}
	// As a debugger would: the bytes, then the registers.
	if err := em.Runs(func(lo, hi uint64) error { return h.p.WriteMemory(em.addr+lo, em.data[lo:hi]) }); err != nil {
		return o, err
	}
	if err := h.th.SetRegs(&em.regs); err != nil {
		return o, err
	}
	return o, h.result(&o)
}

// regsDiff lists the registers that differ.
func regsDiff(a, b *unix.PtraceRegs) string {
	var out []string
	va, vb := reflect.ValueOf(*a), reflect.ValueOf(*b)
	for i := range va.NumField() {
		if x, y := va.Field(i).Uint(), vb.Field(i).Uint(); x != y {
			out = append(out, fmt.Sprintf("%s %#x, emulated %#x", va.Type().Field(i).Name, x, y))
		}
	}
	return strings.Join(out, "; ")
}

func memDiff(a, b []byte) string {
	var out []string
	for i := range a {
		if a[i] != b[i] {
			out = append(out, fmt.Sprintf("%#x: %#02x, emulated %#02x", hData+i, a[i], b[i]))
			if len(out) == 8 {
				out = append(out, "...")
				break
			}
		}
	}
	return strings.Join(out, "; ")
}

// TestEmulatorDifferential runs every instruction of a generated corpus on
// the CPU, in a traced harness, and through the emulator from the same
// state, and compares the registers and memory they leave.
func TestEmulatorDifferential(t *testing.T) {
	prog := fixture.Build(t, "pkg/x86/store/testdata/emuharness.c", "-O1")
	dir := t.TempDir()
	var c *corpus
	fast, slow := 0, 0
	byOp := map[string]int{}
	err := tracer.Locked(func() error {
		h, base, err := startHarness(prog)
		if err != nil {
			return err
		}
		defer h.p.Kill()
		c = &corpus{rng: rand.New(rand.NewPCG(1, 2)), base: base}
		c.moves()
		c.alu()
		c.stringOps()
		c.stackOps()
		c.vectors()
		if err := assembleCases(dir, c.cases); err != nil {
			return err
		}
		for i, dc := range c.cases {
			inst, _ := x86asm.Decode(dc.code, 64)
			desc := fmt.Sprintf("case %d: %s (% x, %s)", i, dc.asm, dc.code, x86asm.IntelSyntax(inst, hEnd-uint64(len(dc.code)), nil))
			// Emulated first: it changes no register but those it sets,
			// the CPU may change more (the x87 TOP, say).
			emu, err := h.emulated(dc)
			if err != nil {
				return fmt.Errorf("%s: emulated: %w", desc, err)
			}
			nat, err := h.native(dc)
			if err != nil {
				return fmt.Errorf("%s: native: %w", desc, err)
			}
			switch {
			case emu.why != "" && !dc.slow:
				t.Errorf("%s: not emulated: %s", desc, emu.why)
			case emu.why != "":
				slow++
				if dc.fault && nat.sig != int(unix.SIGSEGV) {
					t.Errorf("%s: the CPU raised signal %d, not SIGSEGV", desc, nat.sig)
				}
			case dc.slow:
				t.Errorf("%s: emulated; it must go to the fallback", desc)
			case nat.sig != int(unix.SIGTRAP):
				t.Errorf("%s: emulated, but the CPU raised signal %d", desc, nat.sig)
			default:
				fast++
				byOp[inst.Op.String()]++
				if d := regsDiff(&nat.regs, &emu.regs); d != "" {
					t.Errorf("%s: registers differ: CPU %s", desc, d)
				}
				if d := memDiff(nat.mem, emu.mem); d != "" {
					t.Errorf("%s: memory differs: CPU %s", desc, d)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ops := make([]string, 0, len(byOp))
	for op := range byOp {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	t.Logf("%d cases: %d emulated and equal to the CPU, %d left to the fallback; %d ops: %s", len(c.cases), fast, slow, len(ops), strings.Join(ops, " "))
}
