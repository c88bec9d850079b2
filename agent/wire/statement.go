package wire

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// A Statement is something the authority says, signed with its key, so that
// a relay can pass it on but neither forge nor alter it: a word on a member
// (Word) or a heartbeat (Heartbeat). Body is the JSON of one of them; Sig
// signs statementPrefix followed by Body, the exact bytes sent.
type Statement struct {
	Body []byte `json:"body"`
	Sig  []byte `json:"sig"`
}

// statementPrefix domain-separates the authority's statements from every
// other use of its key (tickets, certificates).
const statementPrefix = "sluice-authority-statement-v1\x00"

// Kinds of statement.
const (
	KindWord      = "member"
	KindHeartbeat = "heartbeat"
)

// ErrBadStatement means a statement is not one the project's authority made.
var ErrBadStatement = errors.New("statement is not signed by the project authority")

// Word is the authority's word on a member at a generation: its attributes,
// the relay names its tickets allow it to claim, and whether it is revoked.
type Word struct {
	Kind       string            `json:"kind"`
	Project    string            `json:"project"`
	Node       string            `json:"node"`
	Generation uint64            `json:"generation"`
	Attributes map[string]string `json:"attributes,omitempty"`
	Relays     []string          `json:"relays,omitempty"`
	Revoked    bool              `json:"revoked,omitempty"`
}

// Heartbeat says that the authority was alive at Time and its member state at
// Generation: an agent whose newest heartbeat is old, or whose words stop
// short of its generation, knows its view of the members is stale.
type Heartbeat struct {
	Kind       string    `json:"kind"`
	Project    string    `json:"project"`
	Generation uint64    `json:"generation"`
	Time       time.Time `json:"time"`
}

// Sign makes a statement of v (a Word or a Heartbeat) with the authority's
// key.
func Sign(key ed25519.PrivateKey, v any) (Statement, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return Statement{}, fmt.Errorf("sign statement: %w", err)
	}
	return Statement{Body: body, Sig: ed25519.Sign(key, append([]byte(statementPrefix), body...))}, nil
}

// open checks a statement's signature and decodes it into v, which must be of
// kind and of project.
func (s Statement) open(pub ed25519.PublicKey, project, kind string, v any) error {
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, append([]byte(statementPrefix), s.Body...), s.Sig) {
		return ErrBadStatement
	}
	var head struct {
		Kind    string `json:"kind"`
		Project string `json:"project"`
	}
	if err := json.Unmarshal(s.Body, &head); err != nil {
		return fmt.Errorf("decode statement: %w: %w", err, ErrBadStatement)
	}
	if head.Kind != kind || head.Project != project {
		return fmt.Errorf("statement of kind %q for project %q, want %q for %q: %w", head.Kind, head.Project, kind, project, ErrBadStatement)
	}
	if err := json.Unmarshal(s.Body, v); err != nil {
		return fmt.Errorf("decode statement: %w: %w", err, ErrBadStatement)
	}
	return nil
}

// OpenWord checks that s is a word of the authority whose key is pub, on a
// member of project, and returns it.
func OpenWord(pub ed25519.PublicKey, project string, s Statement) (Word, error) {
	var w Word
	if err := s.open(pub, project, KindWord, &w); err != nil {
		return Word{}, err
	}
	if w.Node == "" {
		return Word{}, fmt.Errorf("word names no node: %w", ErrBadStatement)
	}
	return w, nil
}

// OpenHeartbeat checks that s is a heartbeat of the authority whose key is
// pub, for project, and returns it.
func OpenHeartbeat(pub ed25519.PublicKey, project string, s Statement) (Heartbeat, error) {
	var hb Heartbeat
	if err := s.open(pub, project, KindHeartbeat, &hb); err != nil {
		return Heartbeat{}, err
	}
	return hb, nil
}
