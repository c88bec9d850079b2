package policy

import (
	"maps"
	"sort"
	"strings"
	"testing"
)

// FuzzAllows evaluates parsed policies on attributes the fuzzer chooses
// (names and values, the policy's own names among them), where FuzzParse
// only tries values taken from the policy. A verdict depends on the
// attributes Attributes names and on nothing else (the agent re-evaluates
// policies when those change), agrees with the canonical form's and with
// Explain, and evaluation leaves the attributes alone.
func FuzzAllows(f *testing.F) {
	for _, tt := range evalTests {
		var lines []string
		for _, k := range sortedKeys(tt.attrs) {
			lines = append(lines, k+"="+tt.attrs[k])
		}
		f.Add(tt.expr, strings.Join(lines, "\n"))
	}
	f.Add(`a == "x" or has(b)`, "a=x\nb=\nc=true")
	f.Add(`not (a in ["", "1"])`, "\n=\na=1")
	f.Fuzz(func(t *testing.T, expr, attrText string) {
		p, err := Parse(expr)
		if err != nil {
			return
		}
		canon, err := Parse(p.Canonical())
		if err != nil {
			t.Fatalf("canonical form %q of %q: %v", p.Canonical(), expr, err)
		}
		names := p.Attributes()
		for _, m := range fuzzAttrs(names, attrText) {
			before := maps.Clone(m)
			allowed := p.Allows(m)
			if !maps.Equal(m, before) {
				t.Fatalf("Allows changed the attributes %v to %v", before, m)
			}
			only := map[string]string{}
			for _, n := range names {
				if v, ok := m[n]; ok {
					only[n] = v
				}
			}
			if p.Allows(only) != allowed {
				t.Fatalf("%q: Allows(%q) = %v but Allows of its attributes %v only (%q) differs", expr, m, allowed, names, only)
			}
			if canon.Allows(m) != allowed {
				t.Fatalf("%q and its canonical form %q disagree on %q", expr, p.Canonical(), m)
			}
			if got := strings.HasPrefix(p.Explain(m), "allowed: "); got != allowed {
				t.Fatalf("%q: Allows(%q) = %v but Explain says %s", expr, m, allowed, p.Explain(m))
			}
		}
	})
}

// fuzzAttrs makes attribute maps from text: its "name=value" lines as they
// are, then the policy's names given the lines' values in turn, some left
// out.
func fuzzAttrs(names []string, text string) []map[string]string {
	lines := strings.Split(text, "\n")
	given := map[string]string{}
	var values []string
	for _, l := range lines {
		k, v, _ := strings.Cut(l, "=")
		given[k] = v
		values = append(values, v)
	}
	out := []map[string]string{given}
	for shift := range 3 {
		m := maps.Clone(given)
		for i, n := range names {
			if (i+shift)%3 == 2 {
				delete(m, n)
				continue
			}
			m[n] = values[(i+shift)%len(values)]
		}
		out = append(out, m)
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
