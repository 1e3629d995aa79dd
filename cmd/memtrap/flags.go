package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/memtrap/memtrap/internal/cond"
	"github.com/memtrap/memtrap/internal/session"
	"github.com/spf13/pflag"
)

// regionSpec is one --addr or --symbol, with its --len if given.
type regionSpec struct {
	session.Spec
	addr string // --addr as given, for messages; "" for a --symbol
}

func (r regionSpec) flag() string {
	if r.Symbol != "" {
		return "--symbol " + r.Symbol
	}
	return "--addr " + r.addr
}

// watchFlags are the flags run and attach share, as pflag fills them in.
type watchFlags struct {
	specs      []*regionSpec
	pendingLen *uint64
	whenValue  string
	width      int
	backtrace  int
	format     string
	output     string
	completer  string
	engine     string
	kernel     bool
	follow     bool
	pending    bool
	heap       []string
	freed      bool
	redzone    uint64
	args       []string
	locals     []string
	when       string
	color      string
	onHit      string
	maxWrites  int
	last       int
	summary    bool
}

// specValue appends to the ordered spec list, so that each --len belongs to
// the --addr or --symbol it follows (or, if none, the next one).
type specValue struct {
	f    *watchFlags
	kind string
}

func (v *specValue) String() string { return "" }
func (v *specValue) Type() string {
	if v.kind == "len" {
		return "N"
	}
	return v.kind
}

func (v *specValue) Set(s string) error {
	f := v.f
	switch v.kind {
	case "len":
		n, err := parseNumber(s)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("length 0: a region needs at least one byte")
		}
		for i := len(f.specs) - 1; i >= 0; i-- {
			if f.specs[i].Len == 0 {
				f.specs[i].Len = n
				return nil
			}
		}
		if f.pendingLen != nil {
			return fmt.Errorf("two --len values with no --addr or --symbol between them")
		}
		f.pendingLen = &n
		return nil
	case "addr":
		a, err := parseNumber(s)
		if err != nil {
			return err
		}
		f.specs = append(f.specs, &regionSpec{Spec: session.Spec{Addr: a}, addr: s})
	case "symbol":
		if strings.TrimSpace(s) == "" {
			return fmt.Errorf("empty symbol name")
		}
		if err := session.CheckSymbol(s); err != nil {
			return err
		}
		f.specs = append(f.specs, &regionSpec{Spec: session.Spec{Symbol: s}})
	}
	if f.pendingLen != nil {
		f.specs[len(f.specs)-1].Len = *f.pendingLen
		f.pendingLen = nil
	}
	return nil
}

// parseNumber reads a decimal or 0x-hex unsigned number.
func parseNumber(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	var n uint64
	var err error
	if h, ok := strings.CutPrefix(strings.ToLower(t), "0x"); ok {
		n, err = strconv.ParseUint(h, 16, 64)
	} else {
		n, err = strconv.ParseUint(t, 10, 64)
	}
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return 0, fmt.Errorf("number %q is too large", s)
		}
		return 0, fmt.Errorf("malformed number %q (want decimal or 0x hex)", s)
	}
	return n, nil
}

