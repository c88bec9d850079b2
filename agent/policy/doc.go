// Package policy parses and evaluates the attribute expressions that decide
// which peers may use an inlet or an outlet.
//
// A peer presents credentials whose attributes form a map[string]string, such as
// {"postgres-inlet": "true", "env": "prod"}. A policy is a boolean expression over
// those attributes. Access is denied by default: nothing is allowed until an
// operator writes a policy, and an empty expression is an error rather than
// "allow everything" or "deny everything". Write "false" to deny all peers and
// "true" to allow all of them.
//
// # Language
//
// Attribute names are made of ASCII letters, digits and the characters
// '-', '_', '.', '/' and ':', and start with a letter, a digit or '_':
// postgres-inlet, ockam.role, k8s.io/app. The keywords and, or, not, in, true,
// false and has are not names. Keywords are lowercase; names are case sensitive.
//
//	NAME                      shorthand for NAME == "true"
//	NAME == "value"           the attribute equals value
//	NAME != "value"           the attribute does not equal value
//	NAME in ["a", "b"]        the attribute equals one of the listed values
//	has(NAME)                 the attribute is present, whatever its value
//	not X    or  !X           negation
//	X and Y  or  X && Y       conjunction
//	X or Y   or  X || Y       disjunction
//	( X )                     grouping
//	true, false               constants
//
// Precedence, from tightest to loosest: not, and, or. So
// "a or b and not c" means "a or (b and (not c))".
//
// Values are string literals in double quotes; the only escapes are \" and \\,
// and a literal may hold any printable character. A bare word that follows the
// rules for names is accepted as a value too, as are true and false, so
// env == prod means env == "prod" and flag == true means flag == "true".
// Values in a list follow the same rules; a list holds at least one value.
//
// An attribute that is absent compares as the empty string: env != "prod" and
// env == "" hold when env is absent, env == "prod" does not. Use has(env) to
// tell an absent attribute from an empty one.
//
// # Limits
//
// An expression is at most [MaxLength] bytes, both as given and in canonical
// form (where shorthands are spelled out), and nests at most [MaxDepth] levels
// of parentheses and negations. Longer or deeper expressions are syntax errors.
//
// # Errors
//
// Every parse error is a [*SyntaxError] that wraps [ErrSyntax] and points at the
// 1-based byte position of the problem:
//
//	parse policy "postgres-inlet and": position 19: expected an attribute name, "(", "not", "has", "true" or "false", found end of expression
//
// # Canonical form
//
// [Policy.Canonical] spells out shorthands, quotes every value, writes the
// keyword forms of the operators, sorts and deduplicates "in" lists, flattens
// chains of "and" and "or", and keeps only the parentheses that precedence
// needs: "postgres-inlet && (env==prod || env==staging)" becomes
//
//	postgres-inlet == "true" and (env == "prod" or env == "staging")
//
// Parsing the canonical form gives back an equal policy.
package policy
