package policy

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

type attrs = map[string]string

var evalTests = []struct {
	expr  string
	attrs attrs
	want  bool
}{
	// Shorthand means == "true", exactly.
	{`postgres-inlet`, attrs{"postgres-inlet": "true"}, true},
	{`postgres-inlet`, attrs{"postgres-inlet": "TRUE"}, false},
	{`postgres-inlet`, attrs{"postgres-inlet": "false"}, false},
	{`postgres-inlet`, attrs{"postgres-inlet": ""}, false},
	{`postgres-inlet`, attrs{}, false},
	{`postgres-inlet`, nil, false},
	{`Postgres-Inlet`, attrs{"postgres-inlet": "true"}, false},
	// Comparisons; a missing attribute compares as "".
	{`env == "prod"`, attrs{"env": "prod"}, true},
	{`env == prod`, attrs{"env": "prod"}, true},
	{`env == "prod"`, attrs{"env": "dev"}, false},
	{`env == "prod"`, nil, false},
	{`env != "prod"`, attrs{"env": "prod"}, false},
	{`env != "prod"`, attrs{"env": "dev"}, true},
	{`env != "prod"`, nil, true},
	{`env == ""`, nil, true},
	{`env == ""`, attrs{"env": ""}, true},
	{`env != ""`, nil, false},
	{`v == "a\"b"`, attrs{"v": `a"b`}, true},
	// in
	{`env in ["dev", "prod"]`, attrs{"env": "prod"}, true},
	{`env in ["dev", "prod"]`, attrs{"env": "dev"}, true},
	{`env in ["dev", "prod"]`, attrs{"env": "qa"}, false},
	{`env in ["dev", "prod"]`, nil, false},
	{`env in ["", "prod"]`, nil, true},
	{`not env in ["dev", "prod"]`, attrs{"env": "qa"}, true},
	// has
	{`has(env)`, attrs{"env": ""}, true},
	{`has(env)`, attrs{"env": "x"}, true},
	{`has(env)`, attrs{"other": "x"}, false},
	{`has(env)`, nil, false},
	{`!has(env)`, nil, true},
	// Constants.
	{`true`, nil, true},
	{`false`, attrs{"a": "true"}, false},
	// Operators and precedence: not > and > or.
	{`a and b`, attrs{"a": "true", "b": "true"}, true},
	{`a and b`, attrs{"a": "true"}, false},
	{`a or b`, attrs{"b": "true"}, true},
	{`a or b`, nil, false},
	{`not a`, nil, true},
	{`not a`, attrs{"a": "true"}, false},
	{`a or b and c`, attrs{"a": "true"}, true},    // a or (b and c)
	{`(a or b) and c`, attrs{"a": "true"}, false}, // grouped
	{`a and b or c`, attrs{"c": "true"}, true},    // (a and b) or c
	{`a and (b or c)`, attrs{"c": "true"}, false},
	{`not a and b`, attrs{"b": "true"}, true}, // (not a) and b
	{`not (a and b)`, attrs{"b": "true"}, true},
	{`not a or b`, attrs{"a": "true"}, false}, // (not a) or b
	{`!a || b && c`, attrs{"a": "true", "b": "true"}, false},
	{`!!a`, attrs{"a": "true"}, true},
	{`postgres-inlet and env == "prod"`, attrs{"postgres-inlet": "true", "env": "prod"}, true},
	{`postgres-inlet and env == "prod"`, attrs{"postgres-inlet": "true", "env": "staging"}, false},
}

func TestAllows(t *testing.T) {
	for _, tt := range evalTests {
		p := MustParse(tt.expr)
		if got := p.Allows(tt.attrs); got != tt.want {
			t.Errorf("Parse(%q).Allows(%v) = %v, want %v", tt.expr, tt.attrs, got, tt.want)
		}
		if got := strings.HasPrefix(p.Explain(tt.attrs), "allowed: "); got != tt.want {
			t.Errorf("Parse(%q).Explain(%v) = %s, want allowed %v", tt.expr, tt.attrs, p.Explain(tt.attrs), tt.want)
		}
	}
}

