package store

import (
	"encoding/binary"
	"math/bits"

	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"
)

// Target is what an emulation reads besides the general registers: memory
// (the operand of a read-modify-write, the source of MOVS or of a PUSH or
// CALL from memory) and, for vector stores only, the vector registers. A
// stopped thread of a traced process is one; a test's fake is another.
type Target interface {
	// ReadMemory fills b from addr, all of it or an error.
	ReadMemory(addr uint64, b []byte) error
	// FPRegs reads the 512-byte FXSAVE image (layout: pkg/x86/xsave).
	FPRegs(out *[512]byte) error
	// XState reads the XSAVE image in the standard format into buf, as
	// far as buf goes, and returns how many bytes it filled.
	XState(buf []byte) (int, error)
}

// maxEmulated caps the bytes one emulation writes (and a MOVS reads): a
// REP STOS or MOVS over more is done in part (see str), any other store
// over more is refused.
const maxEmulated = 1 << 20

// EFLAGS bits.
const (
	flagCF = 1 << 0
	flagPF = 1 << 2
	flagAF = 1 << 4
	flagZF = 1 << 6
	flagSF = 1 << 7
	flagTF = 1 << 8
	flagDF = 1 << 10
	flagOF = 1 << 11
	flagRF = 1 << 16
	flagAC = 1 << 18

	arithFlags = flagCF | flagPF | flagAF | flagZF | flagSF | flagOF
)

// An Emulation is one instruction performed on paper: what it writes and
// the registers after it. Nothing in the target has changed: the caller
// writes Data's runs (Runs) at Addr and sets Regs, in that order, to do
// what the CPU would have done.
type Emulation struct {
	addr uint64          // Store.Addr
	data []byte          // the Store.Size bytes written at addr
	regs unix.PtraceRegs // the thread's registers after the instruction
	src  span            // memory the instruction reads besides data's (MOVS, PUSH/CALL m), empty if none
	old  []byte          // data's bytes before, when data was computed from them (nil otherwise)
	// masked: only the bytes data[i] with bit i of mask set are written
	// (an AVX-512 store under a write mask, of at most 64 bytes).
	masked bool
	mask   uint64
	buf    [64]byte // data, up to a zmm register
	prev   [8]byte  // old, for a read-modify-write
}

// span is a range of addresses, [lo, hi).
type span struct{ lo, hi uint64 }

func (s span) overlaps(o span) bool { return max(s.lo, o.lo) < min(s.hi, o.hi) }

// Emulate works out what the instruction s describes does, executing with
// regs, reading what else it needs from m. It returns the Emulation when
// that is the instruction's whole effect, and otherwise why it cannot (the
// package doc lists what it refuses): the caller then leaves the work to an
// exact fallback. Either way, only reads of memory and registers happen.
func Emulate(s *Store, regs *unix.PtraceRegs, m Target) (*Emulation, string) {
	em := new(Emulation)
	if why := em.run(s, regs, m); why != "" {
		return nil, why
	}
	return em, ""
}

// Addr is where Data goes.
func (em *Emulation) Addr() uint64 { return em.addr }

// Data is the bytes the instruction writes at Addr: where Masked, only
// those in Runs.
func (em *Emulation) Data() []byte { return em.data }

// Regs is the thread's registers after the instruction.
func (em *Emulation) Regs() unix.PtraceRegs { return em.regs }

// Masked reports a store under an AVX-512 write mask: it writes only the
// bytes in Runs, and may not write the first or the last byte of Data.
func (em *Emulation) Masked() bool { return em.masked }

// Old is Data's bytes before the instruction, when the emulation read them
// to compute Data (a read-modify-write, an overlapping MOVS); nil
// otherwise. A caller that must undo a write half done can put them back.
func (em *Emulation) Old() []byte { return em.old }

// Source is the memory the instruction reads besides its destination (the
// source of MOVS, the operand of PUSH or CALL from memory), empty if none:
// the CPU would fault if the target could not read it.
func (em *Emulation) Source() (lo, hi uint64) { return em.src.lo, em.src.hi }

