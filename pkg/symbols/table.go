package symbols

import (
	"debug/elf"
	"errors"
	"fmt"
	"github.com/memtrap/memtrap/pkg/procmaps"
	"io"
	"slices"
	"strings"
	"sync"
)

// vdsoPath is how /proc/PID/maps names the vDSO.
const vdsoPath = "[vdso]"

// Options says how a Table reaches the files and memory behind a memory map.
type Options struct {
	// Root, if set, is a second place to look for a module's file: Root
	// joined with the mapped path, for instance "/proc/1234/root" for a
	// process in another mount namespace. Used only by the default opener.
	Root string

	// Open opens the file behind a mapping, given the path as maps shows it.
	// If the returned value is also an io.Closer, Close closes it. Nil means
	// the default: the path and then Root+path, regular files only,
	// preferring the one whose inode is the mapping's.
	Open func(path string) (io.ReaderAt, error)

	// ReadMemory reads len(p) bytes of the target's memory at addr. It is
	// used only to read the vDSO; when nil the vDSO is a module with no
	// symbols.
	ReadMemory func(addr uint64, p []byte) error

	// DebugDirs are the roots searched for separate debug files: by build
	// ID under DIR/.build-id/, and by .gnu_debuglink under DIR followed by
	// the module's directory. Nil means {DefaultDebugDir}; an empty,
	// non-nil slice searches none of them (a module's own directory and
	// its .debug subdirectory are still searched by debug link).
	DebugDirs []string

	// CacheDir, if set, is where the indexes of a module's DWARF (its
	// line table and functions) are kept between runs, by build ID, so
	// that a later Table over the same file reads them instead of walking
	// its DWARF again. "" keeps nothing. See the package documentation.
	CacheDir string
}

// Location is what Lookup knows about an address.
type Location struct {
	// Func is the function or object covering the address, "" if none.
	Func string
	// Offset is the address minus Func's start; when Func is "", the
	// address minus ModuleBase.
	Offset uint64
	// File and Line are the source position of the address, from the
	// DWARF line table of the module or of its separate debug file; "" and
	// 0 when unknown.
	File string
	Line int
	// Module is the path of the mapped file, as maps shows it.
	Module string
	// ModuleBase is the module's load bias: runtime address minus link-time
	// address (0 for a non-PIE executable). When the module's file could not
	// be read it is a guess: the start of its lowest mapping minus that
	// mapping's file offset.
	ModuleBase uint64
}

// Table maps addresses to symbols and back for one process's memory map.
// The zero value is not usable; see NewTable.
type Table struct {
	opts Options

	mu      sync.Mutex
	closed  bool
	objects map[objKey]*object // every file opened so far, kept until Close
	mods    []*module          // modules of the current map, in maps order
	spans   []span             // sorted by start, disjoint
	pcs     map[uint64]*pcInfo // per runtime pc, for the current map
	maps    []procmaps.Mapping // the current map, as given
}

// objKey identifies a mapped file. The vDSO has no inode, so its start
// address stands in: a new vDSO (after exec) is read afresh.
type objKey struct {
	path  string
	dev   string
	inode uint64
	start uint64
}

// module is one file as the current memory map places it.
type module struct {
	key  objKey
	path string
	maps []procmaps.Mapping

	loaded   bool
	obj      *object // nil when the file could not be opened or parsed
	err      error   // why obj is nil
	bias     uint64
	biasOK   bool
	imageEnd uint64 // end of the last PT_LOAD at runtime, when biasOK
}

// span is one mapping of a module. A bss span is the anonymous mapping that
// follows a module's file-backed pages and holds the rest of its data
// segment.
type span struct {
	start, end uint64
	mod        *module
	bss        bool
}

// NewTable returns a table over maps. It opens nothing: each module is read
// on first use.
func NewTable(maps []procmaps.Mapping, opts Options) *Table {
	t := &Table{opts: opts, objects: make(map[objKey]*object)}
	t.setMaps(maps)
	return t
}

// Update replaces the memory map, keeping every module already parsed.
// Call it when the target's mappings change (dlopen, dlclose, exec). A map
// that places every module as before (protections may differ) changes
// nothing, and keeps what was learnt about each pc.
func (t *Table) Update(maps []procmaps.Mapping) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || sameLayout(maps, t.maps) {
		return
	}
	t.setMaps(maps)
}

// sameLayout reports whether a and b map the same files at the same
// places, which is all setMaps reads of them.
func sameLayout(a, b []procmaps.Mapping) bool {
	return slices.EqualFunc(a, b, func(x, y procmaps.Mapping) bool {
		return x.Start == y.Start && x.End == y.End && x.Offset == y.Offset &&
			x.Dev == y.Dev && x.Inode == y.Inode && x.Path == y.Path
	})
}

// Close closes every file the table opened. The table is unusable afterwards
// and so are the *elf.File values ModuleAt returned.
func (t *Table) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	var errs []error
	for _, o := range t.objects {
		if o.closer != nil {
			errs = append(errs, o.closer.Close())
		}
		if o.dbg != nil {
			errs = append(errs, o.dbg.closer.Close())
		}
	}
	t.objects, t.mods, t.spans, t.pcs = nil, nil, nil, nil
	return errors.Join(errs...)
}

// Lookup names the function or data object at pc, demangled, and the
// source line of pc. ok is false when pc is in no module; when pc is in a
// module that has no symbol there, or whose file cannot be read, ok is true
// and Func is "". The first lookup in a module with DWARF reads its line
// table.
func (t *Table) Lookup(pc uint64) (loc Location, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.pcEntry(pc)
	if !e.looked {
		e.loc, e.locOK = t.lookup(pc)
		e.looked = true
	}
	return e.loc, e.locOK
}

