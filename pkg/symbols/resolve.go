package symbols

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

var (
	// ErrNotFound is matched by every *NotFoundError.
	ErrNotFound = errors.New("symbol not found")
	// ErrSyntax reports an expression Resolve cannot parse.
	ErrSyntax = errors.New("malformed symbol expression")
	// ErrOutOfRange reports an offset at or past the end of its symbol.
	ErrOutOfRange = errors.New("offset beyond symbol")
	// ErrClosed reports use of a closed Table.
	ErrClosed = errors.New("symbol table closed")
	// ErrAmbiguous is matched by every *AmbiguousError.
	ErrAmbiguous = errors.New("ambiguous symbol")
)

// Symbol is a resolved name.
type Symbol struct {
	// Name is the symbol's name as Lookup shows it (demangled), or the
	// name asked for when it was found in DWARF ("session.token").
	Name   string
	Addr   uint64 // runtime address, load bias and offset applied
	Size   uint64 // bytes from Addr to the symbol's end; 0 if unknown
	Module string // path of the defining module, as maps shows it
}

// NotFoundError reports a name, or a module qualifier, that matches nothing.
type NotFoundError struct {
	Name          string   // the symbol asked for, without module or offset
	Module        string   // the module qualifier, "" if none
	UnknownModule bool     // Module matched no mapped module
	Suggestions   []string // up to three close names (modules if UnknownModule)
}

func (e *NotFoundError) Error() string {
	var b strings.Builder
	if e.UnknownModule {
		fmt.Fprintf(&b, "unknown module %q", e.Module)
	} else {
		fmt.Fprintf(&b, "unknown symbol %q", e.Name)
		if e.Module != "" {
			fmt.Fprintf(&b, " in %s", e.Module)
		}
	}
	if len(e.Suggestions) > 0 {
		fmt.Fprintf(&b, " (did you mean %s?)", strings.Join(e.Suggestions, ", "))
	}
	return b.String()
}

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// Resolve finds the runtime address of a symbol. expr is "name", "name+OFF"
// or either with a "module:" prefix; OFF is decimal or 0x-prefixed hex and
// must lie inside the symbol when its size is known. A module qualifier
// matches a module whose file name equals it or starts with it followed by a
// dot ("libc" and "libc.so" both match libc.so.6), or, if it contains a
// slash, a module whose whole path equals it.
//
// A name is looked for, in this order:
//   - as an ELF symbol, mangled or not ("counter", "_ZN2ns7Counter5totalE");
//   - as a demangled C++ or Rust name, with or without its parameter list
//     ("ns::Counter::value(int)", "ns::Counter::value"); a name without
//     parameters that fits overloads at different addresses is an
//     *AmbiguousError;
//   - as a DWARF variable at a fixed address: a global, a file static, or a
//     function's static as "func::name" or plain "name";
//   - as a DWARF variable followed by struct or union members, each after a
//     dot ("session.token", "main.cfg.limit"): the member's address and
//     size.
//
// Each step searches every module before the next step begins, in
// memory-map order (the main executable first), and the first module that
// defines the name wins, as with the dynamic linker; within a module a
// global definition beats a weak one beats a local one.
func (t *Table) Resolve(expr string) (Symbol, error) {
	modQ, name, off, err := parseExpr(expr)
	if err != nil {
		return Symbol{}, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return Symbol{}, ErrClosed
	}
	mods := t.mods
	if modQ != "" {
		mods = nil
		for _, m := range t.mods {
			if moduleMatches(modQ, m.path) {
				mods = append(mods, m)
			}
		}
		if len(mods) == 0 {
			return Symbol{}, &NotFoundError{Name: name, Module: modQ, UnknownModule: true,
				Suggestions: suggestModules(modQ, t.mods)}
		}
	}
	var loadErrs []error
	var placed []*module
	for _, m := range mods {
		t.load(m)
		if m.err != nil {
			loadErrs = append(loadErrs, m.err)
		}
		if !m.biasOK {
			continue
		}
		placed = append(placed, m)
		if s, ok := m.obj.find(name); ok {
			return withOffset(Symbol{Name: s.display(), Addr: m.bias + s.addr, Size: s.size, Module: m.path}, name, off)
		}
	}
	for _, m := range placed {
		s, err := m.obj.findDemangled(name)
		if err != nil {
			return Symbol{}, fmt.Errorf("%s: %w", m.path, err)
		}
		if s != nil {
			return withOffset(Symbol{Name: s.display(), Addr: m.bias + s.addr, Size: s.size, Module: m.path}, name, off)
		}
	}
	for _, m := range placed {
		if v, ok := t.variables(m.obj, m.path)[name]; ok {
			res := Symbol{Name: name, Addr: m.bias + v.addr, Module: m.path}
			if v.hasType {
				res.Size, _ = typeSize(m.obj.dwarf, v.typ)
			}
			return withOffset(res, name, off)
		}
	}
	for _, m := range placed {
		vars := t.variables(m.obj, m.path)
		for i := 1; ; i++ {
			vname, path, ok := splitMember(name, i)
			if !ok {
				break
			}
			v, ok := vars[vname]
			if !ok || !v.hasType {
				continue
			}
			moff, size, _, err := memberAt(m.obj.dwarf, v.typ, path)
			var fe *fieldError
			if errors.As(err, &fe) {
				prefix := strings.Join(append([]string{vname}, path[:fe.depth]...), ".")
				var cands []string
				for _, h := range fe.have {
					cands = append(cands, prefix+"."+h)
				}
				return Symbol{}, &NotFoundError{Name: name, Module: modQ, Suggestions: suggest(name, cands)}
			}
			if err != nil {
				return Symbol{}, fmt.Errorf("%s in %s: %w", name, m.path, err)
			}
			return withOffset(Symbol{Name: name, Addr: m.bias + v.addr + moff, Size: size, Module: m.path}, name, off)
		}
	}

	var names []string
	for _, m := range placed {
		for i := range m.obj.syms {
			if s := &m.obj.syms[i]; !mangled(s.name) || s.display() == s.name {
				names = append(names, s.name)
			}
		}
		for n := range m.obj.byDemangled {
			names = append(names, n)
		}
		for n := range m.obj.vars {
			names = append(names, n)
		}
	}
	nf := &NotFoundError{Name: name, Module: modQ, Suggestions: suggest(name, names)}
	// When the user named a module, why it could not be read is the answer.
	if modQ != "" && len(loadErrs) > 0 {
		return Symbol{}, fmt.Errorf("%w: %w", nf, errors.Join(loadErrs...))
	}
	return Symbol{}, nf
}