// Written is the range of the bytes the emulation writes, from the first to
// the last.
func (em *Emulation) Written() (lo, hi uint64) {
	n := uint64(len(em.data))
	if !em.masked {
		return em.addr, em.addr + n
	}
	first := uint64(bits.TrailingZeros64(em.mask))
	last := 64 - uint64(bits.LeadingZeros64(em.mask))
	return em.addr + first, em.addr + last
}

// Runs calls f for each run of written bytes, with its offset in Data and
// its end, lowest first, and stops at f's first error.
func (em *Emulation) Runs(f func(lo, hi uint64) error) error {
	if !em.masked {
		return f(0, uint64(len(em.data)))
	}
	m := em.mask
	for m != 0 {
		lo := uint64(bits.TrailingZeros64(m))
		hi := lo + uint64(bits.TrailingZeros64(^(m >> lo)))
		if err := f(lo, hi); err != nil {
			return err
		}
		if hi == 64 {
			break
		}
		m &^= (1<<hi - 1)
	}
	return nil
}

// run is Emulate into em.
func (em *Emulation) run(s *Store, regs *unix.PtraceRegs, m Target) (why string) {
	switch {
	case !s.Known && !(evexMasked(&s.Inst) && s.Size > 0):
		// A masked store's address and width are known; which of its
		// elements it writes, emulation finds out.
		return "store not decoded"
	case s.Size == 0:
		return "writes nothing"
	case s.Size > maxEmulated && !(s.Rep && (isStos(s.Inst.Op) || isMovs(s.Inst.Op))):
		return "larger than the emulation cap"
	case regs.Eflags&flagTF != 0:
		// The CPU would trap after the instruction.
		return "trap flag set"
	case regs.Eflags&flagAC != 0:
		// With CR0.AM (Linux sets it) a misaligned access raises #AC.
		return "alignment check on"
	}
	inst := &s.Inst
	if _, ok := inst.Args[0].(x86asm.Mem); !ok && inst.Op != x86asm.XCHG && inst.Op != x86asm.PUSH && inst.Op != x86asm.CALL {
		return "no memory destination"
	}
	if !isVEX(inst) && hasPrefix(inst, x86asm.PrefixLOCK) && !lockable(inst.Op) {
		return "locked"
	}
	*em = Emulation{addr: s.Addr, regs: *regs}
	em.regs.Rip += uint64(s.Len)
	// The CPU clears RF once an instruction completes; a fault sets it
	// in the saved image.
	em.regs.Eflags &^= flagRF
	switch op := inst.Op; {
	case op == x86asm.MOV || op == x86asm.MOVNTI || op == x86asm.MOVBE:
		return em.mov(s, regs)
	case setCond(op) >= 0:
		return em.set(s, regs)
	case aluOp(op):
		return em.alu(s, regs, m)
	case op == x86asm.XCHG, op == x86asm.XADD, op == x86asm.CMPXCHG:
		return em.exchange(s, regs, m)
	case op == x86asm.PUSH, op == x86asm.CALL:
		return em.stack(s, regs, m)
	case isStos(op) || isMovs(op):
		return em.str(s, regs, m)
	}
	return em.vector(s, m)
}

// out returns the buffer data goes to.
func (em *Emulation) out(n uint64) []byte {
	if n <= uint64(len(em.buf)) {
		em.data = em.buf[:n]
	} else {
		em.data = make([]byte, n)
	}
	return em.data
}

// putLE stores the low n bytes of v.
func putLE(b []byte, v uint64) {
	var le [8]byte
	binary.LittleEndian.PutUint64(le[:], v)
	copy(b, le[:])
}

func getLE(b []byte) uint64 {
	var le [8]byte
	copy(le[:], b)
	return binary.LittleEndian.Uint64(le[:])
}

func hasPrefix(inst *x86asm.Inst, want x86asm.Prefix) bool {
	for _, p := range inst.Prefix {
		if p == 0 {
			break
		}
		if p&0xFF == want&0xFF {
			return true
		}
	}
	return false
}

