package wire

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"time"
)

// TicketPrefix starts every encoded ticket and domain-separates its signature.
const TicketPrefix = "sluice-ticket-v1."

// Sentinel errors for refused tickets; the hub sends their text to the agent.
var (
	ErrTicketMalformed = errors.New("ticket is malformed")
	ErrTicketForeign   = errors.New("ticket was not issued by this project's authority")
	ErrTicketExpired   = errors.New("ticket has expired")
	ErrTicketUsed      = errors.New("ticket has already been used up")
	ErrRelayNotAllowed = errors.New("relay name is not allowed for this node")
	ErrNotMember       = errors.New("node is not a member of the project")
	ErrMemberRevoked   = errors.New("node's membership was revoked")
)

// Ticket is the signed content of an enrollment ticket.
type Ticket struct {
	ID      string `json:"id"`
	Project string `json:"project"`
	Hub     string `json:"hub"`
	// Hubs, if set, are every hub of the project, Hub first: an agent
	// fails over between them (docs/hub-cluster.md). Older agents read
	// only Hub.
	Hubs         []string          `json:"hubs,omitempty"`
	AuthorityKey []byte            `json:"authority_key"`
	Attributes   map[string]string `json:"attributes,omitempty"`
	Relays       []string          `json:"relays,omitempty"`
	Expires      time.Time         `json:"expires"`
	Usage        int               `json:"usage"`
}

var (
	attrNameRe  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.\-/:]{0,127}$`)
	relayNameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_.\-]{0,62}$`)
)

// CheckAttribute reports whether name=value may be carried in a credential.
func CheckAttribute(name, value string) error {
	if !attrNameRe.MatchString(name) {
		return fmt.Errorf("attribute name %q: use letters, digits and _ . - / : (at most 128), starting with a letter, digit or _", name)
	}
	if len(value) > 256 || strings.ContainsAny(value, "\x00\n\r") {
		return fmt.Errorf("attribute %s: value must be at most 256 bytes on one line", name)
	}
	return nil
}

// CheckRelayName reports whether name is a valid relay name.
func CheckRelayName(name string) error {
	if !relayNameRe.MatchString(name) {
		return fmt.Errorf("relay name %q: use lower-case letters, digits and _ . - (at most 63), starting with a letter or digit", name)
	}
	return nil
}

// Sign encodes the ticket and signs it with key, the project authority's.
func (t *Ticket) Sign(key ed25519.PrivateKey) (string, error) {
	payload, err := json.Marshal(t)
	if err != nil {
		return "", fmt.Errorf("encode ticket: %w", err)
	}
	signed := TicketPrefix + base64.RawURLEncoding.EncodeToString(payload)
	sig := ed25519.Sign(key, []byte(signed))
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// ParseTicket decodes an encoded ticket and checks that it is signed by the
// authority key it names. It does not check expiry or usage: only the hub can.
func ParseTicket(s string) (*Ticket, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, TicketPrefix) {
		return nil, fmt.Errorf("parse ticket: does not start with %q (was it copied whole?): %w", TicketPrefix, ErrTicketMalformed)
	}
	i := strings.LastIndexByte(s, '.')
	signed, sigText := s[:i], s[i+1:]
	payload, err1 := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(signed, TicketPrefix))
	sig, err2 := base64.RawURLEncoding.DecodeString(sigText)
	if err := errors.Join(err1, err2); err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("parse ticket: bad encoding: %w", ErrTicketMalformed)
	}
	var t Ticket
	if err := json.Unmarshal(payload, &t); err != nil {
		return nil, fmt.Errorf("parse ticket: %w: %w", err, ErrTicketMalformed)
	}
	if len(t.AuthorityKey) != ed25519.PublicKeySize || t.ID == "" || t.Hub == "" || t.Usage < 1 {
		return nil, fmt.Errorf("parse ticket: missing fields: %w", ErrTicketMalformed)
	}
	if !ed25519.Verify(t.AuthorityKey, []byte(signed), sig) {
		return nil, fmt.Errorf("parse ticket: signature does not match: %w", ErrTicketMalformed)
	}
	if len(t.Hubs) > MaxHubs || (len(t.Hubs) > 0 && t.Hubs[0] != t.Hub) {
		return nil, fmt.Errorf("parse ticket: hub list %q: at most %d addresses, the first the ticket's hub %q: %w", t.Hubs, MaxHubs, t.Hub, ErrTicketMalformed)
	}
	for _, h := range t.Addresses() {
		if _, _, err := net.SplitHostPort(h); err != nil {
			return nil, fmt.Errorf("parse ticket: hub address %q: %w: %w", h, err, ErrTicketMalformed)
		}
	}
	return &t, nil
}

// MaxHubs bounds the hub addresses a ticket lists.
const MaxHubs = 16

// Addresses are the hubs an agent enrolled with t may connect to: Hubs,
// or Hub alone for a ticket of one hub (or of an older authority).
func (t *Ticket) Addresses() []string {
	if len(t.Hubs) > 0 {
		return slices.Clone(t.Hubs)
	}
	return []string{t.Hub}
}