// withOffset applies "+off" to a resolved symbol, which must contain it
// when its size is known.
func withOffset(s Symbol, name string, off uint64) (Symbol, error) {
	if s.Size > 0 {
		if off >= s.Size {
			return Symbol{}, fmt.Errorf("%s+%#x: %w %s of size %d", name, off, ErrOutOfRange, name, s.Size)
		}
		s.Size -= off
	}
	s.Addr += off
	return s, nil
}

// parseExpr splits "module:name+off". A C++ name's "::" is not a module
// separator, nor is the ':' of an ABI tag ("f[abi:cxx11]()"), and the '+'
// of "operator+" or inside a parameter list is not an offset.
func parseExpr(expr string) (module, name string, off uint64, err error) {
	rest := expr
	if i := moduleSep(expr); i >= 0 {
		module, rest = expr[:i], expr[i+1:]
		if module == "" {
			return "", "", 0, &SyntaxError{expr, "empty module name"}
		}
	}
	name = rest
	if i := offsetSep(rest); i >= 0 {
		name = rest[:i]
		raw := rest[i+1:]
		s, base := raw, 10
		if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") {
			s, base = s[2:], 16
		}
		bad := &SyntaxError{expr, fmt.Sprintf("offset %q is not a number (decimal or 0x hex)", raw)}
		if s == "" || s[0] == '+' || s[0] == '-' || strings.Contains(s, "_") {
			return "", "", 0, bad
		}
		if off, err = strconv.ParseUint(s, base, 64); err != nil {
			if errors.Is(err, strconv.ErrRange) {
				bad.Why = fmt.Sprintf("offset %q is too large", raw)
			}
			return "", "", 0, bad
		}
	}
	if name == "" {
		return "", "", 0, &SyntaxError{expr, "empty symbol name"}
	}
	return module, name, off, nil
}

// SyntaxError is a symbol expression that cannot be read; it is
// ErrSyntax.
type SyntaxError struct {
	Expr string
	Why  string
}

func (e *SyntaxError) Error() string        { return fmt.Sprintf("%q: %s", e.Expr, e.Why) }
func (e *SyntaxError) Is(target error) bool { return target == ErrSyntax }

// CheckExpr says whether expr reads as a symbol expression
// ([module:]name[+offset]), before any table exists.
func CheckExpr(expr string) error {
	_, _, _, err := parseExpr(expr)
	return err
}

