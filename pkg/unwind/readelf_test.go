package unwind

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// readelf's --debug-dump=frames-interp is the oracle for the CFI parser and
// the CFA program interpreter: binutils' own implementation, independent of
// ours. It prints every CIE and FDE of .eh_frame and .debug_frame with its
// unwind table:
//
//	00000018 0000000000000024 0000001c FDE cie=00000000 pc=0000000000026000..0000000000026360
//	   LOC           CFA      rbx   ra
//	0000000000026000 rsp+16   u     c-8
//
// A register cell is "u" (no rule, or undefined), "s" (same value), "c+N"
// (saved at CFA+N), "v+N" (value CFA+N), "rN (name)" (in register N), "exp"
// or "vexp".
// An FDE whose instructions are all nops gets no table: the CIE's applies.

type oracleEntry struct {
	off      uint64
	isCIE    bool
	cieOff   uint64
	aug      string
	cf, df   int64
	ra       uint64
	lo, hi   uint64
	cols     []string // column names after CFA
	rows     []oracleRow
	sawTable bool
}

type oracleRow struct {
	loc   uint64
	cells []string // CFA first, then cols
}

type oracleSection struct {
	entries []*oracleEntry
	byOff   map[uint64]*oracleEntry
}

// readelfFrames runs readelf on path and parses its report by section name.
func readelfFrames(t *testing.T, path string) map[string]*oracleSection {
	t.Helper()
	out, err := exec.Command("readelf", "--debug-dump=frames-interp,no-follow-links", path).Output()
	if err != nil {
		t.Fatalf("readelf %s: %v", path, err)
	}
	secs := map[string]*oracleSection{}
	var sec *oracleSection
	var cur *oracleEntry
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		f := fields(line)
		switch {
		case strings.HasPrefix(line, "Contents of the "):
			name, _, _ := strings.Cut(strings.TrimPrefix(line, "Contents of the "), " section")
			sec = &oracleSection{byOff: map[uint64]*oracleEntry{}}
			secs[name] = sec
			cur = nil
		case len(f) == 0 || sec == nil:
			cur = nil
		case len(f) >= 4 && (f[3] == "CIE" || f[3] == "FDE"):
			e := &oracleEntry{off: hexField(t, f[0]), isCIE: f[3] == "CIE"}
			if e.isCIE {
				e.aug = strings.Trim(f[4], `"`)
				for _, kv := range f[5:] {
					k, v, _ := strings.Cut(kv, "=")
					n, err := strconv.ParseInt(v, 10, 64)
					if err != nil {
						t.Fatalf("readelf CIE line %q: %v", line, err)
					}
					switch k {
					case "cf":
						e.cf = n
					case "df":
						e.df = n
					case "ra":
						e.ra = uint64(n)
					}
				}
			} else {
				for _, kv := range f[4:] {
					k, v, _ := strings.Cut(kv, "=")
					switch k {
					case "cie":
						e.cieOff = hexField(t, v)
					case "pc":
						lo, hi, _ := strings.Cut(v, "..")
						e.lo, e.hi = hexField(t, lo), hexField(t, hi)
					}
				}
			}
			sec.entries = append(sec.entries, e)
			sec.byOff[e.off] = e
			cur = e
		case cur != nil && f[0] == "LOC":
			cur.cols = f[2:]
			cur.sawTable = true
		case cur != nil && cur.sawTable:
			if len(f) != len(cur.cols)+2 {
				t.Fatalf("readelf row %q under columns %q: cannot align", line, cur.cols)
			}
			cur.rows = append(cur.rows, oracleRow{loc: hexField(t, f[0]), cells: f[1:]})
		}
	}
	return secs
}

// fields splits a readelf line on spaces, except that a register rule
// cell, "r1 (rdx)", stays one field.
func fields(line string) []string {
	var f []string
	for _, w := range strings.Fields(line) {
		if strings.HasPrefix(w, "(") && len(f) > 0 {
			f[len(f)-1] += " " + w
			continue
		}
		f = append(f, w)
	}
	return f
}

func hexField(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		t.Fatalf("readelf: %q: %v", s, err)
	}
	return v
}