// gprWidth accepts the sizes of general-register operands.
func gprWidth(n uint64) bool { return n == 1 || n == 2 || n == 4 || n == 8 }

// mov: MOV and MOVNTI from a general or segment register or an immediate
// (x86asm sign-extends imm8/16/32 already), and MOVBE.
func (em *Emulation) mov(s *Store, regs *unix.PtraceRegs) string {
	n := s.Size
	if !gprWidth(n) || uint64(s.Inst.MemBytes) != n {
		return "odd operand size"
	}
	var v uint64
	switch src := s.Inst.Args[1].(type) {
	case x86asm.Reg:
		r, ok := regValue(src, regs)
		if !ok {
			if r, ok = segValue(src, regs); !ok {
				return "source register"
			}
		}
		v = r
	case x86asm.Imm:
		v = uint64(src)
	default:
		return "source operand"
	}
	if s.Inst.Op == x86asm.MOVBE {
		if n == 1 {
			return "odd operand size"
		}
		v = bits.ReverseBytes64(v) >> (64 - 8*n)
	}
	putLE(em.out(n), v)
	return ""
}

// segValue reads a segment register (MOV r/m16, Sreg stores its selector).
func segValue(r x86asm.Reg, regs *unix.PtraceRegs) (uint64, bool) {
	switch r {
	case x86asm.ES:
		return regs.Es & 0xFFFF, true
	case x86asm.CS:
		return regs.Cs & 0xFFFF, true
	case x86asm.SS:
		return regs.Ss & 0xFFFF, true
	case x86asm.DS:
		return regs.Ds & 0xFFFF, true
	case x86asm.FS:
		return regs.Fs & 0xFFFF, true
	case x86asm.GS:
		return regs.Gs & 0xFFFF, true
	}
	return 0, false
}

// setCond returns the condition number (the low nibble of the opcode) of a
// SETcc, or -1.
func setCond(op x86asm.Op) int {
	switch op {
	case x86asm.SETO:
		return 0
	case x86asm.SETNO:
		return 1
	case x86asm.SETB:
		return 2
	case x86asm.SETAE:
		return 3
	case x86asm.SETE:
		return 4
	case x86asm.SETNE:
		return 5
	case x86asm.SETBE:
		return 6
	case x86asm.SETA:
		return 7
	case x86asm.SETS:
		return 8
	case x86asm.SETNS:
		return 9
	case x86asm.SETP:
		return 10
	case x86asm.SETNP:
		return 11
	case x86asm.SETL:
		return 12
	case x86asm.SETGE:
		return 13
	case x86asm.SETLE:
		return 14
	case x86asm.SETG:
		return 15
	}
	return -1
}

// condition evaluates condition cc (as in Jcc/SETcc/CMOVcc) on flags.
func condition(cc int, flags uint64) bool {
	f := func(bit uint64) bool { return flags&bit != 0 }
	var v bool
	switch cc >> 1 {
	case 0:
		v = f(flagOF)
	case 1:
		v = f(flagCF)
	case 2:
		v = f(flagZF)
	case 3:
		v = f(flagCF) || f(flagZF)
	case 4:
		v = f(flagSF)
	case 5:
		v = f(flagPF)
	case 6:
		v = f(flagSF) != f(flagOF)
	case 7:
		v = f(flagZF) || f(flagSF) != f(flagOF)
	}
	// Odd conditions are the negations.
	return v != (cc&1 == 1)
}

func (em *Emulation) set(s *Store, regs *unix.PtraceRegs) string {
	if s.Size != 1 {
		return "odd operand size"
	}
	b := em.out(1)
	b[0] = 0
	if condition(setCond(s.Inst.Op), regs.Eflags) {
		b[0] = 1
	}
	return ""
}

func aluOp(op x86asm.Op) bool {
	switch op {
	case x86asm.ADD, x86asm.ADC, x86asm.SUB, x86asm.SBB, x86asm.AND, x86asm.OR, x86asm.XOR,
		x86asm.INC, x86asm.DEC, x86asm.NEG, x86asm.NOT:
		return true
	}
	return false
}

