package report

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
)

// Log is what a saved JSON Lines report says about its writes: the
// writers table and the stacks that wrote.
type Log struct {
	Writers []Writer
	// Folded are the write backtraces as flame graph tools read them:
	// "outer;inner count", outermost frame first, one line per stack,
	// sorted.
	Folded []string
}

type logFrame struct {
	PC     string `json:"pc"`
	Func   string `json:"func"`
	Offset uint64 `json:"offset"`
	File   string `json:"file"`
	Line   int    `json:"line"`
}

type logEvent struct {
	Event     string     `json:"event"`
	Tid       int        `json:"tid"`
	PC        string     `json:"pc"`
	Syscall   string     `json:"syscall"`
	Signal    int        `json:"signal"`
	Backtrace []logFrame `json:"backtrace"`
}

// ReadLog reads a report memtrap wrote with --format json. name is for
// messages.
func ReadLog(r io.Reader, name string) (*Log, error) {
	type key struct {
		pc      uint64
		syscall string
	}
	rows := map[key]*Writer{}
	var order []key
	tids := map[key]map[int]bool{}
	stacks := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	n, total := 0, 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var ev logEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Event == "" {
			return nil, fmt.Errorf("%s:%d: not a memtrap JSON Lines report (made with --format json)", name, n)
		}
		if ev.Event != "write" {
			continue
		}
		pc, err := strconv.ParseUint(strings.TrimPrefix(ev.PC, "0x"), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: write event with a malformed pc %q", name, n, ev.PC)
		}
		total++
		k := key{pc, ev.Syscall}
		if ev.Signal != 0 {
			k.syscall = "signal frame"
		}
		w := rows[k]
		if w == nil {
			w = &Writer{PC: pc, Syscall: k.syscall}
			if len(ev.Backtrace) > 0 {
				f := ev.Backtrace[0]
				w.Func, w.Offset, w.File, w.Line = f.Func, f.Offset, f.File, f.Line
			}
			rows[k], tids[k] = w, map[int]bool{}
			order = append(order, k)
		}
		w.Count++
		tids[k][ev.Tid] = true
		stacks[foldedStack(ev)]++
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	lg := &Log{}
	for _, k := range order {
		w := rows[k]
		w.Total = total
		for t := range tids[k] {
			w.Tids = append(w.Tids, t)
		}
		sort.Ints(w.Tids)
		lg.Writers = append(lg.Writers, *w)
	}
	sort.SliceStable(lg.Writers, func(i, j int) bool { return lg.Writers[i].Count > lg.Writers[j].Count })
	for s, c := range stacks {
		lg.Folded = append(lg.Folded, fmt.Sprintf("%s %d", s, c))
	}
	sort.Strings(lg.Folded)
	return lg, nil
}

// foldedStack is a write's backtrace, outermost frame first, each frame
// its function (or its address); a write with no backtrace is its pc.
func foldedStack(ev logEvent) string {
	if len(ev.Backtrace) == 0 {
		return ev.PC
	}
	names := make([]string, len(ev.Backtrace))
	for i, f := range ev.Backtrace {
		name := f.Func
		if name == "" {
			name = f.PC
		}
		// The folded format separates frames with ';' and ends with a
		// space before the count.
		name = strings.NewReplacer(";", ":", " ", "_").Replace(name)
		names[len(names)-1-i] = name
	}
	return strings.Join(names, ";")
}
