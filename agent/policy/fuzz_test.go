package policy

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that its errors are well formed,
// and that a parsed policy survives a trip through its canonical form and
// through MarshalText.
func FuzzParse(f *testing.F) {
	for _, tt := range validTests {
		f.Add(tt.expr)
	}
	for _, tt := range invalidTests {
		f.Add(tt.expr)
	}
	for _, tt := range evalTests {
		f.Add(tt.expr)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		p, err := Parse(expr)
		if err != nil {
			checkSyntaxError(t, expr, err)
			return
		}
		canon := p.Canonical()
		if len(canon) > MaxLength {
			t.Fatalf("canonical form of %q is %d bytes", expr, len(canon))
		}
		if p.String() != strings.Trim(expr, " \t\r\n") {
			t.Fatalf("Parse(%q).String() = %q", expr, p.String())
		}
		q, err := Parse(canon)
		if err != nil {
			t.Fatalf("Parse(%q) of the canonical form of %q: %v", canon, expr, err)
		}
		if !reflect.DeepEqual(p.root, q.root) || q.Canonical() != canon {
			t.Fatalf("canonical form %q of %q parses to %q", canon, expr, q.Canonical())
		}
		var r Policy
		text, err := p.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		if err := r.UnmarshalText(text); err != nil || r.Canonical() != canon {
			t.Fatalf("MarshalText round trip of %q: %q, %v", expr, r.Canonical(), err)
		}
		for _, m := range sampleAttrs(p) {
			allowed := p.Allows(m)
			if q.Allows(m) != allowed {
				t.Fatalf("%q and its canonical form %q disagree on %v", expr, canon, m)
			}
			if got := strings.HasPrefix(p.Explain(m), "allowed: "); got != allowed {
				t.Fatalf("Parse(%q): Allows(%v) = %v but Explain says %s", expr, m, allowed, p.Explain(m))
			}
		}
	})
}

func checkSyntaxError(t *testing.T, expr string, err error) {
	t.Helper()
	var se *SyntaxError
	if !errors.As(err, &se) || !errors.Is(err, ErrSyntax) {
		t.Fatalf("Parse(%q): %v is not a *SyntaxError wrapping ErrSyntax", expr, err)
	}
	if se.Expr != expr || se.Pos < 1 || se.Pos > len(expr)+1 || se.Msg == "" {
		t.Fatalf("Parse(%q): bad error %#v", expr, se)
	}
}

// sampleAttrs builds a few attribute maps from the names and values p
// refers to, with some attributes absent, so that most branches are taken.
func sampleAttrs(p *Policy) []map[string]string {
	values := []string{"true", ""}
	var collect func(n *node)
	collect = func(n *node) {
		values = append(values, n.values...)
		for _, k := range n.kids {
			collect(k)
		}
	}
	collect(p.root)
	names := p.Attributes()
	maps := []map[string]string{nil}
	for k := range 4 {
		m := make(map[string]string)
		for i, name := range names {
			if (i+k)%3 != 0 {
				m[name] = values[(i+k)%len(values)]
			}
		}
		maps = append(maps, m)
	}
	return maps
}