func (f *watchFlags) register(fs *pflag.FlagSet) {
	fs.Var(&specValue{f, "addr"}, "addr", "watch the region starting at ADDR (decimal or 0x hex); repeatable, each with its --len")
	fs.Var(&specValue{f, "len"}, "len", "length in bytes of the preceding --addr (or --symbol, overriding its size)")
	fs.Var(&specValue{f, "symbol"}, "symbol", "watch the ELF symbol NAME[+OFF] (executable or any loaded library); repeatable")
	fs.StringVar(&f.when, "when", "", "report only the writes EXPR holds for: a C expression of old, new, addr, off, size, tid, pid, seq, kernel, changed, block, freed, overflow, in(FUNC), at(FUNC), file(PATTERN) (see README)")
	fs.StringVar(&f.whenValue, "when-value", "", "report only writes after which the watched value equals V (--when 'new == V')")
	fs.IntVar(&f.width, "width", 8, "bytes of the watched value (old, new, --when-value) on regions larger than 8 bytes (1, 2, 4, 8)")
	fs.StringVar(&f.onHit, "on-hit", "", "stop: at the first reported write, leave the target stopped right after it, detached, for gdb -p")
	fs.IntVar(&f.maxWrites, "max-writes", 0, "after N reported writes, stop watching and let the target run on untraced")
	fs.IntVar(&f.last, "last", 0, "keep only the last N writes and report them at the end (the crash after a stomp)")
	fs.BoolVar(&f.summary, "summary", false, "end with a table of the writers: count and share per writing instruction, its threads")
	fs.IntVar(&f.backtrace, "backtrace", 8, "frames of backtrace to print per write (0: none)")
	fs.StringVar(&f.format, "format", "text", "report format: text or json (JSON Lines)")
	fs.StringVar(&f.color, "color", "auto", "colours in the text report: auto (on a terminal, unless NO_COLOR is set), always or never")
	fs.StringVarP(&f.output, "output", "o", "", "write reports to FILE instead of stderr")
	fs.StringVar(&f.engine, "engine", "auto", "auto (hw when every region fits 4 debug registers that fire here; else, for memtrap run, fast unless an option needs page; else page), page (write-protected pages), hw (debug registers) or fast (pages, the writes completed inside the target by memtrap's agent, no ptrace stop: run only, see README)")
	fs.BoolVar(&f.pending, "pending", false, "a --symbol not found at start waits for a library that defines it (always so for module:name when the module is not loaded yet)")
	fs.BoolVar(&f.follow, "follow-forks", false, "watch forked children too (their events carry their pid); by default a child gets its pages back and goes its own way")
	fs.BoolVar(&f.kernel, "kernel-writes", true, "follow syscalls that write into watched memory (read(2) into a watched buffer...) and report them; =false saves the cost (attach: two stops per syscall) but such a call then fails with EFAULT")
	fs.StringVar(&f.completer, "completer", "emulate", "how trapped writes complete: emulate (simple stores emulated, the rest single-stepped) or step (always single-step)")
	_ = fs.MarkHidden("completer")
	fs.StringArrayVar(&f.heap, "heap", nil, "watch heap blocks from their allocation on: size=N or size=MIN-MAX (requested size), site=FUNC (a function of the allocation's backtrace), nth=K (only the K-th match), every=N; repeatable")
	fs.StringArrayVar(&f.args, "arg", nil, "FUNC:N[:LEN]: at each call of FUNC, watch LEN bytes at its N-th argument (1-based, as the SysV ABI passes them) until it returns; without LEN, the size of what the parameter points to (DWARF); repeatable")
	fs.StringArrayVar(&f.locals, "local", nil, "FUNC:VAR: watch FUNC's local variable VAR (its DWARF location) in each call's frame, until the call returns; repeatable")
	fs.Uint64Var(&f.redzone, "redzone", 0, "with --heap: also watch up to N bytes past each block's requested end (its slack and the allocator's header of the next chunk, never another block); a write there is an overflow")
	fs.BoolVar(&f.freed, "freed", false, "with --heap: keep watching a block after free() until the allocator hands it out again; a write meanwhile is a use-after-free")
}

// parseArg reads --arg FUNC:N[:LEN]; FUNC may hold "::" (C++, Rust).
func parseArg(s string) (session.ArgSpec, error) {
	bad := fmt.Errorf("--arg %s: want FUNC:N or FUNC:N:LEN (N the argument's number from 1)", s)
	parts := strings.Split(s, ":")
	if len(parts) < 2 {
		return session.ArgSpec{}, bad
	}
	num := func(x string) (uint64, bool) {
		n, err := parseNumber(x)
		return n, err == nil && x != ""
	}
	a := session.ArgSpec{}
	last, ok := num(parts[len(parts)-1])
	if !ok {
		return a, bad
	}
	fn := parts[:len(parts)-1]
	if n, ok := num(parts[len(parts)-2]); ok && len(parts) >= 3 && parts[len(parts)-3] != "" {
		a.N, a.Len, fn = int(n), last, parts[:len(parts)-2]
		if last == 0 {
			return a, fmt.Errorf("--arg %s: LEN 0: a region needs at least one byte", s)
		}
	} else {
		a.N = int(last)
	}
	a.Func = strings.Join(fn, ":")
	if a.Func == "" || strings.HasSuffix(a.Func, ":") {
		return a, bad
	}
	if a.N < 1 || a.N > 64 {
		return a, fmt.Errorf("--arg %s: argument %d: they are numbered from 1", s, a.N)
	}
	return a, nil
}

