package report

import (
	"bufio"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// textReporter is the report for people.
type textReporter struct {
	w     *bufio.Writer
	o     TextOptions
	short map[string]string // path's answers: the same few paths at every write
	line  []byte            // Write's lines, reused
	heads map[uint64]textHead
}

// ANSI colours, used only with TextOptions.Color.
const (
	ansiBold   = "\x1b[1m"
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiCyan   = "\x1b[36m"
	ansiReset  = "\x1b[0m"
)

func (r *textReporter) paint(code, s string) string {
	if !r.o.Color || s == "" {
		return s
	}
	return code + s + ansiReset
}

// path shortens a path under the working directory to one relative to
// it.
func (r *textReporter) path(p string) string {
	if r.o.Dir == "" || !filepath.IsAbs(p) {
		return p
	}
	if s, ok := r.short[p]; ok {
		return s
	}
	s := p
	if rel, err := filepath.Rel(r.o.Dir, p); err == nil && len(rel) < len(p) && !strings.HasPrefix(rel, "..") {
		s = rel
	}
	if r.short == nil || len(r.short) >= 4096 {
		r.short = map[string]string{}
	}
	r.short[p] = s
	return s
}

// flushed ends an event: at once with Sync, else when the buffer fills or
// the session flushes.
func (r *textReporter) flushed() error {
	if r.o.Sync {
		return r.w.Flush()
	}
	return nil
}

func (r *textReporter) Start(pid int, engine string, regions []Region) error {
	for _, rg := range regions {
		if rg.Name == fmt.Sprintf("%#x", rg.Addr) {
			// An --addr region: its name is its address already.
			fmt.Fprintf(r.w, "memtrap: watching %s, %d bytes, in process %d (engine %s)\n", rg.Name, rg.Len, pid, engine)
			continue
		}
		fmt.Fprintf(r.w, "memtrap: watching %s at %#x, %d bytes, in process %d (engine %s)\n", rg.Name, rg.Addr, rg.Len, pid, engine)
	}
	return r.w.Flush()
}

// Write appends the event's lines to the output. They are built by hand
// (and a frame's text its code address decides, once per address): with
// fmt, the text report cost more than the rest of the fast engine's write
// path. textWriteOracle, in the tests, is the fmt-built one it must match.
func (r *textReporter) Write(ev *Write) error {
	b := r.line[:0]
	b = append(b, '#')
	b = strconv.AppendInt(b, int64(ev.Seq), 10)
	b = append(b, " tid "...)
	b = strconv.AppendInt(b, int64(ev.Tid), 10)
	b = append(b, " wrote "...)
	if ev.Field != "" {
		b = append(b, r.paint(ansiBold, ev.Field)...)
		b = append(b, " ("...)
		b = r.appendWhere(b, ev)
		b = append(b, ')')
	} else {
		b = append(b, ev.Region...)
		b = append(b, '+')
		b = strconv.AppendUint(b, ev.Offset, 10)
		b = append(b, " (0x"...)
		b = strconv.AppendUint(b, ev.Addr, 16)
		b = append(b, ')')
	}
	if ev.Kind != "" {
		b = append(b, ' ')
		b = append(b, r.paint(ansiBold+ansiRed, "["+ev.Kind+"]")...)
	}
	b = append(b, ", "...)
	b = strconv.AppendUint(b, ev.Size, 10)
	b = append(b, " byte"...)
	b = append(b, plural(ev.Size)...)
	wide := len(ev.Old) > 8 || len(ev.New) > 8
	if !wide {
		b = append(b, ": "...)
		b = append(b, r.paint(ansiRed, hexValue(ev.Old))...)
		b = append(b, " -> "...)
		b = append(b, r.paint(ansiGreen, hexValue(ev.New))...)
		b = append(b, '\n')
	} else {
		b = append(b, ":\n"...)
		r.w.Write(b)
		r.bytesView(ev.Old, ev.New)
		b = b[:0]
	}
	switch {
	case ev.Syscall != "":
		b = append(b, "    kernel write by "...)
		b = append(b, r.paint(ansiYellow, ev.Syscall+"(2)")...)
		b = append(b, ", syscall returning to 0x"...)
		b = strconv.AppendUint(b, ev.PC, 16)
	case ev.Signal != 0:
		b = append(b, "    kernel write: the "...)
		b = append(b, r.paint(ansiYellow, signalName(ev.Signal))...)
		b = append(b, " frame for its handler, interrupting 0x"...)
		b = strconv.AppendUint(b, ev.PC, 16)
	case ev.AfterPC:
		b = append(b, "    just before 0x"...)
		b = strconv.AppendUint(b, ev.PC, 16)
		b = append(b, " (debug registers trap after the store)"...)
	default:
		b = append(b, "    at 0x"...)
		b = strconv.AppendUint(b, ev.PC, 16)
		if ev.Insn == "" {
			b = append(b, ": (undecodable instruction; write seen by comparison)"...)
		} else {
			b = append(b, ": "...)
			b = append(b, ev.Insn...)
		}
	}
	b = append(b, '\n')
	b = r.appendFrames(b, ev.Backtrace, true)
	r.line = b
	r.w.Write(b)
	return r.flushed()
}

// appendWhere appends "region+offset, 0xaddr".
func (r *textReporter) appendWhere(b []byte, ev *Write) []byte {
	b = append(b, ev.Region...)
	b = append(b, '+')
	b = strconv.AppendUint(b, ev.Offset, 10)
	b = append(b, ", 0x"...)
	return strconv.AppendUint(b, ev.Addr, 16)
}

// appendFrames appends a backtrace's lines; the first frame is the
// writer's own if writer says so.
func (r *textReporter) appendFrames(b []byte, frames []Frame, writer bool) []byte {
	for i, f := range frames {
		b = append(b, "    #"...)
		n := len(b)
		b = strconv.AppendInt(b, int64(i), 10)
		for len(b)-n < 2 {
			b = append(b, ' ')
		}
		b = append(b, ' ')
		b = r.appendFrame(b, f, writer && i == 0)
		b = append(b, '\n')
	}
	return b
}

// viewRow and viewRows bound the byte view of a wide write.
const (
	viewRow  = 16
	viewRows = 4
)

// bytesView shows a write wider than 8 bytes as rows of hex bytes with
// their ASCII, old above new, and marks the bytes that changed.
func (r *textReporter) bytesView(old, nw []byte) {
	changed := 0
	for i := range nw {
		if i < len(old) && old[i] != nw[i] {
			changed++
		}
	}
	n := min(len(nw), viewRow*viewRows)
	for off := 0; off < n; off += viewRow {
		end := min(off+viewRow, n)
		var oh, nh, marks strings.Builder
		for i := off; i < end; i++ {
			diff := i < len(old) && old[i] != nw[i]
			o := "  "
			if i < len(old) {
				o = fmt.Sprintf("%02x", old[i])
			}
			nb := fmt.Sprintf("%02x", nw[i])
			m := "  "
			if diff {
				o, nb, m = r.paint(ansiRed, o), r.paint(ansiGreen, nb), "^^"
			}
			oh.WriteString(o + " ")
			nh.WriteString(nb + " ")
			marks.WriteString(m + " ")
		}
		pad := strings.Repeat("   ", viewRow-(end-off))
		fmt.Fprintf(r.w, "    old +%-3d %s%s |%s|\n", off, oh.String(), pad, ascii(old, off, end))
		fmt.Fprintf(r.w, "    new +%-3d %s%s |%s|\n", off, nh.String(), pad, ascii(nw, off, end))
		if m := strings.TrimRight(marks.String(), " "); m != "" {
			fmt.Fprintf(r.w, "              %s\n", m)
		}
	}
	more := ""
	if len(nw) > n {
		more = fmt.Sprintf(", %d more not shown", len(nw)-n)
	}
	fmt.Fprintf(r.w, "    %d of %d bytes changed%s\n", changed, len(nw), more)
}

// ascii is b[lo:hi] as printable ASCII, '.' for the rest (as hexdump -C).
func ascii(b []byte, lo, hi int) string {
	var s strings.Builder
	for i := lo; i < hi; i++ {
		c := byte(' ')
		if i < len(b) {
			c = b[i]
		}
		if c < 0x20 || c > 0x7e {
			c = '.'
		}
		s.WriteByte(c)
	}
	return s.String()
}

func (r *textReporter) Heap(h *Heap) error {
	w := r.w
	switch h.Event {
	case "alloc":
		fmt.Fprintf(w, "heap#%d: %s of %d byte%s at %#x, tid %d\n", h.Block, h.Fn, h.Size, plural(h.Size), h.Addr, h.Tid)
	case "realloc":
		if h.From == h.Addr {
			fmt.Fprintf(w, "heap#%d: %s resized it in place to %d byte%s, tid %d\n", h.Block, h.Fn, h.Size, plural(h.Size), h.Tid)
		} else {
			fmt.Fprintf(w, "heap#%d: %s moved it from %#x to %#x, %d byte%s, tid %d\n", h.Block, h.Fn, h.From, h.Addr, h.Size, plural(h.Size), h.Tid)
		}
	default:
		fmt.Fprintf(w, "heap#%d: %s(%#x), tid %d\n", h.Block, h.Fn, h.Addr, h.Tid)
	}
	r.line = r.appendFrames(r.line[:0], h.Backtrace, false)
	w.Write(r.line)
	return r.flushed()
}

// appendFrame appends one backtrace line; the writer's own function
// (first) stands out in colour.
func (r *textReporter) appendFrame(b []byte, f Frame, first bool) []byte {
	h := r.head(f, first && r.o.Color)
	b = append(b, h.pre...)
	if f.Func != "" && f.Args != nil {
		b = append(b, " ("...)
		for i, a := range f.Args {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = append(b, a.Name...)
			b = append(b, '=')
			if a.Value == "" {
				b = append(b, "<optimized out>"...)
			} else {
				b = append(b, a.Value...)
			}
		}
		b = append(b, ')')
	}
	return append(b, h.post...)
}

// textHead is the text of a frame that its code address decides: before
// its arguments and after them.
type textHead struct {
	f         Frame
	pre, post []byte
}

// head is f's textHead: built once per address (and not kept for the
// coloured writer's frame).
func (r *textReporter) head(f Frame, painted bool) textHead {
	if h, ok := r.heads[f.PC]; ok && !painted && h.f.Func == f.Func && h.f.Offset == f.Offset && h.f.Module == f.Module && h.f.File == f.File && h.f.Line == f.Line {
		return h
	}
	var h textHead
	if f.Func != "" {
		fn := f.Func
		if painted {
			fn = r.paint(ansiBold+ansiCyan, fn)
		}
		h.pre = append(h.pre, fn...)
		h.pre = append(h.pre, "+0x"...)
		h.pre = strconv.AppendUint(h.pre, f.Offset, 16)
	} else {
		h.pre = append(h.pre, "0x"...)
		h.pre = strconv.AppendUint(h.pre, f.PC, 16)
	}
	if f.Module != "" {
		h.post = append(h.post, " ("...)
		h.post = append(h.post, r.path(f.Module)...)
		h.post = append(h.post, ')')
	}
	if f.File != "" {
		h.post = append(h.post, ' ')
		h.post = append(h.post, r.path(f.File)...)
		h.post = append(h.post, ':')
		h.post = strconv.AppendInt(h.post, int64(f.Line), 10)
	}
	if painted {
		return h
	}
	if r.heads == nil || len(r.heads) >= 16384 {
		r.heads = map[uint64]textHead{}
	}
	f.Args = nil
	h.f = f
	r.heads[f.PC] = h
	return h
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

// Flush sends what Write buffered.
func (r *textReporter) Flush() error { return r.w.Flush() }

func (r *textReporter) Unmapped(rg Region, how string) error {
	fmt.Fprintf(r.w, "memtrap: region %s (%#x, %d bytes) lost memory to %s; whatever of it is still mapped stays watched\n", rg.Name, rg.Addr, rg.Len, how)
	return r.w.Flush()
}
