package symbols

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"hash/fnv"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/memtrap/memtrap/pkg/dwarf/leb128"
	"github.com/memtrap/memtrap/pkg/dwarf/reader"
)

// The on-disk index cache (Options.CacheDir). A module's line table and
// function index take a full walk of its DWARF to build: about 0.3 s for
// glibc's debug file, paid by every run that shows a frame in libc. They
// are kept in CacheDir, one file per module and kind:
//
//	<build ID in hex>.<kind>       kind: "lines" or "funcs"
//
//	magic      8 bytes, "MTSYMIDX"
//	version    ULEB128, cacheVersion
//	kind       ULEB128 length, bytes
//	sources    8 bytes LE, FNV-64a of what the index was built from
//	length     ULEB128, of the payload
//	crc        4 bytes LE, CRC-32 (IEEE) of the payload
//	payload    the index, ULEB128 numbers and length-prefixed bytes
//
// "sources" hashes the DWARF source file's debug section headers (name,
// type, flags, offset, sizes) and the module's executable sections (which
// line sequences are kept), so a file of the same build ID with other
// DWARF (a stripped copy, a rebuilt debug file) does not use it. A file
// that is missing, of another version, for other sources, short, or whose
// CRC or contents do not check is ignored and written anew. Files are
// written to a temporary name and renamed into place, so a reader sees a
// whole file or none. Only an index built without error is written: what a
// damaged file's DWARF costs is reported afresh at every run.

// cacheVersion changes whenever the payload's layout or what the indexes
// hold changes.
const cacheVersion = 1

const cacheMagic = "MTSYMIDX"

// maxCacheFile bounds the cache file read for one index.
const maxCacheFile = 1 << 30

const (
	cacheLines = "lines"
	cacheFuncs = "funcs"
)

var errCorrupt = errors.New("corrupt index cache")

// cacheEntry locates obj's index of one kind in the cache: its file and the
// hash of its sources. ok is false when it has no place there (no cache
// directory, no build ID, no DWARF).
// Precondition: t.mu is held.
func (t *Table) cacheEntry(obj *object, path, kind string) (file string, sources uint64, ok bool) {
	if t.opts.CacheDir == "" {
		return "", 0, false
	}
	src, _ := t.dwarfSource(obj, path)
	id := buildID(obj.f)
	if src == nil || len(id) == 0 {
		return "", 0, false
	}
	h := fnv.New64a()
	var num [8]byte
	put := func(v uint64) {
		binary.LittleEndian.PutUint64(num[:], v)
		h.Write(num[:])
	}
	for _, s := range src.Sections {
		if strings.HasPrefix(s.Name, ".debug_") || strings.HasPrefix(s.Name, ".zdebug_") {
			h.Write([]byte(s.Name))
			put(uint64(s.Type))
			put(uint64(s.Flags))
			put(s.Offset)
			put(s.Size)
			put(s.FileSize)
		}
	}
	h.Write([]byte{0})
	for _, s := range obj.f.Sections {
		if s.Flags&elf.SHF_EXECINSTR != 0 && s.Flags&elf.SHF_ALLOC != 0 {
			put(s.Addr)
			put(s.Size)
		}
	}
	for _, p := range obj.f.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 {
			put(p.Vaddr)
			put(p.Memsz)
		}
	}
	return filepath.Join(t.opts.CacheDir, hex.EncodeToString(id)+"."+kind), h.Sum64(), true
}

// readCache returns the payload of a cache file for kind built from
// sources, or nil.
func readCache(file, kind string, sources uint64) []byte {
	f, err := os.Open(file)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() > maxCacheFile {
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCacheFile))
	if err != nil || !bytes.HasPrefix(data, []byte(cacheMagic)) {
		return nil
	}
	r := reader.New(data[len(cacheMagic):])
	if r.ULEB128() != cacheVersion || string(r.Bytes(r.ULEB128())) != kind || r.U64() != sources {
		return nil
	}
	n := r.ULEB128()
	crc := r.U32()
	if r.Err() != nil || n != uint64(r.Len()) {
		return nil
	}
	payload := r.Rest()
	if crc32.ChecksumIEEE(payload) != crc {
		return nil
	}
	return payload
}

