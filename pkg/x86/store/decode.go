package store

import (
	"errors"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"
)

// Store is what one instruction writes to memory.
//
// A Known store is exact: the instruction writes every byte of
// [Addr, Addr+Size) (possibly with the value already there) and nothing else,
// so a caller may report those bytes as written and an emulator may perform
// the write. When Known is false the caller must fall back to a path that
// does not trust the decoder; Addr and Size are then only a hint: if Size is
// nonzero, the write stays within [Addr, Addr+Size) (a masked vector store's
// full width, say); if Size is 0 nothing is known.
type Store struct {
	Inst  x86asm.Inst // decoded instruction
	Len   int         // instruction length in bytes
	Addr  uint64      // lowest address written
	Size  uint64      // number of bytes written; 0 if the instruction writes no memory
	Known bool        // false: we cannot say what it writes; the caller then takes an exact fallback path
	Rep   bool        // REP-prefixed string op (Size covers all RCX iterations)
}

// ErrUndecodable means the bytes at RIP are not an instruction the decoder
// knows, or are cut short (then the error also matches x86asm.ErrTruncated,
// and more bytes may help).
var ErrUndecodable = errors.New("undecodable instruction")

// maxInstLen is the architectural limit; the CPU raises #GP beyond it.
const maxInstLen = 15

// Decode decodes the instruction at the start of code (up to 15 bytes;
// fewer if the page ends) executing with regs, in 64-bit mode, and says what
// it writes to memory.
//
// An error (always matching ErrUndecodable) comes with Known false and Len 0;
// x86asm's "Op == 0 with a nil error", which it returns for an unknown opcode
// after a prefix and for most truncated instructions, is such an error too.
// Without an error, Len is between 1 and len(code).
func Decode(code []byte, regs *unix.PtraceRegs) (Store, error) {
	inst, err := decodeInst(code)
	if err != nil {
		return Store{}, err
	}
	s := Store{Inst: inst, Len: inst.Len, Known: true}
	s.describe(regs)
	return s, nil
}

// decodeInst wraps x86asm.Decode to paper over what v0.32.0 gets wrong for a
// store decoder: a short buffer can decode as a shorter, different
// instruction (a VEX op missing its ModRM byte comes back as a register
// form), and VZEROUPPER/VZEROALL swallow the next byte as a ModRM.
func decodeInst(code []byte) (x86asm.Inst, error) {
	if len(code) > maxInstLen {
		code = code[:maxInstLen]
	}
	if len(code) == 0 {
		return x86asm.Inst{}, fmt.Errorf("%w: no bytes: %w", ErrUndecodable, x86asm.ErrTruncated)
	}
	if n := vzeroLen(code); n > 0 {
		if inst, err := x86asm.Decode(code[:n], 64); err == nil && (inst.Op == x86asm.VZEROUPPER || inst.Op == x86asm.VZEROALL) {
			inst.Len = n
			return inst, nil
		}
	}
	if inst, ok := decodePrefixedVEX(code); ok {
		return inst, nil
	}
	inst, err := x86asm.Decode(code, 64)
	if len(code) < maxInstLen {
		// Decode again with the bytes the page did not give us as zeros:
		// if that instruction is longer than what we have, ours is cut.
		var buf [maxInstLen]byte
		copy(buf[:], code)
		full, ferr := x86asm.Decode(buf[:], 64)
		if ferr == nil && full.Op != 0 && full.Len > len(code) {
			return x86asm.Inst{}, fmt.Errorf("%w (% x): %w", ErrUndecodable, code, x86asm.ErrTruncated)
		}
		if err == nil && (ferr != nil || full.Op != inst.Op || full.Len != inst.Len) {
			return x86asm.Inst{}, fmt.Errorf("%w (% x): decodes differently when followed by more bytes", ErrUndecodable, code)
		}
	}
	switch {
	case err != nil:
		return x86asm.Inst{}, fmt.Errorf("%w (% x): %w", ErrUndecodable, code, err)
	case inst.Op == 0:
		return x86asm.Inst{}, fmt.Errorf("%w (% x): unknown opcode", ErrUndecodable, code)
	case inst.Len < 1 || inst.Len > len(code):
		return x86asm.Inst{}, fmt.Errorf("%w (% x): bad length %d", ErrUndecodable, code, inst.Len)
	}
	return inst, nil
}

