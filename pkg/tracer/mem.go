package tracer

import (
	"errors"
	"fmt"
	"io"
)

// ErrNotMapped means an address range is not (wholly) mapped in the target.
var ErrNotMapped = errors.New("address not mapped")

// ReadMemory reads len(p) bytes at addr from the target. Reads go through
// /proc/PID/mem, which also reads pages the target cannot (PROT_NONE).
func (p *Process) ReadMemory(addr uint64, b []byte) error {
	if p.mem == nil {
		return ErrProcessExited
	}
	n, err := p.mem.ReadAt(b, int64(addr))
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = ErrNotMapped
	}
	return fmt.Errorf("reading %d bytes at %#x: %w", len(b), addr, errors.Join(ErrNotMapped, err))
}

// WriteMemory writes b at addr in the target. /proc/PID/mem writes with
// FOLL_FORCE, so it also writes through write-protected private pages (text,
// or pages memtrap protects), as a debugger's breakpoints do.
func (p *Process) WriteMemory(addr uint64, b []byte) error {
	if p.mem == nil {
		return ErrProcessExited
	}
	n, err := p.mem.WriteAt(b, int64(addr))
	if n == len(b) {
		return nil
	}
	if err == nil {
		err = io.ErrShortWrite
	}
	return fmt.Errorf("writing %d bytes at %#x: %w", len(b), addr, err)
}
