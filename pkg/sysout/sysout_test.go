package sysout

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// memory is a sparse fake address space for layout tests.
type memory map[uint64][]byte

func (m memory) ReadMemory(addr uint64, b []byte) error {
	for base, data := range m {
		if addr >= base && addr+uint64(len(b)) <= base+uint64(len(data)) {
			copy(b, data[addr-base:])
			return nil
		}
	}
	return errors.New("not mapped")
}

func le64(vs ...uint64) []byte {
	b := make([]byte, 8*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint64(b[8*i:], v)
	}
	return b
}

func TestOutputs(t *testing.T) {
	socklen := make([]byte, 4)
	binary.LittleEndian.PutUint32(socklen, 28)
	mem := memory{0x9000: socklen}
	for _, tc := range []struct {
		nr   int
		args [6]uint64
		want []Output
	}{
		{unix.SYS_READ, [6]uint64{3, 0x1000, 64}, []Output{{1, 0x1000, 64}}},
		{unix.SYS_READ, [6]uint64{3, 0, 64}, []Output{{1, 0, 0}}},
		{unix.SYS_FSTAT, [6]uint64{3, 0x2000}, []Output{{1, 0x2000, 144}}},
		{unix.SYS_EPOLL_WAIT, [6]uint64{4, 0x3000, 10}, []Output{{1, 0x3000, 120}}},
		// The address length lives behind a pointer.
		{unix.SYS_ACCEPT, [6]uint64{3, 0x4000, 0x9000}, []Output{{1, 0x4000, 28}, {2, 0x9000, 4}}},
		// ioctl: _IOR(0x54, 1, 16 bytes) carries its size; TCGETS is in the table.
		{unix.SYS_IOCTL, [6]uint64{0, 2<<30 | 16<<16 | 0x5401, 0x5000}, []Output{{2, 0x5000, 16}}},
		{unix.SYS_IOCTL, [6]uint64{0, unix.TCGETS, 0x5000}, []Output{{2, 0x5000, 36}}},
		{unix.SYS_IOCTL, [6]uint64{0, unix.TCSETS, 0x5000}, []Output{{2, 0x5000, 0}}},
	} {
		c, ok := Lookup(tc.nr)
		if !ok {
			t.Fatalf("syscall %d not known", tc.nr)
		}
		got := c.Outputs(&tc.args, mem)
		if len(got) != len(tc.want) {
			t.Fatalf("%s%v: %v, want %v", c.Name, tc.args, got, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s%v: output %d is %+v, want %+v", c.Name, tc.args, i, got[i], tc.want[i])
			}
		}
	}
	if _, ok := Lookup(unix.SYS_WRITE); ok {
		t.Error("write(2) listed as writing user memory")
	}
}

func TestRecvmsgLayout(t *testing.T) {
	// msghdr at 0x1000: name 0x2000 (16 bytes), iov 0x3000 (2 entries),
	// control 0x4000 (32 bytes).
	hdr := make([]byte, MsghdrSize)
	copy(hdr[0:], le64(0x2000))
	binary.LittleEndian.PutUint32(hdr[8:], 16)
	copy(hdr[16:], le64(0x3000, 2, 0x4000, 32))
	mem := memory{0x1000: hdr, 0x3000: le64(0x5000, 100, 0x6000, 50)}
	spec, ok := LookupVec(unix.SYS_RECVMSG)
	if !ok {
		t.Fatal("recvmsg not known")
	}
	l, ok := spec.Read(&[6]uint64{3, 0x1000, 0}, mem)
	if !ok {
		t.Fatal("layout not read")
	}
	want := []Output{{-1, 0x1000, MsghdrSize}, {-1, 0x5000, 100}, {-1, 0x6000, 50}, {-1, 0x2000, 16}, {-1, 0x4000, 32}}
	got := l.Outputs()
	if len(got) != len(want) {
		t.Fatalf("outputs %+v, want %+v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("output %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	// An iovec array that is not mapped: no layout, the call fails in
	// the kernel as it would.
	delete(mem, 0x3000)
	if _, ok := spec.Read(&[6]uint64{3, 0x1000, 0}, mem); ok {
		t.Error("layout read over an unmapped iovec array")
	}
}

func TestScratch(t *testing.T) {
	s := NewScratch(0x10000, 256)
	a, _ := s.Alloc(10)  // 16
	b, _ := s.Alloc(100) // 112
	c, ok := s.Alloc(128)
	if !ok || a != 0x10000 || b != 0x10010 || c != 0x10080 {
		t.Fatalf("allocs at %#x %#x %#x (%v)", a, b, c, ok)
	}
	if _, ok := s.Alloc(1); ok {
		t.Fatal("allocated past the end")
	}
	child := s.Clone()
	s.Release(b, 100)
	s.Release(a, 10)
	if d, ok := s.Alloc(128); !ok || d != 0x10000 {
		t.Errorf("freed runs not merged: %#x %v", d, ok)
	}
	if _, ok := child.Alloc(1); ok {
		t.Error("a clone shares its parent's books")
	}
}
