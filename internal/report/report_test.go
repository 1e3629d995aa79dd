package report

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

type jsonFrame struct {
	PC     string `json:"pc"`
	Func   string `json:"func,omitempty"`
	Offset uint64 `json:"offset"`
	Module string `json:"module,omitempty"`
	File   string `json:"file,omitempty"`
	Line   int    `json:"line,omitempty"`
	Args   []Arg  `json:"args,omitempty"`
}

// jsonWriteEvent is a write event's line as encoding/json builds it: the
// oracle for the hand-built one.
func jsonWriteEvent(ev *Write) []byte {
	bt := make([]jsonFrame, len(ev.Backtrace))
	for i, f := range ev.Backtrace {
		bt[i] = jsonFrame{fmt.Sprintf("%#x", f.PC), f.Func, f.Offset, f.Module, f.File, f.Line, f.Args}
	}
	b, err := json.Marshal(struct {
		Event     string      `json:"event"`
		Seq       int         `json:"seq"`
		Pid       int         `json:"pid"`
		Tid       int         `json:"tid"`
		Addr      string      `json:"addr"`
		Size      uint64      `json:"size"`
		Region    string      `json:"region"`
		Offset    uint64      `json:"offset"`
		Field     string      `json:"field,omitempty"`
		Block     int         `json:"block,omitempty"`
		Kind      string      `json:"kind,omitempty"`
		Old       string      `json:"old"`
		New       string      `json:"new"`
		PC        string      `json:"pc"`
		Insn      string      `json:"insn"`
		Exact     bool        `json:"exact"`
		AfterPC   bool        `json:"after_pc,omitempty"`
		By        string      `json:"by"`
		Syscall   string      `json:"syscall,omitempty"`
		Signal    int         `json:"signal,omitempty"`
		Backtrace []jsonFrame `json:"backtrace"`
	}{"write", ev.Seq, ev.Pid, ev.Tid, fmt.Sprintf("%#x", ev.Addr), ev.Size, ev.Region, ev.Offset, ev.Field, ev.Block, ev.Kind,
		hexValue(ev.Old), hexValue(ev.New), fmt.Sprintf("%#x", ev.PC), ev.Insn, ev.Exact, ev.AfterPC,
		by(ev), ev.Syscall, ev.Signal, bt})
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}

// The hand-built JSON line is byte for byte what encoding/json makes, for
// names that need escaping too (C++ templates, quotes, control characters,
// invalid UTF-8, U+2028).
func TestJSONWriteLine(t *testing.T) {
	names := []string{
		"counter", "std::vector<int, std::allocator<int> >::push_back(int&&)", `say "hi"\now`,
		"tab\there\x01\x1f", "bad \xff\xfe utf8", "line\u2028sep\u2029", "ünïcødé ✓", "",
	}
	for i, name := range names {
		for _, ev := range []*Write{
			{Seq: i, Pid: 7, Tid: 8, Region: name, Addr: 0x1000, Size: 8, Old: make([]byte, 8),
				New: []byte{1, 2, 3, 4, 5, 6, 7, 8}, PC: 0x401000, Insn: "mov qword ptr [rip+0x2ee5], rax", Exact: true,
				Backtrace: []Frame{
					{PC: 0x401000, Func: name, Offset: 42, Module: "/bin/" + name, File: name + ".c", Line: 10,
						Args: []Arg{{Name: "n", Value: "5"}, {Name: name, Value: ""}}},
					{PC: 0x401100},
				}},
			{Seq: 1 << 40, Pid: 1, Tid: 1, Region: name, Addr: ^uint64(0),
				Size: 16, Old: bytes.Repeat([]byte{0xab}, 16), New: make([]byte, 16), PC: 0, AfterPC: true, Syscall: "read"},
			{Region: name, Old: []byte{}, New: []byte{9}, Signal: 10},
			{Region: "cfg", Field: name + ".limits[3]", Offset: 12, Old: []byte{1}, New: []byte{2}},
			{Region: "heap#3", Block: 3, Kind: "use-after-free", Offset: 24, Old: []byte{1}, New: []byte{2}},
		} {
			var out bytes.Buffer
			r := New("json", &out)
			if err := r.Write(ev); err != nil {
				t.Fatal(err)
			}
			if err := r.Flush(); err != nil {
				t.Fatal(err)
			}
			if want := jsonWriteEvent(ev); !bytes.Equal(out.Bytes(), want) {
				t.Errorf("name %q:\n got %s\nwant %s", name, out.Bytes(), want)
			}
		}
	}
}

