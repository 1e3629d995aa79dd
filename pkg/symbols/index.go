package symbols

import (
	"debug/dwarf"
	"debug/elf"
	"io"
	"math"
	"slices"
	"strings"
)

// object is one parsed ELF file, shared by every mapping of it for the life
// of the Table. A failed open or parse is cached too, as err.
type object struct {
	f      *elf.File
	closer io.Closer
	err    error

	typ     elf.Type
	loads   []elf.ProgHeader // PT_LOAD, sorted by p_vaddr
	loadEnd uint64           // page-rounded end of the last PT_LOAD

	// syms is sorted by address and, among symbols at one address, by
	// preference (see preferred).
	syms []sym
	// starts and which partition link-time addresses into runs: from
	// starts[i] up to starts[i+1] the covering symbol is syms[which[i]], or
	// none when which[i] is -1.
	starts []uint64
	which  []int32
	// byName indexes syms by name; built by the first Resolve.
	byName map[string]int32
	// byDemangled indexes mangled syms by demangled name, with and
	// without parameters; built by the first Resolve that needs it.
	byDemangled map[string][]int32
	// hasSymtab says syms came from a .symtab, of the file itself or of
	// its debug file.
	hasSymtab bool

	// Debugging information, each part found and read on first need.
	dbgDone   bool
	dbg       *debugFile // nil if none was needed or found
	dwarfDone bool
	dwarf     *dwarf.Data // nil if none
	dwarfErr  error       // why DWARF could not be read, in part or at all
	secs      sections    // the DWARF source's sections read so far
	linesDone bool
	lines     *lineTable // nil if none
	varsDone  bool
	vars      map[string]dwarfVar
	funcs     *funcIndex // subprograms for Params; nil until first needed
}

type sym struct {
	name       string
	addr, size uint64
	bind       elf.SymBind
	hidden     bool   // a non-default version in .dynsym (memcpy@GLIBC_2.2.5)
	secEnd     uint64 // end of the symbol's section, 0 if unknown
	shown      string // display name, demangled; set on first use
}

// setSymbols keeps the addressable symbols of raw and builds the address
// index.
func (o *object) setSymbols(raw []elf.Symbol, sections []*elf.Section) {
	for _, s := range raw {
		switch elf.ST_TYPE(s.Info) {
		case elf.STT_FUNC, elf.STT_GNU_IFUNC, elf.STT_OBJECT:
		default:
			continue // TLS values are offsets, and NOTYPE labels are noise
		}
		if s.Name == "" || s.Section == elf.SHN_UNDEF || s.Section >= elf.SHN_LORESERVE {
			continue // imports, absolute and common symbols have no address here
		}
		y := sym{
			name:   s.Name,
			addr:   s.Value,
			size:   s.Size,
			bind:   elf.ST_BIND(s.Info),
			hidden: s.HasVersion && s.VersionIndex.IsHidden(),
		}
		if i := int(s.Section); i < len(sections) {
			if sec := sections[i]; sec.Addr+sec.Size > sec.Addr {
				y.secEnd = sec.Addr + sec.Size
			}
		}
		o.syms = append(o.syms, y)
	}
	// A stable sort, by sorting positions with the position as the last
	// key: moving the symbols themselves about, as slices.SortStableFunc
	// does, was most of the time glibc's 10,000 symbols took.
	order := make([]int32, len(o.syms))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(i, j int32) int {
		a, b := &o.syms[i], &o.syms[j]
		switch {
		case a.addr < b.addr:
			return -1
		case a.addr > b.addr:
			return 1
		case preferred(a, b):
			return -1
		case preferred(b, a):
			return 1
		}
		return int(i - j)
	})
	sorted := make([]sym, len(o.syms))
	for k, i := range order {
		sorted[k] = o.syms[i]
	}
	o.syms = sorted
	o.buildIndex()
}

