package symbols

import (
	"debug/dwarf"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/memtrap/memtrap/pkg/dwarf/op"
)

// dwarfVar is a variable DWARF places at a fixed link-time address.
type dwarfVar struct {
	addr    uint64
	typ     dwarf.Offset
	hasType bool
	rank    int8 // lower wins: see varRank*
}

// Ranks of variables sharing a name.
const (
	varRankExternal = iota // a global with external linkage
	varRankStatic          // a file-scope static
	varRankLocal           // a function's static, by its bare name
)

// varDecl is a declaration a definition may refer to by
// DW_AT_specification: a C++ static data member, or a namespace's extern
// variable, whose name and scope are on the declaration.
type varDecl struct {
	name     string // qualified
	typ      dwarf.Offset
	hasType  bool
	external bool
}

// buildVars indexes by qualified name every DW_TAG_variable that has a
// DW_AT_location of exactly one DW_OP_addr: globals and static variables,
// not those in registers, on the stack or in TLS. Scopes qualify a name as
// C++ prints it ("ns::Counter::total"); a function's static is indexed as
// "func::name" and, ranking below every global and file static, as "name".
// Go qualifies its variables itself ("main.cfg").
//
// debug/dwarf runs under recover; a panic or a read error ends the walk
// and is returned with what was indexed so far.
func buildVars(d *dwarf.Data) (vars map[string]dwarfVar, err error) {
	vars = make(map[string]dwarfVar)
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("malformed DWARF (debug/dwarf panicked: %v)", p)
		}
	}()
	add := func(name string, v dwarfVar) {
		if old, ok := vars[name]; !ok || v.rank < old.rank {
			vars[name] = v
		}
	}
	type scope struct {
		prefix string // qualified name of the scope, "" at file level
		fn     bool   // inside a function
	}
	type pending struct {
		spec  dwarf.Offset
		v     dwarfVar
		local bool
	}
	var (
		stack []scope
		decls = make(map[dwarf.Offset]varDecl)
		fns   = make(map[dwarf.Offset]string) // qualified subprogram names
		defs  []pending
	)
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			return vars, fmt.Errorf("reading .debug_info: %w", err)
		}
		if e == nil {
			break
		}
		if e.Tag == 0 {
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		var cur scope
		if len(stack) > 0 {
			cur = stack[len(stack)-1]
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		switch e.Tag {
		case dwarf.TagCompileUnit, dwarf.TagPartialUnit, dwarf.TagTypeUnit:
			cur = scope{}
		case dwarf.TagNamespace:
			if name == "" {
				name = "(anonymous namespace)"
			}
			cur.prefix = qualify(cur.prefix, name)
		case dwarf.TagClassType, dwarf.TagStructType, dwarf.TagUnionType:
			if name != "" {
				cur.prefix = qualify(cur.prefix, name)
			}
		case dwarf.TagSubprogram:
			fn := qualify(cur.prefix, name)
			if name == "" {
				fn = ""
				for _, a := range []dwarf.Attr{dwarf.AttrSpecification, dwarf.AttrAbstractOrigin} {
					if o, ok := e.Val(a).(dwarf.Offset); ok && fns[o] != "" {
						fn = fns[o]
						break
					}
				}
			}
			if fn != "" {
				fns[e.Offset] = fn
			}
			cur = scope{prefix: fn, fn: true}
		case dwarf.TagVariable, dwarf.TagMember:
			typ, hasType := e.Val(dwarf.AttrType).(dwarf.Offset)
			external, _ := e.Val(dwarf.AttrExternal).(bool)
			if isDecl, _ := e.Val(dwarf.AttrDeclaration).(bool); isDecl && name != "" {
				decls[e.Offset] = varDecl{qualify(cur.prefix, name), typ, hasType, external}
			}
			addr, ok := opAddr(e.Val(dwarf.AttrLocation))
			if !ok || e.Tag != dwarf.TagVariable {
				break
			}
			v := dwarfVar{addr: addr, typ: typ, hasType: hasType, rank: varRankStatic}
			if external {
				v.rank = varRankExternal
			}
			spec, hasSpec := e.Val(dwarf.AttrSpecification).(dwarf.Offset)
			if !hasSpec {
				spec, hasSpec = e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset)
			}
			switch {
			case name != "" && cur.fn:
				add(qualify(cur.prefix, name), dwarfVar{addr: addr, typ: typ, hasType: hasType, rank: varRankStatic})
				v.rank = varRankLocal
				add(name, v)
			case name != "":
				add(qualify(cur.prefix, name), v)
			case hasSpec:
				defs = append(defs, pending{spec, v, cur.fn})
			}
		}
		if e.Children {
			stack = append(stack, cur)
		}
	}
	for _, p := range defs {
		dc, ok := decls[p.spec]
		if !ok {
			continue
		}
		v := p.v
		if !v.hasType {
			v.typ, v.hasType = dc.typ, dc.hasType
		}
		if dc.external && !p.local {
			v.rank = varRankExternal
		}
		add(dc.name, v)
	}
	return vars, nil
}

