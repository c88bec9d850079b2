package testenv

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestNATKeepsPorts: behind the routers of NewSeedBehindNAT, the hub sees a
// host's connections from its router's public address with the port the
// host chose, and a container's (NATed twice) too; nothing from outside
// opens a connection to a router or a host; after the router forgets its
// connections, a flow from inside is picked up again (nf_conntrack_tcp_loose
// 1, the default).
func TestNATKeepsPorts(t *testing.T) {
	t.Parallel()
	e := NewT(t)
	s, err := NewSeedBehindNAT(e, NATOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hub := listen(t, s.Internet, SeedHubAddr+":0")
	for _, c := range []struct {
		ns     *NS
		public string
	}{{s.AnalysisHost, SeedAnalysisUp}, {s.App.NS, SeedAnalysisUp}, {s.BankHost, SeedBankUp}, {s.Postgres.NS, SeedBankUp}} {
		conn, seen := dialWhoAmI(t, c.ns, hub)
		conn.Close()
		if want := net.JoinHostPort(c.public, port(t, conn.LocalAddr())); seen != want {
			t.Errorf("from %s, the hub saw %s, want %s (the router keeps ports)", c.ns.Name(), seen, want)
		}
	}
	noNewInbound(t, s)

	conn, _ := dialWhoAmI(t, s.AnalysisHost, hub)
	defer conn.Close()
	must(t, s.AnalysisRouter.FlushConntrack())
	if err := echo(conn, "after flush"); err != nil {
		t.Errorf("a flow from inside after the router's conntrack was flushed (tcp_loose 1): %v, want it picked up", err)
	}
}

// TestNATRandomPorts: routers with `masquerade random,fully-random` map
// each connection to another port; with StrictConntrack, a flow whose entry
// the router forgot is dropped from then on, and FlushConntrackWith forgets
// only the flows with one peer.
func TestNATRandomPorts(t *testing.T) {
	t.Parallel()
	e := NewT(t)
	s, err := NewSeedBehindNAT(e, NATOptions{Random: true, StrictConntrack: true})
	if err != nil {
		t.Fatal(err)
	}
	// The setting is per namespace: the routers' is 0, the hosts' behind
	// them the kernel's default.
	for ns, want := range map[*NS]string{s.AnalysisRouter: "0", s.BankRouter: "0", s.AnalysisHost: "1", s.BankHost: "1"} {
		out, err := ns.Run(context.Background(), "sysctl", "-n", "net.netfilter.nf_conntrack_tcp_loose")
		if got := strings.TrimSpace(string(out)); err != nil || got != want {
			t.Errorf("nf_conntrack_tcp_loose in %s = %q, %v; want %s", ns.Name(), got, err, want)
		}
	}
	hub := listen(t, s.Internet, SeedHubAddr+":0")
	kept := 0
	const n = 5
	for i := 0; i < n; i++ {
		conn, seen := dialWhoAmI(t, s.AnalysisHost, hub)
		conn.Close()
		host, p, _ := net.SplitHostPort(seen)
		if host != SeedAnalysisUp {
			t.Errorf("the hub saw %s, want the router's address %s", seen, SeedAnalysisUp)
		}
		if p == port(t, conn.LocalAddr()) {
			kept++
		}
	}
	if kept > 1 { // one in 2^16 by chance, at most
		t.Errorf("%d of %d connections kept their port through a randomizing NAT", kept, n)
	}
	noNewInbound(t, s)

	// A second address on the internet: forgetting the flows with it
	// leaves those with the hub alone.
	const other = "198.18.0.9"
	must(t, s.Internet.ConfigureLink(SeedWAN, other+seedPrefix))
	otherAddr := listen(t, s.Internet, other+":0")
	toHub, _ := dialWhoAmI(t, s.BankHost, hub)
	defer toHub.Close()
	toOther, _ := dialWhoAmI(t, s.BankHost, otherAddr)
	defer toOther.Close()
	must(t, echo(toHub, "before flush"))
	must(t, echo(toOther, "before flush"))
	if n, err := s.BankRouter.FlushConntrackWith(netip.MustParseAddr(other)); err != nil || n != 1 {
		t.Errorf("flush conntrack with %s: %d entries, %v; want 1", other, n, err)
	}
	must(t, echo(toHub, "after the other's flush"))
	dead(t, toOther, "after its flush")
	must(t, s.BankRouter.FlushConntrack())
	dead(t, toHub, "after the flush")
}

// dead checks that a flow gets no answer (tcp_loose 0: its packets are
// dropped once the router forgot it).
func dead(t *testing.T, c net.Conn, when string) {
	t.Helper()
	err := echo(c, when)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("a flow %s (tcp_loose 0): %v, want no answer (dropped)", when, err)
	}
}

// noNewInbound checks that connections from the internet to the routers and
// from the routers to their hosts are dropped, while the hosts reach the
// hub.
func noNewInbound(t *testing.T, s *Seed) {
	t.Helper()
	for _, ns := range []*NS{s.AnalysisRouter, s.AnalysisHost, s.BankRouter, s.BankHost} {
		listen(t, ns, "0.0.0.0:7000")
	}
	dropped(t, s.Internet, SeedAnalysisUp+":7000")
	dropped(t, s.Internet, SeedBankUp+":7000")
	dropped(t, s.BankHost, SeedAnalysisUp+":7000")
	dropped(t, s.AnalysisRouter, NATAnalysisPrivate+":7000")
	dropped(t, s.BankRouter, NATBankPrivate+":7000")
}

// dialWhoAmI dials a serveWhoAmI listener at addr from ns and returns the
// connection and the address the server saw.
func dialWhoAmI(t *testing.T, ns *NS, addr string) (net.Conn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := ns.DialTCP(ctx, addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		t.Fatalf("read from %s: %v", addr, err)
	}
	c.SetDeadline(time.Time{})
	return c, strings.TrimSpace(line)
}

// echo writes msg and a newline to a serveWhoAmI connection and reads it
// back, within a second.
func echo(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != msg+"\n" {
		return &echoError{got: line}
	}
	return nil
}

type echoError struct{ got string }

func (e *echoError) Error() string { return "echo: got " + strconv.Quote(e.got) }

func port(t *testing.T, a net.Addr) string {
	t.Helper()
	_, p, err := net.SplitHostPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestFirewallRefusesBadMasquerade: the masquerade flags go into an
// nftables script, so anything but the statement's flags is refused
// before a namespace is touched (no privileges needed).
func TestFirewallRefusesBadMasquerade(t *testing.T) {
	var e Env
	for _, flags := range []string{"random;", "random\n}\ntable ip x {", "fully-random,", "to 1.2.3.4", "RANDOM"} {
		if err := e.firewall(nil, SeedUplink, flags, false); err == nil || !strings.Contains(err.Error(), "invalid masquerade flags") {
			t.Errorf("firewall with masquerade flags %q: %v, want refused", flags, err)
		}
	}
}