// vzeroLen returns the length of a VZEROUPPER/VZEROALL encoding at the start
// of code (VEX 0F 77, which has no ModRM), or 0.
func vzeroLen(code []byte) int {
	switch {
	case len(code) >= 3 && code[0] == 0xC5 && code[2] == 0x77:
		return 3
	case len(code) >= 4 && code[0] == 0xC4 && code[1]&0x1F == 1 && code[3] == 0x77:
		return 4
	}
	return 0
}

// storeKind says how an op writes memory. x86asm has no such metadata.
type storeKind uint8

const (
	// kindOther: not in our table. An op we have not reviewed may write
	// its memory first operand, so then Known is false; with no memory
	// first operand it writes nothing (implicit writers are all listed).
	kindOther       storeKind = iota
	kindRead                  // may read memory, never writes it
	kindDest                  // writes its first operand when that is memory
	kindMasked                // writes some elements of its memory first operand, chosen at run time
	kindBit                   // BTS/BTR/BTC: like kindDest, but a register bit offset moves the address
	kindXchg                  // writes whichever operand is memory
	kindPop                   // POP m: the address is computed after RSP moves
	kindPush                  // writes one operand-size slot below RSP
	kindCall                  // near CALL: pushes the return address
	kindEnter                 // pushes RBP and, when nested, the display
	kindStringStore           // STOS/MOVS/INS: at RDI, RCX times under REP
	kindStringRead            // LODS/CMPS/SCAS/OUTS: REP-able, write nothing
	kindUnbounded             // writes memory we cannot bound (XSAVE area, scatter, far call, MASKMOV at RDI)
)

