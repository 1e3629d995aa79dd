package unwind

import (
	"debug/elf"
	"encoding/binary"
	"sync"

	"github.com/memtrap/memtrap/pkg/dwarf/op"
)

// Memory reads the traced process's memory.
type Memory interface {
	ReadMemory(addr uint64, p []byte) error
}

// Modules maps code addresses to the ELF files behind them.
type Modules interface {
	// ModuleAt returns the parsed ELF file of the module that maps pc and
	// its load bias (runtime address = file address + bias).
	ModuleAt(pc uint64) (f *elf.File, bias uint64, path string, ok bool)
}

// Frame is one frame of a backtrace.
type Frame struct {
	// PC is the frame's program counter: for frame 0 and for a frame
	// interrupted by a signal, the next instruction to run; for the others,
	// the return address, which is the instruction after the call.
	PC uint64
	// CFA is the frame's canonical frame address: the stack pointer's value
	// in the caller just before the call. It is 0 when it could not be
	// computed, which only happens for the last frame.
	CFA uint64
	// Signal reports a frame interrupted by a signal: PC is exact, not a
	// return address.
	Signal bool
	// Method says how the frame's CFA and its caller were found: "cfi",
	// "fp" (the frame pointer chain), or "sigframe" (the kernel's signal
	// frame). It is empty when the caller could not be found.
	Method string
	// Regs are the frame's registers as the unwinder recovered them, in
	// DWARF numbering; Valid says which are known, and the others are 0.
	// Frame 0 has all the registers Unwind was given. An outer frame has
	// rip (its PC) and rsp (its callee's CFA); the callee-saved registers
	// (rbx, rbp, r12-r15) that its callees' CFI restores from the stack or
	// leaves alone; and whatever else the CFI gives a rule for. Its
	// scratch registers (rax, rcx, rdx, rsi, rdi, r8-r11) are unknown:
	// the call clobbered them. A frame interrupted by a signal has them
	// all, from the kernel's signal frame; a frame reached through the
	// frame pointer chain has rbp, rsp and rip only.
	Regs  Regs
	Valid RegSet
}

// Unwinder walks stacks. It caches the parsed CFI of each module it meets,
// keyed by the module's path and *elf.File, for as long as it lives. It is
// safe for concurrent use.
type Unwinder struct {
	mods    Modules
	mu      sync.Mutex
	modules map[moduleKey]*moduleEntry
	walkers sync.Pool

	// noSigtrampBytes turns off recognising the signal trampoline by its
	// code, so that tests can exercise the CFI 'S' path alone.
	noSigtrampBytes bool
}

type moduleKey struct {
	path string
	f    *elf.File
}

type moduleEntry struct {
	once sync.Once
	cfi  *moduleCFI
}

// New returns an Unwinder that finds code through mods. With nil mods every
// frame is unwound without CFI.
func New(mods Modules) *Unwinder {
	return &Unwinder{mods: mods, modules: make(map[moduleKey]*moduleEntry)}
}

// moduleCFI returns the CFI of f, parsing it on first use. Parsing happens
// outside the Unwinder's lock, so one large module does not stall unwinds
// in others.
func (u *Unwinder) moduleCFI(path string, f *elf.File) *moduleCFI {
	k := moduleKey{path, f}
	u.mu.Lock()
	e := u.modules[k]
	if e == nil {
		e = &moduleEntry{}
		u.modules[k] = e
	}
	u.mu.Unlock()
	e.once.Do(func() { e.cfi = loadModuleCFI(f) })
	return e.cfi
}

// maxInitialFrames caps the preallocated frame slice; a deeper stack grows it.
const maxInitialFrames = 64

// Unwind returns up to max frames of the stack whose innermost frame has
// registers regs, reading the stack through mem. Frame 0 is at regs[16].
//
// It stops, returning the frames found so far, at a zero or unreadable
// return address, where the CFI marks the return address undefined (the
// outermost frame of a process or thread), when the CFA fails to move up
// the stack (except across a signal frame), and at max frames. Malformed
// CFI or unreadable memory ends the walk; it never panics.
func (u *Unwinder) Unwind(regs Regs, mem Memory, max int) []Frame {
	return u.UnwindInto(nil, regs, mem, max)
}

