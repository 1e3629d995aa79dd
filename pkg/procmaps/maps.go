// Package procmaps reads a process's memory map, /proc/PID/maps: what is
// mapped where, with which protection, from which file. It is text
// parsing (Parse) over a file read (Read), safe from any goroutine, and
// the kernel's answer for one address (Query); no ptrace.
package procmaps

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End uint64 // [Start, End)
	Prot       int    // unix.PROT_READ|PROT_WRITE|PROT_EXEC
	Shared     bool   // 's' rather than 'p'
	Offset     uint64 // file offset of Start
	Dev        string // "fd:01"
	Inode      uint64
	Path       string // file path, "[heap]", "[vdso]", "" for anonymous
}

// Contains reports whether addr lies in the mapping.
func (m Mapping) Contains(addr uint64) bool { return addr >= m.Start && addr < m.End }

// Parse parses the text of /proc/PID/maps.
func Parse(r io.Reader) ([]Mapping, error) {
	var out []Mapping
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for line := 1; sc.Scan(); line++ {
		m, err := parseMapsLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("maps line %d: %w", line, err)
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

func parseMapsLine(s string) (Mapping, error) {
	var m Mapping
	// address perms offset dev inode [path]; the path may contain spaces.
	fields := make([]string, 0, 6)
	rest := s
	for i := 0; i < 5; i++ {
		rest = strings.TrimLeft(rest, " ")
		j := strings.IndexByte(rest, ' ')
		if j < 0 {
			j = len(rest)
		}
		fields = append(fields, rest[:j])
		rest = rest[j:]
	}
	if len(fields) < 5 || fields[4] == "" {
		return m, fmt.Errorf("malformed: %q", s)
	}
	m.Path = strings.TrimLeft(rest, " ")
	lo, hi, ok := strings.Cut(fields[0], "-")
	if !ok {
		return m, fmt.Errorf("malformed range %q", fields[0])
	}
	var err error
	if m.Start, err = strconv.ParseUint(lo, 16, 64); err != nil {
		return m, err
	}
	if m.End, err = strconv.ParseUint(hi, 16, 64); err != nil {
		return m, err
	}
	p := fields[1]
	if len(p) != 4 {
		return m, fmt.Errorf("malformed perms %q", p)
	}
	if p[0] == 'r' {
		m.Prot |= unix.PROT_READ
	}
	if p[1] == 'w' {
		m.Prot |= unix.PROT_WRITE
	}
	if p[2] == 'x' {
		m.Prot |= unix.PROT_EXEC
	}
	m.Shared = p[3] == 's'
	if m.Offset, err = strconv.ParseUint(fields[2], 16, 64); err != nil {
		return m, err
	}
	m.Dev = fields[3]
	if m.Inode, err = strconv.ParseUint(fields[4], 10, 64); err != nil {
		return m, err
	}
	return m, nil
}

// Read reads /proc/PID/maps. Heap watching reads it once per block armed:
// it takes the file with bare system calls (open, a read or two, close),
// not the nine an os.File on a /proc file costs (poller registration and
// its fcntl dance).
func Read(pid int) ([]Mapping, error) {
	path := fmt.Sprintf("/proc/%d/maps", pid)
	fd, err := openMaps(path)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, 32<<10)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, cap(buf))...)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			break
		}
		buf = buf[:len(buf)+n]
	}
	return Parse(bytes.NewReader(buf))
}

// openMaps opens a maps file with a bare system call.
func openMaps(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	for err == unix.EINTR {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return fd, nil
}

// ProtString renders a protection the way maps does ("rw-").
func ProtString(prot int) string {
	b := []byte("---")
	if prot&unix.PROT_READ != 0 {
		b[0] = 'r'
	}
	if prot&unix.PROT_WRITE != 0 {
		b[1] = 'w'
	}
	if prot&unix.PROT_EXEC != 0 {
		b[2] = 'x'
	}
	return string(b)
}

// Query answers "which mapping holds this address" for one address space
// with the kernel's PROCMAP_QUERY ioctl on /proc/PID/maps (Linux 6.11): one
// system call, no text to make or parse, however many mappings the process
// has. The descriptor sees the address space the process had when it was
// opened: a process that executes a new program needs a new Query. Not
// safe from several goroutines at once.
type Query struct {
	fd  int
	pid int
}

// ErrNoQuery means the kernel has no PROCMAP_QUERY: read the maps instead.
var ErrNoQuery = errors.New("PROCMAP_QUERY is not supported")

// procmapQuery is the kernel's struct procmap_query (linux/fs.h).
type procmapQuery struct {
	size, flags, addr              uint64
	start, end, vmaFlags, pageSize uint64
	offset, inode                  uint64
	devMajor, devMinor             uint32
	nameSize, buildIDSize          uint32
	nameAddr, buildIDAddr          uint64
}

const (
	// PROCMAP_QUERY: _IOWR('f', 17, struct procmap_query).
	procmapQueryIoctl = 3<<30 | uint64(unsafe.Sizeof(procmapQuery{}))<<16 | 'f'<<8 | 17
	vmaReadable       = 1
	vmaWritable       = 2
	vmaExecutable     = 4
	vmaShared         = 8
)

// OpenQuery opens a Query on process pid's address space, and tries it
// once: ErrNoQuery where the kernel has no PROCMAP_QUERY.
func OpenQuery(pid int) (*Query, error) {
	path := fmt.Sprintf("/proc/%d/maps", pid)
	fd, err := openMaps(path)
	if err != nil {
		return nil, err
	}
	q := &Query{fd: fd, pid: pid}
	if _, _, err := q.At(0); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

// At returns the mapping holding addr (Path, Dev left empty), and false
// where nothing is mapped there.
func (q *Query) At(addr uint64) (Mapping, bool, error) {
	a := procmapQuery{addr: addr}
	a.size = uint64(unsafe.Sizeof(a))
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(q.fd), uintptr(procmapQueryIoctl), uintptr(unsafe.Pointer(&a)))
	switch e {
	case 0:
	case unix.ENOENT:
		return Mapping{}, false, nil
	case unix.ENOTTY, unix.EINVAL, unix.EOPNOTSUPP:
		return Mapping{}, false, ErrNoQuery
	default:
		return Mapping{}, false, fmt.Errorf("PROCMAP_QUERY of %#x in process %d: %w", addr, q.pid, e)
	}
	m := Mapping{Start: a.start, End: a.end, Offset: a.offset, Inode: a.inode, Shared: a.vmaFlags&vmaShared != 0}
	if a.vmaFlags&vmaReadable != 0 {
		m.Prot |= unix.PROT_READ
	}
	if a.vmaFlags&vmaWritable != 0 {
		m.Prot |= unix.PROT_WRITE
	}
	if a.vmaFlags&vmaExecutable != 0 {
		m.Prot |= unix.PROT_EXEC
	}
	return m, true, nil
}

// Close closes the Query's descriptor.
func (q *Query) Close() error { return unix.Close(q.fd) }