// lockable: the ops emulated with or without LOCK (XCHG with memory is
// locked anyway). The operand is read here and the result written by the
// caller later, so a locked one is as atomic as the CPU's only if nothing
// else can write the operand in between: the caller's to ensure (see the
// package doc).
func lockable(op x86asm.Op) bool {
	return aluOp(op) || op == x86asm.XCHG || op == x86asm.XADD || op == x86asm.CMPXCHG
}

// exchange: XCHG (memory and a register swap), XADD (the register gets
// the old value, memory the sum, flags as ADD) and CMPXCHG (compare the
// accumulator with memory, flags as CMP; equal: memory gets the source;
// not: the accumulator gets memory, and memory its own value back, which
// the CPU writes too).
func (em *Emulation) exchange(s *Store, regs *unix.PtraceRegs, m Target) string {
	n := s.Size
	if !gprWidth(n) || uint64(s.Inst.MemBytes) != n {
		return "odd operand size"
	}
	var reg x86asm.Reg
	for _, a := range s.Inst.Args[:2] {
		if r, ok := a.(x86asm.Reg); ok {
			reg = r
		}
	}
	src, ok := regValue(reg, regs)
	if !ok {
		return "source register"
	}
	old := em.prev[:n]
	if err := m.ReadMemory(s.Addr, old); err != nil {
		return "reading the operand"
	}
	em.old = old
	cur := getLE(old)
	out := em.out(n)
	switch s.Inst.Op {
	case x86asm.XCHG:
		putLE(out, src)
		setRegValue(reg, &em.regs, cur)
	case x86asm.XADD:
		sum, flags := aluResult(x86asm.ADD, cur, src, n, regs.Eflags)
		putLE(out, sum)
		setRegValue(reg, &em.regs, cur)
		em.regs.Eflags = em.regs.Eflags&^arithFlags | flags&arithFlags
	case x86asm.CMPXCHG:
		acc := x86asm.RAX
		switch n {
		case 1:
			acc = x86asm.AL
		case 2:
			acc = x86asm.AX
		case 4:
			acc = x86asm.EAX
		}
		a, _ := regValue(acc, regs)
		_, flags := aluResult(x86asm.SUB, a, cur, n, regs.Eflags)
		em.regs.Eflags = em.regs.Eflags&^arithFlags | flags&arithFlags
		if flags&flagZF != 0 {
			putLE(out, src)
		} else {
			putLE(out, cur)
			setRegValue(acc, &em.regs, cur)
		}
	}
	return ""
}

// stack: PUSH of a general register, an immediate or memory, and near
// CALL (relative, register or memory target). The slot below RSP gets the
// value (CALL: the next instruction's address), RSP moves down, CALL jumps.
// A memory operand's address is computed with RSP before it moves, as the
// CPU does. A watch on a variable on the stack traps every push and call
// onto its page, hence these.
func (em *Emulation) stack(s *Store, regs *unix.PtraceRegs, m Target) string {
	inst := &s.Inst
	n := s.Size
	if n != 8 && !(n == 2 && inst.Op == x86asm.PUSH) {
		return "odd operand size"
	}
	next := regs.Rip + uint64(s.Len)
	operand := func(a x86asm.Arg, size uint64) (uint64, string) {
		switch a := a.(type) {
		case x86asm.Reg:
			if v, ok := regValue(a, regs); ok {
				return v, ""
			}
			return 0, "source register"
		case x86asm.Imm:
			return uint64(a), ""
		case x86asm.Mem:
			addr, ok := memAddr(inst, regs, a, 0, 0)
			if !ok {
				return 0, "source address"
			}
			var b [8]byte
			if err := m.ReadMemory(addr, b[:size]); err != nil {
				return 0, "reading the operand"
			}
			// The CPU reads it as the target would: Source tells
			// the caller, who checks that the target can.
			em.src = span{addr, addr + size}
			return getLE(b[:size]), ""
		}
		return 0, "source operand"
	}
	var v uint64
	switch inst.Op {
	case x86asm.PUSH:
		var why string
		if v, why = operand(inst.Args[0], n); why != "" {
			return why
		}
	case x86asm.CALL:
		v = next
		var target uint64
		if rel, ok := inst.Args[0].(x86asm.Rel); ok {
			target = next + uint64(int64(rel))
		} else {
			if r, ok := inst.Args[0].(x86asm.Reg); ok && !(r >= x86asm.RAX && r <= x86asm.R15) {
				return "call target"
			}
			var why string
			if target, why = operand(inst.Args[0], 8); why != "" {
				return why
			}
		}
		em.regs.Rip = target
	}
	putLE(em.out(n), v)
	em.regs.Rsp = regs.Rsp - n
	return ""
}