// UnwindInto is Unwind into dst's room (dst's frames are overwritten), for
// a caller that reuses its slices: a frame is some 180 bytes.
func (u *Unwinder) UnwindInto(dst []Frame, regs Regs, mem Memory, max int) []Frame {
	if max <= 0 || regs[regRIP] == 0 {
		return dst[:0]
	}
	w, _ := u.walkers.Get().(*walker)
	if w == nil {
		w = &walker{}
	}
	w.u, w.mem = u, mem
	defer func() {
		w.u, w.mem = nil, nil
		u.walkers.Put(w)
	}()

	frames := dst[:0]
	if cap(frames) == 0 {
		frames = make([]Frame, 0, min(max, maxInitialFrames))
	}
	cur, valid := regs, AllRegs
	exact := true // cur's PC is the next instruction, not a return address
	checkCFA := false
	var prevCFA uint64
	for len(frames) < max {
		pc := cur[regRIP]
		fr := Frame{PC: pc, Signal: exact && len(frames) > 0, Regs: cur.only(valid), Valid: valid}
		st := w.step(&cur, valid, exact)
		fr.CFA = st.cfa
		moved := !checkCFA || st.sigtramp || st.cfa > prevCFA
		if st.ok && moved {
			fr.Method = st.method
		}
		frames = append(frames, fr)
		if !st.ok || !moved || st.next[regRIP] == 0 {
			break
		}
		// Across a signal frame the stack may switch (sigaltstack), so
		// neither the trampoline's CFA nor the interrupted frame's is
		// compared with the one before it.
		checkCFA = !st.sigtramp
		prevCFA = st.cfa
		cur, valid, exact = st.next, st.valid, st.signal
	}
	return frames
}

// walker holds the scratch state of one Unwind call; Unwinders pool them.
type walker struct {
	u   *Unwinder
	mem Memory
	m   machine
	buf [sigframeRegsSize]byte
}

// stepResult is what one frame says about its caller.
type stepResult struct {
	ok       bool // next is its caller's registers
	cfa      uint64
	method   string
	next     Regs
	valid    RegSet
	signal   bool // the caller was interrupted by a signal: its PC is exact
	sigtramp bool // this frame is the signal trampoline
}

// step unwinds one frame. exact says whether the frame's PC is the next
// instruction (frame 0, or interrupted by a signal) rather than a return
// address, which is looked up one byte back because a call may be the last
// instruction of a function.
func (w *walker) step(cur *Regs, valid RegSet, exact bool) stepResult {
	pc := cur[regRIP]
	lookup := pc
	if !exact {
		lookup--
	}
	var f *elf.File
	var bias uint64
	var path string
	ok := false
	if w.u.mods != nil {
		f, bias, path, ok = w.u.mods.ModuleAt(lookup)
	}
	if ok && f != nil {
		pr := w.u.moduleCFI(path, f).rowAt(lookup-bias, &w.m)
		if pr.err == nil {
			if pr.fd.cie.signal && w.isSigtramp(pc, exact) {
				return w.sigframe(cur, valid)
			}
			res := w.cfiStep(pr, bias, cur, valid)
			res.signal = pr.fd.cie.signal
			res.sigtramp = pr.fd.cie.signal
			return res
		}
	}
	if w.isSigtramp(pc, exact) {
		return w.sigframe(cur, valid)
	}
	return w.fpStep(cur, valid)
}

