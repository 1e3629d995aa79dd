package symbols

import (
	"debug/elf"
	"math"
	"slices"
	"testing"
)

func TestFlatten(t *testing.T) {
	const a, b, c, none = 0, 1, 2, -1
	tests := []struct {
		name   string
		exts   []extent
		starts []uint64
		which  []int32
	}{
		{"empty", nil, nil, nil},
		{"gap", []extent{{0, 10, a}, {20, 30, b}},
			[]uint64{0, 10, 20, 30}, []int32{a, none, b, none}},
		{"adjacent", []extent{{0, 10, a}, {10, 20, b}},
			[]uint64{0, 10, 20}, []int32{a, b, none}},
		{"nested", []extent{{0, 100, a}, {10, 20, b}},
			[]uint64{0, 10, 20, 100}, []int32{a, b, a, none}},
		{"nested, ending together", []extent{{0, 100, a}, {50, 100, b}},
			[]uint64{0, 50, 100}, []int32{a, b, none}},
		{"overlapping", []extent{{0, 50, a}, {40, 60, b}},
			[]uint64{0, 40, 60}, []int32{a, b, none}},
		{"nested twice", []extent{{0, 100, a}, {10, 50, b}, {20, 30, c}},
			[]uint64{0, 10, 20, 30, 50, 100}, []int32{a, b, c, b, a, none}},
		{"top of the address space", []extent{{math.MaxUint64 - 1, math.MaxUint64, a}},
			[]uint64{math.MaxUint64 - 1, math.MaxUint64}, []int32{a, none}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			starts, which := flatten(tt.exts)
			if !slices.Equal(starts, tt.starts) || !slices.Equal(which, tt.which) {
				t.Fatalf("flatten = %v %v, want %v %v", starts, which, tt.starts, tt.which)
			}
		})
	}
}

func TestPreferredAlias(t *testing.T) {
	g, w, l := elf.STB_GLOBAL, elf.STB_WEAK, elf.STB_LOCAL
	tests := []struct {
		a, b sym // a must be preferred to b
	}{
		{sym{name: "memcpy"}, sym{name: "memcpy", hidden: true}},
		{sym{name: "__zz", bind: g}, sym{name: "aa", bind: w}},
		{sym{name: "__zz", bind: w}, sym{name: "aa", bind: l}},
		{sym{name: "memset", bind: g}, sym{name: "__memset", bind: g}},
		{sym{name: "_memset_long_name", bind: g}, sym{name: "__memset", bind: g}},
		{sym{name: "bump", bind: g}, sym{name: "bump_x", bind: g}},
		{sym{name: "abc", bind: g}, sym{name: "abd", bind: g}},
		{sym{name: "x", bind: elf.STB_LOOS}, sym{name: "a", bind: w}}, // GNU_UNIQUE counts as global
	}
	for _, tt := range tests {
		if !preferred(&tt.a, &tt.b) || preferred(&tt.b, &tt.a) {
			t.Errorf("want %+v preferred to %+v", tt.a, tt.b)
		}
	}
}

// TestSetSymbols checks which ELF symbols are kept and how size-0 symbols
// are bounded, over a hand-made symbol table.
func TestSetSymbols(t *testing.T) {
	info := func(b elf.SymBind, typ elf.SymType) byte { return elf.ST_INFO(b, typ) }
	text := &elf.Section{SectionHeader: elf.SectionHeader{Name: ".text", Addr: 0x1000, Size: 0x100}}
	data := &elf.Section{SectionHeader: elf.SectionHeader{Name: ".data", Addr: 0x2000, Size: 0x100}}
	sections := []*elf.Section{{}, text, data}
	raw := []elf.Symbol{
		{Name: "f", Info: info(elf.STB_GLOBAL, elf.STT_FUNC), Section: 1, Value: 0x1000, Size: 0x20},
		{Name: "f_alias", Info: info(elf.STB_WEAK, elf.STT_FUNC), Section: 1, Value: 0x1000},
		{Name: "ifn", Info: info(elf.STB_GLOBAL, elf.STT_GNU_IFUNC), Section: 1, Value: 0x1020, Size: 0x10},
		{Name: "asm_tail", Info: info(elf.STB_GLOBAL, elf.STT_FUNC), Section: 1, Value: 0x1080}, // size 0, last in .text
		{Name: "obj", Info: info(elf.STB_GLOBAL, elf.STT_OBJECT), Section: 2, Value: 0x2000, Size: 8},
		{Name: "dup", Info: info(elf.STB_GLOBAL, elf.STT_OBJECT), Section: 2, Value: 0x2010, Size: 8,
			HasVersion: true, VersionIndex: 0x8002}, // dup@OLD
		{Name: "dup", Info: info(elf.STB_GLOBAL, elf.STT_OBJECT), Section: 2, Value: 0x2020, Size: 8,
			HasVersion: true, VersionIndex: 3}, // dup@@NEW
		{Name: "static_dup", Info: info(elf.STB_LOCAL, elf.STT_OBJECT), Section: 2, Value: 0x2030, Size: 4},
		{Name: "static_dup", Info: info(elf.STB_GLOBAL, elf.STT_OBJECT), Section: 2, Value: 0x2040, Size: 4},
		{Name: "tls", Info: info(elf.STB_GLOBAL, elf.STT_TLS), Section: 2, Value: 0x10, Size: 8},
		{Name: "label", Info: info(elf.STB_LOCAL, elf.STT_NOTYPE), Section: 1, Value: 0x1010},
		{Name: "import", Info: info(elf.STB_GLOBAL, elf.STT_FUNC), Section: elf.SHN_UNDEF},
		{Name: "abs", Info: info(elf.STB_GLOBAL, elf.STT_OBJECT), Section: elf.SHN_ABS, Value: 0x1050},
		{Name: "", Info: info(elf.STB_LOCAL, elf.STT_FUNC), Section: 1, Value: 0x1090},
	}
	var o object
	o.setSymbols(raw, sections)

	lookups := []struct {
		v    uint64
		want string
		off  uint64
	}{
		{0xfff, "", 0},
		{0x1000, "f", 0},
		{0x1010, "f", 0x10}, // the NOTYPE label is not a symbol
		{0x101f, "f", 0x1f},
		{0x1020, "ifn", 0},
		{0x1030, "", 0},
		{0x1050, "", 0}, // absolute symbols are not addresses
		{0x1080, "asm_tail", 0},
		{0x10ff, "asm_tail", 0x7f}, // size 0 stops at its section's end
		{0x1100, "", 0},
		{0x2004, "obj", 4},
		{0x2010, "dup", 0},
		{0x2008, "", 0},
	}
	for _, l := range lookups {
		s := o.lookup(l.v)
		got, off := "", uint64(0)
		if s != nil {
			got, off = s.name, l.v-s.addr
		}
		if got != l.want || off != l.off {
			t.Errorf("lookup(%#x) = %q+%#x, want %q+%#x", l.v, got, off, l.want, l.off)
		}
	}

	finds := []struct {
		name string
		addr uint64
		ok   bool
	}{
		{"f", 0x1000, true},
		{"f_alias", 0x1000, true},
		{"dup", 0x2020, true},        // the default version
		{"static_dup", 0x2040, true}, // global over local
		{"tls", 0, false},
		{"import", 0, false},
		{"label", 0, false},
	}
	for _, f := range finds {
		s, ok := o.find(f.name)
		if ok != f.ok || (ok && s.addr != f.addr) {
			t.Errorf("find(%q) = %+v, %v; want %#x, %v", f.name, s, ok, f.addr, f.ok)
		}
	}
}