func kindOf(op x86asm.Op) storeKind {
	switch op {
	case x86asm.ADC, x86asm.ADD, x86asm.AND, x86asm.OR, x86asm.SBB, x86asm.SUB, x86asm.XOR,
		x86asm.INC, x86asm.DEC, x86asm.NEG, x86asm.NOT,
		x86asm.RCL, x86asm.RCR, x86asm.ROL, x86asm.ROR, x86asm.SAR, x86asm.SHL, x86asm.SHR,
		x86asm.SHLD, x86asm.SHRD,
		// CMPXCHG writes even when the comparison fails (the old value back).
		x86asm.XADD, x86asm.CMPXCHG, x86asm.CMPXCHG8B, x86asm.CMPXCHG16B,
		x86asm.MOV, x86asm.MOVBE, x86asm.MOVNTI,
		x86asm.SETA, x86asm.SETAE, x86asm.SETB, x86asm.SETBE, x86asm.SETE, x86asm.SETG,
		x86asm.SETGE, x86asm.SETL, x86asm.SETLE, x86asm.SETNE, x86asm.SETNO, x86asm.SETNP,
		x86asm.SETNS, x86asm.SETO, x86asm.SETP, x86asm.SETS,
		x86asm.MOVAPD, x86asm.MOVAPS, x86asm.MOVUPD, x86asm.MOVUPS, x86asm.MOVDQA, x86asm.MOVDQU,
		x86asm.MOVNTDQ, x86asm.MOVNTPD, x86asm.MOVNTPS, x86asm.MOVNTQ, x86asm.MOVNTSD, x86asm.MOVNTSS,
		x86asm.MOVQ, x86asm.MOVD, x86asm.MOVSS, x86asm.MOVSD_XMM,
		x86asm.MOVLPS, x86asm.MOVHPS, x86asm.MOVLPD, x86asm.MOVHPD,
		x86asm.PEXTRB, x86asm.PEXTRW, x86asm.PEXTRD, x86asm.PEXTRQ, x86asm.EXTRACTPS,
		x86asm.FST, x86asm.FSTP, x86asm.FIST, x86asm.FISTP, x86asm.FISTTP, x86asm.FBSTP,
		x86asm.FNSTSW, x86asm.FNSTCW, x86asm.FNSTENV, x86asm.FNSAVE,
		x86asm.FXSAVE, x86asm.FXSAVE64, x86asm.STMXCSR,
		x86asm.SGDT, x86asm.SIDT, x86asm.SLDT, x86asm.STR, x86asm.SMSW,
		// VEX/EVEX: every op whose x86asm v0.32.0 table entry puts a
		// memory operand first (TestAVXMemoryFirstOpsClassified).
		x86asm.KMOVB, x86asm.KMOVW, x86asm.KMOVD, x86asm.KMOVQ,
		x86asm.VMOVAPD, x86asm.VMOVAPS, x86asm.VMOVUPD, x86asm.VMOVUPS,
		x86asm.VMOVDQA, x86asm.VMOVDQA32, x86asm.VMOVDQA64,
		x86asm.VMOVDQU, x86asm.VMOVDQU8, x86asm.VMOVDQU16, x86asm.VMOVDQU32, x86asm.VMOVDQU64,
		x86asm.VMOVNTDQ, x86asm.VMOVNTPD, x86asm.VMOVNTPS,
		x86asm.VMOVD, x86asm.VMOVQ, x86asm.VMOVSS, x86asm.VMOVSD,
		x86asm.VMOVLPS, x86asm.VMOVHPS, x86asm.VMOVLPD, x86asm.VMOVHPD,
		x86asm.VPEXTRB, x86asm.VPEXTRW, x86asm.VPEXTRD, x86asm.VPEXTRQ, x86asm.VEXTRACTPS,
		x86asm.VEXTRACTF128, x86asm.VEXTRACTI128,
		x86asm.VEXTRACTF32X4, x86asm.VEXTRACTF32X8, x86asm.VEXTRACTF64X2, x86asm.VEXTRACTF64X4,
		x86asm.VEXTRACTI32X4, x86asm.VEXTRACTI32X8, x86asm.VEXTRACTI64X2, x86asm.VEXTRACTI64X4,
		x86asm.VCVTPS2PH, x86asm.VSTMXCSR,
		// Unmasked, a compress stores every element, so the full width.
		x86asm.VCOMPRESSPD, x86asm.VCOMPRESSPS,
		x86asm.VPCOMPRESSB, x86asm.VPCOMPRESSW, x86asm.VPCOMPRESSD, x86asm.VPCOMPRESSQ,
		x86asm.VPMOVDB, x86asm.VPMOVDW, x86asm.VPMOVQB, x86asm.VPMOVQD, x86asm.VPMOVQW, x86asm.VPMOVWB,
		x86asm.VPMOVSDB, x86asm.VPMOVSDW, x86asm.VPMOVSQB, x86asm.VPMOVSQD, x86asm.VPMOVSQW, x86asm.VPMOVSWB,
		x86asm.VPMOVUSDB, x86asm.VPMOVUSDW, x86asm.VPMOVUSQB, x86asm.VPMOVUSQD, x86asm.VPMOVUSQW, x86asm.VPMOVUSWB:
		return kindDest
	case x86asm.VMASKMOVPS, x86asm.VMASKMOVPD, x86asm.VPMASKMOVD, x86asm.VPMASKMOVQ:
		return kindMasked
	case x86asm.BTS, x86asm.BTR, x86asm.BTC:
		return kindBit
	case x86asm.XCHG:
		return kindXchg
	case x86asm.POP:
		return kindPop
	case x86asm.PUSH, x86asm.PUSHF, x86asm.PUSHFD, x86asm.PUSHFQ:
		return kindPush
	case x86asm.CALL:
		return kindCall
	case x86asm.ENTER:
		return kindEnter
	case x86asm.STOSB, x86asm.STOSW, x86asm.STOSD, x86asm.STOSQ,
		x86asm.MOVSB, x86asm.MOVSW, x86asm.MOVSD, x86asm.MOVSQ,
		x86asm.INSB, x86asm.INSW, x86asm.INSD:
		return kindStringStore
	case x86asm.LODSB, x86asm.LODSW, x86asm.LODSD, x86asm.LODSQ,
		x86asm.CMPSB, x86asm.CMPSW, x86asm.CMPSD, x86asm.CMPSQ,
		x86asm.SCASB, x86asm.SCASW, x86asm.SCASD, x86asm.SCASQ,
		x86asm.OUTSB, x86asm.OUTSW, x86asm.OUTSD:
		return kindStringRead
	case x86asm.XSAVE, x86asm.XSAVE64, x86asm.XSAVEC, x86asm.XSAVEC64,
		x86asm.XSAVEOPT, x86asm.XSAVEOPT64, x86asm.XSAVES, x86asm.XSAVES64,
		x86asm.VPSCATTERDD, x86asm.VPSCATTERDQ, x86asm.VPSCATTERQD, x86asm.VPSCATTERQQ,
		x86asm.VSCATTERDPD, x86asm.VSCATTERDPS, x86asm.VSCATTERQPD, x86asm.VSCATTERQPS,
		x86asm.MASKMOVDQU, x86asm.MASKMOVQ, x86asm.VMASKMOVDQU,
		x86asm.LCALL:
		return kindUnbounded
	case x86asm.CMP, x86asm.TEST, x86asm.BT, x86asm.MUL, x86asm.IMUL, x86asm.DIV, x86asm.IDIV, x86asm.NOP,
		x86asm.CLFLUSH, x86asm.PREFETCHNTA, x86asm.PREFETCHT0, x86asm.PREFETCHT1, x86asm.PREFETCHT2,
		x86asm.PREFETCHW, x86asm.XLATB, x86asm.JMP, x86asm.LJMP,
		x86asm.FLD, x86asm.FILD, x86asm.FBLD, x86asm.FLDCW, x86asm.FLDENV, x86asm.FRSTOR,
		x86asm.FADD, x86asm.FMUL, x86asm.FCOM, x86asm.FCOMP, x86asm.FSUB, x86asm.FSUBR,
		x86asm.FDIV, x86asm.FDIVR, x86asm.FIADD, x86asm.FIMUL, x86asm.FICOM, x86asm.FICOMP,
		x86asm.FISUB, x86asm.FISUBR, x86asm.FIDIV, x86asm.FIDIVR,
		x86asm.FXRSTOR, x86asm.FXRSTOR64, x86asm.XRSTOR, x86asm.XRSTOR64, x86asm.XRSTORS, x86asm.XRSTORS64,
		x86asm.LDMXCSR, x86asm.VLDMXCSR,
		x86asm.LGDT, x86asm.LIDT, x86asm.LLDT, x86asm.LMSW, x86asm.LTR, x86asm.INVLPG,
		x86asm.VERR, x86asm.VERW,
		// Prefetch hints: they never write and never fault.
		x86asm.VGATHERPF0DPD, x86asm.VGATHERPF0DPS, x86asm.VGATHERPF0QPD, x86asm.VGATHERPF0QPS,
		x86asm.VGATHERPF1DPD, x86asm.VGATHERPF1DPS, x86asm.VGATHERPF1QPD, x86asm.VGATHERPF1QPS,
		x86asm.VSCATTERPF0DPD, x86asm.VSCATTERPF0DPS, x86asm.VSCATTERPF0QPD, x86asm.VSCATTERPF0QPS,
		x86asm.VSCATTERPF1DPD, x86asm.VSCATTERPF1DPS, x86asm.VSCATTERPF1QPD, x86asm.VSCATTERPF1QPS:
		return kindRead
	}
	return kindOther
}

