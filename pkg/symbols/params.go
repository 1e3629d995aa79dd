package symbols

import (
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/memtrap/memtrap/pkg/dwarf/op"
	"github.com/memtrap/memtrap/pkg/dwarf/reader"
)

// Param is one formal parameter of the function at a frame, as gdb's
// backtrace shows it: "fill_record (dst=0x4c6040, n=100)".
type Param struct {
	Name string
	// Value is the parameter's first Size bytes, little-endian, when Known.
	Value uint64
	// Size is the byte size of the parameter's type, 0 if unknown. It may
	// exceed 8 (a struct passed by value); Known is then false.
	Size int
	// Known is false where gdb says <optimized out>: no location at this
	// pc, a location this package does not evaluate (DW_OP_entry_value
	// among them), a register the frame does not vouch for, memory that
	// cannot be read, or a value wider than 8 bytes.
	Known bool
}

// FrameRegs gives what a frame's location expressions need.
type FrameRegs struct {
	// Regs are in DWARF numbering: 0 rax, 1 rdx, 2 rcx, 3 rbx, 4 rsi,
	// 5 rdi, 6 rbp, 7 rsp, 8-15 r8-r15, 16 rip.
	Regs [17]uint64
	// RegsValid has bit i set when Regs[i] can be trusted: all of them in
	// the innermost frame; in outer frames what the unwinder recovered
	// (unwind.Frame's Regs and Valid: rsp, rip and the callee-saved
	// registers), never a scratch register the frame's callee may have
	// clobbered.
	RegsValid uint32
	// CFA is the frame's canonical frame address, 0 if unknown.
	CFA uint64
	// PC is the runtime pc the frame is at. For an outer frame pass the
	// return address minus one, so that a call at a function's end is
	// looked up in that function.
	PC uint64
}

// ErrNoFunction is returned by Params when no DWARF subprogram covers the
// pc: it is in no module, the module has no DWARF, or its debugging
// information does not describe that code.
var ErrNoFunction = errors.New("no DWARF function at pc")

// Params returns the formal parameters, in declaration order, of the
// function covering fr.PC, with their values in that frame. Locations are
// evaluated as DWARF expressions over fr and read, which reads the
// target's memory (nil: memory locations read as unknown). Only
// out-of-line functions are described: inside code inlined into a
// function, the parameters are those of the function it was inlined into.
//
// The first call for a module indexes its subprograms (and reads its
// location list sections); read is called with the table's lock held and
// must not call back into the Table.
func (t *Table) Params(fr FrameRegs, read func(addr uint64, p []byte) error) ([]Param, error) {
	return t.AppendParams(nil, fr, readMem(read))
}

// readMem is read as an op.Memory, nil if it is nil.
func readMem(read func(addr uint64, p []byte) error) op.Memory {
	if read == nil {
		return nil
	}
	return op.ReadFunc(read)
}

// AppendParams is Params appending to dst, for a caller that reuses one
// slice from frame to frame.
//
// Its memory is an op.Memory: one whose ReadUint reads into a buffer of its
// own costs no allocation per read (a slice handed to a function value
// escapes).
func (t *Table) AppendParams(dst []Param, fr FrameRegs, mem op.Memory) ([]Param, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.pcEntry(fr.PC)
	if e.params == nil {
		e.params = t.paramsAt(fr.PC)
	}
	pp := e.params
	if pp.err != nil {
		return dst, pp.err
	}
	env := frameEnv(fr, pp.bias, mem)
	if pp.hasBase {
		env.FrameBase, env.HasFrameBase = frameBase(pp.frameBase, &env)
	}
	out := slices.Grow(dst, len(pp.params))
	for k := range pp.params {
		p := &pp.params[k]
		q := Param{Name: p.name, Size: p.size}
		if p.hasExpr {
			q.Value, q.Known = value(p.expr, &env, p.size)
		}
		out = append(out, q)
	}
	return out, nil
}

