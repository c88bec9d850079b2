package authority

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/internal/alpn"
	"github.com/sluicehq/sluice/agent/wire"
)

// exchangeOver runs Service.Exchange on one end of a loopback TCP pair and a
// TLS client with nextProtos on the other; the client says hello. It returns
// the reply the client read, if any, and what Exchange returned.
func exchangeOver(t *testing.T, s *Service, nextProtos []string) (*wire.ExchangeReply, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		served <- s.Exchange(context.Background(), c)
	}()
	id, err := identity.New()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := id.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	// The client checks nothing: it stands for any TLS client.
	tc := tls.Client(raw, &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, NextProtos: nextProtos,
		Certificates: []tls.Certificate{cert}})
	var reply *wire.ExchangeReply
	if err := tc.Handshake(); err == nil {
		if err := json.NewEncoder(tc).Encode(wire.ExchangeRequest{Op: wire.OpHello}); err == nil {
			var r wire.ExchangeReply
			if json.NewDecoder(tc).Decode(&r) == nil {
				reply = &r
			}
		}
	}
	return reply, <-served
}

// TestExchangeRequiresALPN: the authority answers only a client that
// negotiated sluice-authority/1.
func TestExchangeRequiresALPN(t *testing.T) {
	s := NewService(openAuthority(t, newProject(t), Options{}))
	reply, err := exchangeOver(t, s, nil)
	if !errors.Is(err, alpn.ErrMismatch) {
		t.Errorf("exchange with a client that offers no protocol: %v, want %v", err, alpn.ErrMismatch)
	}
	if reply != nil {
		t.Errorf("the client got an answer: %+v", reply)
	}
	// The same client with the protocol: a stranger's hello, answered.
	reply, err = exchangeOver(t, s, []string{wire.ExchangeALPN})
	if !errors.Is(err, wire.ErrNotMember) || reply == nil || reply.Code != "not_member" {
		t.Errorf("exchange with the protocol: %v, reply %+v; want a not_member answer", err, reply)
	}
}
