package report

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// Region is a watched region as the report names it.
type Region struct {
	Name string // as the user named it: a symbol, or an address
	Addr uint64
	Len  uint64
}

// Write is one reported write with its backtrace, ready to print.
type Write struct {
	Seq    int
	Pid    int
	Tid    int
	Region string // the name of the region written
	Offset uint64 // of Addr from the region's start
	// Field names Addr by the region's DWARF type, where it has one:
	// "cfg.limits.max", "session.token[3]"; "" otherwise.
	Field string
	// Block is the heap block the region is (heap#Block), 0 if none.
	Block int
	// Kind says what the write is besides a write: "use-after-free" (the
	// block was freed), "overflow" (past the block's end), or "".
	Kind string
	Addr uint64 // first watched byte written
	Size uint64
	Old  []byte
	New  []byte
	PC   uint64
	Insn string // Intel syntax; "" if undecodable
	// Exact is false when the write is known only from the bytes that
	// changed: a store of an equal value is then invisible.
	Exact bool
	// Syscall names the system call that made the write in the kernel
	// ("read"); PC is then the instruction after the syscall instruction.
	Syscall string
	// Signal: the kernel wrote the frame of this signal for its handler;
	// PC is where the thread was interrupted.
	Signal int
	// AfterPC: PC is the instruction after the write (debug registers
	// trap once the store is done) and Insn is empty.
	AfterPC   bool
	Backtrace []Frame
}

// Frame is one symbolized backtrace frame.
type Frame struct {
	PC     uint64
	Func   string // "" if unknown
	Offset uint64
	Module string
	File   string // source file, "" if unknown
	Line   int
	Args   []Arg // the function's parameters, where DWARF says where they are
}

// Arg is one parameter of a frame's function; Value "" means <optimized out>.
type Arg struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Heap is a watched heap block's life: its allocation (Event "alloc"), its
// move by realloc ("realloc", From its old address), its free ("free").
type Heap struct {
	Event     string
	Block     int
	Addr      uint64
	From      uint64
	Size      uint64
	Fn        string // the allocator function: malloc, calloc, realloc, free, ...
	Pid, Tid  int
	Backtrace []Frame // the allocation's, where a backtrace was asked for
}

// Summary ends a report.
type Summary struct {
	Writes, Faults int
	Detached       bool // attach mode: memtrap let the target go
	Code           int  // exit code, if !Signaled
	Signal         int  // killing signal, if Signaled
	Signaled       bool
}

// Reporter formats events. Text for people, JSON Lines for tools: keys and
// their meaning are documented in README and stay stable.
type Reporter interface {
	Start(pid int, engine string, regions []Region) error
	// Write buffers: the event reaches the stream at the next Flush, or
	// any other event, or when the buffer fills.
	Write(ev *Write) error
	Flush() error
	Note(msg string) error
	Unmapped(r Region, how string) error
	// Heap buffers, as Write does.
	Heap(h *Heap) error
	// Writers ends a report with the table of who wrote (--summary).
	Writers(ws []Writer) error
	End(s Summary) error
}

// New returns the reporter for format ("json" for JSON Lines, else text)
// over w. It buffers: w sees write events at Flush.
func New(format string, w io.Writer) Reporter {
	bw := bufio.NewWriter(w)
	if format == "json" {
		return &jsonReporter{w: bw}
	}
	return &textReporter{w: bw}
}

// TextOptions tune the text report for where it goes.
type TextOptions struct {
	// Color marks the writer's function, old -> new and the kind of a
	// write with ANSI colours.
	Color bool
	// Dir, if set, is the working directory: paths under it are shown
	// relative to it where that is shorter.
	Dir string
	// Sync flushes every event at once: on a terminal, each report
	// appears before the writer runs on and prints anything of its own.
	Sync bool
}

// NewText returns a text reporter over w.
func NewText(w io.Writer, o TextOptions) Reporter {
	return &textReporter{w: bufio.NewWriter(w), o: o}
}

// hexValue renders written bytes: a little-endian number up to 8 bytes,
// else the bytes in memory order.
func hexValue(b []byte) string {
	if len(b) <= 8 {
		var v uint64
		for i := len(b) - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[i])
		}
		return "0x" + strconv.FormatUint(v, 16)
	}
	return hex.EncodeToString(b)
}

func plural(n uint64) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// signalNames are Linux's names of the standard signals on x86-64, by
// number, as golang.org/x/sys/unix.SignalName gives them (its test holds
// them to it): a report is only text, and needs no system interface.
var signalNames = [...]string{
	1: "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE",
	"SIGKILL", "SIGUSR1", "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT",
	"SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU",
	"SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS",
}

