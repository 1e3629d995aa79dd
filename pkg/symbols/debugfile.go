package symbols

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
	"path/filepath"
	"strings"
)

// DefaultDebugDir is where distributions install separate debug files.
const DefaultDebugDir = "/usr/lib/debug"

// maxNoteSize bounds the note sections read for a build ID.
const maxNoteSize = 1 << 20

// ntGNUBuildID is the type of the GNU build-ID note.
const ntGNUBuildID = 3

// debugFile is a separate debug file found for an object.
type debugFile struct {
	f      *elf.File
	path   string
	closer io.Closer
}

// buildID returns the GNU build ID of f, or nil. It reads SHT_NOTE sections,
// or PT_NOTE segments when f has no section headers (the vDSO has both).
func buildID(f *elf.File) []byte {
	type note struct {
		r     io.ReaderAt
		size  uint64
		align uint64
	}
	var notes []note
	for _, s := range f.Sections {
		if s.Type == elf.SHT_NOTE && s.Flags&elf.SHF_COMPRESSED == 0 {
			notes = append(notes, note{s, s.Size, s.Addralign})
		}
	}
	if len(notes) == 0 {
		for _, p := range f.Progs {
			if p.Type == elf.PT_NOTE {
				notes = append(notes, note{p, p.Filesz, p.Align})
			}
		}
	}
	for _, n := range notes {
		if n.size == 0 || n.size > maxNoteSize {
			continue
		}
		buf := make([]byte, n.size)
		if _, err := n.r.ReadAt(buf, 0); err != nil {
			continue
		}
		if id := parseBuildIDNote(buf, n.align, f.ByteOrder); id != nil {
			return id
		}
	}
	return nil
}

// parseBuildIDNote returns the descriptor of the first NT_GNU_BUILD_ID note
// named "GNU" in data, a run of ELF notes aligned to align bytes (4 unless
// align is 8). A note's descriptor and the next note start at the next
// multiple of align.
func parseBuildIDNote(data []byte, align uint64, bo binary.ByteOrder) []byte {
	if align != 8 {
		align = 4
	}
	n := uint64(len(data))
	up := func(v uint64) uint64 { return (v + align - 1) &^ (align - 1) }
	for off := uint64(0); off+12 <= n; {
		namesz := uint64(bo.Uint32(data[off:]))
		descsz := uint64(bo.Uint32(data[off+4:]))
		typ := bo.Uint32(data[off+8:])
		nameOff := off + 12
		descOff := up(nameOff + namesz)
		if namesz > n || descsz > n || descOff+descsz > n {
			return nil
		}
		if typ == ntGNUBuildID && string(data[nameOff:nameOff+namesz]) == "GNU\x00" && descsz > 0 {
			return bytes.Clone(data[descOff : descOff+descsz])
		}
		off = up(descOff + descsz)
	}
	return nil
}

// debugLink returns the file name and CRC-32 that f's .gnu_debuglink names.
func debugLink(f *elf.File) (name string, crc uint32, ok bool) {
	s := f.Section(".gnu_debuglink")
	if s == nil || s.Type == elf.SHT_NOBITS || s.Size > 4096 {
		return "", 0, false
	}
	data, err := s.Data()
	if err != nil {
		return "", 0, false
	}
	return parseDebugLink(data, f.ByteOrder)
}

// parseDebugLink decodes a .gnu_debuglink section: a NUL-terminated file
// name, zero padding to four bytes, and the CRC-32 of the debug file. A
// name that could leave the directory it is looked up in is refused.
func parseDebugLink(data []byte, bo binary.ByteOrder) (name string, crc uint32, ok bool) {
	n := bytes.IndexByte(data, 0)
	if n <= 0 {
		return "", 0, false
	}
	name = string(data[:n])
	if name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return "", 0, false
	}
	off := (n + 4) &^ 3
	if off+4 > len(data) {
		return "", 0, false
	}
	return name, bo.Uint32(data[off:]), true
}

// debugDirs returns the directories searched for debug files.
func (t *Table) debugDirs() []string {
	if t.opts.DebugDirs == nil {
		return []string{DefaultDebugDir}
	}
	return t.opts.DebugDirs
}

// findDebugFile looks for the separate debug file of f, the module mapped
// from path: first by build ID under each debug directory's .build-id tree,
// then by .gnu_debuglink next to the module, in its .debug subdirectory and
// under each debug directory. Each candidate is also tried under
// Options.Root. A candidate must carry the module's build ID or, found by
// debug link, have the link's CRC-32; a file that fails is skipped.
// Precondition: t.mu is held.
func (t *Table) findDebugFile(f *elf.File, path string) *debugFile {
	id := buildID(f)
	var cands []string
	if len(id) >= 2 {
		h := hex.EncodeToString(id)
		for _, d := range t.debugDirs() {
			cands = append(cands, filepath.Join(d, ".build-id", h[:2], h[2:]+".debug"))
		}
	}
	for _, p := range t.withRoot(cands) {
		if df := openDebugFile(p, id, nil); df != nil {
			return df
		}
	}
	name, crc, ok := debugLink(f)
	if !ok || !strings.HasPrefix(path, "/") {
		return nil
	}
	dir := filepath.Dir(strings.TrimSuffix(path, " (deleted)"))
	cands = []string{filepath.Join(dir, name), filepath.Join(dir, ".debug", name)}
	for _, d := range t.debugDirs() {
		cands = append(cands, filepath.Join(d, dir, name))
	}
	for _, p := range t.withRoot(cands) {
		if df := openDebugFile(p, id, &crc); df != nil {
			return df
		}
	}
	return nil
}

// withRoot returns each of paths followed by it under Options.Root.
func (t *Table) withRoot(paths []string) []string {
	if t.opts.Root == "" {
		return paths
	}
	out := make([]string, 0, 2*len(paths))
	for _, p := range paths {
		out = append(out, p, filepath.Join(t.opts.Root, p))
	}
	return out
}

// openDebugFile opens p as the debug file of a module with build ID id
// (nil if it has none), checking the file's CRC-32 when crc is not nil. It
// returns nil when p is missing, not a regular ELF file, or does not match.
func openDebugFile(p string, id []byte, crc *uint32) *debugFile {
	f, _, err := openRegular(p, 0)
	if err != nil {
		return nil
	}
	if crc != nil {
		h := crc32.NewIEEE()
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<62)); err != nil || h.Sum32() != *crc {
			f.Close()
			return nil
		}
	}
	ef, err := newELF(f)
	if err != nil {
		f.Close()
		return nil
	}
	// Found by build ID, the IDs agree by construction unless the file was
	// misplaced; found by debug link, they must agree when both exist.
	did := buildID(ef)
	if (crc == nil || (id != nil && did != nil)) && !bytes.Equal(did, id) {
		f.Close()
		return nil
	}
	return &debugFile{f: ef, path: p, closer: f}
}

// newELF is elf.NewFile under recover.
func newELF(r io.ReaderAt) (f *elf.File, err error) {
	defer func() {
		if p := recover(); p != nil {
			f, err = nil, fmt.Errorf("malformed ELF (debug/elf panicked: %v)", p)
		}
	}()
	return elf.NewFile(r)
}

// hasDWARF reports whether f holds DWARF debugging information of its own,
// rather than the empty (SHT_NOBITS) sections a stripped file may keep.
func hasDWARF(f *elf.File) bool {
	for _, name := range []string{".debug_info", ".zdebug_info"} {
		if s := f.Section(name); s != nil && s.Type != elf.SHT_NOBITS && s.Size > 0 {
			return true
		}
	}
	return false
}
