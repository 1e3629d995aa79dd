package agent

import "golang.org/x/arch/x86/x86asm"

// ucontext's gregs indices (sys/ucontext.h's REG_*) of the 64-bit general
// registers, by x86asm's name of the full register.
var gregs = map[x86asm.Reg]uint8{
	x86asm.R8: 0, x86asm.R9: 1, x86asm.R10: 2, x86asm.R11: 3,
	x86asm.R12: 4, x86asm.R13: 5, x86asm.R14: 6, x86asm.R15: 7,
	x86asm.RDI: 8, x86asm.RSI: 9, x86asm.RBP: 10, x86asm.RBX: 11,
	x86asm.RDX: 12, x86asm.RAX: 13, x86asm.RCX: 14, x86asm.RSP: 15,
}

// full names the 64-bit register whose low bytes reg is, and says whether
// reg is those low bytes (not AH, BH, CH or DH, bits 8-15).
func full(reg x86asm.Reg) (x86asm.Reg, bool) {
	switch {
	case reg >= x86asm.RAX && reg <= x86asm.R15:
		return reg, true
	case reg >= x86asm.EAX && reg <= x86asm.R15L:
		return x86asm.RAX + (reg - x86asm.EAX), true
	case reg >= x86asm.AX && reg <= x86asm.R15W:
		return x86asm.RAX + (reg - x86asm.AX), true
	case reg >= x86asm.AL && reg <= x86asm.BL:
		return x86asm.RAX + (reg - x86asm.AL), true
	case reg >= x86asm.SPB && reg <= x86asm.R15B:
		return x86asm.RSP + (reg - x86asm.SPB), true
	}
	return 0, false
}

// recipeOps are the instructions the agent completes, by their op.
var recipeOps = map[x86asm.Op]uint8{
	x86asm.MOV: OpMov, x86asm.ADD: OpAdd, x86asm.SUB: OpSub, x86asm.AND: OpAnd,
	x86asm.OR: OpOr, x86asm.XOR: OpXor, x86asm.INC: OpInc, x86asm.DEC: OpDec,
}

// RecipeFor makes the agent's recipe for inst, the instruction at pc, if
// the agent can complete it: a MOV, ADD, SUB, AND, OR or XOR of a general
// register or an immediate to memory, or an INC or DEC of memory (locked
// or not), the memory addressed by 64-bit general registers or RIP, with
// no segment override. Anything else (XADD, XCHG, CMPXCHG, a string or
// vector store, AH..DH, FS/GS-relative) is not the agent's: false, and
// memtrap completes the write from the thread's signal frame (Complete).
func RecipeFor(pc uint64, inst x86asm.Inst) (Recipe, bool) {
	op, ok := recipeOps[inst.Op]
	if !ok || inst.AddrSize != 64 || inst.Len == 0 || inst.Len > 15 {
		return Recipe{}, false
	}
	for _, p := range inst.Prefix {
		if p == 0 {
			break
		}
		if p&x86asm.PrefixIgnored != 0 {
			continue
		}
		switch b := p & 0xff; {
		case b >= 0x40 && b <= 0x4f, b == 0x66:
			// REX, operand size: the recipe's width and registers say it.
		case b == 0x26, b == 0x2e, b == 0x36, b == 0x3e:
			// ES, CS, SS, DS: no effect in 64-bit mode.
		case b == 0xf0 && op != OpMov:
			// LOCK: every write to an armed page takes the agent's lock.
		default:
			return Recipe{}, false // REP, FS, GS, address size, LOCK MOV
		}
	}
	m, ok := inst.Args[0].(x86asm.Mem)
	if !ok || m.Segment != 0 {
		return Recipe{}, false
	}
	r := Recipe{PC: pc, Len: uint8(inst.Len), Width: uint8(inst.MemBytes), Base: NoReg, Index: NoReg, Scale: 1, Disp: m.Disp, Op: op}
	switch r.Width {
	case 1, 2, 4, 8:
	default:
		return Recipe{}, false
	}
	switch {
	case m.Base == x86asm.RIP:
		r.Base = RIPRel
	case m.Base != 0:
		g, ok := gregs[m.Base]
		if !ok {
			return Recipe{}, false
		}
		r.Base = g
	}
	if m.Index != 0 {
		g, ok := gregs[m.Index]
		if !ok {
			return Recipe{}, false
		}
		r.Index, r.Scale = g, m.Scale
	}
	if op == OpInc || op == OpDec {
		if inst.Args[1] != nil {
			return Recipe{}, false
		}
		return r, true
	}
	switch src := inst.Args[1].(type) {
	case x86asm.Reg:
		f, ok := full(src)
		if !ok {
			return Recipe{}, false
		}
		g, ok := gregs[f]
		if !ok {
			return Recipe{}, false
		}
		r.Src, r.Reg = SrcReg, g
	case x86asm.Imm:
		r.Src, r.Imm = SrcImm, uint64(src)
	default:
		return Recipe{}, false
	}
	return r, true
}