// preferred reports whether a names an address better than b, another symbol
// at the same address: default version, then global over weak over local,
// then fewer leading underscores, then shorter, then byte order.
func preferred(a, b *sym) bool {
	if a.hidden != b.hidden {
		return !a.hidden
	}
	if ra, rb := bindRank(a.bind), bindRank(b.bind); ra != rb {
		return ra < rb
	}
	ua := len(a.name) - len(strings.TrimLeft(a.name, "_"))
	ub := len(b.name) - len(strings.TrimLeft(b.name, "_"))
	if ua != ub {
		return ua < ub
	}
	if len(a.name) != len(b.name) {
		return len(a.name) < len(b.name)
	}
	return a.name < b.name
}

func bindRank(b elf.SymBind) int {
	switch b {
	case elf.STB_GLOBAL, elf.STB_LOOS: // STB_LOOS is STB_GNU_UNIQUE
		return 0
	case elf.STB_WEAK:
		return 1
	case elf.STB_LOCAL:
		return 2
	}
	return 3
}

// extent is one symbol's address range, [start, end).
type extent struct {
	start, end uint64
	sym        int32
}

// buildIndex computes starts and which from syms. Each address gets the
// preferred symbol there, with the largest size of its aliases; a size of 0
// reaches the next symbol's address or the section's end.
func (o *object) buildIndex() {
	var exts []extent
	for i := 0; i < len(o.syms); {
		j := i + 1
		size := o.syms[i].size
		for j < len(o.syms) && o.syms[j].addr == o.syms[i].addr {
			size = max(size, o.syms[j].size)
			j++
		}
		start := o.syms[i].addr
		var end uint64
		if size > 0 {
			end = start + size
			if end < start {
				end = math.MaxUint64
			}
		} else {
			end = math.MaxUint64
			if j < len(o.syms) {
				end = o.syms[j].addr
			}
			if se := o.syms[i].secEnd; se > start && se < end {
				end = se
			}
			if end == math.MaxUint64 {
				end = start + 1
			}
		}
		exts = append(exts, extent{start: start, end: end, sym: int32(i)})
		i = j
	}
	o.starts, o.which = flatten(exts)
}

// flatten turns extents sorted by distinct start into runs, the innermost
// extent winning where they nest. A stack holds the extents still open, the
// one ending first on top.
func flatten(exts []extent) (starts []uint64, which []int32) {
	emit := func(at uint64, s int32) {
		if n := len(starts); n > 0 && starts[n-1] == at {
			which[n-1] = s
			return
		}
		if n := len(which); n > 0 && which[n-1] == s {
			return
		}
		starts = append(starts, at)
		which = append(which, s)
	}
	var open []extent
	closeUpTo := func(pos uint64) {
		for len(open) > 0 && open[len(open)-1].end <= pos {
			top := open[len(open)-1]
			open = open[:len(open)-1]
			next := int32(-1)
			if len(open) > 0 {
				next = open[len(open)-1].sym
			}
			emit(top.end, next)
		}
	}
	for _, e := range exts {
		closeUpTo(e.start)
		// Extents ending within e are hidden by e from here on.
		for len(open) > 0 && open[len(open)-1].end <= e.end {
			open = open[:len(open)-1]
		}
		open = append(open, e)
		emit(e.start, e.sym)
	}
	closeUpTo(math.MaxUint64)
	return starts, which
}

// lookup returns the symbol covering link-time address v, or nil.
func (o *object) lookup(v uint64) *sym {
	lo, hi := 0, len(o.starts)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if o.starts[mid] <= v {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == 0 || o.which[lo-1] < 0 {
		return nil
	}
	return &o.syms[o.which[lo-1]]
}

// find returns the symbol a name resolves to in o: of several with that name
// the default version, then global over weak over local, then the lowest
// address.
func (o *object) find(name string) (*sym, bool) {
	if o.byName == nil {
		o.byName = make(map[string]int32, len(o.syms))
		for i := range o.syms {
			s := &o.syms[i]
			j, ok := o.byName[s.name]
			if !ok || namedBetter(s, &o.syms[j]) {
				o.byName[s.name] = int32(i)
			}
		}
	}
	i, ok := o.byName[name]
	if !ok {
		return nil, false
	}
	return &o.syms[i], true
}

// namedBetter orders symbols of one name; syms are visited by address, so
// equal ones keep the lowest.
func namedBetter(a, b *sym) bool {
	if a.hidden != b.hidden {
		return !a.hidden
	}
	return bindRank(a.bind) < bindRank(b.bind)
}
