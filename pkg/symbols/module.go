package symbols

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"github.com/memtrap/memtrap/pkg/procmaps"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"
)

// pageSize is the granularity at which the kernel and ld.so map segments on
// x86-64, whatever a segment's p_align says.
const pageSize = 4096

// maxVDSOSize bounds the memory read for a [vdso] mapping (two pages today).
const maxVDSOSize = 1 << 20

func pageDown(v uint64) uint64 { return v &^ (pageSize - 1) }

func pageUp(v uint64) uint64 {
	if v > ^uint64(0)-(pageSize-1) {
		return ^uint64(0) &^ (pageSize - 1)
	}
	return pageDown(v + pageSize - 1)
}

// open reads mod's file (or, for the vDSO, its memory) and parses it. The
// returned object records the error when that fails.
// Precondition: t.mu is held.
func (t *Table) open(mod *module) *object {
	var (
		r   io.ReaderAt
		err error
	)
	switch {
	case mod.key.path == vdsoPath:
		r, err = t.readVDSO(mod)
	case t.opts.Open != nil:
		r, err = t.opts.Open(mod.path)
	default:
		r, err = openMapped(mod.path, t.opts.Root, mod.key.inode)
	}
	if err != nil {
		return &object{err: fmt.Errorf("opening %s: %w", mod.path, err)}
	}
	closer, _ := r.(io.Closer)
	obj, err := parseObject(r)
	if err != nil {
		if closer != nil {
			closer.Close()
		}
		return &object{err: fmt.Errorf("parsing %s: %w", mod.path, err)}
	}
	obj.closer = closer
	// A stripped file's full symbol table may be in its debug file.
	if !obj.hasSymtab {
		if df := t.separateDebug(obj, mod.path); df != nil {
			if raw := symtab(df.f); len(raw) > 0 {
				obj.syms = nil
				obj.setSymbols(raw, df.f.Sections)
				obj.hasSymtab = true
			}
		}
	}
	return obj
}

// readVDSO copies the vDSO out of the target: it is a whole ELF image.
func (t *Table) readVDSO(mod *module) (io.ReaderAt, error) {
	if t.opts.ReadMemory == nil {
		return nil, errors.New("no memory reader")
	}
	m := mod.maps[0]
	if m.End-m.Start > maxVDSOSize {
		return nil, fmt.Errorf("mapping of %d bytes is too large", m.End-m.Start)
	}
	buf := make([]byte, m.End-m.Start)
	if err := t.opts.ReadMemory(m.Start, buf); err != nil {
		return nil, fmt.Errorf("reading %#x: %w", m.Start, err)
	}
	return bytes.NewReader(buf), nil
}

// openMapped opens the regular file at path, or else at root+path, preferring
// the candidate whose inode is the mapping's: a container's path may name a
// different file on the host. Non-regular files are never opened, since
// opening a device can have effects.
func openMapped(path, root string, inode uint64) (*os.File, error) {
	cands := []string{path}
	if root != "" {
		cands = append(cands, filepath.Join(root, path))
	}
	var fallback *os.File
	var firstErr error
	for _, p := range cands {
		f, same, err := openRegular(p, inode)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if same {
			if fallback != nil {
				fallback.Close()
			}
			return f, nil
		}
		if fallback == nil {
			fallback = f
		} else {
			f.Close()
		}
	}
	if fallback != nil {
		return fallback, nil
	}
	return nil, firstErr
}

// openRegular opens p if it is a regular file and reports whether its inode
// is inode (true as well when inode is 0, unknown).
func openRegular(p string, inode uint64) (f *os.File, same bool, err error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, false, err
	}
	if !fi.Mode().IsRegular() {
		return nil, false, fmt.Errorf("%s: not a regular file", p)
	}
	if f, err = os.Open(p); err != nil {
		return nil, false, err
	}
	if fi, err = f.Stat(); err != nil {
		f.Close()
		return nil, false, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return f, inode == 0 || !ok || st.Ino == inode, nil
}