// WritesMemory reports whether some form of op may write memory (for POP,
// MOV, ALU ops and the like, only the form with a memory destination does).
// Ops it does not know, it reports as not writing; Decode is stricter.
func WritesMemory(op x86asm.Op) bool {
	switch kindOf(op) {
	case kindOther, kindRead, kindStringRead:
		return false
	}
	return true
}

// describe fills in Addr, Size, Known and Rep for a decoded instruction.
func (s *Store) describe(regs *unix.PtraceRegs) {
	inst := &s.Inst
	if !isVEX(inst) {
		for _, p := range inst.Prefix {
			if p == 0 {
				break
			}
			if p&x86asm.PrefixInvalid != 0 {
				// A bad LOCK: #UD before any access.
				s.unbounded()
				return
			}
		}
	}
	m, memFirst := inst.Args[0].(x86asm.Mem)
	switch kindOf(inst.Op) {
	case kindOther:
		s.Known = !memFirst
	case kindRead:
	case kindDest:
		if !memFirst {
			return
		}
		size := destSize(inst)
		if size == 0 {
			s.Known = false
			return
		}
		s.setMem(m, regs, 0, 0, size)
		switch {
		case evexMasked(inst):
			// Only the elements the write mask selects are stored, and
			// ptrace does not give us the mask registers.
			s.Known = false
		case evexKMOV(inst):
			s.unbounded()
		}
	case kindMasked:
		if memFirst {
			s.setMem(m, regs, 0, 0, uint64(inst.MemBytes))
			s.Known = false
		}
	case kindBit:
		if memFirst {
			s.setBit(m, regs)
		}
	case kindXchg:
		for _, a := range inst.Args[:2] {
			if m, ok := a.(x86asm.Mem); ok {
				s.setMem(m, regs, 0, 0, uint64(inst.MemBytes))
			}
		}
	case kindPop:
		if memFirst {
			w := stackSlot(inst)
			// The address uses RSP as it is after the pop.
			s.setMem(m, regs, 0, w, w)
		}
	case kindPush:
		w := stackSlot(inst)
		s.Addr, s.Size = regs.Rsp-w, w
		if r, ok := inst.Args[0].(x86asm.Reg); ok && (r == x86asm.FS || r == x86asm.GS) {
			// How much of the slot a segment push writes differs
			// between vendors (the SDM allows a 2-byte move).
			s.Known = false
		}
	case kindCall:
		s.Addr, s.Size = regs.Rsp-8, 8
		if inst.DataSize == 16 {
			// Intel ignores 0x66 on a near CALL in 64-bit mode, AMD does not.
			s.Known = false
		}
	case kindEnter:
		// ENTER also probes the final RSP (after the allocation) for
		// writability, so it can fault below Addr without writing there.
		s.setEnter(regs)
	case kindStringStore:
		s.setString(regs)
	case kindStringRead:
		s.Rep = hasRep(inst)
	case kindUnbounded:
		s.Known = false
	}
	if s.Size > 0 && s.Addr+s.Size < s.Addr {
		// Wraps the top of the address space: not something to report
		// or emulate as one range.
		s.unbounded()
	}
}

