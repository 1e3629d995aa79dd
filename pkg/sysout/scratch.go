package sysout

import "sort"

// Scratch hands out a range of the target's memory (an area memtrap maps
// there) first fit, in 16-byte units: the buffers a redirected call writes
// instead of watched memory, room for an injected call's arguments. It is
// bookkeeping only: it never touches the target.
type Scratch struct {
	Base, Size uint64
	free       []span // sorted, coalesced
}

type span struct{ lo, hi uint64 }

// NewScratch starts the books of [base, base+size), all free.
func NewScratch(base, size uint64) *Scratch {
	return &Scratch{Base: base, Size: size, free: []span{{base, base + size}}}
}

// Clone copies the books (a forked child's copy of the area).
func (s *Scratch) Clone() *Scratch {
	c := *s
	c.free = append([]span(nil), s.free...)
	return &c
}

// Alloc takes n bytes; false if no free run is that long.
func (s *Scratch) Alloc(n uint64) (uint64, bool) {
	n = (n + 15) &^ 15
	for i, f := range s.free {
		if f.hi-f.lo >= n {
			a := f.lo
			s.free[i].lo += n
			if s.free[i].lo == s.free[i].hi {
				s.free = append(s.free[:i], s.free[i+1:]...)
			}
			return a, true
		}
	}
	return 0, false
}

// Release gives back n bytes at a, from Alloc.
func (s *Scratch) Release(a, n uint64) {
	n = (n + 15) &^ 15
	s.free = append(s.free, span{a, a + n})
	sort.Slice(s.free, func(i, j int) bool { return s.free[i].lo < s.free[j].lo })
	out := s.free[:1]
	for _, f := range s.free[1:] {
		if last := &out[len(out)-1]; last.hi == f.lo {
			last.hi = f.hi
		} else {
			out = append(out, f)
		}
	}
	s.free = out
}