// writeCache puts payload in file, whole or not at all. Failing to is not
// an error: the cache only saves time.
func writeCache(file, kind string, sources uint64, payload []byte) {
	dir := filepath.Dir(file)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	e := cacheEnc{b: []byte(cacheMagic)}
	e.u(cacheVersion)
	e.str(kind)
	e.b = binary.LittleEndian.AppendUint64(e.b, sources)
	e.u(uint64(len(payload)))
	e.b = binary.LittleEndian.AppendUint32(e.b, crc32.ChecksumIEEE(payload))
	e.b = append(e.b, payload...)
	tmp, err := os.CreateTemp(dir, filepath.Base(file)+".*.tmp")
	if err != nil {
		return
	}
	_, werr := tmp.Write(e.b)
	cerr := tmp.Close()
	if werr != nil || cerr != nil || os.Rename(tmp.Name(), file) != nil {
		os.Remove(tmp.Name())
	}
}

// cacheEnc appends an index's numbers and bytes.
type cacheEnc struct{ b []byte }

func (e *cacheEnc) u(v uint64)     { e.b = leb128.AppendUnsigned(e.b, v) }
func (e *cacheEnc) bytes(p []byte) { e.u(uint64(len(p))); e.b = append(e.b, p...) }
func (e *cacheEnc) str(s string)   { e.u(uint64(len(s))); e.b = append(e.b, s...) }
func (e *cacheEnc) loc(l locAttr)  { e.u(uint64(l.kind)); e.bytes(l.expr); e.u(l.off) }

func (e *cacheEnc) flag(v bool) {
	if v {
		e.u(1)
	} else {
		e.u(0)
	}
}

// cacheDec reads what cacheEnc wrote; any inconsistency sets its error
// and makes every later read return zero.
type cacheDec struct{ r reader.Reader }

func (d *cacheDec) fail() { d.r.Fail(errCorrupt) }

func (d *cacheDec) u() uint64 { return d.r.ULEB128() }

// count reads a number of elements of at least one byte each.
func (d *cacheDec) count() int {
	n := d.u()
	if n > uint64(d.r.Len()) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *cacheDec) bytes() []byte {
	n := d.u()
	if n > uint64(d.r.Len()) {
		d.fail()
		return nil
	}
	b := d.r.Bytes(n)
	if len(b) == 0 {
		return nil
	}
	return b
}

func (d *cacheDec) str() string { return string(d.bytes()) }

// below reads a number less than n.
func (d *cacheDec) below(n uint64) uint64 {
	v := d.u()
	if v >= n {
		d.fail()
		return 0
	}
	return v
}

func (d *cacheDec) flag() bool { return d.below(2) == 1 }

func (d *cacheDec) loc() locAttr {
	l := locAttr{kind: uint8(d.below(locListx + 1))}
	l.expr = d.bytes()
	l.off = d.u()
	return l
}

func (d *cacheDec) done() error {
	if d.r.Err() != nil || d.r.Len() != 0 {
		return errCorrupt
	}
	return nil
}

// encodeLines is the payload of a line table (nil: none).
func encodeLines(lt *lineTable) []byte {
	var e cacheEnc
	if lt == nil {
		lt = &lineTable{}
	}
	e.u(uint64(len(lt.files)))
	for _, f := range lt.files {
		e.str(f)
	}
	e.u(uint64(len(lt.addrs)))
	prev := uint64(0)
	for i, a := range lt.addrs {
		e.u(a - prev)
		prev = a
		e.u(uint64(int64(lt.rows[i].file) + 1))
		e.u(uint64(lt.rows[i].line))
	}
	return e.b
}

func decodeLines(p []byte) (*lineTable, error) {
	d := cacheDec{r: reader.New(p)}
	lt := &lineTable{}
	lt.files = make([]string, d.count())
	for i := range lt.files {
		lt.files[i] = d.str()
	}
	n := d.count()
	lt.addrs, lt.rows = make([]uint64, n), make([]lineRow, n)
	prev := uint64(0)
	for i := range n {
		delta := d.u()
		if i > 0 && delta == 0 || prev+delta < prev {
			d.fail()
		}
		prev += delta
		lt.addrs[i] = prev
		lt.rows[i] = lineRow{file: int32(d.below(uint64(len(lt.files))+1)) - 1, line: int32(d.below(math.MaxInt32 + 1))}
	}
	if err := d.done(); err != nil {
		return nil, err
	}
	return lt, nil
}

