package policy

import (
	"fmt"
	"slices"
	"strings"
)

// The grammar, loosest binding first:
//
//	or      = and { ("or" | "||") and }
//	and     = unary { ("and" | "&&") unary }
//	unary   = ("not" | "!") unary | primary
//	primary = "(" or ")" | "true" | "false" | "has" "(" NAME ")"
//	        | NAME [ ("==" | "!=") value | "in" "[" value { "," value } "]" ]
//	value   = STRING | NAME | "true" | "false"
//
// The parser is recursive descent with one token of lookahead. It recurses
// only through "(" and "not", and counts both against MaxDepth.

// parser holds the state of one parse.
type parser struct {
	lex   lexer
	tok   token // the current, not yet consumed, token
	depth int   // open parentheses and negations around tok
	// bare reports whether the operand just parsed was a lone NAME, after
	// which a comparison operator would also have been valid.
	bare bool
}

// parse turns expr into a tree, or returns a *SyntaxError.
func parse(expr string) (*node, error) {
	p := &parser{lex: lexer{src: expr}}
	if len(expr) > MaxLength {
		return nil, p.lex.errAt(MaxLength, "expression is %d bytes, longer than the limit of %d", len(expr), MaxLength)
	}
	if trimSpace(expr) == "" {
		return nil, p.lex.errAt(0, `empty policy; write an expression, or "false" to deny every peer`)
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tokEOF {
		return nil, p.errAfterOperand(-1)
	}
	return n, nil
}

// advance consumes the current token and lexes the next one.
func (p *parser) advance() error {
	t, err := p.lex.next()
	if err != nil {
		return err
	}
	p.tok = t
	return nil
}

// expect consumes a token of kind k, or fails with "expected what".
func (p *parser) expect(k tokKind, what string) error {
	if p.tok.kind != k {
		return p.errExpected(what)
	}
	return p.advance()
}

func (p *parser) errExpected(what string) error {
	return p.lex.errAt(p.tok.pos, "expected %s, found %s", what, p.tok.describe())
}

// errAfterOperand reports the token after a complete operand that neither
// continues the expression nor closes the parenthesis opened at open (-1 at
// the top level).
func (p *parser) errAfterOperand(open int) error {
	var want []string
	if p.bare {
		want = append(want, `"=="`, `"!="`, `"in"`)
	}
	want = append(want, `"and"`, `"or"`)
	if open < 0 {
		want = append(want, "end of expression")
	} else {
		want = append(want, `")"`)
	}
	what := oneOf(want)
	if open >= 0 && p.tok.kind == tokEOF {
		what += fmt.Sprintf(` to close "(" at position %d`, open+1)
	}
	return p.errExpected(what)
}

// oneOf joins alternatives as `a, b, c or d`.
func oneOf(alts []string) string {
	if len(alts) == 1 {
		return alts[0]
	}
	return strings.Join(alts[:len(alts)-1], ", ") + " or " + alts[len(alts)-1]
}

// enter counts one more level of nesting at the current token.
func (p *parser) enter() error {
	p.depth++
	if p.depth > MaxDepth {
		return p.lex.errAt(p.tok.pos, `nested deeper than %d levels of parentheses and "not"`, MaxDepth)
	}
	return nil
}

func (p *parser) or() (*node, error) {
	return p.chain(opOr, tokOr, p.and)
}

func (p *parser) and() (*node, error) {
	return p.chain(opAnd, tokAnd, p.unary)
}

// chain parses operands separated by sep into one flat node of kind op.
func (p *parser) chain(op nodeOp, sep tokKind, operand func() (*node, error)) (*node, error) {
	n, err := operand()
	if err != nil {
		return nil, err
	}
	for p.tok.kind == sep {
		if err := p.advance(); err != nil {
			return nil, err
		}
		m, err := operand()
		if err != nil {
			return nil, err
		}
		n = join(op, n, m)
	}
	return n, nil
}

// join appends b to a as operands of op, flattening nested nodes of the same
// op. It may reuse a, which the caller owns.
func join(op nodeOp, a, b *node) *node {
	if a.op != op {
		a = &node{op: op, kids: []*node{a}}
	}
	if b.op == op {
		a.kids = append(a.kids, b.kids...)
	} else {
		a.kids = append(a.kids, b)
	}
	return a
}

func (p *parser) unary() (*node, error) {
	if p.tok.kind != tokNot {
		return p.primary()
	}
	if err := p.enter(); err != nil {
		return nil, err
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	x, err := p.unary()
	if err != nil {
		return nil, err
	}
	p.depth--
	return &node{op: opNot, kids: []*node{x}}, nil
}

func (p *parser) primary() (*node, error) {
	p.bare = false
	switch p.tok.kind {
	case tokLParen:
		return p.group()
	case tokTrue, tokFalse:
		n := &node{op: opFalse}
		if p.tok.kind == tokTrue {
			n.op = opTrue
		}
		return n, p.advance()
	case tokHas:
		return p.has()
	case tokName:
		return p.comparison()
	}
	what := `an attribute name, "(", "not", "has", "true" or "false"`
	if p.tok.kind == tokString {
		return nil, p.lex.errAt(p.tok.pos, "expected %s, found %s (attribute names are written without quotes)",
			what, p.tok.describe())
	}
	return nil, p.errExpected(what)
}

// group parses "(" or ")".
func (p *parser) group() (*node, error) {
	open := p.tok.pos
	if err := p.enter(); err != nil {
		return nil, err
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	x, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tokRParen {
		return nil, p.errAfterOperand(open)
	}
	p.depth--
	p.bare = false
	return x, p.advance()
}

// has parses "has" "(" NAME ")".
func (p *parser) has() (*node, error) {
	if err := p.advance(); err != nil {
		return nil, err
	}
	if err := p.expect(tokLParen, `"(" after "has"`); err != nil {
		return nil, err
	}
	if p.tok.kind != tokName {
		return nil, p.errExpected("an attribute name")
	}
	n := &node{op: opHas, name: p.tok.text}
	if err := p.advance(); err != nil {
		return nil, err
	}
	return n, p.expect(tokRParen, `")"`)
}

// comparison parses NAME, NAME == value, NAME != value and NAME in [...].
func (p *parser) comparison() (*node, error) {
	n := &node{op: opEq, name: p.tok.text}
	if err := p.advance(); err != nil {
		return nil, err
	}
	switch p.tok.kind {
	case tokEq, tokNe:
		if p.tok.kind == tokNe {
			n.op = opNe
		}
		op := p.tok.text
		if err := p.advance(); err != nil {
			return nil, err
		}
		v, err := p.value(fmt.Sprintf("a value after %q", op))
		if err != nil {
			return nil, err
		}
		n.values = []string{v}
	case tokIn:
		n.op = opIn
		vs, err := p.list()
		if err != nil {
			return nil, err
		}
		n.values = vs
	default:
		n.values = []string{"true"}
		p.bare = true
	}
	return n, nil
}

// list parses "in" "[" value { "," value } "]", and returns the values
// sorted and deduplicated.
func (p *parser) list() ([]string, error) {
	if err := p.advance(); err != nil {
		return nil, err
	}
	if err := p.expect(tokLBrack, `"[" after "in"`); err != nil {
		return nil, err
	}
	var vs []string
	for {
		v, err := p.value("a value")
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
		if p.tok.kind != tokComma {
			break
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
	}
	if err := p.expect(tokRBrack, `"," or "]"`); err != nil {
		return nil, err
	}
	slices.Sort(vs)
	return slices.Compact(vs), nil
}

// value parses a quoted string, a bare word, true or false.
func (p *parser) value(what string) (string, error) {
	var v string
	switch p.tok.kind {
	case tokString:
		v = p.tok.val
	case tokName, tokTrue, tokFalse:
		v = p.tok.text
	default:
		return "", p.errExpected(what)
	}
	return v, p.advance()
}
