package relay_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/internal/alpn"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/agent/wire"
)

// Each TLS connection of the hub, its agents and its authority speaks one
// protocol, named by ALPN, and each end requires the other to have
// negotiated it: crypto/tls alone lets through a client that offers none and
// a server that selects none.

// nodeCert is a node key's self-signed certificate, as agents present
// before they have a credential.
func nodeCert(t *testing.T) tls.Certificate {
	t.Helper()
	id, err := identity.New()
	if err != nil {
		t.Fatal(err)
	}
	c, err := id.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// loggedError returns the error of the first entry logged with msg whose
// error matches target, or nil.
func loggedError(logs *observer.ObservedLogs, msg string, target error) error {
	for _, e := range logs.FilterMessage(msg).All() {
		for _, f := range e.Context {
			if err, ok := f.Interface.(error); ok && f.Type == zapcore.ErrorType && errors.Is(err, target) {
				return err
			}
		}
	}
	return nil
}

// TestHubRequiresALPN: a TLS client that offers no protocol is refused by
// the hub's control port (the client hears its alert), whatever certificate
// it presents.
func TestHubRequiresALPN(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	h := testhub.Start(t, testhub.Options{Hub: hub.HubOptions{Logger: zap.New(core)}})
	c, err := tls.Dial("tcp", h.Addr, &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true,
		Certificates: []tls.Certificate{nodeCert(t)}})
	if err != nil {
		t.Fatal(err) // a TLS 1.3 client finishes before the server checks it
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Errorf("the client read %v, want the hub's bad_certificate alert", err)
	}
	if !testhub.WaitFor(wait, func() bool { return loggedError(logs, "control handshake failed", alpn.ErrMismatch) != nil }) {
		t.Errorf("the hub did not refuse for the protocol: %v", logs.All())
	}
}

// serveTLS serves TLS handshakes with conf on 127.0.0.1 until the test ends
// and returns the address; connections stay open until then.
func serveTLS(t *testing.T, conf *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", conf)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			c.SetDeadline(time.Now().Add(wait))
			go c.(*tls.Conn).Handshake()
		}
	}()
	return ln.Addr().String()
}

// hubCert is the certificate chain a project's hub presents.
func hubCert(p *authority.Project) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{p.HubCert.Raw, p.Cert.Raw}, PrivateKey: p.HubKey, Leaf: p.HubCert}
}

// TestClientRequiresHubALPN: an agent refuses a hub (with the project's
// genuine certificate) that selects no protocol.
func TestClientRequiresHubALPN(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	addr := serveTLS(t, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{hubCert(h.Project)},
		ClientAuth: tls.RequireAnyClientCert})
	id, err := identity.New()
	if err != nil {
		t.Fatal(err)
	}
	c, err := relay.NewClient(relay.ClientOptions{Hub: addr, Identity: id, AuthorityKey: h.AuthorityKey()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	if _, err := c.Start(ctx); !errors.Is(err, alpn.ErrMismatch) {
		t.Errorf("start against a hub without ALPN: %v, want %v", err, alpn.ErrMismatch)
	}
}

// TestAuthorityLinkRequiresALPN: the authority does not link to a relay
// (with the project's genuine hub certificate) that selects no protocol.
func TestAuthorityLinkRequiresALPN(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	addr := serveTLS(t, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{hubCert(h.Project)},
		ClientAuth: tls.RequireAnyClientCert})
	core, logs := observer.New(zapcore.DebugLevel)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- hub.RunAuthorityLink(ctx, hub.AuthorityLinkOptions{Hub: addr, Service: h.Service, Logger: zap.New(core)})
	}()
	if !testhub.WaitFor(wait, func() bool { return loggedError(logs, "link to the relay lost; reconnecting", alpn.ErrMismatch) != nil }) {
		t.Errorf("the link did not fail for the protocol: %v", logs.All())
	}
	cancel()
	<-done
}

// TestExchangeRequiresAuthorityALPN: an agent's exchange refuses an
// authority (its genuine certificate) that selects no protocol, and works
// with one that selects it.
func TestExchangeRequiresAuthorityALPN(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	p := h.Project
	own := tls.Certificate{Certificate: [][]byte{p.Cert.Raw}, PrivateKey: p.Key, Leaf: p.Cert}
	for _, c := range []struct {
		name   string
		protos []string
		want   error
	}{
		{"none", nil, alpn.ErrMismatch},
		{"the exchange's", []string{wire.ExchangeALPN}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := serveTLS(t, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{own},
				NextProtos: c.protos, ClientAuth: tls.RequireAnyClientCert})
			conn, err := tls.Dial("tcp", addr, relay.ExchangeConfigForTest([]tls.Certificate{nodeCert(t)}, p.AuthorityPublicKey()))
			if err == nil {
				conn.Close()
			}
			if !errors.Is(err, c.want) {
				t.Errorf("handshake: %v, want %v", err, c.want)
			}
		})
	}
}
