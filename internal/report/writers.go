package report

import (
	"fmt"
	"strings"
)

// Writer is one writing instruction and how often it wrote: a row of the
// --summary table, as perf report shows where time goes.
type Writer struct {
	PC      uint64
	Func    string // "" if unknown
	Offset  uint64
	File    string
	Line    int
	Syscall string // the system call (or "signal frame") of a kernel write
	Count   int
	Tids    []int // ascending
	Total   int   // writes reported in all: Count's share is of it
}

// SignalString names signal n (SIGSEGV), or "signal N" for one with no
// name (real-time).
func SignalString(n int) string {
	if s := signalName(n); s != "" {
		return s
	}
	return fmt.Sprintf("signal %d", n)
}

// where is a writer's function and line as the table shows them.
func (w Writer) where() (fn, line string) {
	fn = fmt.Sprintf("%#x", w.PC)
	if w.Func != "" {
		fn = fmt.Sprintf("%s+%#x", w.Func, w.Offset)
	}
	if w.Syscall != "" {
		fn += " [" + w.Syscall + "]"
	}
	if w.File != "" {
		line = fmt.Sprintf("%s:%d", w.File, w.Line)
	}
	return fn, line
}

func share(count, total int) string {
	if total <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(count)/float64(total))
}

// WriteTable renders writers as the text table of --summary and of
// memtrap report.
func WriteTable(b *strings.Builder, ws []Writer) {
	fw, lw := len("function"), len("file:line")
	for _, w := range ws {
		fn, line := w.where()
		fw, lw = max(fw, len(fn)), max(lw, len(line))
	}
	fmt.Fprintf(b, "  %8s %7s  %-*s  %-*s  %s\n", "writes", "share", fw, "function", lw, "file:line", "threads")
	for _, w := range ws {
		fn, line := w.where()
		tids := make([]string, len(w.Tids))
		for i, t := range w.Tids {
			tids[i] = fmt.Sprint(t)
		}
		threads := strings.Join(tids, " ")
		if len(tids) > 4 {
			threads = fmt.Sprintf("%d (%s ...)", len(tids), strings.Join(tids[:4], " "))
		}
		fmt.Fprintf(b, "  %8d %7s  %-*s  %-*s  %s\n", w.Count, share(w.Count, w.Total), fw, fn, lw, line, threads)
	}
}

func (r *textReporter) Writers(ws []Writer) error {
	var b strings.Builder
	total := 0
	for _, w := range ws {
		total += w.Count
	}
	fmt.Fprintf(&b, "memtrap: writers of the watched memory, %d write%s from %d instruction%s:\n", total, plural(uint64(total)), len(ws), plural(uint64(len(ws))))
	short := make([]Writer, len(ws))
	for i, w := range ws {
		w.File = r.path(w.File)
		short[i] = w
	}
	WriteTable(&b, short)
	r.w.WriteString(b.String())
	return r.w.Flush()
}

// jsonWriter is one writer in the summary event.
type jsonWriter struct {
	Func    string `json:"func,omitempty"`
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	PC      string `json:"pc"`
	Syscall string `json:"syscall,omitempty"`
	Count   int    `json:"count"`
	Tids    []int  `json:"tids"`
}

func (r *jsonReporter) Writers(ws []Writer) error {
	out := make([]jsonWriter, len(ws))
	for i, w := range ws {
		out[i] = jsonWriter{Func: w.Func, File: w.File, Line: w.Line, PC: fmt.Sprintf("%#x", w.PC), Syscall: w.Syscall, Count: w.Count, Tids: w.Tids}
	}
	return r.emit(struct {
		Event   string       `json:"event"`
		Writers []jsonWriter `json:"writers"`
	}{"summary", out})
}
