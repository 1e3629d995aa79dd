package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
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