// alu: a read-modify-write of memory, LOCKed or not (see lockable).
func (em *Emulation) alu(s *Store, regs *unix.PtraceRegs, m Target) string {
	n := s.Size
	if !gprWidth(n) || uint64(s.Inst.MemBytes) != n {
		return "odd operand size"
	}
	var src uint64
	switch a := s.Inst.Args[1].(type) {
	case nil:
	case x86asm.Reg:
		r, ok := regValue(a, regs)
		if !ok {
			return "source register"
		}
		src = r
	case x86asm.Imm:
		src = uint64(a)
	default:
		return "source operand"
	}
	old := em.prev[:n]
	if err := m.ReadMemory(s.Addr, old); err != nil {
		return "reading the operand"
	}
	em.old = old
	res, flags := aluResult(s.Inst.Op, getLE(old), src, n, regs.Eflags)
	putLE(em.out(n), res)
	em.regs.Eflags = em.regs.Eflags&^arithFlags | flags&arithFlags
	return ""
}

// aluResult computes op on an n-byte destination a and source b, with the
// flags the CPU leaves: flags is EFLAGS before, the result EFLAGS after.
//
// AND, OR and XOR leave AF undefined in the manuals; Intel and AMD CPUs
// clear it, as here (the differential test checks this CPU).
func aluResult(op x86asm.Op, a, b, n, flags uint64) (uint64, uint64) {
	w := 8 * n
	mask := ^uint64(0) >> (64 - w)
	sign := uint64(1) << (w - 1)
	a, b = a&mask, b&mask
	cin := flags & flagCF
	var res uint64
	var cf, of, af bool
	add := func(x, y, c uint64) {
		var carry uint64
		if w == 64 {
			res, carry = bits.Add64(x, y, c)
		} else {
			res = x + y + c
			carry = res >> w & 1
			res &= mask
		}
		cf = carry != 0
		of = (x^res)&(y^res)&sign != 0
		af = (x^y^res)&0x10 != 0
	}
	sub := func(x, y, c uint64) {
		var borrow uint64
		if w == 64 {
			res, borrow = bits.Sub64(x, y, c)
		} else {
			res = (x - y - c) & mask
			if x < y+c {
				borrow = 1
			}
		}
		cf = borrow != 0
		of = (x^y)&(x^res)&sign != 0
		af = (x^y^res)&0x10 != 0
	}
	keepCF := false
	switch op {
	case x86asm.ADD:
		add(a, b, 0)
	case x86asm.ADC:
		add(a, b, cin)
	case x86asm.SUB:
		sub(a, b, 0)
	case x86asm.SBB:
		sub(a, b, cin)
	case x86asm.INC:
		add(a, 1, 0)
		keepCF = true
	case x86asm.DEC:
		sub(a, 1, 0)
		keepCF = true
	case x86asm.NEG:
		sub(0, a, 0)
	case x86asm.AND:
		res = a & b
	case x86asm.OR:
		res = a | b
	case x86asm.XOR:
		res = a ^ b
	case x86asm.NOT:
		return ^a & mask, flags
	}
	out := flags &^ arithFlags
	set := func(bit uint64, v bool) {
		if v {
			out |= bit
		}
	}
	if keepCF {
		out |= cin
	} else {
		set(flagCF, cf)
	}
	set(flagOF, of)
	set(flagAF, af)
	set(flagZF, res == 0)
	set(flagSF, res&sign != 0)
	set(flagPF, bits.OnesCount8(uint8(res))%2 == 0)
	return res, out
}

