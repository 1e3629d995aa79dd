package procmaps

import (
	"strings"
	"testing"

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
