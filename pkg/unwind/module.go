package unwind

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"sync"
)

// moduleCFI is the call frame information of one ELF file: its .eh_frame
// and its .debug_frame, either of which may be missing.
type moduleCFI struct {
	eh    *cfiSection
	debug *cfiSection
	err   error // why a section could not be used; informational

	// rows caches, by link-time address, what the walk needs at a PC:
	// its FDE and the CFI row that applies there. The same few PCs come
	// back at every trapped write of a hot loop, and finding the FDE and
	// running its CFA program is most of an unwind's cost.
	mu   sync.Mutex
	rows map[uint64]*pcRow
}

// pcRow is how to unwind from one PC: its FDE and section (err if none
// covers it), and the row, if the FDE's program gives one (rowErr).
type pcRow struct {
	fd     fde
	sec    *cfiSection
	err    error
	row    row
	rowErr error
}

// maxCachedRows bounds the cache of one module: a long-running target
// with many writers starts over rather than grow without end.
const maxCachedRows = 4096

// rowAt returns how to unwind from the link-time address pc, computed with
// m the first time.
func (c *moduleCFI) rowAt(pc uint64, m *machine) *pcRow {
	c.mu.Lock()
	r := c.rows[pc]
	c.mu.Unlock()
	if r != nil {
		return r
	}
	r = &pcRow{}
	r.fd, r.sec, r.err = c.find(pc)
	if r.err == nil {
		r.rowErr = m.rowFor(r.sec, &r.fd, pc)
		r.row = m.row
	}
	c.mu.Lock()
	if c.rows == nil || len(c.rows) >= maxCachedRows {
		c.rows = map[uint64]*pcRow{}
	}
	c.rows[pc] = r
	c.mu.Unlock()
	return r
}

// find returns the FDE covering the link-time address pc and the section it
// is in. .eh_frame is asked first: it is what the code was built to unwind
// with; .debug_frame covers code built without it.
func (m *moduleCFI) find(pc uint64) (fde, *cfiSection, error) {
	err := errNoFDE
	for _, s := range [2]*cfiSection{m.eh, m.debug} {
		if s == nil {
			continue
		}
		f, ferr := s.find(pc)
		if ferr == nil {
			return f, s, nil
		}
		if !errors.Is(ferr, errNoFDE) {
			err = ferr
		}
	}
	return fde{}, nil, err
}

// loadModuleCFI reads the CFI of f. A section that cannot be read or
// indexed is left out and its error kept; a malformed file never panics
// the caller, as debug/elf is run under recover.
func loadModuleCFI(f *elf.File) (m *moduleCFI) {
	m = &moduleCFI{}
	defer func() {
		if p := recover(); p != nil {
			m = &moduleCFI{err: fmt.Errorf("reading CFI: panic in debug/elf: %v", p)}
		}
	}()
	var bases ptrBases
	if s := f.Section(".text"); s != nil {
		bases.text = s.Addr
	}
	if s := f.Section(".got"); s != nil {
		bases.data = s.Addr
	}
	var errs []error
	eh, err := loadEHFrame(f, bases)
	if err != nil {
		errs = append(errs, err)
	}
	m.eh = eh
	if s := f.Section(".debug_frame"); s != nil && s.Type != elf.SHT_NOBITS {
		data, err := s.Data()
		if err != nil {
			errs = append(errs, fmt.Errorf("reading .debug_frame: %w", err))
		} else {
			d := &cfiSection{name: ".debug_frame", data: data, bases: bases}
			if err := d.buildIndex(); err != nil {
				errs = append(errs, fmt.Errorf("indexing .debug_frame: %w", err))
			}
			m.debug = d
		}
	}
	m.err = errors.Join(errs...)
	return m
}

// loadEHFrame finds .eh_frame and its header through the section headers,
// or, when a file has none, through PT_GNU_EH_FRAME as the dynamic loader
// does. Without a usable header table it indexes the section itself.
func loadEHFrame(f *elf.File, bases ptrBases) (*cfiSection, error) {
	var data, hdrData []byte
	var addr, hdrAddr uint64
	var err error
	if s := f.Section(".eh_frame"); s != nil && s.Type != elf.SHT_NOBITS {
		if data, err = s.Data(); err != nil {
			return nil, fmt.Errorf("reading .eh_frame: %w", err)
		}
		addr = s.Addr
		if h := f.Section(".eh_frame_hdr"); h != nil && h.Type != elf.SHT_NOBITS {
			hdrData, _ = h.Data()
			hdrAddr = h.Addr
		}
	} else {
		for _, p := range f.Progs {
			if p.Type == elf.PT_GNU_EH_FRAME {
				hdrData, _ = io.ReadAll(p.Open())
				hdrAddr = p.Vaddr
			}
		}
		if hdrData == nil {
			return nil, nil
		}
		_, ehAddr, err := parseEHFrameHdr(hdrData, hdrAddr)
		if err != nil {
			return nil, err
		}
		if data, err = segmentFrom(f, ehAddr); err != nil {
			return nil, fmt.Errorf("reading .eh_frame at %#x: %w", ehAddr, err)
		}
		addr = ehAddr
	}
	s := &cfiSection{name: ".eh_frame", data: data, addr: addr, eh: true, bases: bases}
	var hdrErr error
	if hdrData != nil {
		h, ehAddr, err := parseEHFrameHdr(hdrData, hdrAddr)
		switch {
		case err != nil:
			hdrErr = err
		case ehAddr != addr:
			hdrErr = fmt.Errorf(".eh_frame_hdr names .eh_frame at %#x, not %#x", ehAddr, addr)
		default:
			s.hdr = h
		}
	}
	if s.hdr == nil {
		if err := s.buildIndex(); err != nil {
			return s, errors.Join(hdrErr, fmt.Errorf("indexing .eh_frame: %w", err))
		}
	}
	return s, hdrErr
}

// segmentFrom returns the file bytes of the PT_LOAD segment containing
// vaddr, from vaddr to the segment's end.
func segmentFrom(f *elf.File, vaddr uint64) ([]byte, error) {
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || vaddr < p.Vaddr || vaddr-p.Vaddr >= p.Filesz {
			continue
		}
		n := p.Filesz - (vaddr - p.Vaddr)
		if n > 1<<30 {
			return nil, fmt.Errorf("segment of %d bytes: too large", n)
		}
		buf := make([]byte, n)
		if _, err := p.ReadAt(buf, int64(vaddr-p.Vaddr)); err != nil && err != io.EOF {
			return nil, err
		}
		return buf, nil
	}
	return nil, errors.New("not in a loaded segment")
}
