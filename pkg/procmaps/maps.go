// Package procmaps reads a process's memory map, /proc/PID/maps: what is
// mapped where, with which protection, from which file. It is pure text
// parsing (Parse) over a file read (Read); no ptrace, no state, safe from
// any goroutine.
package procmaps

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

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
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	for err == unix.EINTR {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
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
