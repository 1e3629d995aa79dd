package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"strings"

	"github.com/memtrap/memtrap/pkg/pagewatch"
)

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

// WriteEvent is a write with its backtrace, ready to print.
type WriteEvent struct {
	*pagewatch.Write
	Backtrace []Frame
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
	Start(pid int, engine string, regions []*pagewatch.Region) error
	Write(ev *WriteEvent) error
	Note(msg string) error
	Unmapped(r *pagewatch.Region, how string) error
	End(s Summary) error
}

func newReporter(format string, w io.Writer) Reporter {
	bw := bufio.NewWriter(w)
	if format == "json" {
		return &jsonReporter{w: bw}
	}
	return &textReporter{w: bw}
}

// hexValue renders written bytes: a little-endian number up to 8 bytes,
// else the bytes in memory order.
func hexValue(b []byte) string {
	if len(b) <= 8 {
		var v uint64
		for i := len(b) - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[i])
		}
		return fmt.Sprintf("%#x", v)
	}
	return hex.EncodeToString(b)
}

type textReporter struct{ w *bufio.Writer }

func (r *textReporter) Start(pid int, engine string, regions []*pagewatch.Region) error {
	for _, rg := range regions {
		fmt.Fprintf(r.w, "memtrap: watching %s at %#x, %d bytes, in process %d (engine %s)\n", rg.Name, rg.Addr, rg.Len, pid, engine)
	}
	return r.w.Flush()
}

func (r *textReporter) Write(ev *WriteEvent) error {
	w := r.w
	fmt.Fprintf(w, "#%d tid %d wrote %s+%d (%#x), %d byte%s: %s -> %s\n",
		ev.Seq, ev.Tid, ev.Region.Name, ev.Offset, ev.Addr, ev.Size, plural(ev.Size), hexValue(ev.Old), hexValue(ev.New))
	switch {
	case ev.Syscall != "":
		fmt.Fprintf(w, "    kernel write by %s(2), syscall returning to %#x\n", ev.Syscall, ev.PC)
	case ev.Signal != 0:
		fmt.Fprintf(w, "    kernel write: the %s frame for its handler, interrupting %#x\n", unix.SignalName(unix.Signal(ev.Signal)), ev.PC)
	case ev.AfterPC:
		fmt.Fprintf(w, "    just before %#x (debug registers trap after the store)\n", ev.PC)
	case ev.Insn == "":
		fmt.Fprintf(w, "    at %#x: (undecodable instruction; write seen by comparison)\n", ev.PC)
	default:
		fmt.Fprintf(w, "    at %#x: %s\n", ev.PC, ev.Insn)
	}
	for i, f := range ev.Backtrace {
		fmt.Fprintf(w, "    #%-2d %s\n", i, frameString(f))
	}
	return w.Flush()
}

func frameString(f Frame) string {
	var b strings.Builder
	if f.Func != "" {
		fmt.Fprintf(&b, "%s+%#x", f.Func, f.Offset)
		if f.Args != nil {
			b.WriteString(" (")
			for i, a := range f.Args {
				if i > 0 {
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
		fmt.Fprintf(&b, " (%s)", f.Module)
	}
	if f.File != "" {
		fmt.Fprintf(&b, " %s:%d", f.File, f.Line)
	}
	return b.String()
}

func plural(n uint64) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func (r *textReporter) Note(msg string) error {
	fmt.Fprintf(r.w, "memtrap: %s\n", msg)
	return r.w.Flush()
}

func (r *textReporter) End(s Summary) error {
	var how string
	switch {
	case s.Detached:
		how = "detached; the target runs on"
	case s.Signaled:
		how = fmt.Sprintf("target killed by signal %d", s.Signal)
	default:
		how = fmt.Sprintf("target exited with status %d", s.Code)
	}
	fmt.Fprintf(r.w, "memtrap: %d write%s reported, %d fault%s taken; %s\n",
		s.Writes, plural(uint64(s.Writes)), s.Faults, plural(uint64(s.Faults)), how)
	return r.w.Flush()
}

type jsonReporter struct{ w *bufio.Writer }

func (r *jsonReporter) emit(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	r.w.Write(b)
	r.w.WriteByte('\n')
	return r.w.Flush()
}

type jsonRegion struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	Len  uint64 `json:"len"`
}

func (r *jsonReporter) Start(pid int, engine string, regions []*pagewatch.Region) error {
	rs := make([]jsonRegion, len(regions))
	for i, rg := range regions {
		rs[i] = jsonRegion{rg.Name, fmt.Sprintf("%#x", rg.Addr), rg.Len}
	}
	return r.emit(struct {
		Event   string       `json:"event"`
		Pid     int          `json:"pid"`
		Engine  string       `json:"engine"`
		Regions []jsonRegion `json:"regions"`
	}{"watch", pid, engine, rs})
}

type jsonFrame struct {
	PC     string `json:"pc"`
	Func   string `json:"func,omitempty"`
	Offset uint64 `json:"offset"`
	Module string `json:"module,omitempty"`
	File   string `json:"file,omitempty"`
	Line   int    `json:"line,omitempty"`
	Args   []Arg  `json:"args,omitempty"`
}

func (r *jsonReporter) Write(ev *WriteEvent) error {
	bt := make([]jsonFrame, len(ev.Backtrace))
	for i, f := range ev.Backtrace {
		bt[i] = jsonFrame{fmt.Sprintf("%#x", f.PC), f.Func, f.Offset, f.Module, f.File, f.Line, f.Args}
	}
	return r.emit(struct {
		Event     string      `json:"event"`
		Seq       int         `json:"seq"`
		Pid       int         `json:"pid"`
		Tid       int         `json:"tid"`
		Addr      string      `json:"addr"`
		Size      uint64      `json:"size"`
		Region    string      `json:"region"`
		Offset    uint64      `json:"offset"`
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
	}{"write", ev.Seq, ev.Pid, ev.Tid, fmt.Sprintf("%#x", ev.Addr), ev.Size, ev.Region.Name, ev.Offset,
		hexValue(ev.Old), hexValue(ev.New), fmt.Sprintf("%#x", ev.PC), ev.Insn, ev.Exact, ev.AfterPC,
		by(ev), ev.Syscall, ev.Signal, bt})
}

func by(ev *WriteEvent) string {
	if ev.Syscall != "" || ev.Signal != 0 {
		return "kernel"
	}
	return "user"
}

func (r *jsonReporter) Unmapped(rg *pagewatch.Region, how string) error {
	return r.emit(struct {
		Event  string `json:"event"`
		Region string `json:"region"`
		Addr   string `json:"addr"`
		Len    uint64 `json:"len"`
		How    string `json:"how"`
	}{"unmapped", rg.Name, fmt.Sprintf("%#x", rg.Addr), rg.Len, how})
}

func (r *textReporter) Unmapped(rg *pagewatch.Region, how string) error {
	fmt.Fprintf(r.w, "memtrap: region %s (%#x, %d bytes) lost memory to %s; whatever of it is still mapped stays watched\n", rg.Name, rg.Addr, rg.Len, how)
	return r.w.Flush()
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