// The report's own table of signal names is the one the text writer used
// to get from x/sys/unix, real-time signals ("") included.
func TestSignalNames(t *testing.T) {
	for n := -1; n <= 65; n++ {
		if got, want := signalName(n), unix.SignalName(unix.Signal(n)); got != want {
			t.Errorf("signal %d: %q, want %q", n, got, want)
		}
	}
}

// BenchmarkReportJSON: formatting one write as a JSON line.
func BenchmarkReportJSON(b *testing.B) {
	rep := New("json", io.Discard)
	ev := &Write{Seq: 1, Pid: 1, Tid: 1, Region: "counter", Addr: 0x1000, Size: 8, Old: make([]byte, 8),
		New: []byte{1, 0, 0, 0, 0, 0, 0, 0}, PC: 0x401000, Insn: "mov qword ptr [rip+0x2ee5], rax", Exact: true,
		Backtrace: []Frame{{PC: 0x401000, Func: "worker", Offset: 42, Module: "/bin/prog", File: "prog.c", Line: 10},
			{PC: 0x401100, Func: "main", Offset: 12, Module: "/bin/prog", File: "prog.c", Line: 20}},
	}
	for i := 0; i < b.N; i++ {
		if err := rep.Write(ev); err != nil {
			b.Fatal(err)
		}
	}
}

// jsonHeapEvent is a heap event's line as encoding/json builds it.
func jsonHeapEvent(h *Heap) []byte {
	bt := make([]jsonFrame, len(h.Backtrace))
	for i, f := range h.Backtrace {
		bt[i] = jsonFrame{fmt.Sprintf("%#x", f.PC), f.Func, f.Offset, f.Module, f.File, f.Line, f.Args}
	}
	from, size := "", &h.Size
	if h.Event == "realloc" {
		from = fmt.Sprintf("%#x", h.From)
	}
	if h.Event == "free" {
		size = nil
	}
	b, err := json.Marshal(struct {
		Event     string      `json:"event"`
		Block     int         `json:"block"`
		From      string      `json:"from,omitempty"`
		Addr      string      `json:"addr"`
		Size      *uint64     `json:"size,omitempty"`
		Fn        string      `json:"fn"`
		Pid       int         `json:"pid"`
		Tid       int         `json:"tid"`
		Backtrace []jsonFrame `json:"backtrace"`
	}{h.Event, h.Block, from, fmt.Sprintf("%#x", h.Addr), size, h.Fn, h.Pid, h.Tid, bt})
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}

// The heap events' hand-built lines are encoding/json's too.
func TestJSONHeapLine(t *testing.T) {
	bt := []Frame{{PC: 0x401000, Func: "operator new(unsigned long)", Offset: 4, Module: "/usr/lib/libstdc++.so.6"}, {PC: 0x401100, Func: "main", File: "a.c", Line: 3}}
	for _, h := range []*Heap{
		{Event: "alloc", Block: 1, Addr: 0x5000, Size: 40, Fn: "malloc", Pid: 7, Tid: 8, Backtrace: bt},
		{Event: "alloc", Block: 2, Addr: 0x5040, Size: 0, Fn: "calloc", Pid: 7, Tid: 9},
		{Event: "realloc", Block: 1, From: 0x5000, Addr: 0x9000, Size: 80, Fn: "realloc", Pid: 7, Tid: 8},
		{Event: "free", Block: 1, Addr: 0x9000, Fn: "free", Pid: 7, Tid: 8, Backtrace: bt},
	} {
		var out bytes.Buffer
		r := New("json", &out)
		if err := r.Heap(h); err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(); err != nil {
			t.Fatal(err)
		}
		if want := jsonHeapEvent(h); !bytes.Equal(out.Bytes(), want) {
			t.Errorf("%s:\n got %s\nwant %s", h.Event, out.Bytes(), want)
		}
	}
}

