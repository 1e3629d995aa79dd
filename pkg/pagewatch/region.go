package pagewatch

import (
	"errors"
	"fmt"
	"math"
)

// Region is a watched range of the target's memory.
type Region struct {
	Name string // as the user named it: a symbol, or an address
	Addr uint64
	Len  uint64
}

// End is one past the region's last byte.
func (r *Region) End() uint64 { return r.Addr + r.Len }

func (r *Region) String() string {
	return fmt.Sprintf("%s [%#x, %#x)", r.Name, r.Addr, r.End())
}

// ErrBadRegion is wrapped by region validation errors.
var ErrBadRegion = errors.New("bad region")

// Validate checks a region's shape (not whether it is mapped).
func (r *Region) Validate() error {
	if r.Len == 0 {
		return fmt.Errorf("region %s: length 0: %w", r.Name, ErrBadRegion)
	}
	if r.Addr > math.MaxUint64-r.Len || r.Addr+r.Len > userTop {
		return fmt.Errorf("region %s: [%#x, +%d) runs past the end of the address space: %w", r.Name, r.Addr, r.Len, ErrBadRegion)
	}
	return nil
}

// userTop is the end of x86-64 user space (47-bit addresses).
const userTop = 1 << 47

const pageSize = 4096

func pageDown(a uint64) uint64 { return a &^ (pageSize - 1) }
func pageUp(a uint64) uint64   { return (a + pageSize - 1) &^ (pageSize - 1) }

// span is a half-open byte range.
type span struct{ lo, hi uint64 }

func (s span) intersect(o span) (span, bool) {
	lo, hi := max(s.lo, o.lo), min(s.hi, o.hi)
	return span{lo, hi}, lo < hi
}