// parseLocal reads --local FUNC:VAR.
func parseLocal(s string) (session.LocalSpec, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 || s[i-1] == ':' {
		return session.LocalSpec{}, fmt.Errorf("--local %s: want FUNC:VAR", s)
	}
	return session.LocalSpec{Func: s[:i], Var: s[i+1:]}, nil
}

// parseHeap reads one --heap SPEC: comma-separated keys.
func parseHeap(spec string) (session.HeapSpec, error) {
	var h session.HeapSpec
	hasSize := false
	for _, kv := range strings.Split(spec, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || v == "" {
			return h, fmt.Errorf("--heap %s: %q is not KEY=VALUE (keys: size, site, nth, every)", spec, kv)
		}
		switch k {
		case "size":
			lo, hi, isRange := strings.Cut(v, "-")
			a, err := parseNumber(lo)
			if err != nil {
				return h, fmt.Errorf("--heap %s: size: %v", spec, err)
			}
			b := a
			if isRange {
				if b, err = parseNumber(hi); err != nil {
					return h, fmt.Errorf("--heap %s: size: %v", spec, err)
				}
			}
			if a == 0 {
				return h, fmt.Errorf("--heap %s: size 0: a watched block needs at least one byte", spec)
			}
			if a > b {
				return h, fmt.Errorf("--heap %s: size range %d-%d is empty (MIN > MAX)", spec, a, b)
			}
			h.MinSize, h.MaxSize, hasSize = a, b, true
		case "site":
			h.Site = v
		case "nth", "every":
			n, err := parseNumber(v)
			if err != nil || n == 0 || n > 1<<31 {
				return h, fmt.Errorf("--heap %s: %s must be a number from 1 on", spec, k)
			}
			if k == "nth" {
				h.Nth = int(n)
			} else {
				h.Every = int(n)
			}
		default:
			return h, fmt.Errorf("--heap %s: unknown key %q (keys: size, site, nth, every)", spec, k)
		}
	}
	if !hasSize && h.Site == "" {
		return h, fmt.Errorf("--heap %s: give size=N (or MIN-MAX) or site=FUNC", spec)
	}
	return h, nil
}