// cell formats our rule for column col the way readelf does.
func cell(rw *row, col string, ra uint64) (string, bool) {
	if col == "CFA" {
		if rw.cfaIsExpr {
			return "exp", true
		}
		if rw.cfaReg >= numRegs {
			return fmt.Sprintf("r%d%+d", rw.cfaReg, rw.cfaOff), true
		}
		return fmt.Sprintf("%s%+d", regNames[rw.cfaReg], rw.cfaOff), true
	}
	reg := -1
	if col == "ra" {
		reg = int(ra)
	}
	for i, n := range regNames {
		if n == col {
			reg = i
		}
	}
	if reg < 0 || reg >= numRegs {
		return "", false // a register we do not track (xmm, segment...)
	}
	rl := rw.regs[reg]
	switch rl.kind {
	case ruleUnset, ruleUndefined:
		return "u", true
	case ruleSameValue:
		return "s", true
	case ruleOffset:
		return fmt.Sprintf("c%+d", rl.off), true
	case ruleValOffset:
		return fmt.Sprintf("v%+d", rl.off), true
	case ruleRegister:
		if rl.reg < numRegs {
			return fmt.Sprintf("r%d (%s)", rl.reg, regNames[rl.reg]), true
		}
		return fmt.Sprintf("r%d", rl.reg), true
	case ruleExpression:
		return "exp", true
	case ruleValExpression:
		return "vexp", true
	}
	return "?", true
}

// compareSection checks our parse of one section against readelf's: the
// same CIEs and FDEs at the same offsets, each FDE found by lookup at the
// first and last address of each row of its table, and the same rules
// there. It returns the number of rows compared.
func compareSection(t *testing.T, s *cfiSection, o *oracleSection) int {
	t.Helper()
	var ours []fde
	if err := s.each(func(f fde) { ours = append(ours, f) }); err != nil {
		t.Errorf("%s: %v", s.name, err)
	}
	nFDE := 0
	for _, e := range o.entries {
		if e.isCIE {
			c, err := s.cieAt(e.off)
			if err != nil {
				t.Errorf("%s CIE %#x: %v", s.name, e.off, err)
				continue
			}
			if c.aug != e.aug || int64(c.codeAlign) != e.cf || c.dataAlign != e.df || c.raReg != e.ra {
				t.Errorf("%s CIE %#x: aug %q cf %d df %d ra %d, readelf says %q %d %d %d",
					s.name, e.off, c.aug, c.codeAlign, c.dataAlign, c.raReg, e.aug, e.cf, e.df, e.ra)
			}
		} else {
			nFDE++
		}
	}
	if len(ours) != nFDE {
		t.Errorf("%s: we see %d FDEs, readelf %d", s.name, len(ours), nFDE)
	}
	var m machine
	rows := 0
	for _, f := range ours {
		e := o.byOff[f.off]
		if e == nil || e.isCIE {
			t.Errorf("%s FDE %#x: readelf has no FDE there", s.name, f.off)
			continue
		}
		if e.lo != f.lo || e.hi != f.hi {
			t.Errorf("%s FDE %#x: [%#x, %#x), readelf says [%#x, %#x)", s.name, f.off, f.lo, f.hi, e.lo, e.hi)
			continue
		}
		if f.hi == f.lo {
			continue
		}
		table, cols := e.rows, e.cols
		if !e.sawTable {
			// All nops: the CIE's initial row holds for the whole range.
			ce := o.byOff[e.cieOff]
			if ce == nil || len(ce.rows) != 1 {
				t.Errorf("%s FDE %#x: readelf shows no table and its CIE %#x no single row", s.name, f.off, e.cieOff)
				continue
			}
			table, cols = []oracleRow{{loc: f.lo, cells: ce.rows[0].cells}}, ce.cols
		}
		for i, r := range table {
			end := f.hi
			if i+1 < len(table) {
				end = table[i+1].loc
			}
			if end <= r.loc {
				continue // readelf prints a row for each location, even an empty range
			}
			for _, pc := range []uint64{r.loc, end - 1} {
				found, err := s.find(pc)
				if err != nil {
					t.Errorf("%s: lookup %#x (FDE %#x): %v", s.name, pc, f.off, err)
					continue
				}
				if found.off != f.off && (found.lo != f.lo || found.hi != f.hi) {
					t.Errorf("%s: lookup %#x found FDE %#x [%#x, %#x), want %#x", s.name, pc, found.off, found.lo, found.hi, f.off)
					continue
				}
				if err := m.rowFor(s, &f, pc); err != nil {
					t.Errorf("%s FDE %#x at %#x: %v", s.name, f.off, pc, err)
					continue
				}
				rows++
				for k, col := range append([]string{"CFA"}, cols...) {
					got, ok := cell(&m.row, col, f.cie.raReg)
					if ok && got != r.cells[k] {
						t.Errorf("%s FDE %#x at %#x: %s = %q, readelf says %q", s.name, f.off, pc, col, got, r.cells[k])
					}
				}
			}
		}
	}
	return rows
}

