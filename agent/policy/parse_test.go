package policy

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// validTests maps expressions to their canonical forms.
var validTests = []struct {
	expr, canonical string
}{
	{`postgres-inlet`, `postgres-inlet == "true"`},
	{`  postgres-inlet  `, `postgres-inlet == "true"`},
	{`ockam.role`, `ockam.role == "true"`},
	{`k8s.io/app:web`, `k8s.io/app:web == "true"`},
	{`_x`, `_x == "true"`},
	{`1st`, `1st == "true"`},
	{`true`, `true`},
	{`false`, `false`},
	{`env == "prod"`, `env == "prod"`},
	{`env=="prod"`, `env == "prod"`},
	{`env == prod`, `env == "prod"`},
	{`env != "prod"`, `env != "prod"`},
	{`flag == true`, `flag == "true"`},
	{`flag != false`, `flag != "false"`},
	{`port == 5432`, `port == "5432"`},
	{`v == ""`, `v == ""`},
	{`v == "a \"b\" \\ c"`, `v == "a \"b\" \\ c"`},
	{`v == "héllo wörld"`, `v == "héllo wörld"`},
	{`env in ["prod"]`, `env in ["prod"]`},
	{`env in [staging, "prod", prod, "dev"]`, `env in ["dev", "prod", "staging"]`},
	{`env in["a","b"]`, `env in ["a", "b"]`},
	{`has(env)`, `has(env)`},
	{`has ( env )`, `has(env)`},
	{`not a`, `not a == "true"`},
	{`!a`, `not a == "true"`},
	{`!!a`, `not not a == "true"`},
	{`not has(a)`, `not has(a)`},
	{`!(a)`, `not a == "true"`},
	{`a and b`, `a == "true" and b == "true"`},
	{`a && b`, `a == "true" and b == "true"`},
	{`a or b`, `a == "true" or b == "true"`},
	{`a || b`, `a == "true" or b == "true"`},
	{`a or b and c`, `a == "true" or b == "true" and c == "true"`},
	{`(a or b) and c`, `(a == "true" or b == "true") and c == "true"`},
	{`a and (b and c)`, `a == "true" and b == "true" and c == "true"`},
	{`(a or b) or (c or d)`, `a == "true" or b == "true" or c == "true" or d == "true"`},
	{`not a and b`, `not a == "true" and b == "true"`},
	{`not (a and b)`, `not (a == "true" and b == "true")`},
	{`not (a or b) or c`, `not (a == "true" or b == "true") or c == "true"`},
	{`((((a))))`, `a == "true"`},
	{"a\n\tand\r\nb", `a == "true" and b == "true"`},
	{`postgres-inlet && (env==prod || env==staging)`, `postgres-inlet == "true" and (env == "prod" or env == "staging")`},
	{`android and orange and notice and inside and hash and trueish and falsey`,
		`android == "true" and orange == "true" and notice == "true" and inside == "true" and hash == "true" and trueish == "true" and falsey == "true"`},
}

func TestParseValid(t *testing.T) {
	for _, tt := range validTests {
		p, err := Parse(tt.expr)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.expr, err)
			continue
		}
		if got := p.Canonical(); got != tt.canonical {
			t.Errorf("Parse(%q).Canonical() = %s, want %s", tt.expr, got, tt.canonical)
		}
		if got, want := p.String(), strings.TrimSpace(tt.expr); got != want {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.expr, got, want)
		}
		q, err := Parse(p.Canonical())
		if err != nil {
			t.Errorf("Parse(%q) of canonical form: %v", p.Canonical(), err)
			continue
		}
		if !reflect.DeepEqual(p.root, q.root) {
			t.Errorf("Parse(%q) and Parse of its canonical form %q differ", tt.expr, p.Canonical())
		}
	}
}