// lookup is Lookup without the per-pc cache.
// Precondition: t.mu is held.
func (t *Table) lookup(pc uint64) (loc Location, ok bool) {
	mod := t.moduleAt(pc)
	if mod == nil {
		return Location{}, false
	}
	loc.Module = mod.path
	if !mod.biasOK {
		loc.ModuleBase = mod.guessBase()
		loc.Offset = pc - loc.ModuleBase
		return loc, true
	}
	loc.ModuleBase = mod.bias
	v := pc - mod.bias
	if s := mod.obj.lookup(v); s != nil {
		loc.Func, loc.Offset = s.display(), v-s.addr
	} else {
		loc.Offset = v
	}
	loc.File, loc.Line = t.lineTable(mod.obj, mod.path).find(v)
	return loc, true
}

// ModuleErr reports what went wrong reading the module mapped at pc: why
// its file could not be read or placed, or why its DWARF could not be read
// in part or at all (Lookup then gives fewer or no source lines, and
// Resolve finds fewer DWARF variables). It reads the module's line table if
// no Lookup has. It is nil when nothing went wrong, or pc is in no module.
func (t *Table) ModuleErr(pc uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	mod := t.moduleAt(pc)
	if mod == nil {
		return nil
	}
	switch {
	case mod.err != nil:
		return mod.err
	case !mod.biasOK:
		return fmt.Errorf("%s: no mapping places its segments", mod.path)
	}
	t.lineTable(mod.obj, mod.path)
	return mod.obj.dwarfErr
}

// ModuleAt returns the parsed ELF file mapped at pc and its load bias, for
// readers of sections such as .eh_frame. path is set whenever pc is in a
// module; ok is false when it is not, or when the module's file could not be
// read or placed. f belongs to the table: do not close it.
func (t *Table) ModuleAt(pc uint64) (f *elf.File, bias uint64, path string, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	mod := t.moduleAt(pc)
	if mod == nil {
		return nil, 0, "", false
	}
	if !mod.biasOK {
		return nil, 0, mod.path, false
	}
	return mod.obj.f, mod.bias, mod.path, true
}

// moduleAt finds and loads the module mapped at pc.
// Precondition: t.mu is held.
func (t *Table) moduleAt(pc uint64) *module {
	lo, hi := 0, len(t.spans)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if t.spans[mid].start <= pc {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == 0 {
		return nil
	}
	s := &t.spans[lo-1]
	if pc >= s.end {
		return nil
	}
	t.load(s.mod)
	if s.bss && (!s.mod.biasOK || pc >= s.mod.imageEnd) {
		return nil
	}
	return s.mod
}

// setMaps rebuilds the modules and spans of a memory map.
// Precondition: t.mu is held.
func (t *Table) setMaps(maps []procmaps.Mapping) {
	byKey := make(map[objKey]*module)
	var mods []*module
	var spans []span
	var prev *module // module of the previous mapping, for .bss
	var prevEnd uint64
	for _, m := range maps {
		if m.End <= m.Start {
			prev = nil
			continue
		}
		if key, ok := moduleKey(m); ok {
			mod := byKey[key]
			if mod == nil {
				mod = &module{key: key, path: m.Path}
				byKey[key] = mod
				mods = append(mods, mod)
			}
			mod.maps = append(mod.maps, m)
			spans = append(spans, span{start: m.Start, end: m.End, mod: mod})
			prev = mod
		} else if m.Path == "" && prev != nil && m.Start == prevEnd {
			spans = append(spans, span{start: m.Start, end: m.End, mod: prev, bss: true})
			prev = nil
		} else {
			prev = nil
		}
		prevEnd = m.End
	}
	// /proc gives sorted, disjoint mappings; anything else is trimmed to that.
	slices.SortStableFunc(spans, func(a, b span) int {
		switch {
		case a.start < b.start:
			return -1
		case a.start > b.start:
			return 1
		}
		return 0
	})
	out := spans[:0]
	for _, s := range spans {
		if len(out) > 0 && s.start < out[len(out)-1].end {
			continue
		}
		out = append(out, s)
	}
	t.mods, t.spans = mods, out
	t.maps = slices.Clone(maps)
	t.pcs = nil // a pc may be another module's now
}

// moduleKey reports whether m maps a module, and which.
func moduleKey(m procmaps.Mapping) (objKey, bool) {
	switch {
	case m.Path == vdsoPath:
		return objKey{path: m.Path, dev: m.Dev, inode: m.Inode, start: m.Start}, true
	case strings.HasPrefix(m.Path, "/"):
		return objKey{path: m.Path, dev: m.Dev, inode: m.Inode}, true
	}
	return objKey{}, false
}

// load opens and parses mod's file, once per Table, and places it.
// Precondition: t.mu is held.
func (t *Table) load(mod *module) {
	if mod.loaded {
		return
	}
	mod.loaded = true
	obj, ok := t.objects[mod.key]
	if !ok {
		obj = t.open(mod)
		t.objects[mod.key] = obj
	}
	if obj.err != nil {
		mod.err = obj.err
		return
	}
	mod.obj = obj
	mod.bias, mod.biasOK = loadBias(obj.typ, obj.loads, mod.maps)
	if mod.biasOK {
		mod.imageEnd = mod.bias + obj.loadEnd
	}
}

// guessBase is the load bias of a module whose file is unreadable, assuming
// its lowest mapping maps file offset o at link-time address o.
func (m *module) guessBase() uint64 {
	if len(m.maps) == 0 {
		return 0
	}
	lowest := m.maps[0]
	for _, mp := range m.maps[1:] {
		if mp.Start < lowest.Start {
			lowest = mp
		}
	}
	if lowest.Offset > lowest.Start {
		return 0
	}
	return lowest.Start - lowest.Offset
}