func TestExplain(t *testing.T) {
	long := strings.Repeat("x", 70)
	tests := []struct {
		expr  string
		attrs attrs
		want  string
	}{
		{`postgres-inlet`, nil, `denied: postgres-inlet is absent (policy: postgres-inlet == "true")`},
		{`postgres-inlet`, attrs{"postgres-inlet": "true"}, `allowed: postgres-inlet is "true" (policy: postgres-inlet == "true")`},
		{`env == prod`, attrs{"env": "dev"}, `denied: env is "dev", not "prod" (policy: env == "prod")`},
		{`env != prod`, attrs{"env": "prod"}, `denied: env is "prod" (policy: env != "prod")`},
		{`env != prod`, nil, `allowed: env is absent (policy: env != "prod")`},
		{`env != ""`, nil, `denied: env is absent (compares as "") (policy: env != "")`},
		{`env in [dev, prod]`, attrs{"env": "qa"}, `denied: env is "qa", not in ["dev", "prod"] (policy: env in ["dev", "prod"])`},
		{`has(env)`, attrs{"env": ""}, `allowed: env is present (policy: has(env))`},
		{`not has(env)`, attrs{"env": ""}, `denied: env is present (policy: not has(env))`},
		{`false`, nil, `denied: "false" never matches (policy: false)`},
		{`true`, nil, `allowed: "true" always matches (policy: true)`},
		{`a and b`, attrs{"a": "true"}, `denied: b is absent (policy: a == "true" and b == "true")`},
		{`a and b`, attrs{"a": "true", "b": "true"}, `allowed: a is "true" and b is "true" (policy: a == "true" and b == "true")`},
		{`a or b`, attrs{"b": "true"}, `allowed: b is "true" (policy: a == "true" or b == "true")`},
		{`a or b or a`, nil, `denied: a is absent and b is absent (policy: a == "true" or b == "true" or a == "true")`},
		{`v == x`, attrs{"v": "line\nbreak"}, `denied: v is "line\nbreak", not "x" (policy: v == "x")`},
		{`v == x`, attrs{"v": long}, `denied: v is "` + long[:64] + `"..., not "x" (policy: v == "x")`},
	}
	for _, tt := range tests {
		if got := MustParse(tt.expr).Explain(tt.attrs); got != tt.want {
			t.Errorf("Parse(%q).Explain(%v)\n got %s\nwant %s", tt.expr, tt.attrs, got, tt.want)
		}
	}
}

func TestEmptyPolicyDenies(t *testing.T) {
	all := attrs{"a": "true"}
	for name, p := range map[string]*Policy{"nil": nil, "zero": {}} {
		if p.Allows(all) || p.Allows(nil) {
			t.Errorf("%s policy allows", name)
		}
		if got := p.Explain(all); got != "denied: no policy" {
			t.Errorf("%s policy: Explain = %q", name, got)
		}
		if p.String() != "" || p.Canonical() != "" || p.Attributes() != nil {
			t.Errorf("%s policy: String %q, Canonical %q, Attributes %v", name, p.String(), p.Canonical(), p.Attributes())
		}
		if _, err := p.MarshalText(); err == nil {
			t.Errorf("%s policy: MarshalText succeeded", name)
		}
	}
}

func TestAttributes(t *testing.T) {
	p := MustParse(`postgres-inlet and (env == prod or has(k8s.io/app)) and not env in [a] or z`)
	want := []string{"env", "k8s.io/app", "postgres-inlet", "z"}
	got := p.Attributes()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Attributes() = %q, want %q", got, want)
	}
	got[0] = "changed"
	if p.Attributes()[0] != "env" {
		t.Error("Attributes() returned the policy's own slice")
	}
	if got := MustParse("true").Attributes(); len(got) != 0 {
		t.Errorf("Attributes() of true = %q", got)
	}
}

func TestJSON(t *testing.T) {
	type config struct {
		Allow *Policy `json:"allow"`
		Deny  *Policy `json:"deny,omitempty"`
	}
	in := config{Allow: MustParse(`postgres-inlet && env=="prod"`)}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"allow":"postgres-inlet \u0026\u0026 env==\"prod\""}`; string(b) != want {
		t.Errorf("Marshal = %s, want %s", b, want)
	}
	var out config
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.Allow.Canonical() != in.Allow.Canonical() || out.Allow.String() != in.Allow.String() || out.Deny != nil {
		t.Errorf("round trip gave %+v", out)
	}
	err = json.Unmarshal([]byte(`{"allow":"a and"}`), &out)
	if !errors.Is(err, ErrSyntax) {
		t.Errorf("Unmarshal of a bad policy: %v, want ErrSyntax", err)
	}
	err = json.Unmarshal([]byte(`{"allow":""}`), &out)
	if !errors.Is(err, ErrSyntax) {
		t.Errorf("Unmarshal of an empty policy: %v, want ErrSyntax", err)
	}
}
