package unwind

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/memtrap/memtrap/pkg/dwarf/reader"
)

var (
	// errNoFDE reports that no FDE covers an address.
	errNoFDE = errors.New("no FDE covers the address")
	// errIndirect reports DW_EH_PE_indirect where a value is needed: it
	// would mean reading a pointer out of the file's data.
	errIndirect = errors.New("indirect pointer encoding unsupported here")
)

// A cie is a Common Information Entry: what the FDEs that point at it share.
type cie struct {
	version   uint8
	aug       string
	codeAlign uint64
	dataAlign int64
	raReg     uint64
	fdeEnc    byte // pointer encoding of the FDEs' addresses
	hasAug    bool // 'z': FDEs carry an augmentation length
	signal    bool // 'S': FDEs describe a signal trampoline
	addrSize  uint8
	initial   []byte // instructions run before every FDE's
}

// An fde is a Frame Description Entry: the CFA program for [lo, hi).
type fde struct {
	off       uint64 // offset of the entry in its section
	cie       *cie
	lo, hi    uint64 // link-time addresses
	insns     []byte
	insnsAddr uint64 // link-time address of insns[0], for DW_CFA_set_loc
}

// fdeSpan is one entry of a section's sorted index.
type fdeSpan struct {
	lo, hi uint64
	off    uint64
}

// A cfiSection is a parsed .eh_frame or .debug_frame. Its data is the
// section's own bytes; FDEs are decoded from it on each lookup, and CIEs once.
// It is safe for concurrent use.
type cfiSection struct {
	name  string
	data  []byte
	addr  uint64 // link-time address of data[0]; 0 for .debug_frame
	eh    bool
	bases ptrBases // text and data bases for DW_EH_PE_textrel, _datarel

	// Exactly one of hdr and index serves lookups.
	hdr   *ehFrameHdr
	index []fdeSpan

	mu   sync.Mutex
	cies map[uint64]*cie
}

// entry is the framing of one CIE or FDE.
type entry struct {
	off    uint64 // offset of the length field
	next   uint64 // offset of the entry after this one
	isCIE  bool
	zero   bool          // a zero length: a terminator or padding
	cieOff uint64        // FDEs only: section offset of the CIE
	body   reader.Reader // the bytes after the CIE id or pointer
	addr   uint64        // link-time address of body.b[0]
}

// entryAt reads the framing of the entry at off.
func (s *cfiSection) entryAt(off uint64) (entry, error) {
	e := entry{off: off}
	if off >= uint64(len(s.data)) {
		return e, fmt.Errorf("entry at %#x: past the section's end %#x", off, len(s.data))
	}
	r := reader.At(s.data, off)
	length := uint64(r.U32())
	dwarf64 := false
	if length == 0xffffffff {
		length = r.U64()
		dwarf64 = true
	}
	if r.Err() != nil {
		return e, fmt.Errorf("entry at %#x: length: %w", off, r.Err())
	}
	if length == 0 {
		e.zero = true
		e.next = uint64(r.Off())
		return e, nil
	}
	start := uint64(r.Off())
	if length > uint64(len(s.data))-start {
		return e, fmt.Errorf("entry at %#x: length %#x runs past the section's end: %w", off, length, reader.ErrTruncated)
	}
	e.next = start + length
	r = reader.At(s.data[:e.next], start)
	idField := start
	var id uint64
	if dwarf64 && !s.eh {
		id = r.U64()
	} else {
		id = uint64(r.U32())
	}
	if r.Err() != nil {
		return e, fmt.Errorf("entry at %#x: CIE id: %w", off, r.Err())
	}
	switch {
	case s.eh && id == 0, !s.eh && !dwarf64 && id == 0xffffffff, !s.eh && dwarf64 && id == ^uint64(0):
		e.isCIE = true
	case s.eh:
		// The CIE pointer counts back from its own field.
		if id > idField {
			return e, fmt.Errorf("FDE at %#x: CIE pointer %#x points before the section", off, id)
		}
		e.cieOff = idField - id
	default:
		e.cieOff = id
	}
	e.addr = s.addr + uint64(r.Off())
	e.body = reader.New(r.Rest())
	return e, nil
}

// cieAt returns the CIE at off, parsing it the first time.
func (s *cfiSection) cieAt(off uint64) (*cie, error) {
	s.mu.Lock()
	c, ok := s.cies[off]
	s.mu.Unlock()
	if ok {
		return c, nil
	}
	e, err := s.entryAt(off)
	if err != nil {
		return nil, err
	}
	if !e.isCIE {
		return nil, fmt.Errorf("entry at %#x: not a CIE", off)
	}
	c, err = s.parseCIE(&e)
	if err != nil {
		return nil, fmt.Errorf("CIE at %#x: %w", off, err)
	}
	s.mu.Lock()
	if s.cies == nil {
		s.cies = make(map[uint64]*cie)
	}
	if prev, ok := s.cies[off]; ok {
		c = prev
	} else {
		s.cies[off] = c
	}
	s.mu.Unlock()
	return c, nil
}