// signalName is "" for a real-time signal, as unix.SignalName is.
func signalName(n int) string {
	if n < 0 || n >= len(signalNames) {
		return ""
	}
	return signalNames[n]
}

type jsonReporter struct {
	w     *bufio.Writer
	line  []byte               // Write's line, reused
	heads map[uint64]frameHead // frameHead's
}

func (r *jsonReporter) emit(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	r.w.Write(b)
	r.w.WriteByte('\n')
	return r.w.Flush()
}

// jsonSchema is the version of the JSON Lines format, in the watch event:
// it changes when a key changes meaning or goes; new keys do not change it.
const jsonSchema = 1

type jsonRegion struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	Len  uint64 `json:"len"`
}

func (r *jsonReporter) Start(pid int, engine string, regions []Region) error {
	rs := make([]jsonRegion, len(regions))
	for i, rg := range regions {
		rs[i] = jsonRegion{rg.Name, fmt.Sprintf("%#x", rg.Addr), rg.Len}
	}
	return r.emit(struct {
		Event   string       `json:"event"`
		Schema  int          `json:"schema"`
		Pid     int          `json:"pid"`
		Engine  string       `json:"engine"`
		Regions []jsonRegion `json:"regions"`
	}{"watch", jsonSchema, pid, engine, rs})
}

// Write appends the event to the output; it reaches the stream at the next
// Flush (or when the buffer fills). The line is built by hand: through
// encoding/json's reflection it cost about 8 us per write with a
// backtrace, on the write path. jsonWriteEvent, in the tests, is the
// reflection-built oracle it must match.
func (r *jsonReporter) Write(ev *Write) error {
	b := r.line[:0]
	b = append(b, `{"event":"write","seq":`...)
	b = strconv.AppendInt(b, int64(ev.Seq), 10)
	b = append(b, `,"pid":`...)
	b = strconv.AppendInt(b, int64(ev.Pid), 10)
	b = append(b, `,"tid":`...)
	b = strconv.AppendInt(b, int64(ev.Tid), 10)
	b = append(b, `,"addr":"0x`...)
	b = strconv.AppendUint(b, ev.Addr, 16)
	b = append(b, `","size":`...)
	b = strconv.AppendUint(b, ev.Size, 10)
	b = append(b, `,"region":`...)
	b = appendJSONString(b, ev.Region)
	b = append(b, `,"offset":`...)
	b = strconv.AppendUint(b, ev.Offset, 10)
	if ev.Field != "" {
		b = append(b, `,"field":`...)
		b = appendJSONString(b, ev.Field)
	}
	if ev.Block != 0 {
		b = append(b, `,"block":`...)
		b = strconv.AppendInt(b, int64(ev.Block), 10)
	}
	if ev.Kind != "" {
		b = append(b, `,"kind":`...)
		b = appendJSONString(b, ev.Kind)
	}
	b = append(b, `,"old":`...)
	b = appendJSONString(b, hexValue(ev.Old))
	b = append(b, `,"new":`...)
	b = appendJSONString(b, hexValue(ev.New))
	b = append(b, `,"pc":"0x`...)
	b = strconv.AppendUint(b, ev.PC, 16)
	b = append(b, `","insn":`...)
	b = appendJSONString(b, ev.Insn)
	b = append(b, `,"exact":`...)
	b = strconv.AppendBool(b, ev.Exact)
	if ev.AfterPC {
		b = append(b, `,"after_pc":true`...)
	}
	b = append(b, `,"by":`...)
	b = appendJSONString(b, by(ev))
	if ev.Syscall != "" {
		b = append(b, `,"syscall":`...)
		b = appendJSONString(b, ev.Syscall)
	}
	if ev.Signal != 0 {
		b = append(b, `,"signal":`...)
		b = strconv.AppendInt(b, int64(ev.Signal), 10)
	}
	b = append(b, `,"backtrace":`...)
	b = r.appendFrames(b, ev.Backtrace)
	b = append(b, "}\n"...)
	r.line = b
	_, err := r.w.Write(b)
	return err
}

