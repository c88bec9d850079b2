package authority

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
)

// ticketPrefix starts every encoded ticket and domain-separates its signature.
const ticketPrefix = "sluice-ticket-v1."

// Ticket defaults, as `agentctl ticket create` documents them.
const (
	DefaultTicketExpiry = 10 * time.Minute
	DefaultTicketUsage  = 1
	maxTicketUsage      = 1000
	maxTicketExpiry     = 30 * 24 * time.Hour
)

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
	ID           string            `json:"id"`
	Project      string            `json:"project"`
	Hub          string            `json:"hub"`
	AuthorityKey []byte            `json:"authority_key"`
	Attributes   map[string]string `json:"attributes,omitempty"`
	Relays       []string          `json:"relays,omitempty"`
	Expires      time.Time         `json:"expires"`
	Usage        int               `json:"usage"`
}

// TicketOptions are what `agentctl ticket create` lets an administrator choose.
// Zero ExpiresIn and Usage mean the defaults.
type TicketOptions struct {
	Attributes map[string]string
	Relays     []string
	ExpiresIn  time.Duration
	Usage      int
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

// NewTicket signs a ticket with the project authority and returns it encoded.
func (p *Project) NewTicket(opts TicketOptions) (string, *Ticket, error) {
	if opts.ExpiresIn == 0 {
		opts.ExpiresIn = DefaultTicketExpiry
	}
	if opts.Usage == 0 {
		opts.Usage = DefaultTicketUsage
	}
	if opts.ExpiresIn < 0 || opts.ExpiresIn > maxTicketExpiry {
		return "", nil, fmt.Errorf("create ticket: expiry %v must be positive and at most %v", opts.ExpiresIn, maxTicketExpiry)
	}
	if opts.Usage < 1 || opts.Usage > maxTicketUsage {
		return "", nil, fmt.Errorf("create ticket: usage count %d must be from 1 to %d", opts.Usage, maxTicketUsage)
	}
	for k, v := range opts.Attributes {
		if err := CheckAttribute(k, v); err != nil {
			return "", nil, fmt.Errorf("create ticket: %w", err)
		}
	}
	relays := append([]string(nil), opts.Relays...)
	sort.Strings(relays)
	for _, r := range relays {
		if err := CheckRelayName(r); err != nil {
			return "", nil, fmt.Errorf("create ticket: %w", err)
		}
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", nil, fmt.Errorf("create ticket: %w", err)
	}
	t := &Ticket{
		ID:           hex.EncodeToString(id[:]),
		Project:      p.ID,
		Hub:          p.HubAddress,
		AuthorityKey: p.AuthorityPublicKey(),
		Attributes:   opts.Attributes,
		Relays:       relays,
		Expires:      time.Now().Add(opts.ExpiresIn).UTC().Truncate(time.Second),
		Usage:        opts.Usage,
	}
	s, err := t.sign(p.Key)
	if err != nil {
		return "", nil, err
	}
	return s, t, nil
}

func (t *Ticket) sign(key ed25519.PrivateKey) (string, error) {
	payload, err := json.Marshal(t)
	if err != nil {
		return "", fmt.Errorf("encode ticket: %w", err)
	}
	signed := ticketPrefix + base64.RawURLEncoding.EncodeToString(payload)
	sig := ed25519.Sign(key, []byte(signed))
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// ParseTicket decodes an encoded ticket and checks that it is signed by the
// authority key it names. It does not check expiry or usage: only the hub can.
func ParseTicket(s string) (*Ticket, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, ticketPrefix) {
		return nil, fmt.Errorf("parse ticket: does not start with %q (was it copied whole?): %w", ticketPrefix, ErrTicketMalformed)
	}
	i := strings.LastIndexByte(s, '.')
	signed, sigText := s[:i], s[i+1:]
	payload, err1 := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(signed, ticketPrefix))
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
	return &t, nil
}