// sectionsOf loads the CFI of path twice: as the unwinder does, through
// .eh_frame_hdr when there is one, and again with a sorted index, so that
// both lookups are checked.
func sectionsOf(t *testing.T, path string) (*moduleCFI, *cfiSection) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	m := loadModuleCFI(f)
	if m.err != nil {
		t.Fatalf("%s: %v", path, m.err)
	}
	var indexed *cfiSection
	if m.eh != nil {
		indexed = &cfiSection{name: ".eh_frame (indexed)", data: m.eh.data, addr: m.eh.addr, eh: true, bases: m.eh.bases}
		if err := indexed.buildIndex(); err != nil {
			t.Fatal(err)
		}
	}
	return m, indexed
}

func TestCFIMatchesReadelf(t *testing.T) {
	for _, tc := range []struct {
		name    string
		path    func(t *testing.T) string
		eh, dbg bool // the sections expected
		hdr     bool
	}{
		{"stack-cfi", func(t *testing.T) string { return program(t, stackCFI) }, true, false, true},
		{"stack-nohdr", func(t *testing.T) string { return program(t, stackNoHdr) }, true, false, false},
		{"stack-debugframe", func(t *testing.T) string { return program(t, stackDebugFrame) }, true, true, true},
		{"libc", func(*testing.T) string { return libcPath }, true, false, true},
		{"ld.so", func(*testing.T) string { return ldsoPath }, true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path(t)
			oracle := readelfFrames(t, path)
			m, indexed := sectionsOf(t, path)
			if (m.eh != nil) != tc.eh || (m.debug != nil) != tc.dbg {
				t.Fatalf(".eh_frame %v .debug_frame %v, want %v %v", m.eh != nil, m.debug != nil, tc.eh, tc.dbg)
			}
			if tc.eh {
				if (m.eh.hdr != nil) != tc.hdr {
					t.Errorf(".eh_frame_hdr table used: %v, want %v", m.eh.hdr != nil, tc.hdr)
				}
				o := oracle[".eh_frame"]
				if o == nil {
					t.Fatal("readelf shows no .eh_frame")
				}
				n := compareSection(t, m.eh, o)
				compareSection(t, indexed, o)
				t.Logf(".eh_frame: %d entries, %d rows compared", len(o.entries), n)
				if n == 0 {
					t.Error("no rows compared")
				}
			}
			if tc.dbg {
				o := oracle[".debug_frame"]
				if o == nil {
					t.Fatal("readelf shows no .debug_frame")
				}
				n := compareSection(t, m.debug, o)
				t.Logf(".debug_frame: %d entries, %d rows compared", len(o.entries), n)
				if n == 0 {
					t.Error("no rows compared")
				}
			}
		})
	}
}

// regNames are the names readelf and gdb give the DWARF registers.
var regNames = [numRegs]string{
	"rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp",
	"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip",
}

const (
	libcPath = "/lib/x86_64-linux-gnu/libc.so.6"
	ldsoPath = "/lib64/ld-linux-x86-64.so.2"
)

