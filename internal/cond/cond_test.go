package cond

import (
	"errors"
	"testing"
)

func env(old, nw uint64) *Env {
	e := &Env{}
	e.Vars[Old], e.Vars[New], e.Vars[Addr], e.Vars[Off], e.Vars[Size] = old, nw, 0x601040, 8, 4
	e.Vars[Tid], e.Vars[Pid], e.Vars[Seq] = 101, 100, 7
	if old != nw {
		e.Vars[Changed] = 1
	}
	return e
}

func TestEval(t *testing.T) {
	for _, c := range []struct {
		src      string
		old, new uint64
		want     bool
	}{
		{"new > 5", 0, 6, true},
		{"new > 5", 0, 5, false},
		{"new >= 5 && new <= 9", 0, 9, true},
		{"1 + 2 * 3 == 7", 0, 0, true},           // * before +
		{"(1 + 2) * 3 == 9", 0, 0, true},         // parentheses
		{"new & 0xff == 0x34", 0, 0x1234, false}, // == binds tighter than &, as in C: new & (0xff == 0x34)
		{"(new & 0xff) == 0x34", 0, 0x1234, true},
		{"1 << 3 + 1 == 16", 0, 0, true}, // + before <<
		{"new - old == 1", 5, 6, true},
		{"old - new == 0xffffffffffffffff", 5, 6, true}, // unsigned wrap-around
		{"-1 == 0xffffffffffffffff", 0, 0, true},
		{"~0 == 0xffffffffffffffff", 0, 0, true},
		{"!changed", 3, 3, true},
		{"changed", 3, 4, true},
		{"new / 0 == 0 && new % 0 == 0", 0, 9, true},
		{"1 << 64 == 0", 0, 0, true},
		{"new == 'A'", 0, 65, true},
		{"new == '\\n'", 0, 10, true},
		{"new == '\\x41'", 0, 65, true},
		{"new == '\\''", 0, 39, true},
		{"tid == 101 && pid == 100 && seq == 7 && off == 8 && size == 4 && addr == 0x601040", 0, 0, true},
		{"kernel", 0, 0, false},
		{"new ^ old == 3 || 0", 1, 2, true},
		{"new | 1 == 3", 0, 2, true},    // == before |: new | (1 == 3)... is 2 | 0 == 2, true
		{"017 == 15", 0, 0, true},       // octal, as in C
		{"5 > 3 > 0", 0, 0, true},       // (5 > 3) > 0
		{"10 - 3 - 2 == 5", 0, 0, true}, // left to right
		{"100 / 10 / 2 == 5", 0, 0, true},
	} {
		e, err := Parse(c.src)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.src, err)
			continue
		}
		if got := e.Eval(env(c.old, c.new)); got != c.want {
			t.Errorf("%q with old=%d new=%d: %v, want %v", c.src, c.old, c.new, got, c.want)
		}
	}
}

func TestSyntaxErrors(t *testing.T) {
	for _, c := range []struct {
		src string
		col int
		msg string
	}{
		{"", 1, "empty expression"},
		{"new >", 6, "expected a value, found end of expression"},
		{"new > 0xzz", 7, `malformed number "0xzz"`},
		{"(new > 5", 9, "expected ')', found end of expression"},
		{"neww > 5", 1, `unknown name "neww" (values: old new addr off size tid pid seq kernel changed block freed overflow; predicates: in() at() file())`},
		{"new > 5 )", 9, `unexpected ")"`},
		{"new $ 5", 5, `unexpected character '$'`},
		{"in main", 1, "in needs an argument: in(PATTERN)"},
		{"in(main", 3, "unclosed '(' of in"},
		{"at()", 3, "at needs an argument: at(PATTERN)"},
		{"new == 99999999999999999999", 8, "number 99999999999999999999 does not fit 64 bits"},
		{"new == 'ab'", 8, "malformed character literal"},
		{`file("a.c`, 6, "unterminated string"},
	} {
		_, err := Parse(c.src)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Parse(%q) = %v, want a syntax error", c.src, err)
			continue
		}
		if se.Col != c.col || se.Msg != c.msg {
			t.Errorf("Parse(%q): column %d %q, want column %d %q", c.src, se.Col, se.Msg, c.col, c.msg)
		}
	}
}

// Predicates are asked only when the result depends on them, and after
// the cheap operands whichever side they were written on.
func TestPredicatesCheapFirst(t *testing.T) {
	e, err := Parse("in(parse_*) && new > 5 || at(\"ns::f(int)\") && file(src/*.c)")
	if err != nil {
		t.Fatal(err)
	}
	want := []PredUse{{In, "parse_*"}, {At, "ns::f(int)"}, {File, "src/*.c"}}
	if got := e.Preds(); len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("Preds() = %v, want %v", got, want)
	}
	var asked []int
	en := env(0, 3) // new > 5 fails: in() is never asked
	en.Match = func(i int) bool { asked = append(asked, i); return true }
	if !e.Eval(en) {
		t.Errorf("condition should hold through its || side")
	}
	if len(asked) != 2 || asked[0] != 1 || asked[1] != 2 {
		t.Errorf("predicates asked: %v, want [1 2]", asked)
	}
	asked = nil
	plain, _ := Parse("new > 5")
	if plain.NeedsBacktrace() || !e.NeedsBacktrace() {
		t.Errorf("NeedsBacktrace wrong")
	}
}

func TestCheckWidth(t *testing.T) {
	e, _ := Parse("old != 0 && new == 0x1ff")
	if err := e.CheckWidth(2); err != nil {
		t.Errorf("0x1ff fits 2 bytes: %v", err)
	}
	err := e.CheckWidth(1)
	var se *SyntaxError
	if !errors.As(err, &se) || se.Col != 20 || se.Msg != "0x1ff is wider than the watched value (1 byte)" {
		t.Errorf("CheckWidth(1) = %v", err)
	}
	if err := Equal(0x10000).CheckWidth(2); err == nil || err.Error() != "column 1: 0x10000 is wider than the watched value (2 bytes)" {
		t.Errorf("Equal(0x10000).CheckWidth(2) = %v", err)
	}
}

func TestAnd(t *testing.T) {
	a, _ := Parse("at(f)")
	b, _ := Parse("new == 2 && in(g)")
	e := And(a, b)
	var asked []int
	en := env(0, 2)
	en.Match = func(i int) bool { asked = append(asked, i); return i == 1 }
	if e.Eval(en) {
		t.Errorf("at(f) is false: the conjunction must be")
	}
	if got := e.Preds(); len(got) != 2 || got[1] != (PredUse{In, "g"}) {
		t.Errorf("Preds() = %v", got)
	}
}

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		pat, name string
		want      bool
	}{
		{"main", "main", true},
		{"main", "main2", false},
		{"parse_*", "parse_header", true},
		{"*header", "parse_header", true},
		{"*_*", "parse_header", true},
		{"a*b*c", "abc", true},
		{"a*b*c", "acb", false},
		{"ns::*", "ns::Session::create", true},
		{"operator[]", "operator[]", true},
		{"*", "", true},
	} {
		if got := Glob(c.pat, c.name); got != c.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", c.pat, c.name, got, c.want)
		}
	}
}
