// Package cond is the language of --when: a C expression over what a
// write is (old and new value, address, size, writer) and where it comes
// from (in(FUNC), at(FUNC), file(PATTERN)), evaluated once per write.
//
// Arithmetic is unsigned 64-bit, with C's operators and precedence. A
// comparison or a logical operator yields 0 or 1; a condition holds when
// its value is not 0. Division or remainder by zero yields 0, a shift by
// 64 or more yields 0: a condition evaluated on every write has nowhere
// to report an error.
//
// Predicates cost a backtrace; the rest costs nothing. [Parse] orders the
// operands of && and || so that the cheap side runs first, and
// evaluation stops as soon as the result is known, so a condition that
// can be decided without a backtrace never takes one.
package cond

import (
	"fmt"
	"strconv"
	"strings"
)

// Var is a value of the write a condition reads.
type Var int

// The values a condition can name.
const (
	Old      Var = iota // the watched value before the write
	New                 // the watched value after it
	Addr                // the first byte written
	Off                 // Addr's offset in its region
	Size                // bytes written
	Tid                 // the writer
	Pid                 // the writer's process
	Seq                 // the write's number among all writes the condition saw, from 1
	Kernel              // 1 for a write the kernel made (a system call, a signal frame)
	Changed             // 1 if old != new
	Block               // the heap block written (heap#Block), 0 for other memory
	Freed               // 1 for a write into a freed block (a use-after-free)
	Overflow            // 1 for a write past a block's end (its redzone)
	numVars
)

var varNames = map[string]Var{
	"old": Old, "new": New, "addr": Addr, "off": Off, "size": Size,
	"tid": Tid, "pid": Pid, "seq": Seq, "kernel": Kernel, "changed": Changed,
	"block": Block, "freed": Freed, "overflow": Overflow,
}

// String is the name a condition writes v by.
func (v Var) String() string {
	for n, x := range varNames {
		if x == v {
			return n
		}
	}
	return fmt.Sprintf("Var(%d)", int(v))
}

// Pred is a predicate over the writer's backtrace.
type Pred int

// The predicates.
const (
	In   Pred = iota // FUNC is a frame of the backtrace
	At               // FUNC is frame 0, the writing function
	File             // frame 0's source file matches PATTERN
)

var predNames = map[string]Pred{"in": In, "at": At, "file": File}

// Env is one write as a condition sees it.
type Env struct {
	Vars [numVars]uint64
	// Match answers predicate i of the expression (see Expr.Preds); it
	// is called only when the result depends on it.
	Match func(i int) bool
}

// SyntaxError is a malformed expression, with the column (from 1) where
// reading it failed.
type SyntaxError struct {
	Col int
	Msg string
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("column %d: %s", e.Col, e.Msg) }

// PredUse is one predicate of an expression, with its argument.
type PredUse struct {
	Pred    Pred
	Pattern string
}

// Expr is a parsed condition.
type Expr struct {
	root  node
	preds []PredUse
}

// Preds lists the expression's predicates; Env.Match is asked about them
// by index.
func (e *Expr) Preds() []PredUse { return e.preds }

// NeedsBacktrace reports whether the expression has a predicate.
func (e *Expr) NeedsBacktrace() bool { return len(e.preds) > 0 }

// Eval says whether the condition holds for env.
func (e *Expr) Eval(env *Env) bool { return e.root.eval(env) != 0 }

// Uses reports whether the expression names v.
func (e *Expr) Uses(v Var) bool {
	used := false
	walk(e.root, func(x node) {
		if x, ok := x.(*variable); ok && x.v == v {
			used = true
		}
	})
	return used
}

// CheckWidth refuses a literal compared with old or new that the watched
// value, n bytes wide, can never equal: such a condition is a typo, not a
// filter.
func (e *Expr) CheckWidth(n int) error {
	if n >= 8 {
		return nil
	}
	var err error
	walk(e.root, func(x node) {
		b, ok := x.(*binary)
		if !ok || err != nil || !b.op.compares() {
			return
		}
		for _, pair := range [][2]node{{b.l, b.r}, {b.r, b.l}} {
			v, isVar := pair[0].(*variable)
			lit, isLit := pair[1].(*literal)
			if isVar && isLit && (v.v == Old || v.v == New) && lit.v >= 1<<(8*uint(n)) {
				err = &SyntaxError{lit.col, fmt.Sprintf("%s is wider than the watched value (%d byte%s)", lit.text, n, map[bool]string{true: "", false: "s"}[n == 1])}
			}
		}
	})
	return err
}

// Equal is the condition new == v, which --when-value means.
func Equal(v uint64) *Expr {
	return &Expr{root: &binary{op: opEq, l: &variable{v: New}, r: &literal{v: v, text: fmt.Sprintf("%#x", v), col: 1}}}
}