func qualify(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "::" + name
}

// opAddr decodes a location expression that is a single DW_OP_addr.
func opAddr(loc any) (uint64, bool) {
	b, ok := loc.([]byte)
	if !ok || len(b) != 9 || b[0] != op.Addr {
		return 0, false
	}
	return binary.LittleEndian.Uint64(b[1:]), true
}

// Types are read from their DIEs here, not with dwarf.Data.Type: that
// computes sizes by recursion, and a cycle of typedefs or arrays in hostile
// DWARF overflows the goroutine's stack, which no recover catches.

// Bounds on the type graph walked for one variable.
const (
	maxTypeDepth = 64 // typedefs, qualifiers and nested arrays in a chain
	maxAnonDepth = 8  // anonymous structs and unions within each other
	maxArrayDims = 64
	addrSize     = 8 // x86-64
)

// typeReader reads type DIEs of one dwarf.Data.
type typeReader struct {
	r *dwarf.Reader
}

func newTypeReader(d *dwarf.Data) typeReader { return typeReader{d.Reader()} }

// entry reads the DIE at off, leaving the reader at its first child.
func (tr typeReader) entry(off dwarf.Offset) (*dwarf.Entry, error) {
	tr.r.Seek(off)
	e, err := tr.r.Next()
	if err != nil {
		return nil, err
	}
	if e == nil || e.Offset != off || e.Tag == 0 {
		return nil, fmt.Errorf("no type at %#x", off)
	}
	return e, nil
}

// underlying follows typedefs and qualifiers from the type at off to the
// type they name, leaving the reader at that type's first child.
func (tr typeReader) underlying(off dwarf.Offset) (*dwarf.Entry, error) {
	for range maxTypeDepth {
		e, err := tr.entry(off)
		if err != nil {
			return nil, err
		}
		switch e.Tag {
		case dwarf.TagTypedef, dwarf.TagConstType, dwarf.TagVolatileType, dwarf.TagRestrictType,
			dwarf.TagAtomicType, dwarf.TagImmutableType, dwarf.TagSharedType:
			next, ok := e.Val(dwarf.AttrType).(dwarf.Offset)
			if !ok {
				return nil, fmt.Errorf("%s at %#x names no type", e.Tag, off)
			}
			off = next
		default:
			return e, nil
		}
	}
	return nil, fmt.Errorf("type at %#x: typedefs nest too deep", off)
}

// size is the byte size of the type at off, 0 if unknown: DW_AT_byte_size,
// through typedefs and qualifiers, or for an array its element's size
// times its counts.
func (tr typeReader) size(off dwarf.Offset, depth int) (uint64, error) {
	if depth > maxTypeDepth {
		return 0, fmt.Errorf("type at %#x: arrays nest too deep", off)
	}
	e, err := tr.underlying(off)
	if err != nil {
		return 0, err
	}
	if n, ok := e.Val(dwarf.AttrByteSize).(int64); ok && n >= 0 {
		return uint64(n), nil
	}
	switch e.Tag {
	case dwarf.TagPointerType, dwarf.TagReferenceType, dwarf.TagRvalueReferenceType:
		return addrSize, nil
	case dwarf.TagArrayType:
		count, err := tr.arrayCount(e)
		if err != nil || count == 0 {
			return 0, err
		}
		elemOff, ok := e.Val(dwarf.AttrType).(dwarf.Offset)
		if !ok {
			return 0, nil
		}
		elem, err := tr.size(elemOff, depth+1)
		if err != nil || elem == 0 {
			return 0, err
		}
		if elem > math.MaxUint64/count {
			return 0, fmt.Errorf("array at %#x: size overflows", off)
		}
		return elem * count, nil
	}
	return 0, nil
}

