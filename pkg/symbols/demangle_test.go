package symbols

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestDisplayName(t *testing.T) {
	tests := []struct{ in, want, short string }{
		{"main", "main", ""},
		{"main.worker", "main.worker", ""},
		{"github.com/x/y.(*T).M", "github.com/x/y.(*T).M", ""},
		{"_ZN2ns7Counter5valueEi", "ns::Counter::value(int)", "ns::Counter::value"},
		{"_ZN2ns7Counter5valueEi.cold", "ns::Counter::value(int) [clone .cold]", "ns::Counter::value"},
		{"_ZN2ns7Counter5totalE", "ns::Counter::total", "ns::Counter::total"},
		{"_ZNK2ns3VecplERKS0_", "ns::Vec::operator+(ns::Vec const&) const", "ns::Vec::operator+"},
		{"_ZN4demo4demo6worker17hda9a04265f523581E", "demo::demo::worker", "demo::demo::worker"},
		{"_RNvNtCs2ndz2m94zur_4demo4demo6worker", "demo::demo::worker", "demo::demo::worker"},
		{"_RNvMNtCs2ndz2m94zur_4demo4demoNtB2_7Counter4bump", "<demo::demo::Counter>::bump", "<demo::demo::Counter>::bump"},
		{"_Z", "_Z", "_Z"},                   // not a valid mangling: kept
		{"_Zxyzzy", "_Zxyzzy", "_Zxyzzy"},    // likewise
		{"_Rubbish", "_Rubbish", "_Rubbish"}, // a C name that starts like Rust's
	}
	for _, tt := range tests {
		if got := displayName(tt.in); got != tt.want {
			t.Errorf("displayName(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got := shortName(tt.in); got != tt.short {
			t.Errorf("shortName(%q) = %q, want %q", tt.in, got, tt.short)
		}
	}
}

// nmDemangled returns, per address, the names nm -C gives the symbols
// there: libiberty's demangler, independent of the one Lookup uses.
func nmDemangled(t testing.TB, path string) map[uint64][]string {
	t.Helper()
	out, err := exec.Command("nm", "-C", "--defined-only", path).Output()
	if err != nil {
		t.Fatalf("nm -C %s: %v", path, err)
	}
	res := make(map[uint64][]string)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		if len(l) < 20 || l[16] != ' ' || l[18] != ' ' {
			continue
		}
		addr, err := strconv.ParseUint(l[:16], 16, 64)
		if err != nil {
			continue
		}
		res[addr] = append(res[addr], l[19:])
	}
	return res
}

// TestDemangledLookup checks that Lookup names every mangled symbol of a
// C++ program as nm -C does.
func TestDemangledLookup(t *testing.T) {
	const base = 0x555555554000
	path := program(t, namesCxx)
	raw := nmSymbols(t, path)
	demangled := nmDemangled(t, path)
	tab := NewTable(layout(t, path, base), Options{DebugDirs: []string{}})
	defer tab.Close()

	checked := 0
	for name, s := range raw {
		if !mangled(name) || s.size == 0 || strings.ContainsAny(string(s.kind), "UuwvN") {
			continue
		}
		loc, ok := tab.Lookup(base + s.addr)
		if !ok || loc.Offset != 0 || !slices.Contains(demangled[s.addr], loc.Func) {
			t.Errorf("Lookup(%s) = %+v, %v; nm -C says %q", name, loc, ok, demangled[s.addr])
		}
		checked++
	}
	if checked < 30 {
		t.Fatalf("only %d mangled symbols checked", checked)
	}

	tests := []struct {
		sym  string
		off  uint64
		want string
	}{
		{"_ZN2ns7Counter5valueEi", 3, "ns::Counter::value(int)"},
		{"_ZN2ns7Counter4bumpEi", 0, "ns::Counter::bump(int)"},
		{"_ZNK2ns3VecplERKS0_", 1, "ns::Vec::operator+(ns::Vec const&) const"},
		{"_ZN2ns5twiceIiEET_S1_", 2, "int ns::twice<int>(int)"},
		{"_ZN2ns12_GLOBAL__N_112hidden_stateE", 1, "ns::(anonymous namespace)::hidden_state"},
		{"_ZN4demo4demo6worker17hda9a04265f523581E", 1, "demo::demo::worker"},
		{"_RNvNtCs2ndz2m94zur_4demo4demo6runner", 1, "demo::demo::runner"},
		{"_RNvMNtCs2ndz2m94zur_4demo4demoNtB2_7Counter4bump", 1, "<demo::demo::Counter>::bump"},
		{"main", 1, "main"},
	}
	for _, tt := range tests {
		s, ok := raw[tt.sym]
		if !ok {
			t.Errorf("nm: no %s", tt.sym)
			continue
		}
		loc, _ := tab.Lookup(base + s.addr + tt.off)
		if loc.Func != tt.want || loc.Offset != tt.off {
			t.Errorf("Lookup(%s+%d) = %q+%d, want %q+%d", tt.sym, tt.off, loc.Func, loc.Offset, tt.want, tt.off)
		}
	}
}

