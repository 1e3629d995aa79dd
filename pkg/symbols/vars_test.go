package symbols

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestResolveDWARFVariables resolves variables that have no ELF symbol
// (strip --discard-all removed the local ones) and struct members, and
// checks them against the addresses and sizes the program itself prints.
func TestResolveDWARFVariables(t *testing.T) {
	for _, name := range []string{dbgStrip4, dbgStrip5} {
		t.Run(name, func(t *testing.T) {
			path := program(t, name) // non-PIE: printed addresses are link-time ones
			nm := nmSymbols(t, path)
			for _, local := range []string{"backup", "grid", "calls.0", "helper"} {
				if _, ok := nm[local]; ok {
					t.Fatalf("%s still has a symbol %q: the test would not exercise DWARF", path, local)
				}
			}
			printed := printedVars(t, runFixture(t, path, "addrs"))
			tab := NewTable(layout(t, path, 0), Options{DebugDirs: []string{}})
			defer tab.Close()

			check := func(expr string, want Symbol) {
				t.Helper()
				got, err := tab.Resolve(expr)
				if err != nil || got.Addr != want.Addr || got.Size != want.Size || got.Module != path {
					t.Errorf("Resolve(%q) = %+v, %v; want %#x, %d bytes", expr, got, err, want.Addr, want.Size)
				}
			}
			for _, v := range []string{"session", "session.token", "session.pair.b", "session.raw", "backup", "grid", "scores", "worker::calls"} {
				want, ok := printed[v]
				if !ok {
					t.Fatalf("the program did not print %s", v)
				}
				check(v, want)
			}
			// A function's static by its bare name.
			check("calls", printed["worker::calls"])
			// Through typedef, const and volatile.
			tokenOff := printed["session.token"].Addr - printed["session"].Addr
			check("backup.token", Symbol{Addr: printed["backup"].Addr + tokenOff, Size: 8})
			// A member of an anonymous union, and offsets.
			check("session.flags", Symbol{Addr: printed["session.raw"].Addr, Size: 4})
			check("grid+8", Symbol{Addr: printed["grid"].Addr + 8, Size: printed["grid"].Size - 8})
			check("session.token+0x2", Symbol{Addr: printed["session.token"].Addr + 2, Size: 6})

			if _, err := tab.Resolve("grid+60"); !errors.Is(err, ErrOutOfRange) {
				t.Errorf("Resolve(grid+60) = %v, want ErrOutOfRange", err)
			}
			if _, err := tab.Resolve("session.bits"); err == nil || !strings.Contains(err.Error(), "bit field") {
				t.Errorf("Resolve(session.bits) = %v, want a bit-field error", err)
			}
			if _, err := tab.Resolve("grid.x"); err == nil || !strings.Contains(err.Error(), "not a struct") {
				t.Errorf("Resolve(grid.x) = %v, want a not-a-struct error", err)
			}
			for expr, sugg := range map[string][]string{
				"session.tokn":   {"session.token"},
				"session.pair.c": {"session.pair.a", "session.pair.b"},
				"backups":        {"backup"},
			} {
				_, err := tab.Resolve(expr)
				var nf *NotFoundError
				if !errors.As(err, &nf) || !errors.Is(err, ErrNotFound) || len(nf.Suggestions) < len(sugg) ||
					!slices.Equal(nf.Suggestions[:len(sugg)], sugg) {
					t.Errorf("Resolve(%q) = %v; want not found, suggesting %q first", expr, err, sugg)
				}
			}
		})
	}
}

// TestResolveDWARFVariablePIE: a DWARF variable of a PIE is moved by the
// load bias like a symbol.
func TestResolveDWARFVariablePIE(t *testing.T) {
	const base = 0x555555554000
	path := program(t, dbgPIE)
	nm := nmSymbols(t, path)
	tab := NewTable(layout(t, path, base), Options{DebugDirs: []string{}})
	defer tab.Close()
	tok, err := tab.Resolve("session.token")
	if err != nil {
		t.Fatal(err)
	}
	// token follows int id and char user[32]: offset 40.
	if want := base + nm["session"].addr + 40; tok.Addr != want || tok.Size != 8 {
		t.Fatalf("Resolve(session.token) = %+v, want %#x, 8 bytes", tok, want)
	}
	calls, err := tab.Resolve("worker::calls")
	if err != nil || calls.Addr != base+nm["calls.0"].addr || calls.Size != 8 {
		t.Fatalf("Resolve(worker::calls) = %+v, %v; nm says calls.0 at %#x", calls, err, nm["calls.0"].addr)
	}
}

func TestSplitMember(t *testing.T) {
	tests := []struct {
		name string
		i    int
		v    string
		path []string
		ok   bool
	}{
		{"a.b.c", 1, "a.b", []string{"c"}, true},
		{"a.b.c", 2, "a", []string{"b", "c"}, true},
		{"a.b.c", 3, "", nil, false},
		{"main.cfg.limit", 1, "main.cfg", []string{"limit"}, true},
		{"a..b", 1, "", nil, false},
		{"a.", 1, "", nil, false},
		{".a", 1, "", nil, false},
		{"plain", 1, "", nil, false},
		{"token[3]", 1, "token", []string{"[3]"}, true},
		{"table[2].name", 1, "", []string{"name"}, true}, // "table[2]" names no variable
		{"table[2].name", 2, "table", []string{"[2]", "name"}, true},
		{"grid[1][0x2]", 2, "grid", []string{"[1]", "[0x2]"}, true},
		{"a[x]", 1, "", nil, false},
		{"a[1", 1, "", nil, false},
	}
	for _, tt := range tests {
		v, path, ok := splitMember(tt.name, tt.i)
		if v != tt.v || !slices.Equal(path, tt.path) || ok != tt.ok {
			t.Errorf("splitMember(%q, %d) = %q, %q, %v; want %q, %q, %v", tt.name, tt.i, v, path, ok, tt.v, tt.path, tt.ok)
		}
	}
}

func TestOpAddr(t *testing.T) {
	tests := []struct {
		loc  any
		want uint64
		ok   bool
	}{
		{[]byte{0x03, 0x40, 0x40, 0x40, 0, 0, 0, 0, 0}, 0x404040, true},
		{[]byte{0x03, 0x40, 0x40, 0x40, 0, 0, 0, 0}, 0, false},          // short
		{[]byte{0x03, 0x40, 0x40, 0x40, 0, 0, 0, 0, 0, 0x9f}, 0, false}, // then DW_OP_stack_value
		{[]byte{0x0e, 0, 0, 0, 0, 0, 0, 0, 0, 0xe0}, 0, false},          // TLS
		{[]byte{0x91, 0x6c}, 0, false},                                  // DW_OP_fbreg
		{int64(0x40), 0, false},                                         // a location list
		{nil, 0, false},
	}
	for _, tt := range tests {
		got, ok := opAddr(tt.loc)
		if got != tt.want || ok != tt.ok {
			t.Errorf("opAddr(%v) = %#x, %v; want %#x, %v", tt.loc, got, ok, tt.want, tt.ok)
		}
	}
}
