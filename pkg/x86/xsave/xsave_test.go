package xsave

import (
	"testing"

	"golang.org/x/sys/cpu"
)

func TestXSaveLayout(t *testing.T) {
	if !cpu.X86.HasAVX {
		t.Skip("no AVX")
	}
	off, size, ok := Component(YMMHi128)
	// The standard format has put the YMM upper halves right after the
	// 512-byte legacy area and the 64-byte header since AVX began.
	if !ok || off != 576 || size != 256 {
		t.Fatalf("YMM_Hi128 at %d, %d bytes, %v; want 576, 256", off, size, ok)
	}
	if cpu.X86.HasAVX512F {
		for _, c := range []struct{ i, size int }{{Opmask, 64}, {ZMMHi256, 512}, {Hi16ZMM, 1024}} {
			off, size, ok := Component(c.i)
			if !ok || size != c.size || off < 576+256 || off+size > Size() {
				t.Errorf("component %d at %d, %d bytes, %v (image %d bytes)", c.i, off, size, ok, Size())
			}
		}
	}
	if _, _, ok := Component(1); ok {
		t.Error("component 1 (SSE) is in the legacy area, not a component of its own")
	}
}