// arrayCount multiplies the element counts of an array's subranges, read
// from the children of e, which the reader is at; 0 if any is unknown (a
// flexible or variable-length array).
func (tr typeReader) arrayCount(e *dwarf.Entry) (uint64, error) {
	if !e.Children {
		return 0, nil
	}
	count := uint64(1)
	for dims := 0; ; dims++ {
		c, err := tr.r.Next()
		if err != nil {
			return 0, err
		}
		if c == nil || c.Tag == 0 {
			break
		}
		if dims >= maxArrayDims {
			return 0, fmt.Errorf("array at %#x: too many dimensions", e.Offset)
		}
		if c.Children {
			tr.r.SkipChildren()
		}
		if c.Tag != dwarf.TagSubrangeType {
			continue
		}
		var n uint64
		if v, ok := c.Val(dwarf.AttrCount).(int64); ok && v >= 0 {
			n = uint64(v)
		} else if hi, ok := c.Val(dwarf.AttrUpperBound).(int64); ok {
			lo, _ := c.Val(dwarf.AttrLowerBound).(int64)
			if hi < lo || hi-lo == math.MaxInt64 {
				return 0, nil
			}
			n = uint64(hi-lo) + 1
		} else {
			return 0, nil
		}
		if n != 0 && count > math.MaxUint64/n {
			return 0, fmt.Errorf("array at %#x: count overflows", e.Offset)
		}
		count *= n
	}
	return count, nil
}

// member is one DW_TAG_member of a struct, union or class.
type member struct {
	name    string
	off     uint64
	typ     dwarf.Offset
	hasType bool
	bits    bool // a bit field
	noOff   bool // its offset is not a constant
}

// members reads the members of the struct, union or class at off, through
// typedefs and qualifiers.
func (tr typeReader) members(off dwarf.Offset) ([]member, error) {
	e, err := tr.underlying(off)
	if err != nil {
		return nil, err
	}
	switch e.Tag {
	case dwarf.TagStructType, dwarf.TagUnionType, dwarf.TagClassType:
	default:
		return nil, fmt.Errorf("not a struct or union but a %s", strings.TrimPrefix(e.Tag.String(), "Tag"))
	}
	if !e.Children {
		return nil, nil
	}
	var ms []member
	for {
		c, err := tr.r.Next()
		if err != nil {
			return nil, err
		}
		if c == nil || c.Tag == 0 {
			return ms, nil
		}
		if c.Children {
			tr.r.SkipChildren()
		}
		if c.Tag != dwarf.TagMember {
			continue
		}
		if isDecl, _ := c.Val(dwarf.AttrDeclaration).(bool); isDecl {
			continue // a C++ static data member (DWARF 4)
		}
		m := member{}
		m.name, _ = c.Val(dwarf.AttrName).(string)
		m.typ, m.hasType = c.Val(dwarf.AttrType).(dwarf.Offset)
		_, bitSize := c.Val(dwarf.AttrBitSize).(int64)
		m.bits = bitSize
		switch loc := c.Val(dwarf.AttrDataMemberLoc).(type) {
		case nil: // a union's members, and some first members
		case int64:
			m.off, m.noOff = uint64(loc), loc < 0
		case []byte: // DWARF 2's DW_OP_plus_uconst N
			v, ok := memberOffset(loc)
			m.off, m.noOff = v, !ok
		default:
			m.noOff = true
		}
		ms = append(ms, m)
	}
}

// memberOffset evaluates a DW_AT_data_member_location expression (DWARF
// 2's "DW_OP_plus_uconst N") with the address of the object, taken as 0,
// pushed: the result is the member's offset. One that needs more (memory,
// for a virtual base class) has no constant offset.
func memberOffset(expr []byte) (uint64, bool) {
	r, err := op.Eval(expr, &op.Env{}, 0)
	return r.Value, err == nil && r.Kind == op.InMemory && r.PieceSize == 0
}