// unbounded marks a write we can neither describe nor bound.
func (s *Store) unbounded() {
	s.Known, s.Addr, s.Size = false, 0, 0
}

// setMem records a write of size bytes at operand m displaced by extra
// bytes, with popBias added to a RSP base.
func (s *Store) setMem(m x86asm.Mem, regs *unix.PtraceRegs, extra int64, popBias, size uint64) {
	a, ok := memAddr(&s.Inst, regs, m, extra, popBias)
	if !ok || size == 0 {
		s.Known = false
		return
	}
	s.Addr, s.Size = a, size
}

// setBit handles BTS/BTR/BTC on memory: with a register bit offset the
// operand is a bit string, and the CPU accesses the operand-size word that
// holds the bit, EA + size*(offset DIV bits), the offset being signed.
func (s *Store) setBit(m x86asm.Mem, regs *unix.PtraceRegs) {
	inst := &s.Inst
	size := inst.MemBytes
	r, ok := inst.Args[1].(x86asm.Reg)
	if !ok {
		// An immediate offset is taken modulo the operand size.
		s.setMem(m, regs, 0, 0, uint64(size))
		return
	}
	v, ok := regValue(r, regs)
	if !ok {
		s.Known = false
		return
	}
	var off int64
	var shift uint
	switch size {
	case 2:
		off, shift = int64(int16(v)), 4
	case 4:
		off, shift = int64(int32(v)), 5
	case 8:
		off, shift = int64(v), 6
	default:
		s.Known = false
		return
	}
	s.setMem(m, regs, (off>>shift)*int64(size), 0, uint64(size))
}

// setEnter: ENTER pushes RBP, then level-1 display entries, then the new
// frame pointer, all contiguous below RSP.
func (s *Store) setEnter(regs *unix.PtraceRegs) {
	level, ok := s.Inst.Args[1].(x86asm.Imm)
	if !ok || s.Inst.DataSize == 16 {
		s.Known = false
		return
	}
	n := uint64(1) // level 0: RBP only
	if l := uint64(level) & 31; l > 0 {
		n = l + 1
	}
	s.Addr, s.Size = regs.Rsp-8*n, 8*n
}