// TestLibcPLT unwinds from every byte of libc's PLT entries, whose CFA GNU
// ld describes with an expression over rip: rsp+8 until the entry's push
// (at offset 6, 5 bytes long) has run, rsp+16 after.
func TestLibcPLT(t *testing.T) {
	f, err := elf.Open(libcPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	plt := f.Section(".plt")
	if plt == nil || plt.Size < 48 {
		t.Fatal("libc has no .plt")
	}
	m := loadModuleCFI(f)
	const rsp, bias = 0x7ff000, 0x7f0000000000
	mem := fakeMem{rsp: 0x1111, rsp + 8: 0x2222}
	w := &walker{u: New(noModules{}), mem: mem}
	n := 0
	for entry := plt.Addr + 16; entry+16 <= plt.Addr+plt.Size; entry += 16 {
		for off := range uint64(16) {
			pc := entry + off
			pr := m.rowAt(pc, &w.m)
			if pr.err != nil {
				t.Fatalf("PLT %#x: %v", pc, pr.err)
			}
			regs := Regs{regRSP: rsp, regRIP: pc + bias}
			res := w.cfiStep(pr, bias, &regs, AllRegs)
			want, ra := uint64(rsp+8), uint64(0x1111)
			if off >= 11 {
				want, ra = rsp+16, 0x2222
			}
			if !res.ok || res.cfa != want || res.next[regRIP] != ra || res.next[regRSP] != want {
				t.Fatalf("PLT %#x (+%d): ok %v CFA %#x rip %#x, want CFA %#x rip %#x", pc, off, res.ok, res.cfa, res.next[regRIP], want, ra)
			}
			n++
		}
	}
	t.Logf("%d PLT addresses", n)
}

// TestEntryRules checks the psABI's invariant at every function's first
// instruction: the call has just pushed the return address, so CFA = rsp+8,
// the return address is at CFA-8 and no register has been saved yet. And
// in f2, which saves all six callee-saved registers, that after its
// prologue each is saved in the frame.
func TestEntryRules(t *testing.T) {
	for _, path := range []string{program(t, stackCFI), program(t, stackDebugFrame), libcPath} {
		f, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		m := loadModuleCFI(f)
		syms, _ := f.Symbols()
		if len(syms) == 0 {
			syms, _ = f.DynamicSymbols()
		}
		var mc machine
		n := 0
		for _, s := range syms {
			if elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Value == 0 || s.Name == "_start" {
				continue // _start has no return address, and says so
			}
			fd, sec, err := m.find(s.Value)
			if err != nil || fd.lo != s.Value {
				continue // no CFI, or an FDE shared with other code
			}
			if err := mc.rowFor(sec, &fd, s.Value); err != nil {
				t.Errorf("%s: %v", s.Name, err)
				continue
			}
			n++
			cfa, _ := cell(&mc.row, "CFA", 16)
			ra, _ := cell(&mc.row, "ra", 16)
			if cfa != "rsp+8" || ra != "c-8" {
				t.Errorf("%s %s at entry: CFA %s, ra %s; want rsp+8, c-8", path, s.Name, cfa, ra)
			}
			for reg := range regRIP {
				if k := mc.row.regs[reg].kind; k != ruleUnset {
					t.Errorf("%s %s at entry: %s has rule %d", path, s.Name, regNames[reg], k)
				}
			}
		}
		if n < 8 {
			t.Errorf("%s: only %d functions checked", path, n)
		}
	}

	rec := record(t, stackCFI, "call")
	frames := New(rec).Unwind(rec.regs, rec, 64)
	i := slices.Index(names(rec, frames), "f2")
	f, bias, path, _ := rec.ModuleAt(frames[i].PC)
	fd, sec, err := New(rec).moduleCFI(path, f).find(frames[i].PC - 1 - bias)
	if err != nil {
		t.Fatal(err)
	}
	var mc machine
	if err := mc.rowFor(sec, &fd, frames[i].PC-1-bias); err != nil {
		t.Fatal(err)
	}
	for _, reg := range []int{regRBX, regRBP, 12, 13, 14, 15} {
		if rl := mc.row.regs[reg]; rl.kind != ruleOffset || rl.off >= -8 {
			t.Errorf("f2 after its prologue: %s rule %+v, want saved below the return address", regNames[reg], rl)
		}
	}
}