// An --addr region is named by its address once; a symbol region by its
// name and address.
func TestTextStart(t *testing.T) {
	var out bytes.Buffer
	r := NewText(&out, TextOptions{})
	if err := r.Start(7, "page", []Region{{Name: "0x1000", Addr: 0x1000, Len: 64}, {Name: "cfg", Addr: 0x2000, Len: 8}}); err != nil {
		t.Fatal(err)
	}
	want := "memtrap: watching 0x1000, 64 bytes, in process 7 (engine page)\n" +
		"memtrap: watching cfg at 0x2000, 8 bytes, in process 7 (engine page)\n"
	if out.String() != want {
		t.Errorf("got\n%swant\n%s", out.String(), want)
	}
}

// textWriteOracle is a write's text as fmt built it before the text
// reporter built it by hand: the oracle for the hand-built one (r for its
// colours and paths; its byte view of a wide write is the reporter's).
func textWriteOracle(r *textReporter, ev *Write) string {
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	kind := ""
	if ev.Kind != "" {
		kind = " " + r.paint(ansiBold+ansiRed, "["+ev.Kind+"]")
	}
	where := fmt.Sprintf("%s+%d (%#x)", ev.Region, ev.Offset, ev.Addr)
	if ev.Field != "" {
		where = fmt.Sprintf("%s (%s+%d, %#x)", r.paint(ansiBold, ev.Field), ev.Region, ev.Offset, ev.Addr)
	}
	if len(ev.Old) <= 8 && len(ev.New) <= 8 {
		fmt.Fprintf(w, "#%d tid %d wrote %s%s, %d byte%s: %s -> %s\n", ev.Seq, ev.Tid, where, kind, ev.Size, plural(ev.Size),
			r.paint(ansiRed, fmt.Sprintf("%#x", leValue(ev.Old))), r.paint(ansiGreen, fmt.Sprintf("%#x", leValue(ev.New))))
	} else {
		fmt.Fprintf(w, "#%d tid %d wrote %s%s, %d byte%s:\n", ev.Seq, ev.Tid, where, kind, ev.Size, plural(ev.Size))
		saved := r.w
		r.w = w
		r.bytesView(ev.Old, ev.New)
		r.w = saved
	}
	switch {
	case ev.Syscall != "":
		fmt.Fprintf(w, "    kernel write by %s, syscall returning to %#x\n", r.paint(ansiYellow, ev.Syscall+"(2)"), ev.PC)
	case ev.Signal != 0:
		fmt.Fprintf(w, "    kernel write: the %s frame for its handler, interrupting %#x\n", r.paint(ansiYellow, signalName(ev.Signal)), ev.PC)
	case ev.AfterPC:
		fmt.Fprintf(w, "    just before %#x (debug registers trap after the store)\n", ev.PC)
	case ev.Insn == "":
		fmt.Fprintf(w, "    at %#x: (undecodable instruction; write seen by comparison)\n", ev.PC)
	default:
		fmt.Fprintf(w, "    at %#x: %s\n", ev.PC, ev.Insn)
	}
	for i, f := range ev.Backtrace {
		var b strings.Builder
		if f.Func != "" {
			fn := f.Func
			if i == 0 {
				fn = r.paint(ansiBold+ansiCyan, fn)
			}
			fmt.Fprintf(&b, "%s+%#x", fn, f.Offset)
			if f.Args != nil {
				b.WriteString(" (")
				for j, a := range f.Args {
					if j > 0 {
						b.WriteString(", ")
					}
					v := a.Value
					if v == "" {
						v = "<optimized out>"
					}
					fmt.Fprintf(&b, "%s=%s", a.Name, v)
				}
				b.WriteString(")")
			}
		} else {
			fmt.Fprintf(&b, "%#x", f.PC)
		}
		if f.Module != "" {
			fmt.Fprintf(&b, " (%s)", r.path(f.Module))
		}
		if f.File != "" {
			fmt.Fprintf(&b, " %s:%d", r.path(f.File), f.Line)
		}
		fmt.Fprintf(w, "    #%-2d %s\n", i, b.String())
	}
	w.Flush()
	return out.String()
}

