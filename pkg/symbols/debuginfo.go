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
	src, srcPath := obj.f, path
	if !hasDWARF(src) {
		df := t.separateDebug(obj, path)
		if df == nil || !hasDWARF(df.f) {
			return nil
		}
		src, srcPath = df.f, df.path
	}
	d, err := loadDWARF(src)
	if err != nil {
		obj.dwarfErr = fmt.Errorf("reading DWARF of %s: %w", srcPath, err)
		return nil
	}
	obj.dwarf = d
	return d
}

// lineTable returns obj's line table, built once; nil if it has none.
// Precondition: t.mu is held.
func (t *Table) lineTable(obj *object, path string) *lineTable {
	if obj.linesDone {
		return obj.lines
	}
	obj.linesDone = true
	d := t.dwarfData(obj, path)
	if d == nil {
		return nil
	}
	lt, err := buildLines(d, codeRanges(obj.f))
	if err != nil && obj.dwarfErr == nil {
		obj.dwarfErr = fmt.Errorf("reading line table of %s: %w", path, err)
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
// debug sections inflate to a sane size.
func loadDWARF(f *elf.File) (d *dwarf.Data, err error) {
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
	return f.DWARF()
}
