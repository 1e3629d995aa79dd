package symbols

import (
	"errors"
	"github.com/memtrap/memtrap/pkg/procmaps"
	"slices"
	"testing"
)

func TestParseExpr(t *testing.T) {
	tests := []struct {
		expr         string
		module, name string
		off          uint64
		wantErr      bool
	}{
		{expr: "counter", name: "counter"},
		{expr: "counter+16", name: "counter", off: 16},
		{expr: "counter+0x10", name: "counter", off: 16},
		{expr: "counter+0X1f", name: "counter", off: 31},
		{expr: "libc.so.6:environ", module: "libc.so.6", name: "environ"},
		{expr: "libc:environ+8", module: "libc", name: "environ", off: 8},
		{expr: "[vdso]:__vdso_time", module: "[vdso]", name: "__vdso_time"},
		{expr: "/usr/lib/libc.so.6:environ", module: "/usr/lib/libc.so.6", name: "environ"},
		{expr: "ns::Counter::total", name: "ns::Counter::total"},
		{expr: "::ns::x", name: "::ns::x"},
		{expr: "prog:ns::Counter::total+8", module: "prog", name: "ns::Counter::total", off: 8},
		{expr: "ns::f(int, char const*)+0x10", name: "ns::f(int, char const*)", off: 16},
		{expr: "f(std::pair<int, int>)", name: "f(std::pair<int, int>)"},
		{expr: "f[abi:cxx11](int)", name: "f[abi:cxx11](int)"},
		{expr: "libc:f[abi:cxx11]()+2", module: "libc", name: "f[abi:cxx11]()", off: 2},
		{expr: "(anonymous namespace)::x", name: "(anonymous namespace)::x"},
		{expr: "ns::V::operator+(ns::V const&)", name: "ns::V::operator+(ns::V const&)"},
		{expr: "ns::V::operator+(ns::V const&)+3", name: "ns::V::operator+(ns::V const&)", off: 3},
		{expr: "ns::V::operator+", name: "ns::V::operator+"},
		{expr: "ns::V::operator++4", name: "ns::V::operator+", off: 4},
		{expr: "ns::V::operator++", name: "ns::V::operator++"},
		{expr: "ns::V::operator+++0x4", name: "ns::V::operator++", off: 4},
		{expr: "ns::V::operator+=(int)", name: "ns::V::operator+=(int)"},
		{expr: "<demo::Counter>::bump", name: "<demo::Counter>::bump"},
		{expr: "session.token+2", name: "session.token", off: 2},
		{expr: "main.(*ring).push+1", name: "main.(*ring).push", off: 1},
		{expr: "github.com/x/y.f", name: "github.com/x/y.f"},
		{expr: "", wantErr: true},
		{expr: "+8", wantErr: true},
		{expr: "libc:", wantErr: true},
		{expr: ":environ", wantErr: true},
		{expr: "counter+", wantErr: true},
		{expr: "counter+0x", wantErr: true},
		{expr: "counter+x10", wantErr: true},
		{expr: "counter+-1", wantErr: true},
		{expr: "counter++1", wantErr: true},
		{expr: "counter+1_0", wantErr: true},
		{expr: "counter+99999999999999999999", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			module, name, off, err := parseExpr(tt.expr)
			if tt.wantErr {
				if !errors.Is(err, ErrSyntax) {
					t.Fatalf("parseExpr = %q, %q, %d, %v; want ErrSyntax", module, name, off, err)
				}
				return
			}
			if err != nil || module != tt.module || name != tt.name || off != tt.off {
				t.Fatalf("parseExpr = %q, %q, %d, %v; want %q, %q, %d", module, name, off, err, tt.module, tt.name, tt.off)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	const exeBase, libBase = 0x555555554000, 0x7f1234500000
	exe, lib := program(t, progPIE), program(t, libDemo)
	exeNM, libNM := nmSymbols(t, exe), nmSymbols(t, lib)
	maps := append(layout(t, exe, exeBase), layout(t, lib, libBase)...)
	maps = append(maps, procmaps.Mapping{Start: 0x7f2000000000, End: 0x7f2000001000, Path: "/nonexistent/libgone.so.2"})
	tab := NewTable(maps, Options{})
	defer tab.Close()

	exeSym := func(name string, off uint64) Symbol {
		s := exeNM[name]
		size := uint64(0)
		if s.size > 0 {
			size = s.size - off
		}
		return Symbol{Name: name, Addr: exeBase + s.addr + off, Size: size, Module: exe}
	}
	libSym := func(name string) Symbol {
		s := libNM[name]
		return Symbol{Name: name, Addr: libBase + s.addr, Size: s.size, Module: lib}
	}
	tests := []struct {
		expr string
		want Symbol
	}{
		{"counter", exeSym("counter", 0)}, // the executable comes first
		{"count", exeSym("count", 0)},
		{"buffer+0x10", exeSym("buffer", 16)},
		{"buffer+16", exeSym("buffer", 16)},
		{"buffer+63", exeSym("buffer", 63)},
		{"zero_sized+100", exeSym("zero_sized", 100)}, // size unknown: any offset
		{"hidden_total", exeSym("hidden_total", 0)},   // a static, from .symtab
		{"local_bump", exeSym("local_bump", 0)},
		{"main", exeSym("main", 0)},
		{"lib_counter", libSym("lib_counter")},
		{"libdemo:counter", libSym("counter")},
		{"libdemo.so:counter", libSym("counter")},
		{"libdemo.so.1:counter", libSym("counter")},
		{lib + ":counter", libSym("counter")},
		{"prog-pie:counter", exeSym("counter", 0)},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			got, err := tab.Resolve(tt.expr)
			if err != nil || got != tt.want {
				t.Fatalf("Resolve(%q) = %+v, %v; want %+v", tt.expr, got, err, tt.want)
			}
		})
	}

	errTests := []struct {
		expr    string
		is      error
		want    *NotFoundError // checked when non-nil
		message string         // checked when non-empty
	}{
		{expr: "buffer+64", is: ErrOutOfRange},
		{expr: "counter+0x4", is: ErrOutOfRange},
		{expr: "counter+", is: ErrSyntax},
		{
			expr:    "countr",
			is:      ErrNotFound,
			want:    &NotFoundError{Name: "countr", Suggestions: []string{"count", "counter"}},
			message: `unknown symbol "countr" (did you mean count, counter?)`,
		},
		{
			expr:    "libdemo:lib_countr",
			is:      ErrNotFound,
			want:    &NotFoundError{Name: "lib_countr", Module: "libdemo", Suggestions: []string{"lib_counter"}},
			message: `unknown symbol "lib_countr" in libdemo (did you mean lib_counter?)`,
		},
		{
			expr:    "libdemo:main", // defined, but not in that module
			is:      ErrNotFound,
			want:    &NotFoundError{Name: "main", Module: "libdemo"},
			message: `unknown symbol "main" in libdemo`,
		},
		{
			expr:    "libdemi:counter",
			is:      ErrNotFound,
			want:    &NotFoundError{Name: "counter", Module: "libdemi", UnknownModule: true, Suggestions: []string{"libdemo.so.1"}},
			message: `unknown module "libdemi" (did you mean libdemo.so.1?)`,
		},
		{
			expr:    "libdemo.so.2:counter", // not a prefix up to a dot
			is:      ErrNotFound,
			want:    &NotFoundError{Name: "counter", Module: "libdemo.so.2", UnknownModule: true, Suggestions: []string{"libdemo.so.1", "libgone.so.2"}},
			message: `unknown module "libdemo.so.2" (did you mean libdemo.so.1, libgone.so.2?)`,
		},
		{expr: "libde:counter", is: ErrNotFound}, // a prefix, but not up to a dot
		{
			expr:    "xyzzy",
			is:      ErrNotFound,
			want:    &NotFoundError{Name: "xyzzy"},
			message: `unknown symbol "xyzzy"`,
		},
	}
	for _, tt := range errTests {
		t.Run(tt.expr, func(t *testing.T) {
			got, err := tab.Resolve(tt.expr)
			if !errors.Is(err, tt.is) {
				t.Fatalf("Resolve(%q) = %+v, %v; want %v", tt.expr, got, err, tt.is)
			}
			if tt.want != nil {
				var nf *NotFoundError
				if !errors.As(err, &nf) {
					t.Fatalf("Resolve(%q): %v is not a *NotFoundError", tt.expr, err)
				}
				if nf.Name != tt.want.Name || nf.Module != tt.want.Module ||
					nf.UnknownModule != tt.want.UnknownModule || !slices.Equal(nf.Suggestions, tt.want.Suggestions) {
					t.Fatalf("Resolve(%q) = %+v, want %+v", tt.expr, nf, tt.want)
				}
			}
			if tt.message != "" && err.Error() != tt.message {
				t.Fatalf("Resolve(%q) error %q, want %q", tt.expr, err, tt.message)
			}
		})
	}
}

// TestResolveSearchOrder: the first module in the memory map wins.
func TestResolveSearchOrder(t *testing.T) {
	exe, lib := program(t, progPIE), program(t, libDemo)
	maps := append(layout(t, lib, 0x7f1234500000), layout(t, exe, 0x555555554000)...)
	tab := NewTable(maps, Options{})
	defer tab.Close()
	s, err := tab.Resolve("counter")
	if err != nil || s.Module != lib {
		t.Fatalf("Resolve(counter) = %+v, %v; want the library's", s, err)
	}
	if s, err := tab.Resolve("prog-pie:counter"); err != nil || s.Module != exe {
		t.Fatalf("Resolve(prog-pie:counter) = %+v, %v; want the executable's", s, err)
	}
}

func TestSuggest(t *testing.T) {
	names := []string{"counter", "count", "counter_total", "account", "main", "memset",
		"memcpy", "__memset_chk", "environ", "__environ", "x", "xy", "count"}
	tests := []struct {
		q    string
		want []string
	}{
		{"countr", []string{"count", "counter"}},
		{"counter", []string{"count", "counter_total"}}, // not itself, nor account (4 edits)
		{"memst", []string{"memset"}},                   // memcpy is 3 edits away
		{"environ", []string{"__environ"}},
		{"enviro", []string{"environ", "__environ"}},
		{"mian", []string{"main"}},
		{"x", []string{"xy"}},
		{"qqqqqqqq", nil},
	}
	for _, tt := range tests {
		t.Run(tt.q, func(t *testing.T) {
			if got := suggest(tt.q, names); !slices.Equal(got, tt.want) {
				t.Fatalf("suggest(%q) = %q, want %q", tt.q, got, tt.want)
			}
		})
	}
}

func TestLevenshtein(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"", "abc", 3},
		{"abc", "", 3},
		{"kitten", "sitting", 3},
		{"countr", "counter", 1},
		{"mian", "main", 2},
		{"flaw", "lawn", 2},
	}
	for _, tt := range tests {
		if got := levenshtein(tt.a, tt.b); got != tt.want {
			t.Errorf("levenshtein(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := levenshtein(tt.b, tt.a); got != tt.want {
			t.Errorf("levenshtein(%q, %q) = %d, want %d", tt.b, tt.a, got, tt.want)
		}
	}
}
