package kube

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/daemon"
	"github.com/sluicehq/sluice/testenv"
)

// hostInterfaceIn runs HostInterface inside ns.
func hostInterfaceIn(ns *testenv.NS, addr string) (*daemon.Binding, error) {
	var (
		b   *daemon.Binding
		err error
	)
	if derr := ns.Do(func() error { b, err = HostInterface(netip.MustParseAddr(addr)); return nil }); derr != nil {
		return nil, derr
	}
	return b, err
}

// TestHostInterface finds pods' host-side veths the way CNIs lay them out,
// in namespaces testenv builds: behind a bridge (once the pod has talked to
// the host: its neighbour entry and the bridge's FDB name the port), and
// routed (a /32 route through the pod's veth, no bridge); anything else
// (an address routed through a gateway, the host's own) is none.
func TestHostInterface(t *testing.T) {
	env := testenv.NewT(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	host, err := env.Namespace("node")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("Bridge", func(t *testing.T) {
		if err := env.Bridge(host, "cni0", "10.30.0.1/24"); err != nil {
			t.Fatal(err)
		}
		a, err := env.Container(host, "cni0", "pod-a", "10.30.0.2/24", "10.30.0.1")
		if err != nil {
			t.Fatal(err)
		}
		b, err := env.Container(host, "cni0", "pod-b", "10.30.0.3/24", "10.30.0.1")
		if err != nil {
			t.Fatal(err)
		}
		// Before the pod has talked to the host: not found, and said why.
		if got, err := hostInterfaceIn(host, a.Addr); !errors.Is(err, ErrNoInterface) {
			t.Errorf("a silent pod: %+v, %v; want ErrNoInterface", got, err)
		}
		for _, ct := range []*testenv.Container{a, b} {
			// A connection to the host (refused: nothing listens) is an
			// ARP exchange first.
			if c, err := ct.NS.DialTCP(ctx, "10.30.0.1:9", 2*time.Second); err == nil {
				c.Close()
			}
		}
		for _, ct := range []*testenv.Container{a, b} {
			got, err := hostInterfaceIn(host, ct.Addr)
			if err != nil || got.Interface != ct.Veth {
				t.Errorf("pod %s: %+v, %v; want its veth %s", ct.Addr, got, err, ct.Veth)
			}
		}
	})

	t.Run("Routed", func(t *testing.T) {
		pod, err := env.Namespace("pod-r")
		if err != nil {
			t.Fatal(err)
		}
		veth := env.LinkName()
		if err := env.Veth(host, veth, "", pod, "eth0", "10.40.0.5/32"); err != nil {
			t.Fatal(err)
		}
		if _, err := host.Run(ctx, "ip", "route", "add", "10.40.0.5/32", "dev", veth); err != nil {
			t.Fatal(err)
		}
		got, err := hostInterfaceIn(host, "10.40.0.5")
		if err != nil || got.Interface != veth {
			t.Errorf("a routed pod: %+v, %v; want its veth %s", got, err, veth)
		}
	})

	t.Run("None", func(t *testing.T) {
		if _, err := host.Run(ctx, "ip", "route", "add", "10.50.0.0/24", "via", "10.30.0.3"); err != nil {
			t.Fatal(err)
		}
		for _, addr := range []string{"10.50.0.7", "10.30.0.1"} { // another node's pod; the host's own
			if got, err := hostInterfaceIn(host, addr); !errors.Is(err, ErrNoInterface) {
				t.Errorf("%s: %+v, %v; want ErrNoInterface", addr, got, err)
			}
		}
	})
}