// funcIndex returns obj's subprogram index, built once; empty when it has
// no DWARF.
// Precondition: t.mu is held.
func (t *Table) funcIndex(obj *object, path string) *funcIndex {
	if obj.funcs != nil {
		return obj.funcs
	}
	obj.funcs = &funcIndex{}
	file, sources, cache := t.cacheEntry(obj, path, cacheFuncs)
	if cache {
		if fx, err := decodeFuncs(readCache(file, cacheFuncs, sources)); err == nil {
			obj.funcs = fx
			return fx
		}
	}
	d := t.dwarfData(obj, path)
	if d == nil {
		return obj.funcs
	}
	src := obj.f
	if !hasDWARF(src) && obj.dbg != nil {
		src = obj.dbg.f
	}
	fx, err := buildFuncIndex(d, src, obj.secs)
	if err != nil && obj.dwarfErr == nil {
		obj.dwarfErr = fmt.Errorf("reading functions of %s: %w", path, err)
	}
	if cache && err == nil {
		sizeParams(d, fx)
		writeCache(file, cacheFuncs, sources, encodeFuncs(fx))
	}
	obj.funcs = fx
	return fx
}

// Location attribute kinds.
const (
	locNone  = iota
	locExpr  // expr holds the expression
	locList  // off is an offset in .debug_loc (v2-4) or .debug_loclists (v5)
	locListx // off is an index into the unit's DW_AT_loclists_base table
)

type locAttr struct {
	kind uint8
	expr []byte
	off  uint64
}

func locOf(f *dwarf.Field) locAttr {
	if f == nil {
		return locAttr{}
	}
	switch v := f.Val.(type) {
	case []byte:
		return locAttr{kind: locExpr, expr: v}
	case int64:
		if v < 0 {
			return locAttr{}
		}
		if f.Class == dwarf.ClassLocList {
			return locAttr{kind: locListx, off: uint64(v)}
		}
		return locAttr{kind: locList, off: uint64(v)}
	case uint64:
		if f.Class == dwarf.ClassLocList {
			return locAttr{kind: locListx, off: v}
		}
	}
	return locAttr{}
}

// unitInfo is what a unit's location lists are read against.
type unitInfo struct {
	version      int
	base         uint64 // DW_AT_low_pc of the unit
	addrBase     uint64
	loclistsBase uint64
}

type paramDesc struct {
	name    string
	typ     dwarf.Offset
	hasType bool
	loc     locAttr
	origin  dwarf.Offset // DW_AT_abstract_origin, 0 if none
	// size is the type's size once looked up (sized), 0 if unknown: a
	// backtrace asks for it at every trapped write.
	size  int
	sized bool
}

type funcDesc struct {
	cu        int32
	frameBase locAttr
	params    []paramDesc
	locals    []paramDesc // its variables, its lexical blocks' included
}

type funcRange struct {
	lo, hi uint64
	fn     int32
}

// funcIndex is a module's out-of-line subprograms by pc range, with the raw
// sections their location lists are read from.
type funcIndex struct {
	ranges []funcRange // sorted by lo
	funcs  []funcDesc
	units  []unitInfo
	loc    []byte // .debug_loc
	lists  []byte // .debug_loclists
	addr   []byte // .debug_addr
}

// Bounds on what one module and one evaluation may cost.
const (
	maxOriginDepth = 8
	maxOverlap     = 64 // ranges scanned back from a pc
	maxLocEntries  = 1 << 16
)

// find returns the subprogram whose ranges cover v, the innermost (latest
// starting) of several.
func (fx *funcIndex) find(v uint64) *funcDesc {
	if fx == nil {
		return nil
	}
	i, _ := slices.BinarySearchFunc(fx.ranges, v, func(r funcRange, v uint64) int {
		if r.lo <= v {
			return -1
		}
		return 1
	})
	for j := i - 1; j >= 0 && j >= i-maxOverlap; j-- {
		if r := fx.ranges[j]; v >= r.lo && v < r.hi {
			return &fx.funcs[r.fn]
		}
	}
	return nil
}

// sectionData returns the contents of f's section name, nil if absent or
// unreadable.
func sectionData(f *elf.File, secs sections, name string) []byte {
	s := f.Section(name)
	if s == nil || s.Type == elf.SHT_NOBITS {
		return nil
	}
	b, err := secs.data(s)
	if err != nil {
		return nil
	}
	return b
}

