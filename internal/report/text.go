package report

import (
	"bufio"
	"fmt"
	"path/filepath"
	"strings"
)

// textReporter is the report for people.
type textReporter struct {
	w     *bufio.Writer
	o     TextOptions
	short map[string]string // path's answers: the same few paths at every write
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

func (r *textReporter) Write(ev *Write) error {
	w := r.w
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
			r.paint(ansiRed, hexValue(ev.Old)), r.paint(ansiGreen, hexValue(ev.New)))
	} else {
		fmt.Fprintf(w, "#%d tid %d wrote %s%s, %d byte%s:\n", ev.Seq, ev.Tid, where, kind, ev.Size, plural(ev.Size))
		r.bytesView(ev.Old, ev.New)
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
		fmt.Fprintf(w, "    #%-2d %s\n", i, r.frameString(f, i == 0))
	}
	return r.flushed()
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
			fmt.Fprintf(w, "heap#%d: realloc resized it in place to %d byte%s, tid %d\n", h.Block, h.Size, plural(h.Size), h.Tid)
		} else {
			fmt.Fprintf(w, "heap#%d: realloc moved it from %#x to %#x, %d byte%s, tid %d\n", h.Block, h.From, h.Addr, h.Size, plural(h.Size), h.Tid)
		}
	default:
		fmt.Fprintf(w, "heap#%d: %s(%#x), tid %d\n", h.Block, h.Fn, h.Addr, h.Tid)
	}
	for i, f := range h.Backtrace {
		fmt.Fprintf(w, "    #%-2d %s\n", i, r.frameString(f, false))
	}
	return r.flushed()
}

// frameString is one backtrace line; the writer's own function (first)
// stands out in colour.
func (r *textReporter) frameString(f Frame, first bool) string {
	var b strings.Builder
	if f.Func != "" {
		fn := f.Func
		if first {
			fn = r.paint(ansiBold+ansiCyan, fn)
		}
		fmt.Fprintf(&b, "%s+%#x", fn, f.Offset)
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
		fmt.Fprintf(&b, " (%s)", r.path(f.Module))
	}
	if f.File != "" {
		fmt.Fprintf(&b, " %s:%d", r.path(f.File), f.Line)
	}
	return b.String()
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