// leValue is up to 8 bytes as a little-endian number.
func leValue(b []byte) uint64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// The hand-built text of a write is byte for byte the fmt-built one's,
// with colours and without, paths shortened or not, the same frames again
// (from the per-address cache) and a frame of the same address whose
// function differs (a library mapped again elsewhere).
func TestTextWriteLines(t *testing.T) {
	frames := []Frame{
		{PC: 0x401000, Func: "worker", Offset: 0x2a, Module: "/src/app/bin/prog", File: "/src/app/prog.c", Line: 10,
			Args: []Arg{{Name: "n", Value: "5"}, {Name: "p", Value: ""}}},
		{PC: 0x401100, Func: "main", Offset: 0, Module: "/bin/prog", File: "prog.c", Line: 20, Args: []Arg{}},
		{PC: 0x7f0000001234},
		{PC: 0x401200, Func: "std::vector<int>::push_back(int&&)", Offset: 3, Module: "/lib/libstdc++.so.6"},
	}
	evs := []*Write{
		{Seq: 1, Pid: 7, Tid: 8, Region: "counter", Addr: 0x1000, Size: 8, Old: make([]byte, 8),
			New: []byte{1, 2, 3, 4, 5, 6, 7, 8}, PC: 0x401000, Insn: "mov qword ptr [rip+0x2ee5], rax", Exact: true, Backtrace: frames},
		{Seq: 12345678901, Tid: 1, Region: "buf", Offset: 3, Addr: 0xffffffffffffffff, Size: 1, Old: []byte{0}, New: []byte{0xff},
			Backtrace: frames[1:]},
		{Seq: 2, Tid: 9, Region: "buf", Size: 16, Old: bytes.Repeat([]byte{0xab}, 16), New: []byte("hello, world!\x00\x01\x02"),
			PC: 0x401000, Syscall: "read", Backtrace: frames[:1]},
		{Seq: 3, Tid: 9, Region: "buf", Size: 100, Old: make([]byte, 100), New: bytes.Repeat([]byte{'x'}, 100), PC: 0x10, Signal: 10},
		{Seq: 4, Tid: 9, Region: "cfg", Field: "cfg.limits[3]", Offset: 12, Addr: 0x2000, Size: 1, Old: []byte{1}, New: []byte{2},
			AfterPC: true, PC: 0x20},
		{Seq: 5, Tid: 9, Region: "heap#3", Block: 3, Kind: "use-after-free", Offset: 24, Size: 2, Old: []byte{1, 0}, New: []byte{2, 0}},
		{Seq: 6, Tid: 9, Region: "x", Old: []byte{}, New: []byte{}, Signal: 40},
		{Seq: 7, Tid: 9, Region: "counter", Size: 8, Old: make([]byte, 8), New: make([]byte, 8), PC: 0x401000,
			Insn: "mov", Backtrace: []Frame{{PC: 0x401000, Func: "other", Offset: 1, Module: "/bin/prog"}}},
	}
	for _, o := range []TextOptions{{}, {Color: true}, {Dir: "/src/app"}, {Color: true, Dir: "/src/app", Sync: true}} {
		var out bytes.Buffer
		r := NewText(&out, o).(*textReporter)
		oracle := &textReporter{o: o}
		var want strings.Builder
		for range 2 {
			for _, ev := range evs {
				if err := r.Write(ev); err != nil {
					t.Fatal(err)
				}
				want.WriteString(textWriteOracle(oracle, ev))
			}
		}
		if err := r.Flush(); err != nil {
			t.Fatal(err)
		}
		if out.String() != want.String() {
			t.Errorf("options %+v:\n got %q\nwant %q", o, out.String(), want.String())
		}
	}
}

// BenchmarkReportText: formatting one write, 8 frames with arguments, as
// text.
func BenchmarkReportText(b *testing.B) {
	rep := New("text", io.Discard)
	var frames []Frame
	for i := range 8 {
		frames = append(frames, Frame{PC: 0x401000 + uint64(i)*0x100, Func: fmt.Sprint("fn", i), Offset: 42, Module: "/bin/prog",
			File: "prog.c", Line: 10 + i, Args: []Arg{{Name: "n", Value: "5"}, {Name: "p", Value: "0x7ffd1234"}}})
	}
	ev := &Write{Seq: 1, Pid: 1, Tid: 1, Region: "counter", Addr: 0x1000, Size: 8, Old: make([]byte, 8),
		New: []byte{1, 0, 0, 0, 0, 0, 0, 0}, PC: 0x401000, Insn: "mov qword ptr [rip+0x2ee5], rax", Exact: true, Backtrace: frames}
	for i := 0; i < b.N; i++ {
		if err := rep.Write(ev); err != nil {
			b.Fatal(err)
		}
	}
}