// parseObject parses an ELF file and its symbols. debug/elf has panicked on
// hostile input in past releases; a panic becomes an error here.
func parseObject(r io.ReaderAt) (obj *object, err error) {
	defer func() {
		if p := recover(); p != nil {
			obj, err = nil, fmt.Errorf("malformed ELF (debug/elf panicked: %v)", p)
		}
	}()
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, err
	}
	obj = &object{f: f, typ: f.Type}
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD {
			continue
		}
		obj.loads = append(obj.loads, p.ProgHeader)
		end := p.Vaddr + p.Memsz
		if end < p.Vaddr {
			return nil, fmt.Errorf("PT_LOAD at %#x: size %#x overflows", p.Vaddr, p.Memsz)
		}
		obj.loadEnd = max(obj.loadEnd, pageUp(end))
	}
	slices.SortStableFunc(obj.loads, func(a, b elf.ProgHeader) int {
		switch {
		case a.Vaddr < b.Vaddr:
			return -1
		case a.Vaddr > b.Vaddr:
			return 1
		}
		return 0
	})
	// A damaged .symtab falls back to .dynsym, and a file with neither is
	// still a module (its program headers serve an unwinder).
	var raw []elf.Symbol
	if !compressed(f, elf.SHT_SYMTAB) {
		raw, err = f.Symbols()
	}
	obj.hasSymtab = err == nil && len(raw) > 0
	if !obj.hasSymtab && !compressed(f, elf.SHT_DYNSYM, elf.SHT_GNU_VERSYM, elf.SHT_GNU_VERDEF, elf.SHT_GNU_VERNEED) {
		raw, _ = f.DynamicSymbols()
	}
	obj.setSymbols(raw, f.Sections)
	return obj, nil
}

// symtab returns the .symtab of f, nil if it has none or it cannot be
// read.
func symtab(f *elf.File) (raw []elf.Symbol) {
	defer func() {
		if recover() != nil {
			raw = nil
		}
	}()
	if compressed(f, elf.SHT_SYMTAB) {
		return nil
	}
	raw, _ = f.Symbols()
	return raw
}

// compressed reports whether a section of one of types, or the string table
// it links to, is SHF_COMPRESSED. No linker compresses these; a file that
// does could inflate a few kilobytes into gigabytes, so it is not read.
func compressed(f *elf.File, types ...elf.SectionType) bool {
	for _, s := range f.Sections {
		if !slices.Contains(types, s.Type) {
			continue
		}
		if s.Flags&elf.SHF_COMPRESSED != 0 {
			return true
		}
		if l := int(s.Link); l < len(f.Sections) && f.Sections[l].Flags&elf.SHF_COMPRESSED != 0 {
			return true
		}
	}
	return false
}

// loadBias computes what was added to link-time addresses of a file with
// type typ and PT_LOAD segments loads (sorted by p_vaddr) to place it at
// maps, the mappings of that file. ok is false if maps does not place it.
func loadBias(typ elf.Type, loads []elf.ProgHeader, maps []procmaps.Mapping) (bias uint64, ok bool) {
	if typ == elf.ET_EXEC {
		return 0, true
	}
	if len(loads) == 0 {
		return 0, false
	}
	// The usual case: the first segment's first page. Of several mappings
	// of that page (a small file whose segments share page 0), the lowest
	// is the first segment, since it has the lowest p_vaddr.
	first := loads[0]
	var found *procmaps.Mapping
	for i := range maps {
		m := &maps[i]
		if m.Offset == pageDown(first.Off) && (found == nil || m.Start < found.Start) {
			found = m
		}
	}
	if found != nil {
		return found.Start - pageDown(first.Vaddr), true
	}
	// The first segment is not mapped (unmapped by the target, or a partial
	// map): place the file by any mapping inside a segment's file image.
	for _, m := range maps {
		for _, p := range loads {
			lo := pageDown(p.Off)
			if m.Offset >= lo && m.Offset < p.Off+p.Filesz {
				return m.Start - (pageDown(p.Vaddr) + (m.Offset - lo)), true
			}
		}
	}
	return 0, false
}