// setString handles STOS/MOVS/INS: one element at RDI, or with REP, RCX of
// them going up from RDI (DF clear) or down to it (DF set).
func (s *Store) setString(regs *unix.PtraceRegs) {
	inst := &s.Inst
	s.Rep = hasRep(inst)
	w := stringWidth(inst.Op)
	m, ok := inst.Args[0].(x86asm.Mem)
	if !ok || w == 0 {
		s.Known = false
		return
	}
	di, ok := regValue(m.Base, regs)
	if !ok {
		s.Known = false
		return
	}
	limit := ^uint64(0) // highest address
	count := uint64(1)
	if inst.AddrSize == 32 {
		limit = 1<<32 - 1
	}
	if s.Rep {
		count = regs.Rcx & limit
	}
	s.Addr = di
	if count == 0 {
		return
	}
	if count > limit/w {
		// As many bytes as the address space: RDI wraps.
		s.Known = false
		return
	}
	s.Size = count * w
	if regs.Eflags&(1<<10) != 0 && count > 1 {
		back := (count - 1) * w
		if di < back {
			s.unbounded()
			return
		}
		s.Addr = di - back
	}
	if s.Addr > limit-(s.Size-1) {
		s.unbounded()
	}
}

func stringWidth(op x86asm.Op) uint64 {
	switch op {
	case x86asm.STOSB, x86asm.MOVSB, x86asm.INSB:
		return 1
	case x86asm.STOSW, x86asm.MOVSW, x86asm.INSW:
		return 2
	case x86asm.STOSD, x86asm.MOVSD, x86asm.INSD:
		return 4
	case x86asm.STOSQ, x86asm.MOVSQ:
		return 8
	}
	return 0
}

// hasRep reports a REP or REPNE prefix; on MOVS/STOS both repeat.
func hasRep(inst *x86asm.Inst) bool {
	for _, p := range inst.Prefix {
		if p == 0 {
			break
		}
		if b := p & 0xFF; b == x86asm.PrefixREP || b == x86asm.PrefixREPN {
			return true
		}
	}
	return false
}

// stackSlot is the size of a push or pop in 64-bit mode: 8, or 2 with 0x66.
func stackSlot(inst *x86asm.Inst) uint64 {
	if inst.DataSize == 16 {
		return 2
	}
	return 8
}

// destSize is the width of a memory destination; x86asm leaves MemBytes 0
// for the operand types its table cannot size.
func destSize(inst *x86asm.Inst) uint64 {
	if inst.MemBytes > 0 {
		return uint64(inst.MemBytes)
	}
	switch inst.Op {
	case x86asm.FSTP, x86asm.FBSTP: // m80
		return 10
	case x86asm.FNSTENV:
		if inst.DataSize == 16 {
			return 14
		}
		return 28
	case x86asm.FNSAVE:
		if inst.DataSize == 16 {
			return 94
		}
		return 108
	case x86asm.FXSAVE, x86asm.FXSAVE64:
		return 512
	case x86asm.SGDT, x86asm.SIDT: // 2-byte limit, 8-byte base
		return 10
	}
	return 0
}

func isVEX(inst *x86asm.Inst) bool {
	return inst.Prefix[0].IsVEX() || inst.Prefix[0].IsEVEX()
}

// evexMasked reports an EVEX instruction with a write mask other than k0
// (EVEX.aaa, in the fourth byte).
func evexMasked(inst *x86asm.Inst) bool {
	return inst.Prefix[0].IsEVEX() && inst.Prefix[3]&7 != 0
}

// evexKMOV reports an EVEX-encoded KMOV, which x86asm v0.32.0 accepts and
// the CPU does not (#UD).
func evexKMOV(inst *x86asm.Inst) bool {
	switch inst.Op {
	case x86asm.KMOVB, x86asm.KMOVW, x86asm.KMOVD, x86asm.KMOVQ:
		return inst.Prefix[0].IsEVEX()
	}
	return false
}