func isStos(op x86asm.Op) bool {
	return op == x86asm.STOSB || op == x86asm.STOSW || op == x86asm.STOSD || op == x86asm.STOSQ
}

func isMovs(op x86asm.Op) bool {
	return op == x86asm.MOVSB || op == x86asm.MOVSW || op == x86asm.MOVSD || op == x86asm.MOVSQ
}

// str: STOS and MOVS, one element or, under REP, RCX of them at once.
// The registers end as the CPU leaves them: RCX 0, RDI (and RSI) moved by
// the whole length, up or down with DF.
func (em *Emulation) str(s *Store, regs *unix.PtraceRegs, m Target) string {
	inst := &s.Inst
	if inst.AddrSize != 64 {
		// EDI/ESI/ECX in 64-bit mode: rare, and left to the CPU.
		return "32-bit address size"
	}
	w := stringWidth(inst.Op)
	count := uint64(1)
	if s.Rep {
		count = regs.Rcx
		em.regs.Rcx = 0
	}
	if w == 0 || count == 0 || count*w != s.Size {
		return "string length"
	}
	down := regs.Eflags&flagDF != 0
	size := s.Size
	if s.Rep && count > maxEmulated/w {
		// Too long for one go: the first maxEmulated bytes, and the
		// instruction stays for the CPU to go on with, as after an
		// interrupt (RCX, RDI, RSI updated, RIP on it). Under a page
		// watch it traps again only if it reaches another armed page.
		count = maxEmulated / w
		size = count * w
		em.regs.Rcx = regs.Rcx - count
		em.regs.Rip = regs.Rip
		if down {
			em.addr = s.Addr + s.Size - size
		}
	}
	move := func(r uint64) uint64 {
		if down {
			return r - count*w
		}
		return r + count*w
	}
	em.regs.Rdi = move(regs.Rdi)
	data := em.out(size)
	if isStos(inst.Op) {
		var v [8]byte
		binary.LittleEndian.PutUint64(v[:], regs.Rax)
		for i := uint64(0); i < size; i += w {
			copy(data[i:i+w], v[:w])
		}
		return ""
	}
	sm, ok := inst.Args[1].(x86asm.Mem)
	if !ok {
		return "source operand"
	}
	first := regs.Rsi // the first element's address, and the lowest read
	switch sm.Segment {
	case x86asm.FS:
		first += regs.Fs_base
	case x86asm.GS:
		first += regs.Gs_base
	}
	em.regs.Rsi = move(regs.Rsi)
	lo := first
	if down {
		lo = first - (count-1)*w
		if lo > first {
			return "source wraps"
		}
	}
	if lo+size < lo {
		return "source wraps"
	}
	em.src = span{lo, lo + size}
	dst := span{em.addr, em.addr + size}
	if !em.src.overlaps(dst) {
		if err := m.ReadMemory(lo, data); err != nil {
			return "reading the source"
		}
		return ""
	}
	// Overlapping: element by element, each reading what earlier ones
	// wrote, as the CPU does.
	u := span{min(dst.lo, lo), max(dst.hi, em.src.hi)}
	mem := make([]byte, u.hi-u.lo)
	if err := m.ReadMemory(u.lo, mem); err != nil {
		return "reading the source"
	}
	em.old = append([]byte(nil), mem[dst.lo-u.lo:dst.hi-u.lo]...)
	d, sr := regs.Rdi-u.lo, first-u.lo
	for range count {
		copy(mem[d:d+w], mem[sr:sr+w])
		if down {
			d, sr = d-w, sr-w
		} else {
			d, sr = d+w, sr+w
		}
	}
	copy(data, mem[dst.lo-u.lo:dst.hi-u.lo])
	return ""
}