// buildFuncIndex walks every unit of d for subprograms with code and their
// formal parameters. src is the ELF file d was read from, its sections
// read through secs. debug/dwarf runs
// under recover; a panic or a read error ends the walk and is returned with
// what was indexed so far.
func buildFuncIndex(d *dwarf.Data, src *elf.File, secs sections) (fx *funcIndex, err error) {
	fx = &funcIndex{
		loc:   sectionData(src, secs, ".debug_loc"),
		lists: sectionData(src, secs, ".debug_loclists"),
		addr:  sectionData(src, secs, ".debug_addr"),
	}
	versions := unitVersions(sectionData(src, secs, ".debug_info"))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("malformed DWARF (debug/dwarf panicked: %v)", p)
		}
		slices.SortFunc(fx.ranges, func(a, b funcRange) int {
			switch {
			case a.lo < b.lo:
				return -1
			case a.lo > b.lo:
				return 1
			}
			return 0
		})
		if err == nil {
			err = resolveOrigins(d, fx)
		}
	}()
	type level struct {
		fn int32 // index in fx.funcs of the subprogram this DIE is, or -1
		// owner: the subprogram a lexical block belongs to, or -1
		owner int32
	}
	var stack []level
	cu := int32(-1)
	r := d.Reader()
	for {
		e, rerr := r.Next()
		if rerr != nil {
			return fx, fmt.Errorf("reading .debug_info: %w", rerr)
		}
		if e == nil {
			return fx, nil
		}
		if e.Tag == 0 {
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		parent, owner := int32(-1), int32(-1)
		if len(stack) > 0 {
			parent = stack[len(stack)-1].fn
			owner = stack[len(stack)-1].owner
			if parent >= 0 {
				owner = parent
			}
		}
		cur := level{fn: -1, owner: -1}
		switch e.Tag {
		case dwarf.TagCompileUnit, dwarf.TagPartialUnit:
			u := unitInfo{version: versions.at(e.Offset)}
			u.base, _ = e.Val(dwarf.AttrLowpc).(uint64)
			if b, ok := e.Val(dwarf.AttrAddrBase).(int64); ok && b >= 0 {
				u.addrBase = uint64(b)
			}
			if b, ok := e.Val(dwarf.AttrLoclistsBase).(int64); ok && b >= 0 {
				u.loclistsBase = uint64(b)
			}
			fx.units = append(fx.units, u)
			cu = int32(len(fx.units) - 1)
		case dwarf.TagSubprogram:
			if isDecl, _ := e.Val(dwarf.AttrDeclaration).(bool); isDecl || cu < 0 {
				break
			}
			rs, rerr := d.Ranges(e)
			if rerr != nil || len(rs) == 0 {
				break
			}
			fn := int32(len(fx.funcs))
			fx.funcs = append(fx.funcs, funcDesc{cu: cu, frameBase: locOf(e.AttrField(dwarf.AttrFrameBase))})
			for _, rg := range rs {
				if rg[1] > rg[0] {
					fx.ranges = append(fx.ranges, funcRange{lo: rg[0], hi: rg[1], fn: fn})
				}
			}
			cur.fn = fn
		case dwarf.TagFormalParameter:
			if parent < 0 {
				break
			}
			p := paramDesc{loc: locOf(e.AttrField(dwarf.AttrLocation))}
			p.name, _ = e.Val(dwarf.AttrName).(string)
			p.typ, p.hasType = e.Val(dwarf.AttrType).(dwarf.Offset)
			p.origin, _ = e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset)
			fx.funcs[parent].params = append(fx.funcs[parent].params, p)
		case dwarf.TagLexDwarfBlock:
			cur.owner = owner
		case dwarf.TagVariable:
			if owner < 0 {
				break
			}
			v := paramDesc{loc: locOf(e.AttrField(dwarf.AttrLocation))}
			v.name, _ = e.Val(dwarf.AttrName).(string)
			v.typ, v.hasType = e.Val(dwarf.AttrType).(dwarf.Offset)
			fx.funcs[owner].locals = append(fx.funcs[owner].locals, v)
		}
		if e.Children {
			stack = append(stack, cur)
		}
	}
}

