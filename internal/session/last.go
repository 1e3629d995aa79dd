package session

import (
	"fmt"
	"sort"

	"github.com/memtrap/memtrap/internal/report"
	"github.com/memtrap/memtrap/pkg/pagewatch"
)

// pendingWrite is a write --last keeps: its event is made only if it is
// still among the last ones at the end (its stack was read while the
// writer was stopped, so that costs nothing then).
type pendingWrite func() *report.Write

// writerKey is one writing instruction: a store's address, or a system
// call's return address and name.
type writerKey struct {
	pc      uint64
	syscall string
}

type writerCount struct {
	pid   int // the first process that wrote there: its image names it
	count int
	tids  map[int]bool
	first int // order of appearance, to break ties
}

// deliver hands a reported write on: counted for --summary, then printed
// now, or kept for the end with --last.
func (se *session) deliver(w *pagewatch.Write, event func() *report.Write) error {
	if se.opts.Summary {
		se.tally(w)
	}
	if n := se.opts.Last; n > 0 {
		if len(se.last) < n {
			se.last = append(se.last, event)
		} else {
			se.last[se.lastHead] = event
			se.lastHead = (se.lastHead + 1) % n
		}
		return nil
	}
	return se.rep.Write(event())
}

func (se *session) tally(w *pagewatch.Write) {
	if se.writers == nil {
		se.writers = map[writerKey]*writerCount{}
	}
	k := writerKey{pc: w.PC, syscall: w.Syscall}
	if w.Signal != 0 {
		k.syscall = "signal frame"
	}
	c := se.writers[k]
	if c == nil {
		c = &writerCount{pid: w.Pid, tids: map[int]bool{}, first: len(se.writers)}
		se.writers[k] = c
	}
	c.count++
	c.tids[w.Tid] = true
}

// prepareEnd makes what the end of the report shows while the symbol
// tables are open: the --last writes' events, the --summary table.
func (se *session) prepareEnd(sum report.Summary) {
	n := len(se.last)
	for i := 0; i < n; i++ {
		se.lastEvents = append(se.lastEvents, se.last[(se.lastHead+i)%n]())
	}
	se.last = nil
	if se.opts.Summary {
		se.table = se.writerTable(sum.Writes)
	}
}

// finishReport ends the report: the --last writes, the --summary table,
// then the final line.
func (se *session) finishReport(sum report.Summary) error {
	if n := len(se.lastEvents); n > 0 {
		_ = se.rep.Note(fmt.Sprintf("the last %d of %d write%s, before %s:", n, sum.Writes, plural(sum.Writes), endingOf(sum)))
		for _, ev := range se.lastEvents {
			if err := se.rep.Write(ev); err != nil {
				return err
			}
		}
		if err := se.rep.Flush(); err != nil {
			return err
		}
	}
	if se.opts.Summary {
		if err := se.rep.Writers(se.table); err != nil {
			return err
		}
	}
	return se.rep.End(sum)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// endingOf says how the session ended, for the --last heading.
func endingOf(s report.Summary) string {
	switch {
	case s.Detached:
		return "memtrap let the target go"
	case s.Signaled:
		return report.SignalString(s.Signal)
	}
	return fmt.Sprintf("the exit (status %d)", s.Code)
}

// writerTable is --summary's table: most writes first.
func (se *session) writerTable(total int) []report.Writer {
	out := make([]report.Writer, 0, len(se.writers))
	type row struct {
		w     report.Writer
		first int
	}
	rows := make([]row, 0, len(se.writers))
	for k, c := range se.writers {
		wr := report.Writer{PC: k.pc, Count: c.count, Syscall: k.syscall, Total: total}
		for tid := range c.tids {
			wr.Tids = append(wr.Tids, tid)
		}
		sort.Ints(wr.Tids)
		if loc, ok := se.image(c.pid).syms.Lookup(k.pc); ok {
			wr.Func, wr.Offset, wr.File, wr.Line = loc.Func, loc.Offset, loc.File, loc.Line
		}
		rows = append(rows, row{wr, c.first})
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].w.Count != rows[j].w.Count {
			return rows[i].w.Count > rows[j].w.Count
		}
		return rows[i].first < rows[j].first
	})
	for _, r := range rows {
		out = append(out, r.w)
	}
	return out
}
