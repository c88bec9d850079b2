package testenv

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestBridgeKeepsItsMAC: a container joining a bridge with a lower MAC than
// the bridge's does not change the bridge's MAC, so a container that
// learned the gateway's MAC keeps reaching it. (A bridge whose MAC was never
// set takes the lowest of its ports' MACs; the app then sent its frames to a
// port's old MAC, the host dropped them as not its own, and the app was cut
// off until its neighbour entry expired.)
func TestBridgeKeepsItsMAC(t *testing.T) {
	t.Parallel()
	e := NewT(t)
	host := mustNS(t, e, "host")
	must(t, e.Bridge(host, "br0", "10.34.0.1/24"))
	addr := listen(t, host, "10.34.0.1:0")
	app, err := e.Container(host, "br0", "app", "10.34.0.2/24", "10.34.0.1")
	if err != nil {
		t.Fatal(err)
	}
	// Another container's port, with a MAC below the app's port's.
	setPortMAC(t, host, app.Veth, "02:00:00:00:00:03")
	setPortMAC(t, host, mustContainer(t, e, host, "first", "10.34.0.3/24").Veth, "02:00:00:00:00:02")
	gwMAC := linkMAC(t, host, "br0")
	// What ARP would have taught the app, pinned so that the check below
	// does not depend on the neighbour table's timers.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := app.NS.Run(ctx, "ip", "neigh", "replace", "10.34.0.1", "lladdr", gwMAC.String(), "dev", "eth0", "nud", "permanent"); err != nil {
		t.Fatal(err)
	}
	whoAmI(t, app.NS, addr)

	// A container whose port has the lowest MAC there is joins.
	setPortMAC(t, host, mustContainer(t, e, host, "late", "10.34.0.4/24").Veth, "02:00:00:00:00:01")
	if got := linkMAC(t, host, "br0"); got.String() != gwMAC.String() {
		t.Errorf("the bridge's MAC moved from %s to %s when a port joined", gwMAC, got)
	}
	c, err := app.NS.DialTCP(ctx, addr, 2*time.Second)
	if err != nil {
		t.Fatalf("the app, with the gateway's MAC it had learned, after a container joined: %v", err)
	}
	c.Close()
}

func mustContainer(t *testing.T, e *Env, host *NS, name, cidr string) *Container {
	t.Helper()
	ct, err := e.Container(host, "br0", name, cidr, "10.34.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

// setPortMAC sets the MAC of the link ifname in ns.
func setPortMAC(t *testing.T, ns *NS, ifname, mac string) {
	t.Helper()
	hw, err := net.ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	link, err := ns.nl.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	must(t, ns.nl.LinkSetHardwareAddr(link, hw))
}

// linkMAC is the MAC of the link ifname in ns.
func linkMAC(t *testing.T, ns *NS, ifname string) net.HardwareAddr {
	t.Helper()
	link, err := ns.nl.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	return link.Attrs().HardwareAddr
}