// findMember finds a member by name in the struct or union at off or, as
// C11 allows, inside an anonymous struct or union member of it. seen holds
// the types searched already: hostile DWARF can make anonymous members
// refer to their own type, or many to one.
func (tr typeReader) findMember(off dwarf.Offset, name string, depth int, seen map[dwarf.Offset]bool) (m member, found bool, err error) {
	seen[off] = true
	ms, err := tr.members(off)
	if err != nil {
		return member{}, false, err
	}
	for _, m := range ms {
		if m.name == name {
			return m, true, nil
		}
	}
	if depth >= maxAnonDepth {
		return member{}, false, nil
	}
	for _, a := range ms {
		if a.name != "" || !a.hasType || a.noOff || seen[a.typ] {
			continue
		}
		m, ok, err := tr.findMember(a.typ, name, depth+1, seen)
		if err == nil && ok {
			m.off += a.off
			return m, true, nil
		}
	}
	return member{}, false, nil
}

// memberNames lists the names findMember would find at off.
func (tr typeReader) memberNames(off dwarf.Offset, depth int, seen map[dwarf.Offset]bool) []string {
	seen[off] = true
	ms, _ := tr.members(off)
	var names []string
	for _, m := range ms {
		if m.name != "" {
			names = append(names, m.name)
		} else if m.hasType && depth < maxAnonDepth && !seen[m.typ] {
			names = append(names, tr.memberNames(m.typ, depth+1, seen)...)
		}
	}
	return names
}

// typeSize is the byte size of the type at off, 0 if unknown.
func typeSize(d *dwarf.Data, off dwarf.Offset) (size uint64, err error) {
	defer func() {
		if p := recover(); p != nil {
			size, err = 0, fmt.Errorf("malformed DWARF type (debug/dwarf panicked: %v)", p)
		}
	}()
	return newTypeReader(d).size(off, 0)
}

// fieldError reports a member path that the variable's type lacks.
type fieldError struct {
	missing string   // the first member not found
	depth   int      // its index in the path
	have    []string // the members that level has
}

func (e *fieldError) Error() string { return fmt.Sprintf("no member %q", e.missing) }

// memberAt follows path from the type at off: member names ("token" of a
// struct session, or "pair", "a" of nested structs) and array indexes
// ("[3]"). It returns the member's offset from the start of the variable,
// its size and its type. Bit fields, members whose offset is not a
// constant and indexes past an array's end are refused.
func memberAt(d *dwarf.Data, off dwarf.Offset, path []string) (moff, size uint64, typ dwarf.Offset, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("malformed DWARF type (debug/dwarf panicked: %v)", p)
		}
	}()
	tr := newTypeReader(d)
	var dims []uint64 // an array's dimensions not indexed yet, after the first
	var stride uint64
	for depth, name := range path {
		if idx, ok := arrayIndex(name); ok {
			if len(dims) == 0 {
				if dims, stride, off, err = tr.arrayShape(off); err != nil {
					return 0, 0, 0, fmt.Errorf("%s: %w", name, err)
				}
			}
			if idx >= dims[0] {
				return 0, 0, 0, fmt.Errorf("index %d is past the end of an array of %d", idx, dims[0])
			}
			moff += idx * stride
			dims = dims[1:]
			if len(dims) > 0 {
				stride /= dims[0]
			}
			continue
		}
		if len(dims) > 0 {
			return 0, 0, 0, fmt.Errorf("member %q of an array: give its index first", name)
		}
		m, ok, err := tr.findMember(off, name, 0, make(map[dwarf.Offset]bool))
		if err != nil {
			return 0, 0, 0, fmt.Errorf("member %q: %w", name, err)
		}
		if !ok {
			return 0, 0, 0, &fieldError{missing: name, depth: depth, have: tr.memberNames(off, 0, make(map[dwarf.Offset]bool))}
		}
		switch {
		case m.bits:
			return 0, 0, 0, fmt.Errorf("member %q is a bit field", name)
		case m.noOff:
			return 0, 0, 0, fmt.Errorf("member %q has no constant offset", name)
		case !m.hasType:
			return 0, 0, 0, fmt.Errorf("member %q has no type", name)
		}
		if moff+m.off < moff {
			return 0, 0, 0, fmt.Errorf("member %q: offset overflows", name)
		}
		moff += m.off
		off = m.typ
	}
	if len(dims) > 0 {
		// A row of a multi-dimensional array.
		return moff, stride * dims[0], 0, nil
	}
	size, err = tr.size(off, 0)
	return moff, size, off, err
}

