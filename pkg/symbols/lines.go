package symbols

import (
	"debug/dwarf"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// lineTable maps link-time addresses to source positions. From addrs[i] up
// to addrs[i+1] the position is rows[i], or none when rows[i].file is -1 (a
// sequence's end, a gap between functions). addrs and rows are parallel
// slices so that the binary search touches only addresses.
type lineTable struct {
	addrs []uint64
	rows  []lineRow
	files []string
}

type lineRow struct {
	file int32 // index in files, -1 for no position
	line int32
}

// find returns the source position of link-time address v, or "", 0.
func (lt *lineTable) find(v uint64) (file string, line int) {
	if lt == nil {
		return "", 0
	}
	lo, hi := 0, len(lt.addrs)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if lt.addrs[mid] <= v {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == 0 {
		return "", 0
	}
	r := lt.rows[lo-1]
	if r.file < 0 {
		return "", 0
	}
	return lt.files[r.file], int(r.line)
}

// lineEntry is a row of a line program as collected, before sorting.
type lineEntry struct {
	addr uint64
	row  lineRow
	end  bool // end of a sequence: no position from here
}

// buildLines reads the line programs of every compilation unit in d. A
// sequence is kept only when inCode accepts its first address: a linker
// leaves the sequences of functions it discarded (COMDAT duplicates,
// --gc-sections) at address 0 or thereabouts, on top of real code.
//
// Rows at one address are resolved as binutils' addr2line does: the last
// row of a sequence at an address wins, and a sequence starting where
// another ends wins over that end. Line 0 ("no source line") reads as no
// position.
//
// A compilation unit whose line program is malformed is left out and the
// first such error returned along with everything else; debug/dwarf is run
// under recover, and a panic ends the walk with an error.
func buildLines(d *dwarf.Data, inCode func(uint64) bool) (lt *lineTable, err error) {
	var (
		entries []lineEntry
		files   []string
		fileIdx = make(map[string]int32)
		errs    []error
	)
	defer func() {
		if p := recover(); p != nil {
			errs = append(errs, fmt.Errorf("malformed DWARF (debug/dwarf panicked: %v)", p))
		}
		lt = finishLines(entries, files)
		if len(errs) > 0 {
			err = errs[0]
		}
	}()

	seen := make(map[int64]bool) // stmt_list offsets already read
	r := d.Reader()
	for {
		cu, rerr := r.Next()
		if rerr != nil {
			errs = append(errs, fmt.Errorf("reading .debug_info: %w", rerr))
			return
		}
		if cu == nil {
			return
		}
		if cu.Tag != dwarf.TagCompileUnit && cu.Tag != dwarf.TagPartialUnit {
			r.SkipChildren()
			continue
		}
		r.SkipChildren()
		// Hostile units may share one program; read each once.
		if off, ok := cu.Val(dwarf.AttrStmtList).(int64); ok {
			if seen[off] {
				continue
			}
			seen[off] = true
		}
		lr, lerr := d.LineReader(cu)
		if lerr != nil {
			errs = append(errs, fmt.Errorf("line table of unit at %#x: %w", cu.Offset, lerr))
			continue
		}
		if lr == nil {
			continue
		}
		compDir, _ := cu.Val(dwarf.AttrCompDir).(string)
		cuStart := len(entries)
		var cur []lineEntry // the sequence being read
		byFile := make(map[*dwarf.LineFile]int32)
		var e dwarf.LineEntry
		for {
			if nerr := lr.Next(&e); nerr != nil {
				// An unterminated last sequence is dropped.
				if !errors.Is(nerr, io.EOF) {
					errs = append(errs, fmt.Errorf("line table of unit at %#x: %w", cu.Offset, nerr))
					entries = entries[:cuStart]
				}
				break
			}
			if e.EndSequence {
				if len(cur) > 0 && inCode(cur[0].addr) {
					entries = appendSequence(entries, cur, e.Address)
				}
				cur = cur[:0]
				continue
			}
			row := lineRow{file: -1}
			if e.File != nil && e.File.Name != "" && e.Line > 0 && e.Line <= 1<<31-1 {
				idx, ok := byFile[e.File]
				if !ok {
					name := fullPath(compDir, e.File.Name)
					if idx, ok = fileIdx[name]; !ok {
						idx = int32(len(files))
						files = append(files, name)
						fileIdx[name] = idx
					}
					byFile[e.File] = idx
				}
				row = lineRow{file: idx, line: int32(e.Line)}
			}
			cur = append(cur, lineEntry{addr: e.Address, row: row})
		}
	}
}

// fullPath makes a line table's file name absolute as addr2line does, by
// prefixing the compilation directory. debug/dwarf does so for DWARF 4 but,
// in DWARF 5, leaves a file whose directory entry is relative (gcc's
// "testdata" for "gcc testdata/x.c") relative, where the standard makes it
// relative to directory 0, the compilation directory. Go's "." says
// nothing and is left out.
func fullPath(compDir, name string) string {
	if name == "" || compDir == "" || compDir == "." || strings.HasPrefix(name, "/") {
		return name
	}
	if strings.HasSuffix(compDir, "/") {
		return compDir + name
	}
	return compDir + "/" + name
}

// appendSequence appends to dst the rows of one sequence that cover at
// least one byte, the last of several at one address, and the sequence's
// end.
func appendSequence(dst, rows []lineEntry, end uint64) []lineEntry {
	n := len(dst)
	for i, r := range rows {
		if r.addr >= end || (i+1 < len(rows) && rows[i+1].addr == r.addr) {
			continue
		}
		dst = append(dst, r)
	}
	if len(dst) > n {
		dst = append(dst, lineEntry{addr: end, row: lineRow{file: -1}, end: true})
	}
	return dst
}

// finishLines sorts collected rows into a lineTable, keeping one row per
// address and dropping rows that repeat the position before them.
func finishLines(entries []lineEntry, files []string) *lineTable {
	slices.SortStableFunc(entries, func(a, b lineEntry) int {
		switch {
		case a.addr != b.addr:
			if a.addr < b.addr {
				return -1
			}
			return 1
		case a.end != b.end: // an end yields to another sequence's row
			if a.end {
				return -1
			}
			return 1
		}
		return 0
	})
	lt := &lineTable{files: files}
	for i, e := range entries {
		if i+1 < len(entries) && entries[i+1].addr == e.addr {
			continue // a later row at this address wins
		}
		if n := len(lt.rows); n > 0 && lt.rows[n-1] == e.row {
			continue
		}
		lt.addrs = append(lt.addrs, e.addr)
		lt.rows = append(lt.rows, e.row)
	}
	lt.addrs = slices.Clip(lt.addrs)
	lt.rows = slices.Clip(lt.rows)
	return lt
}

// codeRanges returns a predicate for "v is in an executable section of f",
// or of an executable PT_LOAD when f has no section headers.
func codeRanges(f *elf.File) func(uint64) bool {
	type rng struct{ lo, hi uint64 }
	var rs []rng
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_EXECINSTR != 0 && s.Flags&elf.SHF_ALLOC != 0 && s.Addr+s.Size > s.Addr {
			rs = append(rs, rng{s.Addr, s.Addr + s.Size})
		}
	}
	if len(rs) == 0 {
		for _, p := range f.Progs {
			if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && p.Vaddr+p.Memsz > p.Vaddr {
				rs = append(rs, rng{p.Vaddr, p.Vaddr + p.Memsz})
			}
		}
	}
	return func(v uint64) bool {
		for _, r := range rs {
			if v >= r.lo && v < r.hi {
				return true
			}
		}
		return false
	}
}