// And is the condition a && b; either may be nil.
func And(a, b *Expr) *Expr {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	n := len(a.preds)
	shifted := cloneShift(b.root, n)
	out := &Expr{root: &binary{op: opLAnd, l: a.root, r: shifted}, preds: append(append([]PredUse{}, a.preds...), b.preds...)}
	out.root = reorder(out.root)
	return out
}

// cloneShift copies x with its predicate indexes moved up by n.
func cloneShift(x node, n int) node {
	switch x := x.(type) {
	case *binary:
		return &binary{op: x.op, l: cloneShift(x.l, n), r: cloneShift(x.r, n)}
	case *unary:
		return &unary{op: x.op, x: cloneShift(x.x, n)}
	case *predicate:
		return &predicate{i: x.i + n}
	}
	return x
}

// Parse reads an expression.
func Parse(src string) (*Expr, error) {
	p := &parser{src: src}
	p.next()
	if p.tok.kind == tEOF {
		return nil, &SyntaxError{1, "empty expression"}
	}
	root, err := p.expr(0)
	if err != nil {
		return nil, err
	}
	if p.tok.kind == tBad && p.err != nil {
		return nil, p.err
	}
	if p.tok.kind != tEOF {
		return nil, p.errorf("unexpected %s", p.tok.describe())
	}
	return &Expr{root: reorder(root), preds: p.preds}, nil
}

// reorder puts the cheaper operand of && and || first: both are pure, so
// their order changes only what evaluating them costs.
func reorder(x node) node {
	switch b := x.(type) {
	case *binary:
		b.l, b.r = reorder(b.l), reorder(b.r)
		if (b.op == opLAnd || b.op == opLOr) && cost(b.l) > cost(b.r) {
			b.l, b.r = b.r, b.l
		}
	case *unary:
		b.x = reorder(b.x)
	}
	return x
}

// cost is how many predicates evaluating x may ask.
func cost(x node) int {
	n := 0
	walk(x, func(y node) {
		if _, ok := y.(*predicate); ok {
			n++
		}
	})
	return n
}

func walk(x node, f func(node)) {
	f(x)
	switch x := x.(type) {
	case *binary:
		walk(x.l, f)
		walk(x.r, f)
	case *unary:
		walk(x.x, f)
	}
}

type node interface{ eval(*Env) uint64 }

type literal struct {
	v    uint64
	text string
	col  int
}

func (l *literal) eval(*Env) uint64 { return l.v }

type variable struct{ v Var }

func (v *variable) eval(e *Env) uint64 { return e.Vars[v.v] }

type predicate struct{ i int }

func (p *predicate) eval(e *Env) uint64 { return b2u(e.Match != nil && e.Match(p.i)) }

type unary struct {
	op byte // '!', '~', '-', '+'
	x  node
}

func (u *unary) eval(e *Env) uint64 {
	v := u.x.eval(e)
	switch u.op {
	case '!':
		return b2u(v == 0)
	case '~':
		return ^v
	case '-':
		return -v
	}
	return v
}

type binary struct {
	op   op
	l, r node
}