// appendFrames appends a backtrace as a JSON array. The part of a frame
// that only its code address decides (function, module, file, line) is
// built once per address: escaping the same long paths at every write was
// a good part of a report's cost.
func (r *jsonReporter) appendFrames(b []byte, frames []Frame) []byte {
	b = append(b, '[')
	for i, f := range frames {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, r.frameHead(f)...)
		if len(f.Args) > 0 {
			b = append(b, `,"args":[`...)
			for j, a := range f.Args {
				if j > 0 {
					b = append(b, ',')
				}
				b = append(b, `{"name":`...)
				b = appendJSONString(b, a.Name)
				b = append(b, `,"value":`...)
				b = appendJSONString(b, a.Value)
				b = append(b, '}')
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

// frameHead is a frame's JSON object up to its args, unclosed.
func (r *jsonReporter) frameHead(f Frame) []byte {
	if h, ok := r.heads[f.PC]; ok && h.f.Func == f.Func && h.f.Offset == f.Offset && h.f.Module == f.Module && h.f.File == f.File && h.f.Line == f.Line {
		return h.b
	}
	b := []byte(`{"pc":"0x`)
	b = strconv.AppendUint(b, f.PC, 16)
	b = append(b, '"')
	if f.Func != "" {
		b = append(b, `,"func":`...)
		b = appendJSONString(b, f.Func)
	}
	b = append(b, `,"offset":`...)
	b = strconv.AppendUint(b, f.Offset, 10)
	if f.Module != "" {
		b = append(b, `,"module":`...)
		b = appendJSONString(b, f.Module)
	}
	if f.File != "" {
		b = append(b, `,"file":`...)
		b = appendJSONString(b, f.File)
	}
	if f.Line != 0 {
		b = append(b, `,"line":`...)
		b = strconv.AppendInt(b, int64(f.Line), 10)
	}
	if r.heads == nil || len(r.heads) >= 16384 {
		r.heads = map[uint64]frameHead{}
	}
	f.Args = nil
	r.heads[f.PC] = frameHead{f, b}
	return b
}

type frameHead struct {
	f Frame
	b []byte
}

// Heap appends a heap block's event.
func (r *jsonReporter) Heap(h *Heap) error {
	b := r.line[:0]
	b = append(b, `{"event":`...)
	b = appendJSONString(b, h.Event)
	b = append(b, `,"block":`...)
	b = strconv.AppendInt(b, int64(h.Block), 10)
	if h.Event == "realloc" {
		b = append(b, `,"from":"0x`...)
		b = strconv.AppendUint(b, h.From, 16)
		b = append(b, '"')
	}
	b = append(b, `,"addr":"0x`...)
	b = strconv.AppendUint(b, h.Addr, 16)
	b = append(b, '"')
	if h.Event != "free" {
		b = append(b, `,"size":`...)
		b = strconv.AppendUint(b, h.Size, 10)
	}
	b = append(b, `,"fn":`...)
	b = appendJSONString(b, h.Fn)
	b = append(b, `,"pid":`...)
	b = strconv.AppendInt(b, int64(h.Pid), 10)
	b = append(b, `,"tid":`...)
	b = strconv.AppendInt(b, int64(h.Tid), 10)
	b = append(b, `,"backtrace":`...)
	b = r.appendFrames(b, h.Backtrace)
	b = append(b, "}\n"...)
	r.line = b
	_, err := r.w.Write(b)
	return err
}

// appendJSONString appends s as a JSON string, escaped as encoding/json
// escapes it: quotes, backslashes, control characters, <, > and & (as
// \u003c...), U+2028 and U+2029, and invalid UTF-8 as U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Flush sends what Write buffered.
func (r *jsonReporter) Flush() error { return r.w.Flush() }

func by(ev *Write) string {
	if ev.Syscall != "" || ev.Signal != 0 {
		return "kernel"
	}
	return "user"
}

func (r *jsonReporter) Unmapped(rg Region, how string) error {
	return r.emit(struct {
		Event  string `json:"event"`
		Region string `json:"region"`
		Addr   string `json:"addr"`
		Len    uint64 `json:"len"`
		How    string `json:"how"`
	}{"unmapped", rg.Name, fmt.Sprintf("%#x", rg.Addr), rg.Len, how})
}

func (r *jsonReporter) Note(msg string) error {
	return r.emit(struct {
		Event   string `json:"event"`
		Message string `json:"message"`
	}{"note", msg})
}

func (r *jsonReporter) End(s Summary) error {
	if s.Detached {
		return r.emit(struct {
			Event  string `json:"event"`
			Writes int    `json:"writes"`
			Faults int    `json:"faults"`
		}{"detach", s.Writes, s.Faults})
	}
	if s.Signaled {
		return r.emit(struct {
			Event  string `json:"event"`
			Signal int    `json:"signal"`
			Writes int    `json:"writes"`
			Faults int    `json:"faults"`
		}{"exit", s.Signal, s.Writes, s.Faults})
	}
	return r.emit(struct {
		Event  string `json:"event"`
		Code   int    `json:"code"`
		Writes int    `json:"writes"`
		Faults int    `json:"faults"`
	}{"exit", s.Code, s.Writes, s.Faults})
}