// arrayIndex reads "[N]".
func arrayIndex(s string) (uint64, bool) {
	if len(s) < 3 || s[0] != '[' || s[len(s)-1] != ']' {
		return 0, false
	}
	n, err := strconv.ParseUint(s[1:len(s)-1], 0, 64)
	return n, err == nil
}

// arrayShape reads the array type at off: its dimensions, the stride of
// its first index in bytes, and its element type.
func (tr typeReader) arrayShape(off dwarf.Offset) (dims []uint64, stride uint64, elem dwarf.Offset, err error) {
	e, err := tr.underlying(off)
	if err != nil {
		return nil, 0, 0, err
	}
	if e.Tag != dwarf.TagArrayType {
		return nil, 0, 0, fmt.Errorf("not an array but a %s", strings.TrimPrefix(e.Tag.String(), "Tag"))
	}
	elem, ok := e.Val(dwarf.AttrType).(dwarf.Offset)
	if !ok {
		return nil, 0, 0, errors.New("an array with no element type")
	}
	if e.Children {
		for {
			c, err := tr.r.Next()
			if err != nil {
				return nil, 0, 0, err
			}
			if c == nil || c.Tag == 0 {
				break
			}
			if c.Children {
				tr.r.SkipChildren()
			}
			if c.Tag != dwarf.TagSubrangeType {
				continue
			}
			n := uint64(math.MaxUint64) // unknown: a flexible array member
			if v, ok := c.Val(dwarf.AttrCount).(int64); ok && v >= 0 {
				n = uint64(v)
			} else if hi, ok := c.Val(dwarf.AttrUpperBound).(int64); ok {
				lo, _ := c.Val(dwarf.AttrLowerBound).(int64)
				if hi >= lo {
					n = uint64(hi-lo) + 1
				}
			}
			if len(dims) >= maxArrayDims {
				return nil, 0, 0, errors.New("too many dimensions")
			}
			dims = append(dims, n)
		}
	}
	if len(dims) == 0 {
		dims = []uint64{math.MaxUint64}
	}
	es, err := tr.size(elem, 0)
	if err != nil || es == 0 {
		return nil, 0, 0, fmt.Errorf("array elements of unknown size")
	}
	stride = es
	for _, d := range dims[1:] {
		if d == math.MaxUint64 || stride > math.MaxUint64/d {
			return nil, 0, 0, errors.New("array size overflows")
		}
		stride *= d
	}
	return dims, stride, elem, nil
}

// splitMember splits "session.pair.a" or "table[2].name" into a variable
// name and a path of members and indexes at the i-th '.' or '[' from the
// right (i >= 1), if it has that many: "table", [[2] name]. varName is ""
// (and ok true) at a cut whose left part is no variable name ("table[2]").
func splitMember(name string, i int) (varName string, path []string, ok bool) {
	cut := len(name)
	for range i {
		cut = strings.LastIndexAny(name[:cut], ".[")
		if cut <= 0 {
			return "", nil, false
		}
	}
	rest := name[cut:]
	for rest != "" {
		switch rest[0] {
		case '.':
			rest = rest[1:]
			end := strings.IndexAny(rest, ".[")
			if end < 0 {
				end = len(rest)
			}
			if end == 0 {
				return "", nil, false
			}
			path = append(path, rest[:end])
			rest = rest[end:]
		case '[':
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return "", nil, false
			}
			if _, ok := arrayIndex(rest[:end+1]); !ok {
				return "", nil, false
			}
			path = append(path, rest[:end+1])
			rest = rest[end+1:]
		default:
			return "", nil, false
		}
	}
	if strings.HasSuffix(name[:cut], ".") {
		return "", nil, false
	}
	if strings.ContainsAny(name[:cut], "[]") {
		// Not a variable's name: a cut further left may be.
		return "", path, true
	}
	return name[:cut], path, true
}