// resolveOrigins fills in the names and types that parameters of concrete
// instances (out-of-line copies of inline functions, clones) leave to
// their abstract origin.
func resolveOrigins(d *dwarf.Data, fx *funcIndex) error {
	r := d.Reader()
	for i := range fx.funcs {
		for j := range fx.funcs[i].params {
			p := &fx.funcs[i].params[j]
			off := p.origin
			for depth := 0; off != 0 && (p.name == "" || !p.hasType) && depth < maxOriginDepth; depth++ {
				r.Seek(off)
				e, err := r.Next()
				if err != nil {
					return fmt.Errorf("abstract origin at %#x: %w", off, err)
				}
				if e == nil || e.Offset != off {
					break
				}
				if p.name == "" {
					p.name, _ = e.Val(dwarf.AttrName).(string)
				}
				if !p.hasType {
					p.typ, p.hasType = e.Val(dwarf.AttrType).(dwarf.Offset)
				}
				next, _ := e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset)
				if next == 0 {
					next, _ = e.Val(dwarf.AttrSpecification).(dwarf.Offset)
				}
				off = next
			}
		}
	}
	return nil
}

// unitSpan is one unit of .debug_info and its DWARF version.
type unitSpan struct {
	start, end uint64
	version    int
}

type unitSpans []unitSpan

// unitVersions reads the unit headers of .debug_info: debug/dwarf does not
// tell a unit's version, and it decides how a location list is encoded.
func unitVersions(info []byte) unitSpans {
	var us unitSpans
	for off := uint64(0); off+6 <= uint64(len(info)) && len(us) < 1<<20; {
		n := uint64(binary.LittleEndian.Uint32(info[off:]))
		hdr := uint64(4)
		if n == 0xffffffff {
			if off+14 > uint64(len(info)) {
				break
			}
			n, hdr = binary.LittleEndian.Uint64(info[off+4:]), 12
		} else if n >= 0xfffffff0 {
			break
		}
		end := off + hdr + n
		if end < off || end > uint64(len(info)) {
			break
		}
		us = append(us, unitSpan{off, end, int(binary.LittleEndian.Uint16(info[off+hdr:]))})
		off = end
	}
	return us
}

// at returns the version of the unit holding the DIE at off, 0 if unknown.
func (us unitSpans) at(off dwarf.Offset) int {
	i, _ := slices.BinarySearchFunc(us, uint64(off), func(u unitSpan, v uint64) int {
		if u.start <= v {
			return -1
		}
		return 1
	})
	if i == 0 || uint64(off) >= us[i-1].end {
		return 0
	}
	return us[i-1].version
}

// locExpr returns the expression that locates an attribute at link-time
// pc v, from its location list if it has one. ok is false when nothing
// covers v or the list is malformed.
func (fx *funcIndex) locExpr(loc locAttr, cu int32, v uint64) (expr []byte, ok bool) {
	if cu < 0 || int(cu) >= len(fx.units) {
		return nil, false
	}
	u := fx.units[cu]
	switch loc.kind {
	case locExpr:
		return loc.expr, true
	case locList:
		if u.version >= 5 {
			return findLoclists(fx.lists, loc.off, u, fx.addr, v)
		}
		return findLoc(fx.loc, loc.off, u.base, v)
	case locListx:
		// An index into the offsets after the unit's loclists header,
		// themselves relative to DW_AT_loclists_base (32-bit DWARF).
		at := u.loclistsBase + 4*loc.off
		if loc.off > 1<<32 || at+4 > uint64(len(fx.lists)) || at < u.loclistsBase {
			return nil, false
		}
		rel := uint64(binary.LittleEndian.Uint32(fx.lists[at:]))
		return findLoclists(fx.lists, u.loclistsBase+rel, u, fx.addr, v)
	}
	return nil, false
}

// findLoc searches a DWARF 2-4 location list in .debug_loc at off for the
// entry covering v: pairs of addresses relative to a base (the unit's low
// pc, or the last base address selection entry), each with a 2-byte
// length and an expression, up to a pair of zeros.
func findLoc(sec []byte, off, base, v uint64) ([]byte, bool) {
	b := reader.At(sec, off)
	for range maxLocEntries {
		lo, hi := b.U64(), b.U64()
		if b.Err() != nil {
			return nil, false
		}
		switch {
		case lo == 0 && hi == 0:
			return nil, false
		case lo == ^uint64(0):
			base = hi
			continue
		}
		expr := b.Bytes(uint64(b.U16()))
		if b.Err() != nil {
			return nil, false
		}
		if v >= base+lo && v < base+hi {
			return expr, true
		}
	}
	return nil, false
}

