package pagewatch

import (
	"testing"

	"github.com/memtrap/memtrap/pkg/tracer"
)

// TestFilterFits: a filter of at least two ranges fits the kernel's limit
// of 4096 instructions (followSyscalls merges ranges until one fits), and
// merging keeps every span covered.
func TestFilterFits(t *testing.T) {
	var spans []span
	for i := range 6 {
		lo := uint64(0x5555_0000_0000) + uint64(i)<<32
		spans = append(spans, span{lo, lo + 3*pageSize})
	}
	fit := 0
	for n := maxFilterRanges; n >= 1; n-- {
		merged := mergeSpans(spans, n)
		if len(merged) != n {
			t.Fatalf("merged to %d spans, want %d", len(merged), n)
		}
		for _, s := range spans {
			in := false
			for _, m := range merged {
				in = in || s.lo >= m.lo && s.hi <= m.hi
			}
			if !in {
				t.Fatalf("span %#x-%#x lost merging to %d", s.lo, s.hi, n)
			}
		}
		if f, err := tracer.BuildFilter(append(filterRules(merged), tracer.ListenerRule(0)), true, tracer.Range{}); err == nil && fit == 0 {
			fit = n
			t.Logf("%d ranges: %d bytes", n, f.Size())
		}
	}
	if fit < 2 {
		t.Fatalf("only %d range(s) fit", fit)
	}
}
