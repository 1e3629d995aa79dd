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
)

// Symbol is a resolved name.
type Symbol struct {
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
// Modules are searched in memory-map order (the main executable first) and
// the first that defines the name wins, as with the dynamic linker; within a
// module a global definition beats a weak one beats a local one.
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
	for _, m := range mods {
		t.load(m)
		if m.err != nil {
			loadErrs = append(loadErrs, m.err)
		}
		if !m.biasOK {
			continue
		}
		s, ok := m.obj.find(name)
		if !ok {
			continue
		}
		res := Symbol{Name: s.name, Addr: m.bias + s.addr + off, Module: m.path}
		if s.size > 0 {
			if off >= s.size {
				return Symbol{}, fmt.Errorf("%s+%#x: %w %s of size %d", name, off, ErrOutOfRange, name, s.size)
			}
			res.Size = s.size - off
		}
		return res, nil
	}
	var names []string
	for _, m := range mods {
		if m.biasOK {
			for i := range m.obj.syms {
				names = append(names, m.obj.syms[i].name)
			}
		}
	}
	nf := &NotFoundError{Name: name, Module: modQ, Suggestions: suggest(name, names)}
	// When the user named a module, why it could not be read is the answer.
	if modQ != "" && len(loadErrs) > 0 {
		return Symbol{}, fmt.Errorf("%w: %w", nf, errors.Join(loadErrs...))
	}
	return Symbol{}, nf
}

// parseExpr splits "module:name+off".
func parseExpr(expr string) (module, name string, off uint64, err error) {
	rest := expr
	if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		module, rest = rest[:i], rest[i+1:]
		if module == "" {
			return "", "", 0, fmt.Errorf("%q: empty module name: %w", expr, ErrSyntax)
		}
	}
	name = rest
	if i := strings.IndexByte(rest, '+'); i >= 0 {
		name = rest[:i]
		s, base := rest[i+1:], 10
		if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") {
			s, base = s[2:], 16
		}
		if s == "" || s[0] == '+' || s[0] == '-' || strings.Contains(s, "_") {
			return "", "", 0, fmt.Errorf("%q: bad offset: %w", expr, ErrSyntax)
		}
		if off, err = strconv.ParseUint(s, base, 64); err != nil {
			return "", "", 0, fmt.Errorf("%q: bad offset: %w: %w", expr, ErrSyntax, err)
		}
	}
	if name == "" {
		return "", "", 0, fmt.Errorf("%q: empty symbol name: %w", expr, ErrSyntax)
	}
	return module, name, off, nil
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
