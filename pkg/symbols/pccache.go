package symbols

import (
	"fmt"

	"github.com/memtrap/memtrap/pkg/dwarf/op"
)

// pcInfo is what Lookup and Params work out for one runtime pc that does
// not change until the memory map does: a hot loop's store sites and their
// callers come back at every trapped write, and a frame seen before then
// costs a map lookup and the evaluation of its parameters' locations.
type pcInfo struct {
	looked bool
	loc    Location
	locOK  bool

	params *pcParams // nil until Params is first asked about the pc
}

// pcParams is Params's answer for a pc, less the values: the function's
// frame base and each parameter's size and location expression there.
type pcParams struct {
	err       error // ErrNoFunction, with the pc
	bias      uint64
	frameBase []byte
	hasBase   bool
	params    []pcParam
}

type pcParam struct {
	name    string
	size    int
	expr    []byte
	hasExpr bool // a location covers the pc (only looked for when size is 1 to 8)
}

// maxCachedPCs bounds the per-pc cache: a target with more distinct
// frames than this starts it over rather than grow it without end.
const maxCachedPCs = 1 << 14

// pcEntry returns the cache entry of pc, made empty if there is none.
// Precondition: t.mu is held.
func (t *Table) pcEntry(pc uint64) *pcInfo {
	if e := t.pcs[pc]; e != nil {
		return e
	}
	if t.pcs == nil || len(t.pcs) >= maxCachedPCs {
		t.pcs = make(map[uint64]*pcInfo)
	}
	e := &pcInfo{}
	t.pcs[pc] = e
	return e
}

// paramsAt works out what Params needs at pc, less the frame's registers.
// Precondition: t.mu is held.
func (t *Table) paramsAt(pc uint64) *pcParams {
	mod := t.moduleAt(pc)
	if mod == nil || !mod.biasOK {
		return &pcParams{err: fmt.Errorf("pc %#x: %w", pc, ErrNoFunction)}
	}
	fx := t.funcIndex(mod.obj, mod.path)
	v := pc - mod.bias
	fn := fx.find(v)
	if fn == nil {
		return &pcParams{err: fmt.Errorf("pc %#x (%s+%#x): %w", pc, mod.path, v, ErrNoFunction)}
	}
	pp := &pcParams{bias: mod.bias, params: make([]pcParam, len(fn.params))}
	if fn.frameBase.kind != locNone {
		pp.frameBase, pp.hasBase = fx.locExpr(fn.frameBase, fn.cu, v)
	}
	for k := range fn.params {
		p := &fn.params[k]
		if !p.sized {
			p.sized = true
			// An index read from the cache has every size: its
			// DWARF is not read.
			if d := t.dwarfData(mod.obj, mod.path); p.hasType && d != nil {
				if n, err := typeSize(d, p.typ); err == nil && n <= 1<<30 {
					p.size = int(n)
				}
			}
		}
		q := pcParam{name: p.name, size: p.size}
		if q.size > 0 && q.size <= 8 {
			q.expr, q.hasExpr = fx.locExpr(p.loc, fn.cu, v)
			// Unknown at every write: do not make the
			// evaluator say so each time.
			q.hasExpr = q.hasExpr && !op.Refused(q.expr)
		}
		pp.params[k] = q
	}
	return pp
}
