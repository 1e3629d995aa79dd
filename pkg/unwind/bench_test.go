package unwind

import (
	"testing"
)

// BenchmarkUnwind10Frames unwinds the recorded stack of testdata/stack.c's
// call mode (dump, f7..f1, main: CFI all the way, each frame a different
// shape) ten frames deep, with the module cache warm.
func BenchmarkUnwind10Frames(b *testing.B) {
	rec := record(b, stackCFI, "call")
	u := New(rec)
	if n := len(u.Unwind(rec.regs, rec, 10)); n != 10 {
		b.Fatalf("%d frames, want 10", n)
	}
	b.ReportAllocs()
	for b.Loop() {
		u.Unwind(rec.regs, rec, 10)
	}
}

// TestUnwindAllocs checks that a warm unwind allocates only its result.
func TestUnwindAllocs(t *testing.T) {
	rec := record(t, stackCFI, "call")
	u := New(rec)
	u.Unwind(rec.regs, rec, 10)
	allocs := testing.AllocsPerRun(100, func() { u.Unwind(rec.regs, rec, 10) })
	if allocs > 1 {
		t.Errorf("%.1f allocations per unwind, want 1 (the frames)", allocs)
	}
}