func (s *cfiSection) parseCIE(e *entry) (*cie, error) {
	r := e.body
	c := &cie{fdeEnc: peAbsptr, addrSize: 8}
	c.version = r.U8()
	switch c.version {
	case 1, 3, 4:
	default:
		if r.Err() != nil {
			return nil, r.Err()
		}
		return nil, fmt.Errorf("version %d: unsupported", c.version)
	}
	aug := r.CString()
	c.aug = string(aug)
	if c.version >= 4 {
		c.addrSize = r.U8()
		if seg := r.U8(); seg != 0 {
			return nil, fmt.Errorf("segment selector size %d: unsupported", seg)
		}
		if c.addrSize != 4 && c.addrSize != 8 {
			return nil, fmt.Errorf("address size %d: unsupported", c.addrSize)
		}
	}
	if len(aug) >= 2 && aug[0] == 'e' && aug[1] == 'h' {
		// Pre-2000 gcc: the address of an exception table follows.
		r.Bytes(uint64(c.addrSize))
		aug = aug[2:]
	}
	c.codeAlign = r.ULEB128()
	c.dataAlign = r.SLEB128()
	if c.version == 1 {
		c.raReg = uint64(r.U8())
	} else {
		c.raReg = r.ULEB128()
	}
	if len(aug) > 0 && aug[0] == 'z' {
		c.hasAug = true
		n := r.ULEB128()
		if n > uint64(r.Len()) {
			return nil, fmt.Errorf("augmentation data of %d bytes: %w", n, reader.ErrTruncated)
		}
		augAddr := e.addr + uint64(r.Off())
		a := reader.New(r.Bytes(n))
		b := s.bases
		b.pc = augAddr
	augLoop:
		for _, ch := range aug[1:] {
			switch ch {
			case 'R':
				c.fdeEnc = a.U8()
			case 'L':
				a.U8() // the LSDA encoding: only the personality routine cares
			case 'P':
				readPointer(&a, a.U8(), &b)
			case 'S':
				c.signal = true
			case 'B', 'G':
				// AArch64 BTI and MTE markers; no data.
			default:
				// 'z' says how long the data is, so the rest can be skipped.
				break augLoop
			}
		}
		if a.Err() != nil {
			return nil, fmt.Errorf("augmentation %q: %w", c.aug, a.Err())
		}
	} else if len(aug) > 0 {
		return nil, fmt.Errorf("augmentation %q: unsupported", c.aug)
	}
	if r.Err() != nil {
		return nil, r.Err()
	}
	if pointerSize(c.fdeEnc) == 0 && c.fdeEnc&0x0f != peULEB128 && c.fdeEnc&0x0f != peSLEB128 {
		return nil, fmt.Errorf("FDE pointer encoding %#x: unsupported", c.fdeEnc)
	}
	c.initial = r.Rest()
	return c, nil
}

// fdeAt parses the FDE at off.
func (s *cfiSection) fdeAt(off uint64) (fde, error) {
	e, err := s.entryAt(off)
	if err != nil {
		return fde{}, err
	}
	if e.isCIE || e.zero {
		return fde{}, fmt.Errorf("entry at %#x: not an FDE", off)
	}
	return s.parseFDE(&e)
}

func (s *cfiSection) parseFDE(e *entry) (fde, error) {
	f := fde{off: e.off}
	c, err := s.cieAt(e.cieOff)
	if err != nil {
		return f, fmt.Errorf("FDE at %#x: %w", e.off, err)
	}
	f.cie = c
	r := e.body
	b := s.bases
	b.pc = e.addr
	if s.eh {
		var indirect bool
		f.lo, indirect = readPointer(&r, c.fdeEnc, &b)
		if indirect {
			return f, fmt.Errorf("FDE at %#x: initial location: %w", e.off, errIndirect)
		}
		var n uint64
		n, _ = readPointer(&r, c.fdeEnc&0x0f, &b)
		f.hi = f.lo + n
	} else if c.addrSize == 4 {
		f.lo = uint64(r.U32())
		f.hi = f.lo + uint64(r.U32())
	} else {
		f.lo = r.U64()
		f.hi = f.lo + r.U64()
	}
	if c.hasAug {
		r.Bytes(r.ULEB128())
	}
	if r.Err() != nil {
		return f, fmt.Errorf("FDE at %#x: %w", e.off, r.Err())
	}
	if f.hi < f.lo {
		return f, fmt.Errorf("FDE at %#x: range [%#x, %#x) wraps", e.off, f.lo, f.hi)
	}
	f.insnsAddr = e.addr + uint64(r.Off())
	f.insns = r.Rest()
	return f, nil
}

// each calls fn for every well-formed FDE in section order. It stops at the
// first entry whose framing is broken, since nothing after it can be found,
// and returns the first error met; FDEs that parse are still reported.
func (s *cfiSection) each(fn func(fde)) error {
	var first error
	for off := uint64(0); off < uint64(len(s.data)); {
		e, err := s.entryAt(off)
		if err != nil {
			return errors.Join(first, err)
		}
		off = e.next
		if e.zero || e.isCIE {
			continue
		}
		f, err := s.parseFDE(&e)
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		fn(f)
	}
	return first
}

