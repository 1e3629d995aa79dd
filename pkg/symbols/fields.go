package symbols

import (
	"debug/dwarf"
	"fmt"
	"strings"
)

// Field names the n bytes at off in the region Resolve gives for expr by
// the smallest part of its DWARF type that holds them all:
// "cfg.limits.max", "session.token[3]", "table[2].name[1]" ("cfg.name" for
// all of a char array), with "+N" when off is N bytes into a part that
// has no smaller ones (an int's second byte: "cfg.id+1").
// ok is false when expr's variable has no DWARF type, or off is in no
// member (padding) or the variable has no parts: then the region's own
// name with an offset says it best.
func (t *Table) Field(expr string, off, n uint64) (name string, ok bool) {
	modQ, vname, exprOff, err := parseExpr(expr)
	if err != nil {
		return "", false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return "", false
	}
	for _, m := range t.mods {
		if modQ != "" && !moduleMatches(modQ, m.path) {
			continue
		}
		t.load(m)
		if !m.biasOK || m.obj == nil {
			continue
		}
		typ, found := t.typeOf(m, vname)
		if !found {
			continue
		}
		suffix, rest, err := fieldAt(m.obj.dwarf, typ, exprOff+off, max(n, 1))
		if err != nil || suffix == "" {
			return "", false
		}
		base := expr
		if i := offsetSep(expr); i >= 0 {
			base = expr[:i]
		}
		// Members of a member path named in expr restart from it.
		name = base + suffix
		if rest > 0 {
			name += fmt.Sprintf("+%d", rest)
		}
		return name, true
	}
	return "", false
}

// typeOf finds the DWARF type of a variable or of a member path into one
// (Resolve's ways of reading a name) in module m.
func (t *Table) typeOf(m *module, name string) (dwarf.Offset, bool) {
	vars := t.variables(m.obj, m.path)
	if v, ok := vars[name]; ok {
		return v.typ, v.hasType
	}
	for i := 1; ; i++ {
		vname, path, ok := splitMember(name, i)
		if !ok {
			return 0, false
		}
		v, ok := vars[vname]
		if !ok || !v.hasType {
			continue
		}
		_, _, typ, err := memberAt(m.obj.dwarf, v.typ, path)
		return typ, err == nil && typ != 0
	}
}

// fieldAt names the smallest part of the type at off that holds the n
// bytes from at: its member and index path, and how far into that part at
// is.
func fieldAt(d *dwarf.Data, off dwarf.Offset, at, n uint64) (path string, rest uint64, err error) {
	defer func() {
		if p := recover(); p != nil {
			path, rest, err = "", 0, fmt.Errorf("malformed DWARF type (debug/dwarf panicked: %v)", p)
		}
	}()
	tr := newTypeReader(d)
	var b strings.Builder
	for depth := 0; depth < maxTypeDepth; depth++ {
		e, err := tr.underlying(off)
		if err != nil {
			return "", 0, err
		}
		switch e.Tag {
		case dwarf.TagStructType, dwarf.TagUnionType, dwarf.TagClassType:
			ms, err := tr.members(off)
			if err != nil {
				return "", 0, err
			}
			found := false
			for _, m := range ms {
				if m.bits || m.noOff || !m.hasType || at < m.off {
					continue
				}
				size, err := tr.size(m.typ, 0)
				if err != nil || size == 0 || at-m.off >= size {
					continue
				}
				if at-m.off+n > size {
					// The write spills out of the member: the
					// struct itself is the smallest part.
					return b.String(), at, nil
				}
				if m.name != "" { // an anonymous member adds no name
					b.WriteString("." + m.name)
				}
				at -= m.off
				off = m.typ
				found = true
				break
			}
			if !found {
				return b.String(), at, nil
			}
		case dwarf.TagArrayType:
			dims, stride, elem, err := tr.arrayShape(off)
			if err != nil {
				return b.String(), at, nil
			}
			for i, count := range dims {
				if i > 0 {
					stride /= count
				}
				idx := at / stride
				if idx >= count || at-idx*stride+n > stride {
					// Past its end, or over more than one element.
					return b.String(), at, nil
				}
				fmt.Fprintf(&b, "[%d]", idx)
				at -= idx * stride
			}
			off = elem
		default:
			return b.String(), at, nil
		}
	}
	return b.String(), at, nil
}