// invalidTests lists expressions that do not parse, with the error's
// position and message.
var invalidTests = []struct {
	expr string
	pos  int
	msg  string
}{
	{``, 1, `empty policy; write an expression, or "false" to deny every peer`},
	{" \t\n", 1, `empty policy; write an expression, or "false" to deny every peer`},
	{`postgres-inlet and`, 19, `expected an attribute name, "(", "not", "has", "true" or "false", found end of expression`},
	{`a or`, 5, `expected an attribute name, "(", "not", "has", "true" or "false", found end of expression`},
	{`not`, 4, `expected an attribute name, "(", "not", "has", "true" or "false", found end of expression`},
	{`a and and b`, 7, `expected an attribute name, "(", "not", "has", "true" or "false", found "and"`},
	{`and`, 1, `expected an attribute name, "(", "not", "has", "true" or "false", found "and"`},
	{`"env" == "prod"`, 1, `expected an attribute name, "(", "not", "has", "true" or "false", found string "env" (attribute names are written without quotes)`},
	{`a b`, 3, `expected "==", "!=", "in", "and", "or" or end of expression, found attribute name "b"`},
	{`a AND b`, 3, `expected "==", "!=", "in", "and", "or" or end of expression, found attribute name "AND" (keywords are lowercase)`},
	{`a == "x" b`, 10, `expected "and", "or" or end of expression, found attribute name "b"`},
	{`a)`, 2, `expected "==", "!=", "in", "and", "or" or end of expression, found ")"`},
	{`(a`, 3, `expected "==", "!=", "in", "and", "or" or ")" to close "(" at position 1, found end of expression`},
	{`(has(a) b)`, 9, `expected "and", "or" or ")", found attribute name "b"`},
	{`()`, 2, `expected an attribute name, "(", "not", "has", "true" or "false", found ")"`},
	{`a ==`, 5, `expected a value after "==", found end of expression`},
	{`a != (b)`, 6, `expected a value after "!=", found "("`},
	{`a == and`, 6, `expected a value after "==", found "and"`},
	{`a = b`, 3, `unexpected "="; write "==" to compare`},
	{`a === b`, 5, `unexpected "="; write "==" to compare`},
	{`a & b`, 3, `unexpected "&"; write "&&" or "and"`},
	{`a | b`, 3, `unexpected "|"; write "||" or "or"`},
	{`a == 'b'`, 6, `unexpected "'"; strings are written in double quotes`},
	{`-a`, 1, `unexpected "-"; attribute names start with a letter, a digit or "_"`},
	{`a == -1`, 6, `unexpected "-"; attribute names start with a letter, a digit or "_"`},
	{`a @ b`, 3, `unexpected character '@'`},
	{`héllo`, 2, `unexpected character 'é'`},
	{"a \xff", 3, `invalid UTF-8 byte 0xff`},
	{`a == "b`, 6, `unterminated string`},
	{`a == "b\"`, 6, `unterminated string`},
	{`a == "b\`, 6, `unterminated string`},
	{`a == "\n"`, 7, `invalid escape \n in string; only \" and \\ are allowed`},
	{"a == \"x\ty\"", 8, `unprintable character U+0009 in string`},
	{"a == \"\xc3\"", 7, `invalid UTF-8 byte 0xc3 in string`},
	{`a in`, 5, `expected "[" after "in", found end of expression`},
	{`a in "b"`, 6, `expected "[" after "in", found string "b"`},
	{`a in []`, 7, `expected a value, found "]"`},
	{`a in [b,]`, 9, `expected a value, found "]"`},
	{`a in [b c]`, 9, `expected "," or "]", found attribute name "c"`},
	{`a in [b`, 8, `expected "," or "]", found end of expression`},
	{`has`, 4, `expected "(" after "has", found end of expression`},
	{`has a`, 5, `expected "(" after "has", found attribute name "a"`},
	{`has()`, 5, `expected an attribute name, found ")"`},
	{`has(true)`, 5, `expected an attribute name, found "true"`},
	{`has(a`, 6, `expected ")", found end of expression`},
	{`has(a, b)`, 6, `expected ")", found ","`},
	{`in == "x"`, 1, `expected an attribute name, "(", "not", "has", "true" or "false", found "in"`},
	{`true == "x"`, 6, `expected "and", "or" or end of expression, found "=="`},
}

func TestParseInvalid(t *testing.T) {
	for _, tt := range invalidTests {
		p, err := Parse(tt.expr)
		if err == nil {
			t.Errorf("Parse(%q) = %s, want an error", tt.expr, p.Canonical())
			continue
		}
		if !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q): error %v does not wrap ErrSyntax", tt.expr, err)
		}
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Parse(%q): error %v is not a *SyntaxError", tt.expr, err)
			continue
		}
		if se.Expr != tt.expr || se.Pos != tt.pos || se.Msg != tt.msg {
			t.Errorf("Parse(%q):\n got position %d: %s\nwant position %d: %s", tt.expr, se.Pos, se.Msg, tt.pos, tt.msg)
		}
	}
}