func (b *binary) eval(e *Env) uint64 {
	switch b.op {
	case opLAnd:
		return b2u(b.l.eval(e) != 0 && b.r.eval(e) != 0)
	case opLOr:
		return b2u(b.l.eval(e) != 0 || b.r.eval(e) != 0)
	}
	x, y := b.l.eval(e), b.r.eval(e)
	switch b.op {
	case opMul:
		return x * y
	case opDiv:
		if y == 0 {
			return 0
		}
		return x / y
	case opMod:
		if y == 0 {
			return 0
		}
		return x % y
	case opAdd:
		return x + y
	case opSub:
		return x - y
	case opShl:
		if y >= 64 {
			return 0
		}
		return x << y
	case opShr:
		if y >= 64 {
			return 0
		}
		return x >> y
	case opLt:
		return b2u(x < y)
	case opLe:
		return b2u(x <= y)
	case opGt:
		return b2u(x > y)
	case opGe:
		return b2u(x >= y)
	case opEq:
		return b2u(x == y)
	case opNe:
		return b2u(x != y)
	case opAnd:
		return x & y
	case opXor:
		return x ^ y
	case opOr:
		return x | y
	}
	panic("cond: unknown operator")
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

type op int

const (
	opNone op = iota
	opMul
	opDiv
	opMod
	opAdd
	opSub
	opShl
	opShr
	opLt
	opLe
	opGt
	opGe
	opEq
	opNe
	opAnd
	opXor
	opOr
	opLAnd
	opLOr
)

func (o op) compares() bool { return o >= opLt && o <= opNe }

// binaryOps are the binary operators by spelling, with C's precedence
// (higher binds tighter).
var binaryOps = map[string]struct {
	op   op
	prec int
}{
	"*": {opMul, 10}, "/": {opDiv, 10}, "%": {opMod, 10},
	"+": {opAdd, 9}, "-": {opSub, 9},
	"<<": {opShl, 8}, ">>": {opShr, 8},
	"<": {opLt, 7}, "<=": {opLe, 7}, ">": {opGt, 7}, ">=": {opGe, 7},
	"==": {opEq, 6}, "!=": {opNe, 6},
	"&": {opAnd, 5}, "^": {opXor, 4}, "|": {opOr, 3},
	"&&": {opLAnd, 2}, "||": {opLOr, 1},
}

type tokKind int

const (
	tEOF tokKind = iota
	tNum
	tIdent
	tOp
	tLParen
	tRParen
	tBad
)

type token struct {
	kind tokKind
	text string
	val  uint64
	col  int
}

func (t token) describe() string {
	switch t.kind {
	case tEOF:
		return "end of expression"
	case tBad:
		return fmt.Sprintf("character %q", t.text)
	}
	return fmt.Sprintf("%q", t.text)
}

type parser struct {
	src   string
	pos   int
	tok   token
	preds []PredUse
	err   error
}

func (p *parser) errorf(format string, args ...any) error {
	return &SyntaxError{p.tok.col, fmt.Sprintf(format, args...)}
}

// expr parses a binary expression whose operators bind tighter than
// minPrec (precedence climbing).
func (p *parser) expr(minPrec int) (node, error) {
	l, err := p.unary()
	if err != nil {
		return nil, err
	}
	for p.tok.kind == tOp {
		bo, ok := binaryOps[p.tok.text]
		if !ok || bo.prec <= minPrec {
			break
		}
		p.next()
		r, err := p.expr(bo.prec)
		if err != nil {
			return nil, err
		}
		l = &binary{op: bo.op, l: l, r: r}
	}
	return l, nil
}

func (p *parser) unary() (node, error) {
	if p.tok.kind == tOp && len(p.tok.text) == 1 && strings.Contains("!~-+", p.tok.text) {
		op := p.tok.text[0]
		p.next()
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		return &unary{op: op, x: x}, nil
	}
	return p.primary()
}

func (p *parser) primary() (node, error) {
	t := p.tok
	switch t.kind {
	case tNum:
		p.next()
		return &literal{v: t.val, text: t.text, col: t.col}, nil
	case tLParen:
		p.next()
		x, err := p.expr(0)
		if err != nil {
			return nil, err
		}
		if p.tok.kind != tRParen {
			return nil, p.errorf("expected ')', found %s", p.tok.describe())
		}
		p.next()
		return x, nil
	case tIdent:
		if pr, ok := predNames[t.text]; ok {
			return p.predicate(pr)
		}
		if v, ok := varNames[t.text]; ok {
			p.next()
			return &variable{v: v}, nil
		}
		return nil, p.errorf("unknown name %q (values: old new addr off size tid pid seq kernel changed block freed overflow; predicates: in() at() file())", t.text)
	case tBad:
		if p.err != nil {
			return nil, p.err
		}
	}
	return nil, p.errorf("expected a value, found %s", t.describe())
}

// predicate reads NAME(ARG): ARG is everything up to the matching ')',
// a function name (C++ and Rust names have '::', '<>', even '()') or a
// file pattern, '*' for any characters. A "quoted" argument may hold
// anything but '"'.
func (p *parser) predicate(pr Pred) (node, error) {
	name := p.tok
	// The raw text after the name, skipping blanks to '('.
	i := p.pos
	for i < len(p.src) && (p.src[i] == ' ' || p.src[i] == '\t') {
		i++
	}
	if i >= len(p.src) || p.src[i] != '(' {
		return nil, &SyntaxError{name.col, fmt.Sprintf("%s needs an argument: %s(PATTERN)", name.text, name.text)}
	}
	open := i
	i++
	var arg string
	for i < len(p.src) && p.src[i] == ' ' {
		i++
	}
	if i < len(p.src) && p.src[i] == '"' {
		end := strings.IndexByte(p.src[i+1:], '"')
		if end < 0 {
			return nil, &SyntaxError{i + 1, "unterminated string"}
		}
		arg = p.src[i+1 : i+1+end]
		i += end + 2
		for i < len(p.src) && p.src[i] == ' ' {
			i++
		}
		if i >= len(p.src) || p.src[i] != ')' {
			return nil, &SyntaxError{i + 1, fmt.Sprintf("expected ')' after the argument of %s", name.text)}
		}
		i++
	} else {
		depth := 1
		start := i
		for ; i < len(p.src); i++ {
			if p.src[i] == '(' {
				depth++
			} else if p.src[i] == ')' {
				depth--
				if depth == 0 {
					break
				}
			}
		}
		if depth != 0 {
			return nil, &SyntaxError{open + 1, fmt.Sprintf("unclosed '(' of %s", name.text)}
		}
		arg = strings.TrimSpace(p.src[start:i])
		i++
	}
	if arg == "" {
		return nil, &SyntaxError{open + 1, fmt.Sprintf("%s needs an argument: %s(PATTERN)", name.text, name.text)}
	}
	p.pos = i
	p.next()
	p.preds = append(p.preds, PredUse{pr, arg})
	return &predicate{i: len(p.preds) - 1}, nil
}

// next reads the next token into p.tok.
func (p *parser) next() {
	for p.pos < len(p.src) && strings.IndexByte(" \t\n", p.src[p.pos]) >= 0 {
		p.pos++
	}
	col := p.pos + 1
	if p.pos >= len(p.src) {
		p.tok = token{kind: tEOF, col: col}
		return
	}
	c := p.src[p.pos]
	switch {
	case c >= '0' && c <= '9':
		start := p.pos
		for p.pos < len(p.src) && isIdent(p.src[p.pos]) {
			p.pos++
		}
		text := p.src[start:p.pos]
		v, err := strconv.ParseUint(text, 0, 64)
		if err != nil {
			msg := fmt.Sprintf("malformed number %q", text)
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				msg = fmt.Sprintf("number %s does not fit 64 bits", text)
			}
			p.tok, p.err = token{kind: tBad, text: text, col: col}, &SyntaxError{col, msg}
			return
		}
		p.tok = token{kind: tNum, text: text, val: v, col: col}
	case c == '\'':
		v, n, ok := charLiteral(p.src[p.pos:])
		if !ok {
			p.tok, p.err = token{kind: tBad, text: "'", col: col}, &SyntaxError{col, "malformed character literal"}
			return
		}
		p.tok = token{kind: tNum, text: p.src[p.pos : p.pos+n], val: v, col: col}
		p.pos += n
	case isIdent(c):
		start := p.pos
		for p.pos < len(p.src) && isIdent(p.src[p.pos]) {
			p.pos++
		}
		p.tok = token{kind: tIdent, text: p.src[start:p.pos], col: col}
	case c == '(':
		p.pos++
		p.tok = token{kind: tLParen, text: "(", col: col}
	case c == ')':
		p.pos++
		p.tok = token{kind: tRParen, text: ")", col: col}
	default:
		for _, n := range []int{2, 1} {
			if p.pos+n <= len(p.src) {
				s := p.src[p.pos : p.pos+n]
				if _, ok := binaryOps[s]; ok || (n == 1 && strings.Contains("!~", s)) {
					p.pos += n
					p.tok = token{kind: tOp, text: s, col: col}
					return
				}
			}
		}
		p.pos++
		p.tok = token{kind: tBad, text: string(c), col: col}
		p.err = &SyntaxError{col, fmt.Sprintf("unexpected character %q", c)}
	}
}

