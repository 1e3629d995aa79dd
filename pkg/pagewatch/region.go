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

// ErrBadRegion is what region validation errors are (errors.Is).
var ErrBadRegion = errors.New("bad region")

// regionError is a region problem in its own words; it is ErrBadRegion.
type regionError string

func (e regionError) Error() string        { return string(e) }
func (e regionError) Is(target error) bool { return target == ErrBadRegion }

// Validate checks a region's shape (not whether it is mapped).
func (r *Region) Validate() error {
	if r.Len == 0 {
		return regionError(fmt.Sprintf("region %s: length 0", r.Name))
	}
	if r.Addr > math.MaxUint64-r.Len || r.Addr+r.Len > userTop {
		return regionError(fmt.Sprintf("region %s: [%#x, +%d) runs past the end of the address space", r.Name, r.Addr, r.Len))
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
