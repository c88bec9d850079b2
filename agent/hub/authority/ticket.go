package authority

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/sluicehq/sluice/agent/wire"
)

// Ticket defaults, as `agentctl ticket create` documents them.
const (
	DefaultTicketExpiry = 10 * time.Minute
	DefaultTicketUsage  = 1
	maxTicketUsage      = 1000
	maxTicketExpiry     = 30 * 24 * time.Hour
)

// TicketOptions are what `agentctl ticket create` lets an administrator choose.
// Zero ExpiresIn and Usage mean the defaults.
type TicketOptions struct {
	Attributes map[string]string
	Relays     []string
	ExpiresIn  time.Duration
	Usage      int
	// Hubs, if set, are the addresses of every hub agents may use, the
	// first the one they enroll with; empty: the project's hub address.
	Hubs []string
}

// NewTicket signs a ticket with the project authority and returns it encoded.
func (p *Project) NewTicket(opts TicketOptions) (string, *wire.Ticket, error) {
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
		if err := wire.CheckAttribute(k, v); err != nil {
			return "", nil, fmt.Errorf("create ticket: %w", err)
		}
	}
	relays := append([]string(nil), opts.Relays...)
	sort.Strings(relays)
	for _, r := range relays {
		if err := wire.CheckRelayName(r); err != nil {
			return "", nil, fmt.Errorf("create ticket: %w", err)
		}
	}
	var hubs []string // opts.Hubs, each once, in order
	for _, h := range opts.Hubs {
		if !slices.Contains(hubs, h) {
			hubs = append(hubs, h)
		}
	}
	if len(hubs) > wire.MaxHubs {
		return "", nil, fmt.Errorf("create ticket: %d hubs, at most %d", len(hubs), wire.MaxHubs)
	}
	for _, h := range hubs {
		if _, err := checkHubAddress(h); err != nil {
			return "", nil, fmt.Errorf("create ticket: %w", err)
		}
	}
	hub := p.HubAddress
	if len(hubs) == 1 {
		hub, hubs = hubs[0], nil
	} else if len(hubs) > 1 {
		hub = hubs[0]
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", nil, fmt.Errorf("create ticket: %w", err)
	}
	t := &wire.Ticket{
		ID:           hex.EncodeToString(id[:]),
		Project:      p.ID,
		Hub:          hub,
		Hubs:         hubs,
		AuthorityKey: p.AuthorityPublicKey(),
		Attributes:   opts.Attributes,
		Relays:       relays,
		Expires:      time.Now().Add(opts.ExpiresIn).UTC().Truncate(time.Second),
		Usage:        opts.Usage,
	}
	s, err := t.Sign(p.Key)
	if err != nil {
		return "", nil, err
	}
	return s, t, nil
}
