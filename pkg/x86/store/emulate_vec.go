package store

import (
	"github.com/memtrap/memtrap/pkg/x86/xsave"
	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/cpu"
)

// vecStore says which bytes of which register a vector store writes:
// [off, off+size) of register r, whole or in part; aligned stores fault
// unless the address is a multiple of their size.
type vecStore struct {
	r       x86asm.Reg
	off     uint64
	aligned bool
}

// vecStoreOf recognizes the vector stores the emulator does: the moves of
// whole registers (SSE, AVX and unmasked AVX-512), of their low or high
// halves or scalars, and extracts with an immediate lane number.
func vecStoreOf(inst *x86asm.Inst, size uint64) (vecStore, string) {
	args := inst.Args[1:]
	if r, ok := args[0].(x86asm.Reg); ok && r >= x86asm.K0 && r <= x86asm.K7 {
		args = args[1:] // x86asm puts a write mask before the source
	}
	r, ok := args[0].(x86asm.Reg)
	if !ok {
		return vecStore{}, "op " + inst.Op.String()
	}
	v := vecStore{r: r}
	width := vecWidth(r)
	imm := func() (uint64, bool) {
		i, ok := args[1].(x86asm.Imm)
		return uint64(i), ok
	}
	switch inst.Op {
	case x86asm.MOVAPS, x86asm.MOVAPD, x86asm.MOVDQA, x86asm.MOVNTPS, x86asm.MOVNTPD, x86asm.MOVNTDQ,
		x86asm.VMOVAPS, x86asm.VMOVAPD, x86asm.VMOVDQA, x86asm.VMOVDQA32, x86asm.VMOVDQA64,
		x86asm.VMOVNTDQ, x86asm.VMOVNTPS, x86asm.VMOVNTPD:
		v.aligned = true
		if size != width {
			return vecStore{}, "odd operand size"
		}
	case x86asm.MOVUPS, x86asm.MOVUPD, x86asm.MOVDQU,
		x86asm.VMOVUPS, x86asm.VMOVUPD, x86asm.VMOVDQU,
		x86asm.VMOVDQU8, x86asm.VMOVDQU16, x86asm.VMOVDQU32, x86asm.VMOVDQU64:
		if size != width {
			return vecStore{}, "odd operand size"
		}
	case x86asm.MOVQ, x86asm.MOVD, x86asm.MOVSS, x86asm.MOVSD_XMM, x86asm.MOVLPS, x86asm.MOVLPD,
		x86asm.MOVNTQ, x86asm.MOVNTSS, x86asm.MOVNTSD,
		x86asm.VMOVQ, x86asm.VMOVD, x86asm.VMOVSS, x86asm.VMOVSD, x86asm.VMOVLPS, x86asm.VMOVLPD:
		// The low element.
	case x86asm.MOVHPS, x86asm.MOVHPD, x86asm.VMOVHPS, x86asm.VMOVHPD:
		v.off = 8
	case x86asm.PEXTRB, x86asm.PEXTRW, x86asm.PEXTRD, x86asm.PEXTRQ,
		x86asm.VPEXTRB, x86asm.VPEXTRW, x86asm.VPEXTRD, x86asm.VPEXTRQ,
		x86asm.EXTRACTPS, x86asm.VEXTRACTPS,
		x86asm.VEXTRACTF128, x86asm.VEXTRACTI128,
		x86asm.VEXTRACTF32X4, x86asm.VEXTRACTF64X2, x86asm.VEXTRACTI32X4, x86asm.VEXTRACTI64X2,
		x86asm.VEXTRACTF32X8, x86asm.VEXTRACTF64X4, x86asm.VEXTRACTI32X8, x86asm.VEXTRACTI64X4:
		// Lane imm of the register's size-byte lanes, counted modulo
		// their number.
		i, ok := imm()
		if !ok || size == 0 || width%size != 0 {
			return vecStore{}, "odd operand size"
		}
		v.off = i % (width / size) * size
	default:
		return vecStore{}, "op " + inst.Op.String()
	}
	if width == 0 || v.off+size > width {
		return vecStore{}, "source register"
	}
	return v, ""
}

// vecWidth is the size of an MMX, XMM, YMM or ZMM register; 0 for others.
func vecWidth(r x86asm.Reg) uint64 {
	switch {
	case r >= x86asm.M0 && r <= x86asm.M7:
		return 8
	case r >= x86asm.X0 && r <= x86asm.X31:
		return 16
	case r >= x86asm.Y0 && r <= x86asm.Y31:
		return 32
	case r >= x86asm.Z0 && r <= x86asm.Z31:
		return 64
	}
	return 0
}

func (em *Emulation) vector(s *Store, m Target) string {
	inst := &s.Inst
	v, why := vecStoreOf(inst, s.Size)
	if why != "" {
		return why
	}
	switch {
	case inst.Prefix[0].IsEVEX() && !cpu.X86.HasAVX512F:
		return "AVX-512 unavailable"
	case inst.Prefix[0].IsVEX() && !cpu.X86.HasAVX:
		return "AVX unavailable"
	case v.aligned && s.Addr%s.Size != 0:
		// #GP: the fallback lets the CPU raise it.
		return "misaligned"
	}
	var reg [64]byte
	if why := readVec(m, v.r, reg[:]); why != "" {
		return why
	}
	copy(em.out(s.Size), reg[v.off:])
	if evexMasked(inst) {
		return em.writeMask(inst, s.Size, m)
	}
	return ""
}