// moduleSep returns the index of the ':' ending a module qualifier in
// expr, or -1. The qualifier is what precedes the first ':' when that is
// not half of a "::" and the text before it is a path, a bracketed name
// such as "[vdso]", or has none of the brackets, parentheses and spaces of
// a demangled name.
func moduleSep(expr string) int {
	i := strings.IndexByte(expr, ':')
	if i < 0 || (i+1 < len(expr) && expr[i+1] == ':') {
		return -1
	}
	p := expr[:i]
	switch {
	case strings.Contains(p, "/"):
		return i
	case len(p) >= 2 && p[0] == '[' && p[len(p)-1] == ']' && !strings.ContainsAny(p[1:len(p)-1], "[]"):
		return i
	case strings.ContainsAny(p, "()<>[] "):
		return -1
	}
	return i
}

// isNumber reports whether s is an offset as parseExpr reads it.
func isNumber(s string) bool {
	if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") {
		_, err := strconv.ParseUint(s[2:], 16, 64)
		return err == nil
	}
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

// offsetSep returns the index of the '+' that starts an offset in s, or -1:
// the first outside parentheses that is not part of an operator's name
// (operator+, operator++, operator+=).
func offsetSep(s string) int {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			if depth > 0 {
				depth--
			}
		case '+':
			switch {
			case depth > 0 || strings.HasSuffix(s[:i], "operator"):
			case strings.HasSuffix(s[:i], "operator+"):
				// operator++, unless a number follows: operator++8
				// is operator+ at offset 8.
				if isNumber(s[i+1:]) {
					return i
				}
			default:
				return i
			}
		}
	}
	return -1
}

func moduleMatches(q, path string) bool {
	if strings.Contains(q, "/") {
		return q == path
	}
	base := moduleBase(path)
	return base == q || strings.HasPrefix(base, q+".")
}

// moduleBase is the file name of a module path, without maps's " (deleted)".
func moduleBase(path string) string {
	return filepath.Base(strings.TrimSuffix(path, " (deleted)"))
}

// suggestModules proposes module file names close to q, comparing q with
// both the whole name and its stem (libc.so.6 and libc).
func suggestModules(q string, mods []*module) []string {
	display := make(map[string]string)
	var cands []string
	for _, m := range mods {
		base := moduleBase(m.path)
		stem, _, _ := strings.Cut(base, ".")
		for _, c := range []string{base, stem} {
			if _, ok := display[c]; !ok && c != "" {
				display[c] = base
				cands = append(cands, c)
			}
		}
	}
	var out []string
	for _, s := range suggest(q, cands) {
		if d := display[s]; !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// maxSuggestions bounds NotFoundError.Suggestions.
const maxSuggestions = 3

// suggest returns up to maxSuggestions names close to q: within edit
// distance max(2, len(q)/3), or containing q, or contained in q (either
// side at least 3 bytes long), closest first and ties in byte order.
func suggest(q string, names []string) []string {
	limit := max(2, len(q)/3)
	type cand struct {
		name string
		dist int
	}
	var cs []cand
	seen := make(map[string]bool)
	for _, n := range names {
		if n == q || seen[n] {
			continue
		}
		seen[n] = true
		sub := (len(q) >= 3 && strings.Contains(n, q)) || (len(n) >= 3 && strings.Contains(q, n))
		if !sub && absDiff(len(n), len(q)) > limit {
			continue // the distance is at least the length difference
		}
		d := levenshtein(q, n)
		if d <= limit || sub {
			cs = append(cs, cand{n, d})
		}
	}
	slices.SortFunc(cs, func(a, b cand) int {
		if a.dist != b.dist {
			return a.dist - b.dist
		}
		return strings.Compare(a.name, b.name)
	})
	var out []string
	for _, c := range cs[:min(len(cs), maxSuggestions)] {
		out = append(out, c.name)
	}
	return out
}

func absDiff(a, b int) int {
	if a > b {
		return a - b
	}
	return b - a
}

// levenshtein is the edit distance between a and b, in bytes.
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Definitions lists every module that defines the function or object name
// (its ELF symbol; no DWARF names, no demangling), in the table's module
// order. Where a dynamically linked program's calls to name go is a matter
// of the loader's search order: the caller picks among these.
func (t *Table) Definitions(name string) []Symbol {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	var out []Symbol
	for _, m := range t.mods {
		t.load(m)
		if !m.biasOK || m.obj == nil {
			continue
		}
		if s, ok := m.obj.find(name); ok && s.addr != 0 && !s.hidden {
			out = append(out, Symbol{Name: s.display(), Addr: m.bias + s.addr, Size: s.size, Module: m.path})
		}
	}
	return out
}
