package symbols

import (
	"encoding/binary"
	"errors"
	"github.com/memtrap/memtrap/pkg/procmaps"
	"os"
	"slices"
	"testing"

	"github.com/memtrap/memtrap/pkg/dwarf/leb128"
	"github.com/memtrap/memtrap/pkg/dwarf/op"
	"github.com/memtrap/memtrap/pkg/tracer"
	"github.com/memtrap/memtrap/pkg/unwind"
	"golang.org/x/sys/unix"
)

// paramsBuilds are the builds of testdata/params.c the live tests trace:
// both optimization levels, DWARF 5 (.debug_loclists, .debug_rnglists) and
// DWARF 4 (.debug_loc, .debug_ranges), PIE and not.
var paramsBuilds = []struct {
	name  string
	flags []string
	opt   bool
}{
	{"params-O0", []string{"-O0", "-g"}, false},
	{"params-O0-dwarf4-nopie", []string{"-O0", "-gdwarf-4", "-no-pie", "-fno-pie"}, false},
	{"params-O2", []string{"-O2", "-g"}, true},
	{"params-O2-dwarf4", []string{"-O2", "-gdwarf-4"}, true},
	{"params-O2-nopie", []string{"-O2", "-g", "-no-pie", "-fno-pie"}, true},
}

func paramsFixture(t *testing.T, name string, flags []string) string {
	return compile("params.c", flags...)(t, name).Build(t)
}

// fillBase is where fillTable places its program.
const fillBase = 0x555555554000

// fillTable is a Table over paramsBuilds[i] placed at fillBase, closed at
// the test's end, and the program's fill_record.
func fillTable(t *testing.T, i int) (tab *Table, fill Symbol, exe string) {
	t.Helper()
	b := paramsBuilds[i]
	exe = paramsFixture(t, b.name, b.flags)
	tab = NewTable(layout(t, exe, fillBase), Options{})
	t.Cleanup(func() { tab.Close() })
	fill, err := tab.Resolve("fill_record")
	if err != nil {
		t.Fatal(err)
	}
	return tab, fill, exe
}

// frameRegs is the innermost frame of a stopped thread: every register
// trustworthy.
func frameRegs(r *unix.PtraceRegs, cfa uint64) FrameRegs {
	return FrameRegs{
		Regs: [17]uint64{r.Rax, r.Rdx, r.Rcx, r.Rbx, r.Rsi, r.Rdi, r.Rbp, r.Rsp,
			r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15, r.Rip},
		RegsValid: 1<<17 - 1,
		CFA:       cfa,
		PC:        r.Rip,
	}
}

// paramLocations returns the names of the parameters of the function at
// runtime pc and their location expressions there (nil where none covers
// pc), so that a test can check that the compiler did what its fixture
// expects.
func paramLocations(t *testing.T, tab *Table, pc uint64) (names []string, locs [][]byte) {
	t.Helper()
	tab.mu.Lock()
	defer tab.mu.Unlock()
	mod := tab.moduleAt(pc)
	fx := tab.funcIndex(mod.obj, mod.path)
	fn := fx.find(pc - mod.bias)
	if fn == nil {
		t.Fatalf("no function at %#x", pc)
	}
	for _, p := range fn.params {
		e, _ := fx.locExpr(p.loc, fn.cu, pc-mod.bias)
		names, locs = append(names, p.name), append(locs, e)
	}
	return names, locs
}

// entryValuePC finds the first pc in [lo, hi) where gcc's location of a
// parameter of the function there is DW_OP_entry_value: gdb's
// <optimized out>. It returns that pc and the parameter's index.
func entryValuePC(t *testing.T, tab *Table, lo, hi uint64) (uint64, int) {
	t.Helper()
	for pc := lo; pc < hi; pc++ {
		_, locs := paramLocations(t, tab, pc)
		for i, e := range locs {
			if len(e) > 0 && (e[0] == op.EntryValue || e[0] == op.GNUEntryValue) {
				return pc, i
			}
		}
	}
	t.Fatalf("no DW_OP_entry_value location in [%#x, %#x)", lo, hi)
	return 0, 0
}

