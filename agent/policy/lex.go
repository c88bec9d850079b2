package policy

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxLength is the longest expression Parse accepts, in bytes. The canonical
// form of an accepted policy is never longer either.
const MaxLength = 4096

// MaxDepth is the deepest nesting of parentheses and negations Parse accepts.
const MaxDepth = 64

// ErrSyntax is wrapped by every error Parse returns.
var ErrSyntax = errors.New("policy syntax error")

// SyntaxError describes why an expression does not parse, and where.
type SyntaxError struct {
	Expr string // the expression as given to Parse
	Pos  int    // 1-based byte offset into Expr; len(Expr)+1 is its end
	Msg  string // what is wrong, e.g. `expected "(" after "has", found "env"`
}

// Error quotes the expression (or, for a long one, the part around Pos).
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("parse policy %s: position %d: %s", excerpt(e.Expr, e.Pos), e.Pos, e.Msg)
}

// Unwrap returns ErrSyntax, so that errors.Is(err, ErrSyntax) holds.
func (e *SyntaxError) Unwrap() error { return ErrSyntax }

// excerpt quotes expr whole when it is short, else the bytes around pos.
func excerpt(expr string, pos int) string {
	const short, window = 128, 40
	if len(expr) <= short {
		return fmt.Sprintf("%q", expr)
	}
	lo := max(0, min(pos-1, len(expr))-window)
	hi := min(len(expr), lo+2*window)
	return fmt.Sprintf("of %d bytes near %q", len(expr), expr[lo:hi])
}

// tokKind is the kind of a lexical token.
type tokKind uint8

const (
	tokEOF    tokKind = iota
	tokName           // attribute name, or a bare value
	tokString         // double-quoted literal; val holds it unescaped
	tokLParen         // (
	tokRParen         // )
	tokLBrack         // [
	tokRBrack         // ]
	tokComma          // ,
	tokEq             // ==
	tokNe             // !=
	tokNot            // not, !
	tokAnd            // and, &&
	tokOr             // or, ||
	tokIn             // in
	tokHas            // has
	tokTrue           // true
	tokFalse          // false
)

var keywords = map[string]tokKind{
	"and": tokAnd, "or": tokOr, "not": tokNot, "in": tokIn,
	"has": tokHas, "true": tokTrue, "false": tokFalse,
}

var symbols = map[string]tokKind{
	"==": tokEq, "!=": tokNe, "&&": tokAnd, "||": tokOr,
	"!": tokNot, "(": tokLParen, ")": tokRParen, "[": tokLBrack, "]": tokRBrack, ",": tokComma,
}

// token is one lexical token of an expression.
type token struct {
	kind tokKind
	pos  int    // 0-based byte offset of the first byte
	text string // the source text
	val  string // the unescaped value of a tokString
}

// describe names t for a "found ..." message.
func (t token) describe() string {
	switch t.kind {
	case tokEOF:
		return "end of expression"
	case tokString:
		return "string " + t.text
	case tokName:
		s := fmt.Sprintf("attribute name %q", t.text)
		if _, ok := keywords[strings.ToLower(t.text)]; ok {
			s += " (keywords are lowercase)"
		}
		return s
	}
	return fmt.Sprintf("%q", t.text)
}

// lexer splits an expression into tokens, one at a time, so that errors are
// reported in source order.
type lexer struct {
	src string
	pos int
}

func isNameStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_'
}

func isNameByte(c byte) bool {
	return isNameStart(c) || strings.IndexByte("-./:", c) >= 0
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// trimSpace removes the whitespace the lexer skips from both ends of s.
func trimSpace(s string) string { return strings.Trim(s, " \t\n\r") }

func (l *lexer) errAt(pos int, format string, args ...any) error {
	return &SyntaxError{Expr: l.src, Pos: pos + 1, Msg: fmt.Sprintf(format, args...)}
}

// next returns the next token, or a *SyntaxError for a byte that starts none.
func (l *lexer) next() (token, error) {
	for l.pos < len(l.src) && isSpace(l.src[l.pos]) {
		l.pos++
	}
	start := l.pos
	if start == len(l.src) {
		return token{kind: tokEOF, pos: start}, nil
	}
	c := l.src[start]
	if isNameStart(c) {
		for l.pos < len(l.src) && isNameByte(l.src[l.pos]) {
			l.pos++
		}
		text := l.src[start:l.pos]
		if k, ok := keywords[text]; ok {
			return token{kind: k, pos: start, text: text}, nil
		}
		return token{kind: tokName, pos: start, text: text}, nil
	}
	if c == '"' {
		return l.str()
	}
	for _, n := range []int{2, 1} {
		if start+n <= len(l.src) {
			if k, ok := symbols[l.src[start:start+n]]; ok {
				l.pos += n
				return token{kind: k, pos: start, text: l.src[start:l.pos]}, nil
			}
		}
	}
	return token{}, l.badByte(start)
}

// badByte explains why the byte at pos starts no token.
func (l *lexer) badByte(pos int) error {
	switch c := l.src[pos]; c {
	case '=':
		return l.errAt(pos, `unexpected "="; write "==" to compare`)
	case '&':
		return l.errAt(pos, `unexpected "&"; write "&&" or "and"`)
	case '|':
		return l.errAt(pos, `unexpected "|"; write "||" or "or"`)
	case '\'':
		return l.errAt(pos, `unexpected "'"; strings are written in double quotes`)
	case '-', '.', '/', ':':
		return l.errAt(pos, `unexpected %q; attribute names start with a letter, a digit or "_"`, string(c))
	}
	r, size := utf8.DecodeRuneInString(l.src[pos:])
	if r == utf8.RuneError && size == 1 {
		return l.errAt(pos, "invalid UTF-8 byte 0x%02x", l.src[pos])
	}
	return l.errAt(pos, "unexpected character %q", r)
}

// str lexes a double-quoted string literal starting at l.pos.
func (l *lexer) str() (token, error) {
	start := l.pos
	var b strings.Builder
	for i := start + 1; i < len(l.src); {
		c := l.src[i]
		switch {
		case c == '"':
			l.pos = i + 1
			return token{kind: tokString, pos: start, text: l.src[start:l.pos], val: b.String()}, nil
		case c == '\\':
			if i+1 == len(l.src) {
				return token{}, l.errAt(start, "unterminated string")
			}
			if e := l.src[i+1]; e != '"' && e != '\\' {
				r, _ := utf8.DecodeRuneInString(l.src[i+1:])
				return token{}, l.errAt(i, `invalid escape \%c in string; only \" and \\ are allowed`, r)
			}
			b.WriteByte(l.src[i+1])
			i += 2
		default:
			r, size := utf8.DecodeRuneInString(l.src[i:])
			if r == utf8.RuneError && size == 1 {
				return token{}, l.errAt(i, "invalid UTF-8 byte 0x%02x in string", c)
			}
			if !unicode.IsGraphic(r) {
				return token{}, l.errAt(i, "unprintable character %U in string", r)
			}
			b.WriteString(l.src[i : i+size])
			i += size
		}
	}
	return token{}, l.errAt(start, "unterminated string")
}