// cfiStep applies the CFI row of a PC.
func (w *walker) cfiStep(pr *pcRow, bias uint64, cur *Regs, valid RegSet) stepResult {
	var res stepResult
	if pr.rowErr != nil || pr.fd.cie.raReg != regRIP {
		return res
	}
	rw := &pr.row
	env := op.Env{Regs: *cur, Valid: uint32(valid), Bias: bias, Mem: w}
	var cfa uint64
	if rw.cfaIsExpr {
		v, err := cfiValue(rw.cfaExpr, &env)
		if err != nil {
			return res
		}
		cfa = v
	} else {
		if !valid.Has(rw.cfaReg) {
			return res
		}
		cfa = cur[rw.cfaReg] + uint64(rw.cfaOff)
	}
	res.cfa = cfa
	// Without a rule, a callee-saved register keeps the callee's value;
	// a scratch register is lost.
	res.next, res.valid = *cur, valid&calleeSaved
	for reg := range uint64(numRegs) {
		rl := &rw.regs[reg]
		var v uint64
		switch rl.kind {
		case ruleUnset:
			continue
		case ruleSameValue:
			res.valid |= valid & (1 << reg)
			continue
		case ruleUndefined:
			res.valid &^= 1 << reg
			continue
		case ruleOffset:
			x, err := w.ReadUint(cfa+uint64(rl.off), 8)
			if err != nil {
				res.valid &^= 1 << reg
				continue
			}
			v = x
		case ruleValOffset:
			v = cfa + uint64(rl.off)
		case ruleRegister:
			if !valid.Has(rl.reg) {
				res.valid &^= 1 << reg
				continue
			}
			v = cur[rl.reg]
		case ruleExpression, ruleValExpression:
			x, err := cfiValue(rl.expr, &env, cfa)
			if err == nil && rl.kind == ruleExpression {
				x, err = w.ReadUint(x, 8)
			}
			if err != nil {
				res.valid &^= 1 << reg
				continue
			}
			v = x
		}
		res.next[reg] = v
		res.valid |= 1 << reg
	}
	// On x86-64 the CFA is by definition the caller's stack pointer.
	if k := rw.regs[regRSP].kind; k == ruleUnset || k == ruleSameValue {
		res.next[regRSP] = cfa
		res.valid |= 1 << regRSP
	}
	res.method = "cfi"
	// An undefined or unrecoverable return address ends the stack:
	// _start and thread entry points say so on purpose. A return address
	// with no rule at all is no better; it would repeat the frame.
	if k := rw.regs[regRIP].kind; k == ruleUnset || k == ruleSameValue || !res.valid.Has(regRIP) {
		return res
	}
	res.ok = true
	return res
}

// fpStep follows the frame pointer chain, for code no CFI covers: with
// "push %rbp; mov %rsp,%rbp" the caller's rbp is at [rbp], the return
// address at [rbp+8] and the CFA is rbp+16. Only rbp, rsp and rip are known
// in the caller afterwards. In frame 0 this is a guess: if the function has
// not set up its frame (it is in its prologue, or keeps no frame pointer),
// rbp is still its caller's and that caller is skipped.
func (w *walker) fpStep(cur *Regs, valid RegSet) stepResult {
	var res stepResult
	if !valid.Has(regRBP) {
		return res
	}
	rbp := cur[regRBP]
	if rbp == 0 || rbp%8 != 0 || rbp > ^uint64(0)-16 || (valid.Has(regRSP) && rbp < cur[regRSP]) {
		return res
	}
	ra, err := w.ReadUint(rbp+8, 8)
	if err != nil {
		return res
	}
	callerRBP, err := w.ReadUint(rbp, 8)
	if err != nil {
		return res
	}
	res.cfa = rbp + 16
	res.next = *cur
	res.next[regRBP] = callerRBP
	res.next[regRSP] = rbp + 16
	res.next[regRIP] = ra
	res.valid = 1<<regRBP | 1<<regRSP | 1<<regRIP
	res.method = "fp"
	res.ok = true
	return res
}

// ReadUint reads a little-endian value of size bytes (1 to 8), for the
// unwinder and, as an op.Memory, for DW_OP_deref in CFA rules.
func (w *walker) ReadUint(addr uint64, size int) (uint64, error) {
	p := w.buf[:size]
	if err := w.mem.ReadMemory(addr, p); err != nil {
		return 0, err
	}
	if size == 8 {
		return binary.LittleEndian.Uint64(p), nil
	}
	return le64(p), nil
}