// isMoffs reports MOV AL/AX/EAX/RAX to or from an absolute address
// (A0-A3): their Disp is the address itself, 64 bits wide.
func isMoffs(inst *x86asm.Inst) bool {
	op := inst.Opcode >> 24
	return !isVEX(inst) && inst.Op == x86asm.MOV && op >= 0xA0 && op <= 0xA3
}

// memAddr computes the linear address of m: base + index*scale + disp
// (+ extra), truncated to 32 bits under an address-size prefix, plus the FS
// or GS base. popBias is added to an RSP base.
func memAddr(inst *x86asm.Inst, regs *unix.PtraceRegs, m x86asm.Mem, extra int64, popBias uint64) (uint64, bool) {
	var ea uint64
	switch {
	case m.Base == x86asm.RIP || m.Base == x86asm.EIP:
		ea = regs.Rip + uint64(inst.Len)
	case m.Base == 0 && m.Index == 0 && m.Scale == 0 && isVEX(inst):
		// x86asm v0.32.0 drops the RIP base of a VEX/EVEX RIP-relative
		// operand; without a SIB byte (Scale 0) there is no other way
		// to have no base in 64-bit mode.
		ea = regs.Rip + uint64(inst.Len)
	case m.Base != 0:
		v, ok := regValue(m.Base, regs)
		if !ok {
			return 0, false
		}
		if m.Base == x86asm.RSP || m.Base == x86asm.ESP {
			v += popBias
		}
		ea = v
	}
	if m.Index != 0 {
		v, ok := regValue(m.Index, regs) // fails for a VSIB vector index
		if !ok {
			return 0, false
		}
		ea += v * uint64(max(m.Scale, 1))
	}
	if isMoffs(inst) {
		ea += uint64(m.Disp)
	} else {
		// x86asm zero-extends a legacy disp32; every displacement but
		// moffs is a sign-extended 32-bit value.
		ea += uint64(int64(int32(m.Disp)))
	}
	ea += uint64(extra)
	if inst.AddrSize == 32 {
		ea = uint64(uint32(ea))
	}
	switch m.Segment {
	case x86asm.FS:
		ea += regs.Fs_base
	case x86asm.GS:
		ea += regs.Gs_base
	}
	return ea, true
}

// regValue returns general register r, of any width, from regs.
func regValue(r x86asm.Reg, regs *unix.PtraceRegs) (uint64, bool) {
	switch {
	case r >= x86asm.RAX && r <= x86asm.R15:
		return gpr(regs, int(r-x86asm.RAX)), true
	case r >= x86asm.EAX && r <= x86asm.R15L:
		return gpr(regs, int(r-x86asm.EAX)) & 0xFFFFFFFF, true
	case r >= x86asm.AX && r <= x86asm.R15W:
		return gpr(regs, int(r-x86asm.AX)) & 0xFFFF, true
	case r >= x86asm.AH && r <= x86asm.BH:
		return gpr(regs, int(r-x86asm.AH)) >> 8 & 0xFF, true
	case r >= x86asm.AL && r <= x86asm.BL:
		return gpr(regs, int(r-x86asm.AL)) & 0xFF, true
	case r >= x86asm.SPB && r <= x86asm.R15B:
		return gpr(regs, int(r-x86asm.SPB)+4) & 0xFF, true
	}
	return 0, false
}

// setRegValue writes general register r, of any width, in regs as the CPU
// does: a 32-bit write clears the upper half, 8- and 16-bit writes keep
// the bits they do not cover.
func setRegValue(r x86asm.Reg, regs *unix.PtraceRegs, v uint64) bool {
	var p *uint64
	switch {
	case r >= x86asm.RAX && r <= x86asm.R15:
		*gprPtr(regs, int(r-x86asm.RAX)) = v
	case r >= x86asm.EAX && r <= x86asm.R15L:
		*gprPtr(regs, int(r-x86asm.EAX)) = v & 0xFFFFFFFF
	case r >= x86asm.AX && r <= x86asm.R15W:
		p = gprPtr(regs, int(r-x86asm.AX))
		*p = *p&^0xFFFF | v&0xFFFF
	case r >= x86asm.AH && r <= x86asm.BH:
		p = gprPtr(regs, int(r-x86asm.AH))
		*p = *p&^0xFF00 | (v&0xFF)<<8
	case r >= x86asm.AL && r <= x86asm.BL:
		p = gprPtr(regs, int(r-x86asm.AL))
		*p = *p&^0xFF | v&0xFF
	case r >= x86asm.SPB && r <= x86asm.R15B:
		p = gprPtr(regs, int(r-x86asm.SPB)+4)
		*p = *p&^0xFF | v&0xFF
	default:
		return false
	}
	return true
}

