package symbols

import (
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"strings"
)

// Bounds on the DWARF read from one file. Compressed debug sections say
// how large they inflate; real DWARF compresses a few times over, so a
// section of over a megabyte claiming more than maxInflation times its
// stored size is a decompression bomb, not debugging information.
const (
	maxInflation = 256
	maxDWARF     = 2 << 30 // bytes, all debug sections together
)

// separateDebug returns obj's separate debug file, searching for it once.
// Precondition: t.mu is held.
func (t *Table) separateDebug(obj *object, path string) *debugFile {
	if !obj.dbgDone {
		obj.dbgDone = true
		obj.dbg = t.findDebugFile(obj.f, path)
	}
	return obj.dbg
}

// dwarfData returns obj's DWARF, read once from the file itself or, when
// it has none, from its debug file; nil when there is none or it cannot
// be read (obj.dwarfErr says why).
// Precondition: t.mu is held.
func (t *Table) dwarfData(obj *object, path string) *dwarf.Data {
	if obj.dwarfDone {
		return obj.dwarf
	}
	obj.dwarfDone = true
	src, srcPath := t.dwarfSource(obj, path)
	if src == nil {
		return nil
	}
	if obj.secs == nil {
		obj.secs = sections{}
	}
	d, err := loadDWARF(src, obj.secs)
	if err != nil {
		obj.dwarfErr = fmt.Errorf("reading DWARF of %s: %w", srcPath, err)
		return nil
	}
	obj.dwarf = d
	return d
}

// dwarfSource is the file obj's DWARF is in: obj's own, else its debug
// file's; nil when neither has any.
// Precondition: t.mu is held.
func (t *Table) dwarfSource(obj *object, path string) (*elf.File, string) {
	if hasDWARF(obj.f) {
		return obj.f, path
	}
	df := t.separateDebug(obj, path)
	if df == nil || !hasDWARF(df.f) {
		return nil, ""
	}
	return df.f, df.path
}

// lineTable returns obj's line table, built once, or read from the cache;
// nil if it has none.
// Precondition: t.mu is held.
func (t *Table) lineTable(obj *object, path string) *lineTable {
	if obj.linesDone {
		return obj.lines
	}
	obj.linesDone = true
	file, sources, cache := t.cacheEntry(obj, path, cacheLines)
	if cache {
		if lt, err := decodeLines(readCache(file, cacheLines, sources)); err == nil {
			if len(lt.addrs) > 0 {
				obj.lines = lt
			}
			return obj.lines
		}
	}
	d := t.dwarfData(obj, path)
	if d == nil {
		return nil
	}
	lt, err := buildLines(d, codeRanges(obj.f))
	if err != nil && obj.dwarfErr == nil {
		obj.dwarfErr = fmt.Errorf("reading line table of %s: %w", path, err)
	}
	if cache && err == nil {
		writeCache(file, cacheLines, sources, encodeLines(lt))
	}
	if len(lt.addrs) > 0 {
		obj.lines = lt
	}
	return obj.lines
}

// variables returns obj's DWARF variables at fixed addresses, indexed once.
// Precondition: t.mu is held.
func (t *Table) variables(obj *object, path string) map[string]dwarfVar {
	if obj.varsDone {
		return obj.vars
	}
	obj.varsDone = true
	d := t.dwarfData(obj, path)
	if d == nil {
		return nil
	}
	vars, err := buildVars(d)
	if err != nil && obj.dwarfErr == nil {
		obj.dwarfErr = fmt.Errorf("reading variables of %s: %w", path, err)
	}
	obj.vars = vars
	return vars
}

