package wire

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// fuzzTickets are genuine tickets, signed with a fixed key so that the
// fuzzer's corpus stays valid from one run to the next.
func fuzzTickets(tb testing.TB) (map[string]*Ticket, ed25519.PublicKey) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	pub := key.Public().(ed25519.PublicKey)
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tickets := map[string]*Ticket{}
	for _, t := range []*Ticket{
		{ID: "0123456789abcdef0123456789abcdef", Project: "p1", Hub: "127.0.0.1:4443", AuthorityKey: pub, Expires: exp, Usage: 1},
		{ID: "fedcba9876543210fedcba9876543210", Project: "p1", Hub: "hub.example:4443", AuthorityKey: pub,
			Attributes: map[string]string{"postgres-outlet": "true", "env": "prod ünïcode \"quoted\""},
			Relays:     []string{"pg", "postgres"}, Expires: exp, Usage: 1000},
		{ID: "00112233445566778899aabbccddeeff", Project: "p1", Hub: "hub1.example:4443", AuthorityKey: pub,
			Hubs: []string{"hub1.example:4443", "hub2.example:4443", "[2001:db8::3]:4443"}, Expires: exp, Usage: 1},
	} {
		s, err := t.Sign(key)
		if err != nil {
			tb.Fatal(err)
		}
		tickets[s] = t
	}
	return tickets, pub
}

// FuzzParseTicket feeds arbitrary text to ParseTicket, which reads what
// users paste and what agents send the hub. It must never panic; it refuses
// with ErrTicketMalformed; and whatever it accepts under the fixed key is
// one of the genuine tickets, field for field: no change to a ticket keeps
// its signature valid.
func FuzzParseTicket(f *testing.F) {
	genuine, pub := fuzzTickets(f)
	for s := range genuine {
		f.Add(s)
		f.Add(" \n" + s + "\r\n")
		f.Add(s[:len(s)-10])
		i := strings.LastIndexByte(s, '.')
		f.Add(s[:i] + "." + s[i+1:] + "A")
		f.Add(s[:len(TicketPrefix)+4] + "\n" + s[len(TicketPrefix)+4:])
	}
	f.Add("")
	f.Add(TicketPrefix)
	f.Add(TicketPrefix + ".")
	f.Add(TicketPrefix + "e30." + strings.Repeat("A", 86))
	f.Add("sluice-ticket-v1")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTicket(s)
		if err != nil {
			if !errors.Is(err, ErrTicketMalformed) {
				t.Fatalf("ParseTicket(%q): %v does not wrap ErrTicketMalformed", s, err)
			}
			if !utf8.ValidString(err.Error()) && utf8.ValidString(s) {
				t.Fatalf("ParseTicket(%q): error is not valid UTF-8: %q", s, err)
			}
			return
		}
		if !bytes.Equal(got.AuthorityKey, pub) {
			t.Fatalf("ParseTicket(%q) accepted a ticket signed by %x, a key the fuzzer cannot hold", s, got.AuthorityKey)
		}
		var want *Ticket
		for g, tk := range genuine {
			if strings.TrimSpace(s) == g || reflect.DeepEqual(got, tk) {
				want = tk
			}
		}
		if want == nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("ParseTicket(%q) = %+v, which is no genuine ticket", s, got)
		}
		if got.ID == "" || got.Hub == "" || got.Usage < 1 {
			t.Fatalf("ParseTicket(%q) accepted a ticket without ID, hub or usage: %+v", s, got)
		}
	})
}
