package tracer

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"
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
	if err := failPoint(fmt.Sprintf("writing %d bytes at %#x", len(b), addr)); err != nil {
		return err
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

// A Segment is a range of the target's memory and the buffer for it.
type Segment struct {
	Addr uint64
	Buf  []byte
}

// ReadSegments reads several ranges of the target with one
// process_vm_readv, in order, until one cannot be read, and returns the
// number of bytes read in all. Unlike ReadMemory it honours the target's
// own protection: a page the target cannot read (PROT_NONE, execute-only)
// ends the read. It saves system calls where each costs microseconds.
func (p *Process) ReadSegments(segs []Segment) (int, error) {
	var local [4]unix.Iovec
	var remote [4]unix.RemoteIovec
	if len(segs) > len(local) {
		return 0, fmt.Errorf("reading %d segments: at most %d", len(segs), len(local))
	}
	for i, s := range segs {
		if len(s.Buf) == 0 {
			return 0, fmt.Errorf("segment %d at %#x is empty", i, s.Addr)
		}
		local[i].Base = &s.Buf[0]
		local[i].SetLen(len(s.Buf))
		remote[i] = unix.RemoteIovec{Base: uintptr(s.Addr), Len: len(s.Buf)}
	}
	n, err := unix.ProcessVMReadv(p.Pid, local[:len(segs)], remote[:len(segs)], 0)
	if err != nil {
		return 0, fmt.Errorf("process_vm_readv at %#x: %w", segs[0].Addr, err)
	}
	return n, nil
}