// loadDWARF is f.DWARF() under recover, after checking that compressed
// debug sections inflate to a sane size. The sections read are kept in
// secs.
func loadDWARF(f *elf.File, secs sections) (d *dwarf.Data, err error) {
	defer func() {
		if p := recover(); p != nil {
			d, err = nil, fmt.Errorf("malformed DWARF (debug/elf panicked: %v)", p)
		}
	}()
	var total uint64
	for _, s := range f.Sections {
		if s.Type == elf.SHT_NOBITS || !(strings.HasPrefix(s.Name, ".debug_") || strings.HasPrefix(s.Name, ".zdebug_")) {
			continue
		}
		size, packed := s.Size, s.Flags&elf.SHF_COMPRESSED != 0
		if strings.HasPrefix(s.Name, ".zdebug_") {
			// Before Open, Size is the stored size: the real one is
			// in the "ZLIB" header debug/elf reads.
			var hdr [12]byte
			if n, _ := s.ReadAt(hdr[:], 0); n == len(hdr) && string(hdr[:4]) == "ZLIB" {
				size, packed = binary.BigEndian.Uint64(hdr[4:]), true
			}
		}
		if packed && size > 1<<20 && size/maxInflation > s.FileSize {
			return nil, fmt.Errorf("section %s inflates from %d to %d bytes", s.Name, s.FileSize, size)
		}
		if total += size; total > maxDWARF || total < size {
			return nil, fmt.Errorf("debug sections exceed %d bytes", maxDWARF)
		}
	}
	if relocatesDWARF(f) {
		return f.DWARF()
	}
	return dwarfOf(f, secs)
}

// relocatesDWARF reports whether f.DWARF() would apply relocations to a
// debug section of f (a relocatable object's).
func relocatesDWARF(f *elf.File) bool {
	if f.Type == elf.ET_EXEC {
		return false
	}
	for _, r := range f.Sections {
		if r.Type != elf.SHT_RELA && r.Type != elf.SHT_REL {
			continue
		}
		if i := int(r.Info); i < len(f.Sections) && dwarfSuffix(f.Sections[i].Name) != "" {
			return true
		}
	}
	return false
}

// dwarfSuffix is a debug section's name without ".debug_" or ".zdebug_".
func dwarfSuffix(name string) string {
	switch {
	case strings.HasPrefix(name, ".debug_"):
		return name[7:]
	case strings.HasPrefix(name, ".zdebug_"):
		return name[8:]
	}
	return ""
}

// dwarfOf is f.DWARF() for a file whose debug sections need no
// relocation, with the sections read through secs, where the function
// index finds them again: inflating a compressed .debug_info twice was a
// sixth of the first backtrace into glibc.
func dwarfOf(f *elf.File, secs sections) (*dwarf.Data, error) {
	read := func(s *elf.Section) ([]byte, error) {
		b, err := secs.data(s)
		if err != nil && uint64(len(b)) < s.Size {
			return nil, err
		}
		return b, nil
	}
	first := map[string][]byte{"abbrev": nil, "info": nil, "str": nil, "line": nil, "ranges": nil}
	for _, s := range f.Sections {
		suffix := dwarfSuffix(s.Name)
		if _, ok := first[suffix]; !ok {
			continue
		}
		b, err := read(s)
		if err != nil {
			return nil, err
		}
		first[suffix] = b
	}
	d, err := dwarf.New(first["abbrev"], nil, nil, first["info"], first["line"], nil, first["ranges"], first["str"])
	if err != nil {
		return nil, err
	}
	for i, s := range f.Sections {
		suffix := dwarfSuffix(s.Name)
		if _, ok := first[suffix]; ok || suffix == "" {
			continue
		}
		b, err := read(s)
		if err != nil {
			return nil, err
		}
		if suffix == "types" {
			err = d.AddTypes(fmt.Sprintf("types-%d", i), b)
		} else {
			err = d.AddSection(".debug_"+suffix, b)
		}
		if err != nil {
			return nil, err
		}
	}
	return d, nil
}

// sections reads each section of a file once: the DWARF reader and the
// function index both need .debug_info and .debug_loclists. The zero
// value reads every time.
type sections map[*elf.Section]sectionRead

type sectionRead struct {
	b   []byte
	err error
}

func (c sections) data(s *elf.Section) ([]byte, error) {
	if r, ok := c[s]; ok {
		return r.b, r.err
	}
	b, err := s.Data()
	if c != nil {
		c[s] = sectionRead{b, err}
	}
	return b, err
}