// options checks what can be checked before touching any process, and
// says what the flags ask of a session (all but its output stream).
func (f *watchFlags) options() (session.Options, error) {
	o := session.Options{
		Width: f.width, Backtrace: f.backtrace, Engine: f.engine, Completer: f.completer,
		KernelWrites: f.kernel, FollowForks: f.follow, Pending: f.pending, Format: f.format,
		Freed: f.freed, Redzone: f.redzone,
	}
	for _, spec := range f.heap {
		h, err := parseHeap(spec)
		if err != nil {
			return session.Options{}, usagef("%v", err)
		}
		o.Heap = append(o.Heap, h)
	}
	for _, spec := range f.args {
		a, err := parseArg(spec)
		if err != nil {
			return session.Options{}, usagef("%v", err)
		}
		o.Args = append(o.Args, a)
	}
	for _, spec := range f.locals {
		l, err := parseLocal(spec)
		if err != nil {
			return session.Options{}, usagef("%v", err)
		}
		o.Locals = append(o.Locals, l)
	}
	if len(f.specs) == 0 && len(o.Heap) == 0 && len(o.Args) == 0 && len(o.Locals) == 0 {
		return session.Options{}, usagef("nothing to watch: give --addr ADDR --len N, --symbol NAME or --heap SPEC")
	}
	if (len(o.Heap) > 0 || len(o.Args) > 0 || len(o.Locals) > 0) && f.engine == "hw" {
		return session.Options{}, usagef("--heap, --arg and --local need the page engine: blocks and frames come and go by the thousand, the debug registers hold four")
	}
	if f.freed && len(o.Heap) == 0 {
		return session.Options{}, usagef("--freed needs --heap: it says how long a heap block is watched")
	}
	if f.redzone > 0 && len(o.Heap) == 0 {
		return session.Options{}, usagef("--redzone needs --heap: it watches past the end of heap blocks")
	}
	if f.redzone > 4096 {
		return session.Options{}, usagef("--redzone %d: at most 4096 bytes", f.redzone)
	}

	if f.pendingLen != nil {
		return session.Options{}, usagef("--len %d follows no --addr or --symbol", *f.pendingLen)
	}
	for _, s := range f.specs {
		if s.Symbol == "" && s.Len == 0 {
			return session.Options{}, usagef("%s needs --len N", s.flag())
		}
		if s.Symbol == "" && (s.Addr+s.Len < s.Addr || s.Addr+s.Len > 1<<47) {
			return session.Options{}, usagef("%s --len %d runs past the end of the address space", s.flag(), s.Len)
		}
		o.Specs = append(o.Specs, s.Spec)
	}
	if f.whenValue != "" {
		v, err := parseNumber(f.whenValue)
		if err != nil {
			return session.Options{}, usagef("--when-value: %v", err)
		}
		o.WhenValue = &v
	}
	if f.when != "" {
		e, err := cond.Parse(f.when)
		if err != nil {
			return session.Options{}, usagef("--when %q: %v", f.when, err)
		}
		o.When = e
		// A name that is 0 at every write the flags watch is a mistake,
		// not a filter.
		for _, n := range []struct {
			v     cond.Var
			ok    bool
			needs string
		}{
			{cond.Block, len(o.Heap) > 0, "--heap"},
			{cond.Freed, f.freed, "--freed"},
			{cond.Overflow, f.redzone > 0, "--redzone N"},
		} {
			if e.Uses(n.v) && !n.ok {
				return session.Options{}, usagef("--when %q: %s is 0 at every write without %s", f.when, n.v, n.needs)
			}
		}
	}
	switch f.onHit {
	case "", "stop":
		o.OnHit = f.onHit
	default:
		return session.Options{}, usagef("--on-hit %q: the action is stop", f.onHit)
	}
	if f.maxWrites < 0 {
		return session.Options{}, usagef("--max-writes %d: must be 1 or more", f.maxWrites)
	}
	if f.last < 0 {
		return session.Options{}, usagef("--last %d: must be 1 or more", f.last)
	}
	o.MaxWrites, o.Last, o.Summary = f.maxWrites, f.last, f.summary
	switch f.width {
	case 1, 2, 4, 8:
	default:
		return session.Options{}, usagef("--width %d: must be 1, 2, 4 or 8", f.width)
	}
	if f.backtrace < 0 {
		return session.Options{}, usagef("--backtrace %d: must be 0 or more", f.backtrace)
	}
	switch f.engine {
	case "auto", "page", "hw":
	case "fast":
		if err := f.fastOnly(o); err != nil {
			return session.Options{}, err
		}
	default:
		return session.Options{}, usagef("--engine %q: must be auto, page, hw or fast", f.engine)
	}
	switch f.completer {
	case "emulate", "step":
	default:
		return session.Options{}, usagef("--completer %q: must be emulate or step", f.completer)
	}
	switch f.format {
	case "text", "json":
	default:
		return session.Options{}, usagef("--format %q: must be text or json", f.format)
	}
	switch f.color {
	case "auto", "always", "never":
		o.Color = f.color
	default:
		return session.Options{}, usagef("--color %q: must be auto, always or never", f.color)
	}
	return o, nil
}

// fastOnly refuses what the fast engine does not do yet (README, Limits).
func (f *watchFlags) fastOnly(o session.Options) error {
	switch {
	case len(o.Heap)+len(o.Args)+len(o.Locals) > 0:
		return usagef("--engine fast watches --addr and --symbol regions; --heap, --arg and --local need the page engine")
	case f.follow:
		return usagef("--engine fast does not follow forks yet (a child gets its pages back); --follow-forks needs the page engine")
	case f.onHit != "":
		return usagef("--engine fast cannot stop the target at a write (it has run on by the time memtrap reads it); --on-hit needs the page engine")
	case f.pending:
		return usagef("--engine fast watches the program's own symbols; --pending needs the page engine")
	case f.completer != "emulate":
		return usagef("--completer applies to the page engine; the fast engine's agent completes the writes")
	}
	return nil
}
