package procmaps

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestParseMaps(t *testing.T) {
	in := "55d0c0a49000-55d0c0a4a000 r-xp 00001000 fd:01 1234   /usr/bin/my prog\n" +
		"7ffd1000-7ffd2000 rw-s 00000000 00:00 0 \n" +
		"ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n"
	m, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 3 || m[0].Path != "/usr/bin/my prog" || m[0].Prot != unix.PROT_READ|unix.PROT_EXEC ||
		m[0].Offset != 0x1000 || m[0].Inode != 1234 || !m[1].Shared || m[1].Path != "" || m[2].Path != "[vsyscall]" {
		t.Fatalf("parsed %+v", m)
	}
	if _, err := Parse(strings.NewReader("garbage\n")); err == nil {
		t.Fatal("garbage parsed without error")
	}
}

// TestReadLarge: Read takes a map longer than its first buffer whole, each
// mapping with its own protection.
func TestReadLarge(t *testing.T) {
	const n = 1000 // about 50 bytes a line: past the 32 KiB first read
	page := uint64(os.Getpagesize())
	// 2n pages between two PROT_NONE ones: a mapping of the runtime's
	// next to the first or last could merge with it otherwise.
	whole, err := unix.Mmap(-1, 0, int((2*n+2)*page), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(whole)
	base := whole[page : (2*n+1)*page]
	if err := unix.Mprotect(base, unix.PROT_READ); err != nil {
		t.Fatal(err)
	}
	// Every other page writable: 2n mappings the kernel cannot merge.
	for i := 0; i < 2*n; i += 2 {
		if err := unix.Mprotect(base[uint64(i)*page:uint64(i+1)*page], unix.PROT_READ|unix.PROT_WRITE); err != nil {
			t.Fatal(err)
		}
	}
	maps, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	start := uint64(uintptr(unsafe.Pointer(&base[0])))
	for i := uint64(0); i < 2*n; i++ {
		a := start + i*page
		want := unix.PROT_READ
		if i%2 == 0 {
			want |= unix.PROT_WRITE
		}
		found := false
		for _, m := range maps {
			if m.Start == a && m.End == a+page {
				found = m.Prot == want
				break
			}
		}
		if !found {
			t.Fatalf("page %d at %#x: no mapping of it alone with protection %s among %d", i, a, ProtString(want), len(maps))
		}
	}
}

// TestQuery: the kernel's answer for an address is the line of the maps
// that holds it, for every mapping of a sleeping process (its first and
// last byte), and nothing for the gaps.
func TestQuery(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	pid := cmd.Process.Pid
	// Until the new program's maps are in place.
	for i := 0; ; i++ {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && strings.HasPrefix(string(b), "sleep\x00") {
			break
		}
		if i == 1000 {
			t.Fatalf("process %d did not execute sleep", pid)
		}
		time.Sleep(time.Millisecond)
	}
	q, err := OpenQuery(pid)
	if errors.Is(err, ErrNoQuery) {
		t.Skipf("this kernel has no PROCMAP_QUERY (Linux 6.11): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	maps, err := Read(pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) < 5 {
		t.Fatalf("only %d mappings: %+v", len(maps), maps)
	}
	for i, m := range maps {
		if m.Path == "[vsyscall]" {
			continue // not a VMA of the process's own
		}
		for _, a := range []uint64{m.Start, m.End - 1} {
			got, ok, err := q.At(a)
			if err != nil || !ok {
				t.Fatalf("At(%#x) = %v, %v; want %+v", a, ok, err, m)
			}
			want := m
			want.Path, want.Dev = "", ""
			if got != want {
				t.Errorf("At(%#x) = %+v; want %+v", a, got, want)
			}
		}
		if i+1 < len(maps) && maps[i+1].Start > m.End {
			if got, ok, err := q.At(m.End); ok || err != nil {
				t.Errorf("At(%#x), in a gap = %+v, %v, %v", m.End, got, ok, err)
			}
		}
	}
}