func TestSyntaxErrorString(t *testing.T) {
	_, err := Parse("postgres-inlet and")
	want := `parse policy "postgres-inlet and": position 19: expected an attribute name, "(", "not", "has", "true" or "false", found end of expression`
	if err == nil || err.Error() != want {
		t.Errorf("got error %v\nwant %s", err, want)
	}

	long := strings.Repeat("a and ", 100) + "@"
	_, err = Parse(long)
	want = `parse policy of 601 bytes near "and a and a and a and a and a and a and @": position 601: unexpected character '@'`
	if err == nil || err.Error() != want {
		t.Errorf("got error %v\nwant %s", err, want)
	}
}

func TestLimits(t *testing.T) {
	nest := func(n int, open, close string) string {
		return strings.Repeat(open, n) + "a" + strings.Repeat(close, n)
	}
	tests := []struct {
		name string
		expr string
		pos  int // 0 if expr must parse
		msg  string
	}{
		{"parentheses at limit", nest(MaxDepth, "(", ")"), 0, ""},
		{"parentheses over limit", nest(MaxDepth+1, "(", ")"), MaxDepth + 1, `nested deeper than 64 levels of parentheses and "not"`},
		{"negations at limit", nest(MaxDepth, "!", ""), 0, ""},
		{"negations over limit", nest(MaxDepth+1, "not ", ""), 4*MaxDepth + 1, `nested deeper than 64 levels of parentheses and "not"`},
		{"mixed over limit", nest(MaxDepth/2+1, "!(", ")"), MaxDepth + 1, `nested deeper than 64 levels of parentheses and "not"`},
		{"very deep", nest(100000, "(", ")"), 0, "expression is 200001 bytes, longer than the limit of 4096"},
		{"length at limit", "a" + strings.Repeat(" ", MaxLength-1), 0, ""},
		{"length over limit", "a" + strings.Repeat(" ", MaxLength), MaxLength + 1, "expression is 4097 bytes, longer than the limit of 4096"},
		{"canonical over limit", "a" + strings.Repeat("&&a", 1000), 1, "expression is 16011 bytes in canonical form, longer than the limit of 4096"},
	}
	for _, tt := range tests {
		_, err := Parse(tt.expr)
		var se *SyntaxError
		switch {
		case tt.msg == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.msg != "" && !errors.As(err, &se):
			t.Errorf("%s: got error %v, want a *SyntaxError", tt.name, err)
		case tt.msg != "" && tt.pos != 0 && se.Pos != tt.pos:
			t.Errorf("%s: got position %d, want %d", tt.name, se.Pos, tt.pos)
		case tt.msg != "" && se.Msg != tt.msg:
			t.Errorf("%s: got %q, want %q", tt.name, se.Msg, tt.msg)
		}
	}
}

func TestMustParse(t *testing.T) {
	if got := MustParse("a").Canonical(); got != `a == "true"` {
		t.Errorf("MustParse(a).Canonical() = %s", got)
	}
	defer func() {
		if r := recover(); r == nil {
			t.Error("MustParse of an invalid expression did not panic")
		}
	}()
	MustParse("a and")
}
