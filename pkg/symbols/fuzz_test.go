package symbols

import (
	"bytes"
	"github.com/memtrap/memtrap/pkg/procmaps"
	"io"
	"os"
	"testing"
)

// FuzzNewTableELF feeds arbitrary bytes to a Table as both a mapped file and
// a vDSO image. Nothing may panic; errors are fine.
func FuzzNewTableELF(f *testing.F) {
	paths := []string{program(f, progPIE), program(f, progNoPIE), program(f, libDemo), program(f, dbgZlib)}
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:64])
		f.Add(b[:len(b)/3])
	}
	f.Add([]byte("\x7fELF"))
	f.Add([]byte{})

	const base, vdso = 0x400000, 0x7ffff7fc0000
	maps := []procmaps.Mapping{
		{Start: base, End: base + 0x1000, Offset: 0, Path: "/fuzz/a.out"},
		{Start: base + 0x1000, End: base + 0x3000, Offset: 0x1000, Path: "/fuzz/a.out"},
		{Start: base + 0x3000, End: base + 0x8000}, // .bss
		{Start: vdso, End: vdso + 0x2000, Path: "[vdso]"},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tab := NewTable(maps, Options{
			DebugDirs: []string{},
			Open:      func(string) (io.ReaderAt, error) { return bytes.NewReader(data), nil },
			ReadMemory: func(addr uint64, p []byte) error {
				clear(p)
				if addr == vdso {
					copy(p, data)
				}
				return nil
			},
		})
		for _, pc := range []uint64{base, base + 0x1010, base + 0x4000, vdso + 0x100, 0} {
			tab.Lookup(pc)
			tab.ModuleAt(pc)
		}
		tab.ModuleErr(base + 0x1010)
		tab.Resolve("main")
		tab.Resolve("session.token")
		tab.Resolve("ns::f(int)")
		tab.Resolve("a.out:xyz+0x10")
		tab.Resolve("[vdso]:__vdso_time")
		if err := tab.Close(); err != nil {
			t.Fatal(err)
		}
	})
}
