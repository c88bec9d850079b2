package testhub

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/agent/hub/authority"
)

// StopTimeout bounds how long Stop waits for Serve to return.
const StopTimeout = 5 * time.Second

// Options tune a test hub. Zero values mean the packages' defaults.
type Options struct {
	Hub       hub.HubOptions
	Authority authority.Options
	// Listener, if set, wraps the hub's listener (to inject accept errors).
	Listener func(net.Listener) net.Listener
	// Split runs the hub as a relay only, from a project directory without
	// the authority's key (authority.ExportRelay), and the authority apart,
	// linked to it over loopback (hub.RunAuthorityLink) until the test
	// ends or StopAuthority.
	Split bool
}

// Hub is a relay hub of a fresh project, serving on 127.0.0.1.
type Hub struct {
	Project *authority.Project
	Auth    *authority.Authority
	Service *authority.Service // the authority at work, in the hub's process
	Addr    string             // HOST:PORT, also the address in the project's tickets
	opts    hub.HubOptions
	relayP  *authority.Project // what a relay-only hub loads; nil unless Split

	mu       sync.Mutex // guards the following
	hub      *hub.Hub
	cancel   context.CancelFunc
	done     chan error // receives Serve's result; nil when stopped
	linkStop context.CancelFunc
	linkDone chan error
}

// Start makes a project for a hub on an ephemeral port of 127.0.0.1 and serves
// it until the test ends.
func Start(t testing.TB, opts Options) *Hub {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The hub certificate names the host of the address, so the project is
	// made once the port is known.
	p, err := authority.Init(t.TempDir(), ln.Addr().String())
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	a, err := authority.Open(p, opts.Authority)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	h := &Hub{Project: p, Auth: a, Service: authority.NewService(a), Addr: ln.Addr().String(), opts: opts.Hub}
	if opts.Split {
		dir := filepath.Join(t.TempDir(), "relay")
		if err := authority.ExportRelay(p.Dir, dir); err != nil {
			ln.Close()
			t.Fatal(err)
		}
		if h.relayP, err = authority.LoadRelay(dir); err != nil {
			ln.Close()
			t.Fatal(err)
		}
	}
	if opts.Listener != nil {
		ln = opts.Listener(ln)
	}
	h.serve(ln)
	if opts.Split {
		h.StartAuthority()
	}
	t.Cleanup(func() {
		h.StopAuthority()
		if err := h.Stop(); err != nil {
			t.Error(err)
		}
		a.Close()
	})
	return h
}

// StartPeer serves h's project, with h's authority, on another port of
// 127.0.0.1: one more hub of the project, as the hubs of a cluster share
// the authority's state (the hub certificate names 127.0.0.1, valid for
// every peer). listener, if set, wraps its listener. It stops when the
// test ends; its Restart serves it again on its address.
func (h *Hub) StartPeer(t testing.TB, listener func(net.Listener) net.Listener) *Hub {
	t.Helper()
	return h.startPeer(t, listener, h.Service)
}

// StartPeerWith is StartPeer with an authority of its own, svc, of h's
// project: a hub whose authority's store fails apart from h's (one cut
// off from its cluster's quorum, say). The test closes svc's authority.
func (h *Hub) StartPeerWith(t testing.TB, svc *authority.Service) *Hub {
	t.Helper()
	return h.startPeer(t, nil, svc)
}

func (h *Hub) startPeer(t testing.TB, listener func(net.Listener) net.Listener, svc *authority.Service) *Hub {
	t.Helper()
	if h.relayP != nil {
		t.Fatal("testhub: a Split hub has no peers")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Hub{Project: h.Project, Auth: svc.Authority(), Service: svc, Addr: ln.Addr().String(), opts: h.opts}
	if listener != nil {
		ln = listener(ln)
	}
	p.serve(ln)
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// StartAuthority links the authority of a Split hub to it, in the
// background, and waits (up to 10s) until the hub has the link.
func (h *Hub) StartAuthority() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- hub.RunAuthorityLink(ctx, hub.AuthorityLinkOptions{Hub: h.Addr, Service: h.Service,
			HeartbeatInterval: h.opts.HeartbeatInterval})
	}()
	h.mu.Lock()
	h.linkStop, h.linkDone = cancel, done
	h.mu.Unlock()
	WaitFor(10*time.Second, func() bool { return h.Relay().Stats().Authority == "linked" })
}

// StopAuthority ends the link of a Split hub's authority and waits for it.
func (h *Hub) StopAuthority() {
	h.mu.Lock()
	stop, done := h.linkStop, h.linkDone
	h.linkStop, h.linkDone = nil, nil
	h.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

func (h *Hub) serve(ln net.Listener) {
	ctx, cancel := context.WithCancel(context.Background())
	opts, p := h.opts, h.Project
	if h.relayP != nil {
		p = h.relayP
	} else {
		opts.Authority = h.Service
	}
	srv := hub.NewHub(p, opts)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	h.mu.Lock()
	h.hub, h.cancel, h.done = srv, cancel, done
	h.mu.Unlock()
}

// Relay returns the hub now serving (a new one after Restart).
func (h *Hub) Relay() *hub.Hub {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.hub
}

// Stop stops serving and waits for Serve to return. It returns Serve's error,
// or an error if Serve did not return within StopTimeout.
func (h *Hub) Stop() error { return h.StopWithin(StopTimeout) }

// StopWithin is Stop with a bound of d; Serve may go on after a timeout, and
// the Hub counts as stopped all the same.
func (h *Hub) StopWithin(d time.Duration) error {
	h.mu.Lock()
	cancel, done := h.cancel, h.done
	h.cancel, h.done = nil, nil
	h.mu.Unlock()
	if done == nil {
		return nil
	}
	cancel()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		return fmt.Errorf("hub did not stop within %v of its context being cancelled", d)
	}
}

// Restart stops the hub and serves the same project again on the same
// address, with a new hub.Hub: the relay names claimed before are gone.
func (h *Hub) Restart(t testing.TB) {
	t.Helper()
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", h.Addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", h.Addr, err)
	}
	h.serve(ln)
}

// AuthorityKey is the project's authority key, as tickets carry it.
func (h *Hub) AuthorityKey() ed25519.PublicKey { return h.Project.AuthorityPublicKey() }

// Ticket creates an encoded enrollment ticket.
func (h *Hub) Ticket(t testing.TB, opts authority.TicketOptions) string {
	t.Helper()
	s, _, err := h.Project.NewTicket(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// WaitFor polls cond every 10ms until it holds or timeout passes; it reports
// whether cond held.
func WaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
