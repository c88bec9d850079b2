package portal_test

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/portal"
)

// A TLS alert from the outlet's side is not authenticated: the outlet's
// agent sends one when its handshake rejects the inlet's credential, and
// anyone on the path can send the same bytes. The inlet counts it as a
// failure, never as a policy refusal, and says what it may mean.

const alertHint = "may have rejected this agent's credential"

// TestUntrustedCredentialIsFailure: the inlet's agent presents a credential
// of another project; the outlet's agent rejects it in its handshake with a
// TLS alert. The inlet counts a failure, not a refusal, and its log says
// what the alert may mean.
func TestUntrustedCredentialIsFailure(t *testing.T) { bothPaths(t, testUntrustedCredentialIsFailure) }

func testUntrustedCredentialIsFailure(t *testing.T) {
	s := newStandard(t, nil, "")
	stranger := testhub.Start(t, testhub.Options{}).Enroll(t, map[string]string{"web-inlet": "true"})
	s.in.Keys.Set(stranger.Keys.Get())
	refusedAt(t, s.inletAddr, []byte("let me in"))
	got := settled(t, "inlet", func() portal.CounterValues { return s.in.inletCounters(t, "web") })
	if got != (portal.CounterValues{Accepted: 1, Failed: 1}) {
		t.Errorf("inlet counters %+v, want 1 accepted, 1 failed, none refused", got)
	}
	if log := s.in.logText(); !strings.Contains(log, alertHint) || !strings.Contains(log, "someone on the path") {
		t.Errorf("the inlet's log does not explain the alert:\n%s", log)
	}
	if n := s.tg.accepted.Load(); n != 0 {
		t.Errorf("the target accepted %d connections", n)
	}
}

// TestInjectedAlertIsFailure: a man in the middle between the inlet and the
// outlet's agent (here on a direct channel; the relay sits in the same
// place) passes the handshake, then puts a TLS alert where the outlet's
// first record (its status) would be, and closes. The inlet counts a
// failure, not a refusal.
func TestInjectedAlertIsFailure(t *testing.T) {
	s := newStandard(t, nil, "")
	outletAddr := serveDirect(t, s.out)
	proxy := newAlertProxy(t, outletAddr)
	addr := s.in.inlet(t, portal.InletSpec{Name: "mitm", Direct: proxy, Allow: "web-outlet"})
	refusedAt(t, addr, []byte("hello"))
	got := settled(t, "inlet", func() portal.CounterValues { return s.in.inletCounters(t, "mitm") })
	if got != (portal.CounterValues{Accepted: 1, Failed: 1}) {
		t.Errorf("inlet counters %+v, want 1 accepted, 1 failed, none refused", got)
	}
	if log := s.in.logText(); !strings.Contains(log, alertHint) {
		t.Errorf("the inlet's log does not explain the alert:\n%s", log)
	}
}

// serveDirect serves n's channels on a listener of its own (agent run
// --direct-listen) and returns its address.
func serveDirect(t *testing.T, n *node) string {
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // after the listener closes and the manager ends its channels
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	wg.Go(func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			wg.Go(func() { n.m.ServeDirect(c) })
		}
	})
	return ln.Addr().String()
}

// newAlertProxy forwards connections to upstream: the client's bytes as
// they are; the server's TLS records (the handshake) as they are, and in
// place of the first record that is not TLS (the channel's first record) a
// TLS alert record (type application data, as TLS 1.3 seals alerts) and a
// FIN. It returns its address.
func newAlertProxy(t *testing.T, upstream string) string {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			down, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			up, err := net.DialTimeout("tcp", upstream, wait)
			if err != nil {
				down.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, down, up)
			mu.Unlock()
			down.SetDeadline(time.Now().Add(wait))
			up.SetDeadline(time.Now().Add(wait))
			wg.Go(func() { io.Copy(up, down) })
			wg.Go(func() {
				defer up.Close()
				defer down.CloseWrite()
				var h [5]byte
				for {
					if _, err := io.ReadFull(up, h[:]); err != nil {
						return
					}
					if h[1] != 3 || h[2] != 3 {
						// Not a TLS record: the outlet's first channel record.
						alert := append([]byte{0x17, 3, 3, 0, 19}, make([]byte, 19)...)
						down.Write(alert)
						return
					}
					body := make([]byte, binary.BigEndian.Uint16(h[3:]))
					if _, err := io.ReadFull(up, body); err != nil {
						return
					}
					if _, err := down.Write(append(h[:], body...)); err != nil {
						return
					}
				}
			})
		}
	})
	return ln.Addr().String()
}