// DWARF 5 location list entry kinds.
const (
	lleEndOfList       = 0x00
	lleBaseAddressx    = 0x01
	lleStartxEndx      = 0x02
	lleStartxLength    = 0x03
	lleOffsetPair      = 0x04
	lleDefaultLocation = 0x05
	lleBaseAddress     = 0x06
	lleStartEnd        = 0x07
	lleStartLength     = 0x08
	lleGNUViewPair     = 0x09 // gcc's location views: two ULEBs, no expression
)

// findLoclists searches a DWARF 5 location list in .debug_loclists at off
// for the entry covering v; a default location serves when none does.
func findLoclists(sec []byte, off uint64, u unitInfo, addrSec []byte, v uint64) ([]byte, bool) {
	addrx := func(i uint64) (uint64, bool) {
		at := u.addrBase + 8*i
		if i > 1<<32 || at < u.addrBase || at+8 > uint64(len(addrSec)) {
			return 0, false
		}
		return binary.LittleEndian.Uint64(addrSec[at:]), true
	}
	base := u.base
	var def []byte
	haveDef := false
	b := reader.At(sec, off)
	for range maxLocEntries {
		kind := b.U8()
		var lo, hi uint64
		ok := true
		switch kind {
		case lleEndOfList:
			return def, haveDef && b.Err() == nil
		case lleBaseAddressx:
			base, ok = addrx(b.ULEB128())
			if !ok || b.Err() != nil {
				return nil, false
			}
			continue
		case lleBaseAddress:
			base = b.U64()
			continue
		case lleGNUViewPair:
			b.ULEB128()
			b.ULEB128()
			continue
		case lleStartxEndx:
			var ok2 bool
			lo, ok = addrx(b.ULEB128())
			hi, ok2 = addrx(b.ULEB128())
			ok = ok && ok2
		case lleStartxLength:
			lo, ok = addrx(b.ULEB128())
			hi = lo + b.ULEB128()
		case lleOffsetPair:
			lo, hi = base+b.ULEB128(), base+b.ULEB128()
		case lleDefaultLocation:
		case lleStartEnd:
			lo, hi = b.U64(), b.U64()
		case lleStartLength:
			lo = b.U64()
			hi = lo + b.ULEB128()
		default:
			return nil, false
		}
		expr := b.Bytes(b.ULEB128())
		if b.Err() != nil || !ok {
			return nil, false
		}
		if kind == lleDefaultLocation {
			def, haveDef = expr, true
		} else if v >= lo && v < hi {
			return expr, true
		}
	}
	return nil, false
}

// frameEnv is what the location expressions of frame fr in a module
// loaded at bias see; memory is read through read, if not nil.
func frameEnv(fr FrameRegs, bias uint64, mem op.Memory) op.Env {
	return op.Env{Regs: fr.Regs, Valid: fr.RegsValid, CFA: fr.CFA, HasCFA: fr.CFA != 0, Bias: bias, Mem: mem}
}

// frameBase evaluates a function's DW_AT_frame_base: the value its
// DW_OP_fbreg operations count from.
func frameBase(expr []byte, env *op.Env) (uint64, bool) {
	r, err := op.Eval(expr, env)
	if err != nil {
		return 0, false
	}
	switch r.Kind {
	case op.InMemory, op.IsValue:
		return r.Value, true
	case op.InRegister:
		return env.Reg(r.Reg)
	}
	return 0, false
}

// value evaluates the location expr of an object of size bytes (1 to 8)
// and returns its value. Anything the frame cannot vouch for, a location
// package op does not evaluate, or a first piece smaller than the object
// is unknown.
func value(expr []byte, env *op.Env, size int) (uint64, bool) {
	r, err := op.Eval(expr, env)
	if err != nil || (r.PieceSize != 0 && r.PieceSize < uint64(size)) {
		return 0, false
	}
	var v uint64
	switch r.Kind {
	case op.InMemory:
		if env.Mem == nil {
			return 0, false
		}
		if v, err = env.Mem.ReadUint(r.Value, size); err != nil {
			return 0, false
		}
	case op.InRegister:
		var ok bool
		if v, ok = env.Reg(r.Reg); !ok {
			return 0, false
		}
	case op.IsValue:
		v = r.Value
	case op.IsImplicit:
		if len(r.Bytes) < size {
			return 0, false
		}
		var buf [8]byte
		copy(buf[:], r.Bytes[:size])
		v = binary.LittleEndian.Uint64(buf[:])
	default:
		return 0, false
	}
	if size < 8 {
		v &= 1<<(8*size) - 1
	}
	return v, true
}