// buildIndex sorts the section's FDEs by address for lookups when there is
// no .eh_frame_hdr table. Empty FDEs (left by the linker for discarded code)
// are dropped.
func (s *cfiSection) buildIndex() error {
	var idx []fdeSpan
	err := s.each(func(f fde) {
		if f.hi > f.lo {
			idx = append(idx, fdeSpan{lo: f.lo, hi: f.hi, off: f.off})
		}
	})
	sort.Slice(idx, func(i, j int) bool { return idx[i].lo < idx[j].lo })
	s.index = idx
	return err
}

// find returns the FDE covering the link-time address pc.
func (s *cfiSection) find(pc uint64) (fde, error) {
	if s.hdr != nil {
		off, ok := s.hdr.lookup(pc, s.addr, uint64(len(s.data)))
		if !ok {
			return fde{}, errNoFDE
		}
		f, err := s.fdeAt(off)
		if err != nil {
			return f, err
		}
		if pc < f.lo || pc >= f.hi {
			return f, errNoFDE
		}
		return f, nil
	}
	i := sort.Search(len(s.index), func(i int) bool { return s.index[i].lo > pc })
	// Ranges may nest or overlap when hand-written assembly is involved;
	// look back a little for one that covers pc.
	for j := i - 1; j >= 0 && j >= i-4; j-- {
		if pc < s.index[j].hi {
			return s.fdeAt(s.index[j].off)
		}
	}
	return fde{}, errNoFDE
}

// ehFrameHdr is .eh_frame_hdr: a table of (initial location, FDE address)
// pairs sorted by location, for binary search.
type ehFrameHdr struct {
	addr    uint64 // link-time address of the section; the datarel base
	table   []byte
	tabAddr uint64
	enc     byte
	entSize int
	count   int
}

// parseEHFrameHdr parses .eh_frame_hdr at link-time address addr. It
// returns the address of .eh_frame it names, and a nil table when the
// section has no binary search table in a fixed-size encoding.
func parseEHFrameHdr(data []byte, addr uint64) (*ehFrameHdr, uint64, error) {
	r := reader.New(data)
	b := ptrBases{pc: addr, data: addr}
	version := r.U8()
	ptrEnc, countEnc, tabEnc := r.U8(), r.U8(), r.U8()
	if r.Err() != nil {
		return nil, 0, fmt.Errorf(".eh_frame_hdr: %w", r.Err())
	}
	if version != 1 {
		return nil, 0, fmt.Errorf(".eh_frame_hdr: version %d: unsupported", version)
	}
	ehAddr, ind := readPointer(&r, ptrEnc, &b)
	if ind {
		r.Fail(errIndirect)
	}
	if r.Err() != nil {
		return nil, 0, fmt.Errorf(".eh_frame_hdr: .eh_frame pointer: %w", r.Err())
	}
	if countEnc == peOmit || tabEnc == peOmit {
		return nil, ehAddr, nil
	}
	count, ind := readPointer(&r, countEnc, &b)
	if ind {
		r.Fail(errIndirect)
	}
	if r.Err() != nil {
		return nil, ehAddr, fmt.Errorf(".eh_frame_hdr: FDE count: %w", r.Err())
	}
	sz := pointerSize(tabEnc)
	if sz == 0 || tabEnc&peIndirect != 0 {
		return nil, ehAddr, nil
	}
	if count > uint64(r.Len()/(2*sz)) {
		return nil, ehAddr, fmt.Errorf(".eh_frame_hdr: %d entries do not fit in %d bytes: %w", count, r.Len(), reader.ErrTruncated)
	}
	h := &ehFrameHdr{
		addr:    addr,
		table:   data[r.Off() : r.Off()+int(count)*2*sz],
		tabAddr: addr + uint64(r.Off()),
		enc:     tabEnc,
		entSize: 2 * sz,
		count:   int(count),
	}
	return h, ehAddr, nil
}

// entry decodes table entry i.
func (h *ehFrameHdr) entry(i int) (loc, fdeAddr uint64) {
	off := i * h.entSize
	r := reader.New(h.table[off : off+h.entSize])
	b := ptrBases{pc: h.tabAddr + uint64(off), data: h.addr}
	loc, _ = readPointer(&r, h.enc, &b)
	fdeAddr, _ = readPointer(&r, h.enc, &b)
	return loc, fdeAddr
}

// lookup returns the .eh_frame offset of the last FDE starting at or before
// pc, given the section's address and size.
func (h *ehFrameHdr) lookup(pc, ehAddr, ehSize uint64) (uint64, bool) {
	i := sort.Search(h.count, func(i int) bool {
		loc, _ := h.entry(i)
		return loc > pc
	})
	if i == 0 {
		return 0, false
	}
	_, a := h.entry(i - 1)
	if a < ehAddr || a-ehAddr >= ehSize {
		return 0, false
	}
	return a - ehAddr, true
}
