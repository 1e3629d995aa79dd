package symbols

import (
	"fmt"
	"slices"
	"strings"

	"github.com/ianlancetaylor/demangle"
)

// maxDemangledLog2 bounds a demangled name to 64 KiB: a few bytes of
// hostile mangling can expand without limit.
const maxDemangledLog2 = 16

// mangled reports whether name looks like an Itanium C++ or a Rust name.
func mangled(name string) bool {
	return strings.HasPrefix(name, "_Z") || strings.HasPrefix(name, "_R")
}

// displayName is name as gdb's backtrace shows it: C++ demangled with its
// parameter types and clone suffixes ("ns::Counter::value(int)",
// "f(int) [clone .cold]"), Rust demangled without the hash of legacy
// mangling ("demo::worker"), anything else as it is.
func displayName(name string) string {
	if !mangled(name) {
		return name
	}
	return demangled(name, demangle.MaxLength(maxDemangledLog2))
}

// shortName is a demangled name without the parameters of the function
// it names ("ns::Counter::value"), or "" when name is not mangled.
func shortName(name string) string {
	if !mangled(name) {
		return ""
	}
	return demangled(name, demangle.NoParams, demangle.MaxLength(maxDemangledLog2))
}

// demangled demangles name, giving name back when that fails. The
// demangler recovers its own panics; this guards against the rest.
func demangled(name string, opts ...demangle.Option) (s string) {
	defer func() {
		if recover() != nil {
			s = name
		}
	}()
	out, err := demangle.ToString(name, opts...)
	if err != nil || out == "" {
		return name
	}
	return out
}

// display returns s's display name, computing it once.
func (s *sym) display() string {
	if s.shown == "" {
		s.shown = displayName(s.name)
	}
	return s.shown
}

// findDemangled resolves a demangled name, with or without its parameter
// list, to a symbol of o; nil if none does. Several symbols may demangle
// alike (overloads without parameters, clones): one address among them is
// an answer, several an *AmbiguousError.
func (o *object) findDemangled(name string) (*sym, error) {
	if o.byDemangled == nil {
		o.byDemangled = make(map[string][]int32)
		for i := range o.syms {
			s := &o.syms[i]
			if !mangled(s.name) {
				continue
			}
			full := s.display()
			if full == s.name {
				continue // not mangled after all
			}
			o.byDemangled[full] = append(o.byDemangled[full], int32(i))
			if short := shortName(s.name); short != full && short != s.name {
				o.byDemangled[short] = append(o.byDemangled[short], int32(i))
			}
		}
	}
	cands := o.byDemangled[strings.TrimPrefix(name, "::")]
	if len(cands) == 0 {
		return nil, nil
	}
	// A clone (f.cold, f.isra.0, f.llvm.123) yields to the function it
	// was split or copied from, if that is there.
	plain := slices.DeleteFunc(slices.Clone(cands), func(i int32) bool { return strings.Contains(o.syms[i].name, ".") })
	if len(plain) > 0 {
		cands = plain
	}
	first := &o.syms[cands[0]]
	best := first
	var names []string
	for _, i := range cands[1:] {
		s := &o.syms[i]
		if s.addr != first.addr {
			names = append(names, s.display())
		}
		if namedBetter(s, best) {
			best = s
		}
	}
	if len(names) > 0 {
		names = append(names, first.display())
		slices.Sort(names)
		return nil, &AmbiguousError{Name: name, Candidates: slices.Compact(names)}
	}
	return best, nil
}

// AmbiguousError reports a demangled name without parameters that names
// several functions at different addresses (C++ overloads).
type AmbiguousError struct {
	Name       string
	Candidates []string // their full demangled names
}

func (e *AmbiguousError) Error() string {
	return fmt.Sprintf("%q is ambiguous: %s", e.Name, strings.Join(e.Candidates, ", "))
}

// Is makes errors.Is(err, ErrAmbiguous) true.
func (e *AmbiguousError) Is(target error) bool { return target == ErrAmbiguous }
