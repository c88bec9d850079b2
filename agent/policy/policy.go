package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Policy is a parsed access policy. Its zero value and a nil *Policy deny
// every peer. A Policy is immutable, and safe for concurrent use.
//
// Store a *Policy, not a Policy, in configuration structs: encoding/json
// then writes an unset policy as null instead of failing to marshal it.
type Policy struct {
	src   string   // the expression as given, trimmed
	canon string   // the canonical form
	root  *node    // the parsed tree
	attrs []string // the attribute names root refers to, sorted and unique
}

// Parse parses an expression in the policy language. Every error it returns
// is a *SyntaxError that wraps ErrSyntax.
func Parse(expr string) (*Policy, error) {
	root, err := parse(expr)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	root.canonical(&b)
	if b.Len() > MaxLength {
		return nil, &SyntaxError{Expr: expr, Pos: 1, Msg: fmt.Sprintf(
			"expression is %d bytes in canonical form, longer than the limit of %d", b.Len(), MaxLength)}
	}
	attrs := root.names(nil)
	slices.Sort(attrs)
	return &Policy{
		src:   trimSpace(expr),
		canon: b.String(),
		root:  root,
		attrs: slices.Compact(attrs),
	}, nil
}

// MustParse is like Parse but panics if expr does not parse. It is meant for
// tests and for policies written as constants in the source; never pass it
// input from operators or peers.
func MustParse(expr string) *Policy {
	p, err := Parse(expr)
	if err != nil {
		panic(err)
	}
	return p
}

// String returns the expression as it was given, without surrounding
// whitespace. It returns "" for a nil or zero Policy.
func (p *Policy) String() string {
	if p == nil {
		return ""
	}
	return p.src
}

// Canonical returns the policy in canonical form, for example
// `postgres-inlet == "true"` for "postgres-inlet". Two policies that parse to
// the same tree have the same canonical form, and Parse(p.Canonical()) gives
// back a policy equal to p. It returns "" for a nil or zero Policy.
func (p *Policy) Canonical() string {
	if p == nil {
		return ""
	}
	return p.canon
}

// Allows reports whether a peer with the given attributes satisfies the
// policy. A nil or zero Policy allows nobody; a nil attrs means no attributes.
func (p *Policy) Allows(attrs map[string]string) bool {
	if p == nil || p.root == nil {
		return false
	}
	return p.root.eval(attrs)
}

// Explain says in one line whether attrs are allowed, why, and by which
// policy, for logs and errors shown to operators; for example
//
//	denied: postgres-inlet is absent (policy: postgres-inlet == "true")
//
// Its verdict always agrees with Allows. Attribute values are quoted with Go
// escapes and cut short when long.
func (p *Policy) Explain(attrs map[string]string) string {
	if p == nil || p.root == nil {
		return "denied: no policy"
	}
	ok, why := p.root.explain(attrs)
	verdict := "denied: "
	if ok {
		verdict = "allowed: "
	}
	var seen []string
	for _, w := range why {
		if !slices.Contains(seen, w) {
			seen = append(seen, w)
		}
	}
	return verdict + strings.Join(seen, " and ") + " (policy: " + p.canon + ")"
}

// Attributes returns the names of the attributes the policy refers to,
// sorted and without duplicates. The caller owns the slice.
func (p *Policy) Attributes() []string {
	if p == nil {
		return nil
	}
	return slices.Clone(p.attrs)
}

// MarshalText returns the expression as it was given, so that configuration
// files keep the operator's spelling. It fails for a nil or zero Policy,
// which has no text that would parse back.
func (p *Policy) MarshalText() ([]byte, error) {
	if p == nil || p.root == nil {
		return nil, errors.New("marshal policy: policy is empty")
	}
	return []byte(p.src), nil
}

// UnmarshalText parses text into p, as Parse does.
func (p *Policy) UnmarshalText(text []byte) error {
	if p == nil {
		return errors.New("unmarshal policy: nil *Policy")
	}
	q, err := Parse(string(text))
	if err != nil {
		return err
	}
	*p = *q
	return nil
}