// TestParamsLive stops a real program at breakpoints in fill_record(dst,
// n), called as fill_record(records, 100), and reads the parameters as gdb
// shows them.
func TestParamsLive(t *testing.T) {
	for _, b := range paramsBuilds {
		t.Run(b.name, func(t *testing.T) {
			exe := paramsFixture(t, b.name, b.flags)
			var want []Param
			evParam := -1
			at := func(tab *Table) ([]uint64, error) {
				fill, err := tab.Resolve("fill_record")
				if err != nil {
					return nil, err
				}
				records, err := tab.Resolve("records")
				if err != nil {
					return nil, err
				}
				want = []Param{{"dst", records.Addr, 8, true}, {"n", 100, 4, true}}

				// -O0: after the prologue, where the parameters sit in the
				// frame (DW_OP_fbreg over DW_OP_call_frame_cfa); the CFA is
				// rbp+16. -O2: at the first instruction, in rdi and rsi by
				// location lists; the CFA is rsp+8.
				bp := fill.Addr
				if !b.opt {
					first, _ := tab.Lookup(fill.Addr)
					for bp = fill.Addr + 1; bp < fill.Addr+64; bp++ {
						if loc, _ := tab.Lookup(bp); loc.Line != first.Line {
							break
						}
					}
				}
				bps := []uint64{bp}
				if b.opt {
					var evPC uint64
					evPC, evParam = entryValuePC(t, tab, fill.Addr+1, fill.Addr+fill.Size)
					bps = append(bps, evPC)
				}
				return bps, nil
			}
			breakAt(t, exe, at, func(tab *Table, p *tracer.Process, i int, regs unix.PtraceRegs) {
				a := regs.Rip - 1
				cfa := regs.Rbp + 16
				if b.opt && i == 0 {
					cfa = regs.Rsp + 8
				}
				got, err := tab.Params(frameRegs(&regs, cfa), p.ReadMemory)
				if err != nil {
					t.Fatalf("Params at %#x: %v", a, err)
				}
				switch {
				case i == 0:
					if !slices.Equal(got, want) {
						t.Errorf("Params at %#x = %+v, want %+v", a, got, want)
					}
				default:
					if len(got) != 2 || got[0].Name != "dst" || got[1].Name != "n" {
						t.Fatalf("Params at %#x = %+v", a, got)
					}
					if got[evParam].Known {
						t.Errorf("Params at %#x = %+v: %s is DW_OP_entry_value, want unknown", a, got, got[evParam].Name)
					}
				}
			})
		})
	}
}

