package guard

// State is everything memtrap has changed in the target that would hurt it
// if memtrap died: what the disarm path gives back.
type State struct {
	Pid int `json:"pid"`
	// Pages are write-protected by memtrap; each run gets Prot back.
	Pages []Pages `json:"pages,omitempty"`
	// DebugRegs: DR7 is set in the target's threads.
	DebugRegs bool `json:"dr,omitempty"`
	// Breakpoints are int3 bytes memtrap wrote in the target's code.
	Breakpoints []Breakpoint `json:"bps,omitempty"`
	// Trampoline is where the Returns' calls return to (an int3 in
	// memtrap's code page).
	Trampoline uint64   `json:"tramp,omitempty"`
	Returns    []Return `json:"rets,omitempty"`
	// Stub is where tracer.StubCode stands in memtrap's code page: a
	// thread there has a call on resume to make, or to finish.
	Stub uint64 `json:"stub,omitempty"`
	// Landing is where the calls memtrap injects run from, in its code
	// page: `syscall; jmp .`. A thread let go there (at the call, or in
	// the loop after it) gets the registers of the ThreadLog back.
	Landing uint64 `json:"land,omitempty"`
	// Unmap are memtrap's own mappings in the target (the code page, the
	// scratch area).
	Unmap []Span `json:"unmap,omitempty"`
}

// Pages are Len bytes of armed pages from Addr, whose own protection is
// Prot.
type Pages struct {
	Addr uint64 `json:"a"`
	Len  uint64 `json:"n"`
	Prot int    `json:"p"`
}

// Breakpoint is an int3 at Addr over the byte Orig. When Slot is not 0 a
// copy of the Len-byte instruction at Addr runs there, out of line, and
// jumps back to Addr+Len.
type Breakpoint struct {
	Addr uint64 `json:"a"`
	Orig byte   `json:"o"`
	Len  int    `json:"n,omitempty"`
	Slot uint64 `json:"s,omitempty"`
}

// Return is a call of thread Tid whose return address, RA, memtrap pointed
// at the Trampoline: the stack word at Slot.
type Return struct {
	Tid  int    `json:"t"`
	Slot uint64 `json:"s"`
	RA   uint64 `json:"r"`
}

// Span is Len bytes from Addr.
type Span struct {
	Addr uint64 `json:"a"`
	Len  uint64 `json:"n"`
}

// Empty says that nothing is changed in the target.
func (s *State) Empty() bool {
	return len(s.Pages) == 0 && !s.DebugRegs && len(s.Breakpoints) == 0 && len(s.Returns) == 0 && len(s.Unmap) == 0
}

// AddPage records one armed page, merged with the run before it when it
// follows it with the same protection (pages added in address order).
func (s *State) AddPage(addr, size uint64, prot int) {
	if n := len(s.Pages); n > 0 {
		if l := &s.Pages[n-1]; l.Addr+l.Len == addr && l.Prot == prot {
			l.Len += size
			return
		}
	}
	s.Pages = append(s.Pages, Pages{addr, size, prot})
}