func isIdent(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// charLiteral reads 'c' or a C escape ('\n', '\0', '\x41', '\\', '\”),
// returning its value and length.
func charLiteral(s string) (v uint64, n int, ok bool) {
	if len(s) < 3 {
		return 0, 0, false
	}
	if s[1] != '\\' {
		if s[2] != '\'' || s[1] == '\'' {
			return 0, 0, false
		}
		return uint64(s[1]), 3, true
	}
	end := strings.IndexByte(s[2:], '\'')
	if end < 0 {
		return 0, 0, false
	}
	esc := s[2 : 2+end]
	if esc == "" {
		// '\'' : the quote is escaped.
		if len(s) >= 4 && s[3] == '\'' {
			return '\'', 4, true
		}
		return 0, 0, false
	}
	simple := map[string]uint64{"n": '\n', "t": '\t', "r": '\r', "0": 0, "\\": '\\', "a": 7, "b": 8, "f": 12, "v": 11, "\"": '"'}
	if x, ok := simple[esc]; ok {
		return x, 3 + len(esc), true
	}
	if esc[0] == 'x' && len(esc) > 1 {
		x, err := strconv.ParseUint(esc[1:], 16, 8)
		if err == nil {
			return x, 3 + len(esc), true
		}
	}
	return 0, 0, false
}

// Glob reports whether name matches pattern, where '*' stands for any
// characters (none included) and everything else for itself.
func Glob(pattern, name string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == name
	}
	if !strings.HasPrefix(name, parts[0]) {
		return false
	}
	name = name[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, part := range parts[1 : len(parts)-1] {
		i := strings.Index(name, part)
		if i < 0 {
			return false
		}
		name = name[i+len(part):]
	}
	return strings.HasSuffix(name, last)
}