// breakAt launches exe (its output to /dev/null), runs it to its entry
// and builds its Table; at then says where to put breakpoints. hit is
// called at each breakpoint in turn with the stopped thread's registers as
// the trap left them (rip one past the breakpoint); then the instruction
// is restored and run.
func breakAt(t *testing.T, exe string, at func(tab *Table) ([]uint64, error), hit func(tab *Table, p *tracer.Process, i int, regs unix.PtraceRegs)) {
	t.Helper()
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	err = tracer.Locked(func() error {
		p, err := tracer.Launch([]string{exe}, tracer.LaunchOptions{Stdio: [3]*os.File{nil, devnull, nil}})
		if err != nil {
			return err
		}
		defer p.Close()
		defer p.Kill()
		if _, err := p.RunToEntry(); err != nil {
			return err
		}
		maps, err := procmaps.Read(p.Pid)
		if err != nil {
			return err
		}
		tab := NewTable(maps, Options{ReadMemory: p.ReadMemory})
		defer tab.Close()
		bps, err := at(tab)
		if err != nil {
			return err
		}
		orig := make([][1]byte, len(bps))
		for i, a := range bps {
			if err := p.ReadMemory(a, orig[i][:]); err != nil {
				return err
			}
			if err := p.WriteMemory(a, []byte{0xcc}); err != nil {
				return err
			}
		}
		if err := p.ResumeAll(); err != nil {
			return err
		}
		for i, a := range bps {
			th, regs := waitTrap(t, p, a)
			hit(tab, p, i, regs)
			// Step past the breakpoint's instruction restored.
			if err := p.WriteMemory(a, orig[i][:]); err != nil {
				return err
			}
			regs.Rip = a
			if err := th.SetRegs(&regs); err != nil {
				return err
			}
			if err := th.Resume(0); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitTrap waits for the breakpoint at addr to stop a thread.
func waitTrap(t *testing.T, p *tracer.Process, addr uint64) (*tracer.Thread, unix.PtraceRegs) {
	t.Helper()
	for {
		st, err := p.Wait()
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
		switch {
		case st.Kind == tracer.StopExited:
			t.Fatalf("target exited before the breakpoint at %#x", addr)
		case st.Kind == tracer.StopSignal && st.Sig == int(unix.SIGTRAP):
			var regs unix.PtraceRegs
			if err := st.Thread.Regs(&regs); err != nil {
				t.Fatal(err)
			}
			if regs.Rip-1 != addr {
				t.Fatalf("SIGTRAP at %#x, want breakpoint at %#x", regs.Rip-1, addr)
			}
			return st.Thread, regs
		case st.Kind == tracer.StopSignal:
			st.Thread.Resume(st.Sig)
		default:
			st.Thread.Resume(0)
		}
	}
}

// TestParamsStatic checks what needs no process: names in order, a pc
// outside every function, and no memory reader.
func TestParamsStatic(t *testing.T) {
	tab, fill, _ := fillTable(t, 0)
	fr := FrameRegs{PC: fill.Addr + 8, CFA: 0x7ffc0000, RegsValid: 1<<17 - 1}
	got, err := tab.Params(fr, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Param{{Name: "dst", Size: 8}, {Name: "n", Size: 4}}
	if !slices.Equal(got, want) {
		t.Fatalf("Params without memory = %+v, want %+v", got, want)
	}
	// Memory reads go to CFA-relative slots.
	var reads []uint64
	got, _ = tab.Params(fr, func(addr uint64, p []byte) error {
		reads = append(reads, addr)
		for i := range p {
			p[i] = 0xab
		}
		return nil
	})
	if len(reads) != 2 || got[0].Value != 0xabababababababab || got[1].Value != 0xabababab || !got[1].Known {
		t.Fatalf("Params = %+v, reads at %#x", got, reads)
	}
	for _, a := range reads {
		if a >= fr.CFA || a < fr.CFA-64 {
			t.Errorf("read at %#x, not in the frame below CFA %#x", a, fr.CFA)
		}
	}
	// No CFA: the frame base is unknown.
	fr.CFA = 0
	if got, _ := tab.Params(fr, func(uint64, []byte) error { return nil }); got[0].Known || got[1].Known {
		t.Fatalf("Params with no CFA = %+v", got)
	}
	main, err := tab.Resolve("main")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tab.Params(FrameRegs{PC: main.Addr + 4}, nil); err != nil || len(got) != 2 || got[0].Name != "argc" || got[1].Name != "argv" {
		t.Fatalf("Params(main) = %+v, %v", got, err)
	}
	if _, err := tab.Params(FrameRegs{PC: 0x1000}, nil); !errors.Is(err, ErrNoFunction) {
		t.Fatalf("Params outside every module: %v, want ErrNoFunction", err)
	}
}

func uleb(v uint64) []byte { return leb128.AppendUnsigned(nil, v) }

func cat(parts ...[]byte) []byte { return slices.Concat(parts...) }

func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// TestEvalExpr runs hand-built expressions, good and hostile.
func TestEvalExpr(t *testing.T) {
	mem := func(addr uint64, p []byte) error {
		if addr < 0x1000 || addr >= 0x2000 {
			return errors.New("unmapped")
		}
		for i := range p {
			p[i] = byte(addr) + byte(i)
		}
		return nil
	}
	fr := FrameRegs{Regs: [17]uint64{0: 0x1100, 5: 0xdeadbeefcafe, 6: 0x1800, 3: 7}, RegsValid: 1<<0 | 1<<5 | 1<<6, CFA: 0x1900}
	env := frameEnv(fr, 0x100, readMem(mem))
	env.FrameBase, env.HasFrameBase = frameBase([]byte{op.CallFrameCFA}, &env)
	for _, c := range []struct {
		name  string
		expr  []byte
		size  int
		want  uint64
		known bool
	}{
		{"reg5", []byte{0x55}, 8, 0xdeadbeefcafe, true},
		{"reg5 as int", []byte{0x55}, 4, 0xbeefcafe, true},
		{"regx 5", []byte{0x90, 5}, 8, 0xdeadbeefcafe, true},
		{"reg3 not vouched for", []byte{0x53}, 8, 0, false},
		{"reg xmm0", []byte{0x61}, 8, 0, false},
		{"regx huge", cat([]byte{0x90}, uleb(1<<40)), 8, 0, false},
		{"fbreg -24", []byte{0x91, 0x68}, 1, 0xe8, true}, // 0x1900-24 = 0x18e8
		{"breg6 +8", []byte{0x76, 0x08}, 2, 0x0908, true},
		{"bregx 6 -1", []byte{0x92, 6, 0x7f}, 1, 0xff, true},
		{"breg3 not vouched for", []byte{0x73, 0}, 8, 0, false},
		{"addr", cat([]byte{0x03}, le64(0x1000)), 1, 0x00, true},
		{"lit stack_value", []byte{0x35, 0x9f}, 4, 5, true},
		{"const1s stack_value", []byte{0x09, 0xff, 0x9f}, 4, 0xffffffff, true},
		{"const4u plus_uconst", []byte{0x0c, 1, 0, 0, 0, 0x23, 0x10, 0x9f}, 8, 17, true},
		{"breg4 -99 stack_value (rsi invalid)", []byte{0x74, 0x9d, 0x7f, 0x9f}, 4, 0, false},
		{"breg0 deref", []byte{0x70, 0, 0x06}, 1, 0, false}, // *(0x1100) = 0x0706050403020100: unmapped
		{"breg0 deref_size", []byte{0x70, 0, 0x94, 2, 0x23, 0x10, 0x9f}, 2, 0x110, true},
		{"implicit_value", []byte{0x9e, 4, 1, 2, 3, 4}, 4, 0x04030201, true},
		{"implicit_value short", []byte{0x9e, 2, 1, 2}, 4, 0, false},
		{"implicit_value truncated", []byte{0x9e, 9, 1, 2}, 4, 0, false},
		{"entry_value", []byte{0xa3, 1, 0x55, 0x9f}, 8, 0, false},
		{"GNU_entry_value", []byte{0xf3, 1, 0x55, 0x9f}, 8, 0, false},
		{"reg5 piece 8", []byte{0x55, 0x93, 8}, 8, 0xdeadbeefcafe, true},
		{"reg5 piece 4 of 8", []byte{0x55, 0x93, 4, 0x54, 0x93, 4}, 8, 0, false},
		{"empty", nil, 8, 0, false},
		{"truncated addr", []byte{0x03, 1, 2}, 8, 0, false},
		{"truncated sleb", []byte{0x91, 0x80, 0x80}, 8, 0, false},
		{"pop empty", []byte{0x22}, 8, 0, false},
		{"stack_value empty", []byte{0x9f}, 8, 0, false},
		{"stack_value not last", []byte{0x30, 0x9f, 0x30}, 8, 0, false},
		{"reg then op", []byte{0x55, 0x30}, 8, 0, false},
		{"unknown op", []byte{0xff}, 8, 0, false},
		{"skip (branch)", []byte{0x2f, 0xfd, 0xff}, 8, 0, false},
		{"overlong uleb", append(append([]byte{0x10}, slices.Repeat([]byte{0xff}, 20)...), 0), 8, 0, false},
	} {
		v, ok := value(c.expr, &env, c.size)
		if ok != c.known || (ok && v != c.want) {
			t.Errorf("%s: value(% x) = %#x, %v; want %#x, %v", c.name, c.expr, v, ok, c.want, c.known)
		}
	}
	// The stack is bounded.
	deep := slices.Repeat([]byte{0x30}, op.MaxStack+1)
	if v, ok := value(append(deep, 0x9f), &env, 8); ok {
		t.Errorf("%d pushes evaluated to %#x", len(deep), v)
	}
	// So are the steps.
	nops := slices.Repeat([]byte{0x96}, op.MaxSteps+1)
	if v, ok := value(append(nops, 0x30, 0x9f), &env, 8); ok {
		t.Errorf("%d nops evaluated to %#x", len(nops), v)
	}
	// No memory: memory locations are unknown, the others are not.
	noMem := frameEnv(fr, 0x100, nil)
	if v, ok := value([]byte{0x76, 0x08}, &noMem, 2); ok {
		t.Errorf("breg6 +8 without memory = %#x", v)
	}
	if v, ok := value([]byte{0x55}, &noMem, 8); !ok || v != 0xdeadbeefcafe {
		t.Errorf("reg5 without memory = %#x, %v", v, ok)
	}
}

// TestLocationLists reads hand-built DWARF 4 and 5 location lists, good and
// hostile.
func TestLocationLists(t *testing.T) {
	exprA, exprB, exprC := []byte{0x55}, []byte{0x54}, []byte{0x30, 0x9f}
	u16 := func(v int) []byte { return binary.LittleEndian.AppendUint16(nil, uint16(v)) }

	// DWARF 4: [0x10, 0x20) relative to the unit base 0x1000, then a base
	// selection to 0x5000 and [0, 8) from there.
	v4 := cat(le64(0x10), le64(0x20), u16(1), exprA,
		le64(^uint64(0)), le64(0x5000),
		le64(0), le64(8), u16(1), exprB,
		le64(0), le64(0))
	for _, c := range []struct {
		pc   uint64
		want []byte
	}{{0x1010, exprA}, {0x101f, exprA}, {0x1020, nil}, {0x5000, exprB}, {0x5008, nil}, {0x10, nil}} {
		got, ok := findLoc(v4, 0, 0x1000, c.pc)
		if ok != (c.want != nil) || !slices.Equal(got, c.want) {
			t.Errorf("v4 list at %#x: % x, %v; want % x", c.pc, got, ok, c.want)
		}
	}

	// DWARF 5, with every kind of entry. .debug_addr holds 0x7000, 0x7100.
	addr := cat(le64(0x7000), le64(0x7100))
	u := unitInfo{version: 5, base: 0x1000}
	v5 := cat(
		[]byte{lleGNUViewPair, 0, 1},
		[]byte{lleOffsetPair, 0x10, 0x20}, uleb(1), exprA, // 0x1010-0x1020 from the unit base
		[]byte{lleBaseAddress}, le64(0x3000),
		[]byte{lleOffsetPair, 0, 8}, uleb(1), exprB, // 0x3000-0x3008
		[]byte{lleBaseAddressx, 1},
		[]byte{lleOffsetPair, 0, 4}, uleb(2), exprC, // 0x7100-0x7104
		[]byte{lleStartxEndx, 0, 1}, uleb(1), exprA, // 0x7000-0x7100
		[]byte{lleStartxLength, 1, 0x80, 0x01}, uleb(1), exprB, // 0x7100-0x7180 (after the pair)
		[]byte{lleStartEnd}, le64(0x9000), le64(0x9010), uleb(1), exprC[:1],
		[]byte{lleStartLength}, le64(0xa000), uleb(0x10), uleb(1), exprA,
		[]byte{lleDefaultLocation}, uleb(2), exprC,
		[]byte{lleEndOfList})
	for _, c := range []struct {
		pc   uint64
		want []byte
	}{
		{0x1010, exprA}, {0x3004, exprB}, {0x7102, exprC}, {0x7050, exprA}, {0x7150, exprB},
		{0x9000, exprC[:1]}, {0xa00f, exprA}, {0xa010, exprC}, {0x1, exprC},
	} {
		got, ok := findLoclists(v5, 0, u, addr, c.pc)
		if !ok || !slices.Equal(got, c.want) {
			t.Errorf("v5 list at %#x: % x, %v; want % x", c.pc, got, ok, c.want)
		}
	}

	// Hostile lists: nothing found, no panic.
	for _, c := range []struct {
		name string
		sec  []byte
		off  uint64
	}{
		{"empty", nil, 0},
		{"offset past end", v5, uint64(len(v5)) + 10},
		{"offset huge", v5, ^uint64(0) - 3},
		{"unterminated", []byte{lleOffsetPair, 0, 0xff, 0x01, 1, 0x55}, 0},
		{"expr length past end", []byte{lleOffsetPair, 0, 0xff, 0x01, 0xff, 0xff, 0x03, 0x55}, 0},
		{"expr length huge", cat([]byte{lleOffsetPair, 0, 0x7f}, uleb(^uint64(0))), 0},
		{"addrx out of range", []byte{lleStartxEndx, 5, 6, 1, 0x55, 0}, 0},
		{"base_addressx out of range", []byte{lleBaseAddressx, 0xff, 0xff, 0x7f, lleOffsetPair, 0, 0x7f, 1, 0x55, 0}, 0},
		{"addrx huge", cat([]byte{lleStartxLength}, uleb(1<<62), []byte{0x10, 1, 0x55, 0}), 0},
		{"unknown kind", []byte{0x42, 0, 0}, 0},
		{"overlong uleb", append([]byte{lleOffsetPair}, slices.Repeat([]byte{0x80}, 30)...), 0},
	} {
		if got, ok := findLoclists(c.sec, c.off, u, addr, 0x10); ok {
			t.Errorf("v5 %s: found % x", c.name, got)
		}
		if got, ok := findLoc(c.sec, c.off, 0, 0x10); ok {
			t.Errorf("v4 %s: found % x", c.name, got)
		}
	}
	// A list that never ends is bounded.
	loop := slices.Repeat([]byte{lleGNUViewPair, 0, 0}, maxLocEntries+1)
	if _, ok := findLoclists(loop, 0, u, addr, 0); ok {
		t.Error("endless list found something")
	}

	// Through the index: loclistx resolves via DW_AT_loclists_base, and
	// an index past the offsets fails.
	lists := cat([]byte{0, 0, 0, 0}, // header stand-in
		binary.LittleEndian.AppendUint32(nil, 4), // offset of list 0 from base 4
		[]byte{lleStartEnd}, le64(0x100), le64(0x200), uleb(1), exprA, []byte{lleEndOfList})
	fx := &funcIndex{lists: lists, units: []unitInfo{{version: 5, loclistsBase: 4}}}
	if got, ok := fx.locExpr(locAttr{kind: locListx, off: 0}, 0, 0x150); !ok || !slices.Equal(got, exprA) {
		t.Errorf("loclistx 0: % x, %v", got, ok)
	}
	for _, idx := range []uint64{1, 1 << 40, ^uint64(0)} {
		if got, ok := fx.locExpr(locAttr{kind: locListx, off: idx}, 0, 0x150); ok {
			t.Errorf("loclistx %d: found % x", idx, got)
		}
	}
	if _, ok := fx.locExpr(locAttr{kind: locList}, 7, 0); ok {
		t.Error("a unit index out of range found a list")
	}
}

// FuzzLocation runs arbitrary bytes through both list formats and the
// expression evaluator.
func FuzzLocation(f *testing.F) {
	f.Add([]byte{lleOffsetPair, 0, 0x10, 1, 0x55, 0}, uint64(4))
	f.Add([]byte{0x91, 0x68}, uint64(0))
	f.Fuzz(func(t *testing.T, b []byte, pc uint64) {
		findLoc(b, 0, 0, pc)
		findLoclists(b, 0, unitInfo{version: 5}, b, pc)
		env := frameEnv(FrameRegs{RegsValid: ^uint32(0), CFA: 1}, 0, readMem(func(uint64, []byte) error { return nil }))
		value(b, &env, 8)
		unitVersions(b)
	})
}

// locationAt returns the location expression of parameter name of the
// function at runtime pc.
func locationAt(t *testing.T, tab *Table, pc uint64, name string) []byte {
	t.Helper()
	names, locs := paramLocations(t, tab, pc)
	i := slices.Index(names, name)
	if i < 0 {
		t.Fatalf("no parameter %s at %#x", name, pc)
	}
	return locs[i]
}

// TestParamsOuterFrames stops testdata/outer.c (-O2) in stop() and in
// tiny(), unwinds, and reads the parameters of the outer frames from the
// registers the unwinder recovered: those in callee-saved registers have
// their values, restored from a callee's save slot or left alone by the
// callees; those in scratch registers are unknown.
func TestParamsOuterFrames(t *testing.T) {
	exe := compile("outer.c", "-O2", "-g")(t, "outer-O2").Build(t)
	at := func(tab *Table) ([]uint64, error) {
		var bps []uint64
		for _, fn := range []string{"stop", "tiny"} {
			s, err := tab.Resolve(fn)
			if err != nil {
				return nil, err
			}
			bps = append(bps, s.Addr)
		}
		return bps, nil
	}
	// frame is what memtrap's backtrace shows of one frame.
	type frame struct {
		fn     string
		pc     uint64 // the pc looked up: a return address less one
		params []Param
	}
	chain := func(fs []frame) []string {
		var names []string
		for _, f := range fs {
			names = append(names, f.fn)
		}
		return names
	}
	reg := func(n byte) []byte { return []byte{op.Reg0 + n} }

	breakAt(t, exe, at, func(tab *Table, p *tracer.Process, i int, regs unix.PtraceRegs) {
		// Unwind from the breakpoint's address, as if it had not run, and
		// read each frame's parameters as the backtrace does.
		regs.Rip--
		var fs []frame
		for j, fr := range unwind.New(tab).Unwind(unwind.RegsFromPtrace(&regs), p, 16) {
			look := fr.PC
			if j > 0 && !fr.Signal {
				look--
			}
			loc, _ := tab.Lookup(look)
			ps, _ := tab.Params(FrameRegs{PC: look, CFA: fr.CFA, Regs: fr.Regs, RegsValid: uint32(fr.Valid)}, p.ReadMemory)
			fs = append(fs, frame{loc.Func, look, ps})
		}
		switch i {
		case 0:
			if len(fs) < 4 || !slices.Equal(chain(fs[:4]), []string{"stop", "leaf", "middle", "main"}) {
				t.Fatalf("frames at stop: %q", chain(fs))
			}
			leaf, middle := fs[1], fs[2]
			// The premise: at the calls, x and keep are in rbx.
			if e := locationAt(t, tab, leaf.pc, "x"); !slices.Equal(e, reg(3)) {
				t.Fatalf("leaf's x at the call to stop is at % x, want DW_OP_reg3 (rbx)", e)
			}
			if e := locationAt(t, tab, middle.pc, "keep"); !slices.Equal(e, reg(3)) {
				t.Fatalf("middle's keep at the call to leaf is at % x, want DW_OP_reg3 (rbx)", e)
			}
			// leaf's rbx is frame 0's: stop saves nothing. middle's is in
			// leaf's save slot, and frame 0's rbx is x, not keep.
			if want := []Param{{"x", 42, 8, true}}; !slices.Equal(leaf.params, want) {
				t.Errorf("leaf's parameters = %+v, want %+v", leaf.params, want)
			}
			if len(middle.params) != 2 || middle.params[0] != (Param{"keep", 0x1234568, 8, true}) || middle.params[1].Name != "pass" {
				t.Errorf("middle's parameters = %+v, want keep=0x1234568 and pass", middle.params)
			}
		case 1:
			if len(fs) < 3 || !slices.Equal(chain(fs[:3]), []string{"tiny", "scratch", "main"}) {
				t.Fatalf("frames at tiny: %q", chain(fs))
			}
			tiny, scratch := fs[0], fs[1]
			if want := []Param{{"y", 7, 8, true}}; !slices.Equal(tiny.params, want) {
				t.Errorf("tiny's parameters = %+v, want %+v (frame 0 has every register)", tiny.params, want)
			}
			// The premise: -fipa-ra lets scratch keep k in rdx, a scratch
			// register, across its call to tiny.
			if e := locationAt(t, tab, scratch.pc, "k"); !slices.Equal(e, reg(1)) {
				t.Fatalf("scratch's k at the call to tiny is at % x, want DW_OP_reg1 (rdx)", e)
			}
			// y went to tiny in rdi, another scratch register.
			if want := []Param{{Name: "k", Size: 8}, {Name: "y", Size: 8}}; !slices.Equal(scratch.params, want) {
				t.Errorf("scratch's parameters = %+v, want %+v: unknown, in scratch registers of an outer frame", scratch.params, want)
			}
		}
	})
}
