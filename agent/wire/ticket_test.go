package wire

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestTicketHubs: a ticket of one hub (as older authorities sign them, with
// no "hubs" key) parses and leads to its hub; a list of hubs must start
// with the ticket's hub, hold at most MaxHubs addresses, each HOST:PORT.
func TestTicketHubs(t *testing.T) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	pub := key.Public().(ed25519.PublicKey)
	base := Ticket{ID: "0123456789abcdef0123456789abcdef", Project: "p", Hub: "h1:4443", AuthorityKey: pub,
		Expires: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), Usage: 1}
	many := make([]string, MaxHubs+1)
	for i := range many {
		many[i] = "h1:4443"
	}
	for _, c := range []struct {
		hubs []string
		want []string // nil: refused
	}{
		{nil, []string{"h1:4443"}},
		{[]string{"h1:4443", "h2:4443", "[2001:db8::1]:4443"}, []string{"h1:4443", "h2:4443", "[2001:db8::1]:4443"}},
		{[]string{"h2:4443", "h1:4443"}, nil}, // the first is not the ticket's hub
		{[]string{"h1:4443", "no-port"}, nil},
		{[]string{"h1:4443", ""}, nil},
		{many, nil},
	} {
		tk := base
		tk.Hubs = c.hubs
		s, err := tk.Sign(key)
		if err != nil {
			t.Fatal(err)
		}
		if c.hubs == nil && strings.Contains(s, "hubs") {
			t.Fatal("a ticket of one hub carries a hub list")
		}
		got, err := ParseTicket(s)
		switch {
		case c.want == nil && !errors.Is(err, ErrTicketMalformed):
			t.Errorf("hubs %q: parsed (%v), want ErrTicketMalformed", c.hubs, err)
		case c.want != nil && err != nil:
			t.Errorf("hubs %q: %v", c.hubs, err)
		case c.want != nil && !slices.Equal(got.Addresses(), c.want):
			t.Errorf("hubs %q: addresses %q, want %q", c.hubs, got.Addresses(), c.want)
		}
	}
}