// gpr returns general register i in encoding order (RAX, RCX, RDX, RBX,
// RSP, RBP, RSI, RDI, R8...R15), the order x86asm's Reg ranges follow.
func gpr(regs *unix.PtraceRegs, i int) uint64 { return *gprPtr(regs, i) }

func gprPtr(regs *unix.PtraceRegs, i int) *uint64 {
	switch i {
	case 0:
		return &regs.Rax
	case 1:
		return &regs.Rcx
	case 2:
		return &regs.Rdx
	case 3:
		return &regs.Rbx
	case 4:
		return &regs.Rsp
	case 5:
		return &regs.Rbp
	case 6:
		return &regs.Rsi
	case 7:
		return &regs.Rdi
	case 8:
		return &regs.R8
	case 9:
		return &regs.R9
	case 10:
		return &regs.R10
	case 11:
		return &regs.R11
	case 12:
		return &regs.R12
	case 13:
		return &regs.R13
	case 14:
		return &regs.R14
	}
	return &regs.R15
}

// decodePrefixedVEX decodes a VEX/EVEX instruction behind FS, GS or
// address-size prefixes, which x86asm v0.32.0 returns as Op 0 (TLS code
// such as `vmovdqu %ymm0, %fs:(%rax)`): the rest is decoded alone and what
// the prefixes mean put back on it.
func decodePrefixedVEX(code []byte) (x86asm.Inst, bool) {
	k := 0
	var seg x86asm.Reg
	addr32 := false
	for k < len(code) && k < 3 {
		switch code[k] {
		case 0x64:
			seg = x86asm.FS
		case 0x65:
			seg = x86asm.GS
		case 0x67:
			addr32 = true
		default:
			goto done
		}
		k++
	}
done:
	if k == 0 || k >= len(code) || (code[k] != 0xc4 && code[k] != 0xc5 && code[k] != 0x62) {
		return x86asm.Inst{}, false
	}
	inst, err := decodeInst(code[k:])
	if err != nil || !isVEX(&inst) {
		return x86asm.Inst{}, false
	}
	// The prefixes stay off inst.Prefix, whose first entries name the
	// VEX/EVEX prefix and its payload (isVEX, evexMasked): the segment
	// goes on the memory operands, the address size on AddrSize.
	inst.Len += k
	if inst.Len > maxInstLen {
		return x86asm.Inst{}, false
	}
	if addr32 {
		inst.AddrSize = 32
	}
	for i, a := range inst.Args {
		if m, ok := a.(x86asm.Mem); ok {
			if seg != 0 {
				m.Segment = seg
			}
			inst.Args[i] = m
		}
	}
	return inst, true
}

// Cache decodes as Decode does, remembering what each instruction's bytes
// decode to: the same few store sites write a watched region over and
// over, and x86asm's decoding is most of a decode's cost. What depends on
// the registers (the address written) is worked out each time. Not safe
// for concurrent use.
type Cache struct {
	insts map[[maxInstLen + 1]byte]x86asm.Inst
}

// cacheMax bounds a Cache: past it, it starts over.
const cacheMax = 4096

// Decode is Decode, from the cache when code's bytes were seen before.
func (c *Cache) Decode(code []byte, regs *unix.PtraceRegs) (Store, error) {
	var k [maxInstLen + 1]byte
	n := copy(k[:maxInstLen], code)
	k[maxInstLen] = byte(n)
	inst, ok := c.insts[k]
	if !ok {
		var err error
		if inst, err = decodeInst(code); err != nil {
			return Store{}, err
		}
		if c.insts == nil || len(c.insts) >= cacheMax {
			c.insts = map[[maxInstLen + 1]byte]x86asm.Inst{}
		}
		c.insts[k] = inst
	}
	s := Store{Inst: inst, Len: inst.Len, Known: true}
	s.describe(regs)
	return s, nil
}