func TestResolveDemangled(t *testing.T) {
	const base = 0x555555554000
	path := program(t, namesCxx)
	nm := nmSymbols(t, path)
	tab := NewTable(layout(t, path, base), Options{DebugDirs: []string{}})
	defer tab.Close()
	at := func(mangled, name string, off uint64) Symbol {
		s, ok := nm[mangled]
		if !ok {
			t.Fatalf("nm: no %s", mangled)
		}
		return Symbol{Name: name, Addr: base + s.addr + off, Size: s.size - off, Module: path}
	}
	value := func(off uint64) Symbol { return at("_ZN2ns7Counter5valueEi", "ns::Counter::value(int)", off) }
	plus := at("_ZNK2ns3VecplERKS0_", "ns::Vec::operator+(ns::Vec const&) const", 0)
	config := nm["_ZN2ns6configE"]
	tests := []struct {
		expr string
		want Symbol
	}{
		{"ns::Counter::total", at("_ZN2ns7Counter5totalE", "ns::Counter::total", 0)},
		{"_ZN2ns7Counter5totalE", at("_ZN2ns7Counter5totalE", "ns::Counter::total", 0)},
		{"::ns::Counter::total", at("_ZN2ns7Counter5totalE", "ns::Counter::total", 0)},
		{"ns::Counter::value(int)", value(0)},
		{"ns::Counter::value", value(0)},
		{"ns::Counter::value+4", value(4)},
		{"ns::Counter::value(int)+0x4", value(4)},
		{"_ZN2ns7Counter5valueEi", value(0)},
		{"names-cxx:ns::Counter::value", value(0)},
		{"ns::Vec::operator+(ns::Vec const&) const", plus},
		{"ns::Vec::operator+", plus},
		{"ns::Vec::operator++2", at("_ZNK2ns3VecplERKS0_", plus.Name, 2)},
		{"ns::scale(double)", at("_ZN2ns5scaleEd", "ns::scale(double)", 0)},
		{"int ns::twice<int>(int)", at("_ZN2ns5twiceIiEET_S1_", "int ns::twice<int>(int)", 0)},
		{"ns::twice<int>", at("_ZN2ns5twiceIiEET_S1_", "int ns::twice<int>(int)", 0)},
		{"ns::(anonymous namespace)::hidden_state", at("_ZN2ns12_GLOBAL__N_112hidden_stateE", "ns::(anonymous namespace)::hidden_state", 0)},
		{"demo::demo::worker", at("_ZN4demo4demo6worker17hda9a04265f523581E", "demo::demo::worker", 0)},
		{"demo::demo::runner", at("_RNvNtCs2ndz2m94zur_4demo4demo6runner", "demo::demo::runner", 0)},
		{"<demo::demo::Counter>::bump", at("_RNvMNtCs2ndz2m94zur_4demo4demoNtB2_7Counter4bump", "<demo::demo::Counter>::bump", 0)},
		// A member of a namespaced variable, from DWARF.
		{"ns::config.limit", Symbol{Name: "ns::config.limit", Addr: base + config.addr + 8, Size: 8, Module: path}},
	}
	for _, tt := range tests {
		got, err := tab.Resolve(tt.expr)
		if err != nil || got != tt.want {
			t.Errorf("Resolve(%q) = %+v, %v; want %+v", tt.expr, got, err, tt.want)
		}
	}

	_, err := tab.Resolve("ns::scale")
	var amb *AmbiguousError
	if !errors.Is(err, ErrAmbiguous) || !errors.As(err, &amb) ||
		!slices.Equal(amb.Candidates, []string{"ns::scale(double)", "ns::scale(int)"}) {
		t.Errorf("Resolve(ns::scale) = %v; want the two overloads", err)
	}
	if _, err := tab.Resolve("ns::Counter::valu"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve(ns::Counter::valu) = %v", err)
	} else if nf := (*NotFoundError)(nil); !errors.As(err, &nf) || !slices.Contains(nf.Suggestions, "ns::Counter::value") {
		t.Errorf("Resolve(ns::Counter::valu): %v; want ns::Counter::value suggested", err)
	}
}

// TestDWARFVariablesCxx checks buildVars over g++'s DWARF 4 and 5, which
// place a static data member's definition apart from its declaration
// (DW_AT_specification) differently.
func TestDWARFVariablesCxx(t *testing.T) {
	for _, name := range []string{namesCxx, namesCxx4} {
		t.Run(name, func(t *testing.T) {
			path := program(t, name)
			nm := nmSymbols(t, path)
			f, err := elf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			d, err := loadDWARF(f, nil)
			if err != nil {
				t.Fatal(err)
			}
			vars, err := buildVars(d)
			if err != nil {
				t.Fatal(err)
			}
			for dw, sym := range map[string]string{
				"ns::Counter::total": "_ZN2ns7Counter5totalE",
				"ns::config":         "_ZN2ns6configE",
				"ns::(anonymous namespace)::hidden_state": "_ZN2ns12_GLOBAL__N_112hidden_stateE",
			} {
				v, ok := vars[dw]
				if !ok || v.addr != nm[sym].addr || !v.hasType {
					t.Errorf("vars[%q] = %+v, %v; nm says %#x", dw, v, ok, nm[sym].addr)
					continue
				}
				if size, err := typeSize(d, v.typ); err != nil || size != nm[sym].size {
					t.Errorf("size of %s = %d, %v; nm says %d", dw, size, err, nm[sym].size)
				}
			}
		})
	}
}