// maskElement is the element size a masked store's mask bits select, for
// the ops whose every element goes to its own place in memory.
func maskElement(op x86asm.Op) uint64 {
	switch op {
	case x86asm.VMOVDQU8:
		return 1
	case x86asm.VMOVDQU16:
		return 2
	case x86asm.VMOVDQU32, x86asm.VMOVDQA32, x86asm.VMOVUPS, x86asm.VMOVAPS, x86asm.VMOVSS:
		return 4
	case x86asm.VMOVDQU64, x86asm.VMOVDQA64, x86asm.VMOVUPD, x86asm.VMOVAPD, x86asm.VMOVSD:
		return 8
	}
	return 0
}

// writeMask turns the write mask of an AVX-512 store into em.mask, one bit
// per byte: element i of size bytes is written if bit i of the opmask
// register is set. Masked-out elements neither change nor fault.
func (em *Emulation) writeMask(inst *x86asm.Inst, size uint64, m Target) string {
	elem := maskElement(inst.Op)
	if elem == 0 || size%elem != 0 || size > 64 {
		return "masked " + inst.Op.String()
	}
	if inst.Prefix[3]&0x80 != 0 {
		return "zeroing-masked store" // #UD
	}
	k := int(inst.Prefix[3] & 7)
	off, n, ok := xsave.Component(xsave.Opmask)
	if !ok || n < 64 {
		return "no opmask registers"
	}
	end := max(off+64, xsave.BVOffset+8)
	xs := make([]byte, end)
	if got, err := m.XState(xs); err != nil || got < end {
		return "reading the opmask"
	}
	var kv uint64
	if getLE(xs[xsave.BVOffset:])&(1<<xsave.Opmask) != 0 {
		kv = getLE(xs[off+8*k:])
	}
	var mask uint64
	for i := uint64(0); i < size/elem; i++ {
		if kv&(1<<i) != 0 {
			mask |= (1<<elem - 1) << (i * elem)
		}
	}
	if mask == 0 {
		// No element: the CPU writes nothing and cannot have faulted.
		return "mask selects nothing"
	}
	em.masked, em.mask = true, mask
	return ""
}

// readVec reads vector register r into out (its width's worth), with as
// little as the register needs: the FXSAVE image for MMX and XMM0-15, the
// XSAVE image as far as the last component that holds part of r for the
// rest.
func readVec(m Target, r x86asm.Reg, out []byte) string {
	var fx [512]byte
	switch {
	case r >= x86asm.M0 && r <= x86asm.M7:
		if m.FPRegs(&fx) != nil {
			return "reading vector registers"
		}
		// MMi is physical x87 register i; the image holds them in
		// stack order, from ST0 = the register TOP (FSW bits 11-13)
		// names. MMX code runs with TOP 0, x87 code may not.
		top := int(fx[3]>>3) & 7
		slot := (int(r-x86asm.M0) - top) & 7
		copy(out, fx[xsave.MMOffset+16*slot:][:8])
		return ""
	case r >= x86asm.X0 && r <= x86asm.X15:
		if m.FPRegs(&fx) != nil {
			return "reading vector registers"
		}
		copy(out, fx[xsave.XMMOffset+16*int(r-x86asm.X0):][:16])
		return ""
	}
	// part is one slice of r in the XSAVE image: component c's bytes
	// [off, off+n) go to out[at:].
	type part struct{ c, off, n, at int }
	var parts [3]part
	np := 0
	switch {
	case r >= x86asm.X16 && r <= x86asm.X31:
		parts[0], np = part{xsave.Hi16ZMM, 64 * int(r-x86asm.X16), 16, 0}, 1
	case r >= x86asm.Y16 && r <= x86asm.Y31:
		parts[0], np = part{xsave.Hi16ZMM, 64 * int(r-x86asm.Y16), 32, 0}, 1
	case r >= x86asm.Z16 && r <= x86asm.Z31:
		parts[0], np = part{xsave.Hi16ZMM, 64 * int(r-x86asm.Z16), 64, 0}, 1
	case r >= x86asm.Y0 && r <= x86asm.Y15:
		i := int(r - x86asm.Y0)
		parts[0], parts[1], np = part{0, xsave.XMMOffset + 16*i, 16, 0}, part{xsave.YMMHi128, 16 * i, 16, 16}, 2
	case r >= x86asm.Z0 && r <= x86asm.Z15:
		i := int(r - x86asm.Z0)
		parts[0], parts[1], parts[2], np = part{0, xsave.XMMOffset + 16*i, 16, 0}, part{xsave.YMMHi128, 16 * i, 16, 16}, part{xsave.ZMMHi256, 32 * i, 32, 32}, 3
	default:
		return "source register"
	}
	end := xsave.BVOffset + 8
	for i := range np {
		p := &parts[i]
		if p.c == 0 {
			continue
		}
		off, size, ok := xsave.Component(p.c)
		if !ok || p.off+p.n > size {
			return "vector register not in the XSAVE image"
		}
		p.off += off
		end = max(end, p.off+p.n)
	}
	xs := make([]byte, end)
	n, err := m.XState(xs)
	if err != nil || n < end {
		return "reading vector registers"
	}
	bv := getLE(xs[xsave.BVOffset:])
	for _, p := range parts[:np] {
		if p.c != 0 && bv&(1<<p.c) == 0 {
			// The component is in its initial state: zeros, whatever
			// the buffer holds.
			clear(out[p.at : p.at+p.n])
			continue
		}
		copy(out[p.at:p.at+p.n], xs[p.off:p.off+p.n])
	}
	return ""
}
