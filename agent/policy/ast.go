package policy

import (
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// nodeOp is the kind of a node in a policy's tree.
type nodeOp uint8

const (
	opFalse nodeOp = iota // always false
	opTrue                // always true
	opEq                  // attrs[name] == values[0]
	opNe                  // attrs[name] != values[0]
	opIn                  // attrs[name] is one of values (sorted, unique, at least one)
	opHas                 // name is present in attrs
	opNot                 // !kids[0]
	opAnd                 // every one of kids (two or more, none an opAnd)
	opOr                  // any one of kids (two or more, none an opOr)
)

// node is one operator or comparison. The tree is deliberately plain, so that
// it can be walked to compile a policy for other evaluators. A missing
// attribute reads as "" in opEq, opNe and opIn.
type node struct {
	op     nodeOp
	name   string   // the attribute, for opEq, opNe, opIn and opHas
	values []string // the operand values, for opEq, opNe and opIn
	kids   []*node  // the operands, for opNot, opAnd and opOr
}

// eval reports whether attrs satisfy n.
func (n *node) eval(attrs map[string]string) bool {
	switch n.op {
	case opTrue:
		return true
	case opEq:
		return attrs[n.name] == n.values[0]
	case opNe:
		return attrs[n.name] != n.values[0]
	case opIn:
		_, found := slices.BinarySearch(n.values, attrs[n.name])
		return found
	case opHas:
		_, ok := attrs[n.name]
		return ok
	case opNot:
		return !n.kids[0].eval(attrs)
	case opAnd:
		for _, k := range n.kids {
			if !k.eval(attrs) {
				return false
			}
		}
		return true
	case opOr:
		for _, k := range n.kids {
			if k.eval(attrs) {
				return true
			}
		}
		return false
	}
	return false
}

// explain evaluates n like eval, and also returns the facts about attrs
// that decide the result.
func (n *node) explain(attrs map[string]string) (bool, []string) {
	switch n.op {
	case opTrue:
		return true, []string{`"true" always matches`}
	case opFalse:
		return false, []string{`"false" never matches`}
	case opNot:
		ok, why := n.kids[0].explain(attrs)
		return !ok, why
	case opAnd, opOr:
		// An "and" is decided by its first false operand, an "or" by its
		// first true one; otherwise every operand counts.
		decisive := n.op == opOr
		var all []string
		for _, k := range n.kids {
			ok, why := k.explain(attrs)
			if ok == decisive {
				return ok, why
			}
			all = append(all, why...)
		}
		return !decisive, all
	}
	ok := n.eval(attrs)
	v, present := attrs[n.name]
	if !present && n.op != opHas {
		why := n.name + " is absent"
		if slices.Contains(n.values, "") {
			why += ` (compares as "")`
		}
		return ok, []string{why}
	}
	why := n.name + " is " + quoteValue(v)
	switch {
	case n.op == opHas && present:
		why = n.name + " is present"
	case n.op == opHas:
		why = n.name + " is absent"
	case n.op == opEq && !ok:
		why += ", not " + quote(n.values[0])
	case n.op == opIn && !ok:
		why += ", not in " + quoteList(n.values)
	}
	return ok, []string{why}
}

// quoteValue quotes an attribute value for a log line: escaped, and cut
// short when long, since peers choose their values.
func quoteValue(v string) string {
	const limit = 64
	if len(v) <= limit {
		return strconv.Quote(v)
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return strconv.Quote(v[:cut]) + "..."
}

// quote writes v as a string literal of the policy language.
func quote(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
}

func quoteList(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = quote(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// canonical writes n in canonical form, with the parentheses precedence
// needs and no others. It adds no nesting the source did not have: a group
// under "and", or an "and" or "or" under "not", was parenthesized there too.
func (n *node) canonical(b *strings.Builder) {
	switch n.op {
	case opTrue:
		b.WriteString("true")
	case opFalse:
		b.WriteString("false")
	case opEq:
		b.WriteString(n.name + " == " + quote(n.values[0]))
	case opNe:
		b.WriteString(n.name + " != " + quote(n.values[0]))
	case opIn:
		b.WriteString(n.name + " in " + quoteList(n.values))
	case opHas:
		b.WriteString("has(" + n.name + ")")
	case opNot:
		b.WriteString("not ")
		n.kids[0].operand(b, opNot)
	case opAnd, opOr:
		sep := " and "
		if n.op == opOr {
			sep = " or "
		}
		for i, k := range n.kids {
			if i > 0 {
				b.WriteString(sep)
			}
			k.operand(b, n.op)
		}
	}
}

// operand writes n as an operand of parent, in parentheses if it binds
// more loosely.
func (n *node) operand(b *strings.Builder, parent nodeOp) {
	if binding(n.op) >= binding(parent) {
		n.canonical(b)
		return
	}
	b.WriteByte('(')
	n.canonical(b)
	b.WriteByte(')')
}

// binding ranks how tightly an operator binds; operands rank highest.
func binding(op nodeOp) int {
	switch op {
	case opOr:
		return 1
	case opAnd:
		return 2
	case opNot:
		return 3
	}
	return 4
}

// names appends the attribute names n refers to.
func (n *node) names(dst []string) []string {
	if n.name != "" {
		dst = append(dst, n.name)
	}
	for _, k := range n.kids {
		dst = k.names(dst)
	}
	return dst
}