// encodeFuncs is the payload of a function index whose parameters are all
// sized.
func encodeFuncs(fx *funcIndex) []byte {
	var e cacheEnc
	e.u(uint64(len(fx.units)))
	for _, u := range fx.units {
		e.u(uint64(u.version))
		e.u(u.base)
		e.u(u.addrBase)
		e.u(u.loclistsBase)
	}
	vars := func(ps []paramDesc) {
		e.u(uint64(len(ps)))
		for _, p := range ps {
			e.str(p.name)
			e.u(uint64(p.typ))
			e.flag(p.hasType)
			e.loc(p.loc)
			e.u(uint64(p.origin))
			e.u(uint64(p.size))
			e.flag(p.sized)
		}
	}
	e.u(uint64(len(fx.funcs)))
	for _, fn := range fx.funcs {
		e.u(uint64(fn.cu))
		e.loc(fn.frameBase)
		vars(fn.params)
		vars(fn.locals)
	}
	e.u(uint64(len(fx.ranges)))
	prev := uint64(0)
	for _, r := range fx.ranges {
		e.u(r.lo - prev)
		prev = r.lo
		e.u(r.hi - r.lo)
		e.u(uint64(r.fn))
	}
	e.bytes(fx.loc)
	e.bytes(fx.lists)
	e.bytes(fx.addr)
	return e.b
}

func decodeFuncs(p []byte) (*funcIndex, error) {
	d := cacheDec{r: reader.New(p)}
	fx := &funcIndex{}
	fx.units = make([]unitInfo, d.count())
	for i := range fx.units {
		fx.units[i] = unitInfo{version: int(d.below(1 << 16)), base: d.u(), addrBase: d.u(), loclistsBase: d.u()}
	}
	vars := func() []paramDesc {
		ps := make([]paramDesc, d.count())
		for i := range ps {
			q := &ps[i]
			q.name = d.str()
			q.typ = dwarf.Offset(d.below(math.MaxUint32 + 1))
			q.hasType = d.flag()
			q.loc = d.loc()
			q.origin = dwarf.Offset(d.below(math.MaxUint32 + 1))
			q.size = int(d.below(1<<30 + 1))
			q.sized = d.flag()
		}
		if len(ps) == 0 {
			return nil
		}
		return ps
	}
	fx.funcs = make([]funcDesc, d.count())
	for i := range fx.funcs {
		fn := &fx.funcs[i]
		fn.cu = int32(d.below(uint64(len(fx.units))))
		fn.frameBase = d.loc()
		fn.params = vars()
		fn.locals = vars()
	}
	fx.ranges = make([]funcRange, d.count())
	prev := uint64(0)
	for i := range fx.ranges {
		lo := prev + d.u()
		size := d.u()
		if lo < prev || lo+size <= lo {
			d.fail()
		}
		prev = lo
		fx.ranges[i] = funcRange{lo: lo, hi: lo + size, fn: int32(d.below(uint64(len(fx.funcs))))}
	}
	fx.loc, fx.lists, fx.addr = d.bytes(), d.bytes(), d.bytes()
	if err := d.done(); err != nil {
		return nil, err
	}
	if len(fx.funcs) == 0 {
		fx.funcs = nil
	}
	if len(fx.ranges) == 0 {
		fx.ranges = nil
	}
	return fx, nil
}

// sizeParams looks up the size of every parameter's type in fx, as Params
// would on first use, so that an index read back from the cache needs no
// DWARF.
func sizeParams(d *dwarf.Data, fx *funcIndex) {
	sizes := make(map[dwarf.Offset]int)
	for i := range fx.funcs {
		for j := range fx.funcs[i].params {
			p := &fx.funcs[i].params[j]
			if p.sized {
				continue
			}
			p.sized = true
			if !p.hasType {
				continue
			}
			n, ok := sizes[p.typ]
			if !ok {
				if v, err := typeSize(d, p.typ); err == nil && v <= 1<<30 {
					n = int(v)
				}
				sizes[p.typ] = n
			}
			p.size = n
		}
	}
}