// ParamPointee describes the n-th parameter (1-based) of the function at
// pc: its name, the number of parameters the function has, and the size of
// what it points to (0 if it is not a pointer or the size is not known).
func (t *Table) ParamPointee(pc uint64, n int) (name string, params int, size uint64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	mod := t.moduleAt(pc)
	if mod == nil || !mod.biasOK {
		return "", 0, 0, fmt.Errorf("pc %#x: %w", pc, ErrNoFunction)
	}
	fn := t.funcIndex(mod.obj, mod.path).find(pc - mod.bias)
	if fn == nil {
		return "", 0, 0, fmt.Errorf("pc %#x: %w", pc, ErrNoFunction)
	}
	if n < 1 || n > len(fn.params) {
		return "", len(fn.params), 0, nil
	}
	p := fn.params[n-1]
	d := t.dwarfData(mod.obj, mod.path)
	if !p.hasType || d == nil {
		return p.name, len(fn.params), 0, nil
	}
	typ, terr := d.Type(p.typ)
	if terr != nil {
		return p.name, len(fn.params), 0, nil
	}
	for {
		td, ok := typ.(*dwarf.TypedefType)
		if !ok {
			break
		}
		typ = td.Type
	}
	if pt, ok := typ.(*dwarf.PtrType); ok && pt.Type != nil && pt.Type.Size() > 0 {
		return p.name, len(fn.params), uint64(pt.Type.Size()), nil
	}
	return p.name, len(fn.params), 0, nil
}

// ErrNoStackHome means a local variable does not live in memory at the
// place asked (a register, a location list not covering it, optimized
// out).
var ErrNoStackHome = errors.New("not in memory there")

// ErrNoLocal means a function has no local variable of that name in its
// DWARF.
var ErrNoLocal = errors.New("no such local variable in the function's DWARF")

// LocalAddress is where the local variable name of the function at fr.PC
// lives in memory and its size, evaluated with fr's registers and CFA (at
// the function's entry: CFA = rsp+8).
func (t *Table) LocalAddress(fr FrameRegs, name string, read func(addr uint64, p []byte) error) (addr, size uint64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	mod := t.moduleAt(fr.PC)
	if mod == nil || !mod.biasOK {
		return 0, 0, fmt.Errorf("pc %#x: %w", fr.PC, ErrNoFunction)
	}
	fx := t.funcIndex(mod.obj, mod.path)
	v := fr.PC - mod.bias
	fn := fx.find(v)
	if fn == nil {
		return 0, 0, fmt.Errorf("pc %#x: %w", fr.PC, ErrNoFunction)
	}
	var lv *paramDesc
	for i := range fn.locals {
		if fn.locals[i].name == name {
			lv = &fn.locals[i]
			break
		}
	}
	if lv == nil {
		return 0, 0, fmt.Errorf("%s: %w", name, ErrNoLocal)
	}
	d := t.dwarfData(mod.obj, mod.path)
	if lv.hasType && d != nil {
		if n, err := typeSize(d, lv.typ); err == nil && n > 0 && n <= 1<<30 {
			size = n
		}
	}
	if size == 0 {
		return 0, 0, fmt.Errorf("%s: its size is not known", name)
	}
	env := frameEnv(fr, mod.bias, readMem(read))
	if fn.frameBase.kind != locNone {
		if expr, ok := fx.locExpr(fn.frameBase, fn.cu, v); ok {
			env.FrameBase, env.HasFrameBase = frameBase(expr, &env)
		}
	}
	expr, ok := fx.locExpr(lv.loc, fn.cu, v)
	if !ok {
		return 0, 0, fmt.Errorf("%s: %w", name, ErrNoStackHome)
	}
	res, err := op.Eval(expr, &env)
	if err != nil || res.Kind != op.InMemory {
		return 0, 0, fmt.Errorf("%s: %w", name, ErrNoStackHome)
	}
	return res.Value, size, nil
}
