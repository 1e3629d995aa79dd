package symbols

import (
	"errors"
	"slices"
	"testing"
)

// TestPCCacheWarm: a pc asked about again gives the same answers, its
// parameters evaluated afresh over the frame given, and a warm Params
// allocates only its result, also where a location is DW_OP_entry_value
// (which the evaluator refuses at every write).
func TestPCCacheWarm(t *testing.T) {
	tab, fill, _ := fillTable(t, 2) // -O2
	pc, ev := entryValuePC(t, tab, fill.Addr+1, fill.Addr+fill.Size)
	loc, ok := tab.Lookup(pc)
	if !ok || loc.Func != "fill_record" || loc.Line == 0 {
		t.Fatalf("Lookup(%#x) = %+v, %v", pc, loc, ok)
	}
	fr := FrameRegs{PC: pc, CFA: 0x7ffc0000, RegsValid: 1<<17 - 1}
	for i := range fr.Regs {
		fr.Regs[i] = 0x1000 + uint64(i)
	}
	first, err := tab.Params(fr, nil)
	if err != nil || len(first) != 2 || first[ev].Known {
		t.Fatalf("Params(%#x) = %+v, %v; want 2 parameters, %d unknown", pc, first, err, ev)
	}
	if again, _ := tab.Lookup(pc); again != loc {
		t.Fatalf("second Lookup = %+v, first %+v", again, loc)
	}
	if again, err := tab.Params(fr, nil); err != nil || !slices.Equal(again, first) {
		t.Fatalf("second Params = %+v, %v; first %+v", again, err, first)
	}
	// Other register values, other values: only the location is kept.
	other := fr
	for i := range other.Regs {
		other.Regs[i] += 0x100
	}
	got, _ := tab.Params(other, nil)
	for i, p := range got {
		if p.Known && first[i].Known && p.Value == first[i].Value {
			t.Errorf("%s = %#x over other registers, as before", p.Name, p.Value)
		}
	}
	if n := testing.AllocsPerRun(100, func() { tab.Params(fr, nil) }); n > 1 {
		t.Errorf("warm Params allocates %v times, want 1 (the result)", n)
	}
}

// TestPCCacheUpdate: after Update a pc may be in another module or in
// none; nothing learnt under the old map answers for the new one.
func TestPCCacheUpdate(t *testing.T) {
	tab, fill, exe := fillTable(t, 0)
	const moved = 0x565555554000
	pc := fill.Addr + 8
	if loc, ok := tab.Lookup(pc); !ok || loc.Func != "fill_record" {
		t.Fatalf("Lookup(%#x) = %+v, %v", pc, loc, ok)
	}
	if _, err := tab.Params(FrameRegs{PC: pc}, nil); err != nil {
		t.Fatal(err)
	}
	tab.Update(layout(t, exe, moved))
	if loc, ok := tab.Lookup(pc); ok {
		t.Errorf("Lookup(%#x) after the module moved = %+v, want nothing", pc, loc)
	}
	if _, err := tab.Params(FrameRegs{PC: pc}, nil); !errors.Is(err, ErrNoFunction) {
		t.Errorf("Params(%#x) after the module moved: %v, want ErrNoFunction", pc, err)
	}
	npc := pc - fillBase + moved
	if loc, ok := tab.Lookup(npc); !ok || loc.Func != "fill_record" || loc.ModuleBase != moved {
		t.Errorf("Lookup(%#x) after the move = %+v, %v", npc, loc, ok)
	}
	// The same layout with other protections (memtrap's own mprotect
	// of watched pages) keeps what was learnt.
	same := layout(t, exe, moved)
	for i := range same {
		same[i].Prot = 0
	}
	tab.Update(same)
	if tab.pcs[npc] == nil {
		t.Errorf("Update with the same layout forgot pc %#x", npc)
	}
}
