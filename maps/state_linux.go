package maps

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/sluicehq/sluice/loader"
)

// Counters is the per-CPU counters map.
type Counters struct{ m *ebpf.Map }

// Read sums portal's counters over CPUs.
func (c *Counters) Read(portal uint32) (PortalCounters, error) {
	var per []loader.TcPortalCounters
	if err := c.m.Lookup(portal, &per); err != nil {
		return PortalCounters{}, fmt.Errorf("read counters of portal %d: %w", portal, err)
	}
	var s PortalCounters
	for _, p := range per {
		s.Steered += p.Steered
		s.Refused += p.Refused
		s.NoListener += p.NoListener
		s.Packets += p.Packets
		s.Bytes += p.Bytes
		s.Spoofed += p.Spoofed
	}
	return s, nil
}

// Reset zeroes portal's counters, for a portal number given to a new inlet.
func (c *Counters) Reset(portal uint32) error {
	zero := make([]loader.TcPortalCounters, ebpf.MustPossibleCPU())
	if err := c.m.Put(portal, zero); err != nil {
		return fmt.Errorf("reset counters of portal %d: %w", portal, err)
	}
	return nil
}

// Flow says who opened a connection.
type Flow struct {
	Workload uint32
	Ifindex  uint32
}

// Flows is the LRU map of connections the steer program let through.
type Flows struct{ m *ebpf.Map }

func flowKey(src, dst netip.AddrPort) (loader.TcFlowKey, error) {
	s, err := be32(src.Addr())
	if err != nil {
		return loader.TcFlowKey{}, err
	}
	d, err := be32(dst.Addr())
	if err != nil {
		return loader.TcFlowKey{}, err
	}
	return loader.TcFlowKey{Saddr: s, Daddr: d, Sport: be16(src.Port()), Dport: be16(dst.Port())}, nil
}

// Take returns and forgets who opened the connection src→dst; ok is false
// if the kernel did not record it (or evicted it).
func (f *Flows) Take(src, dst netip.AddrPort) (fl Flow, ok bool, err error) {
	k, err := flowKey(src, dst)
	if err != nil {
		return Flow{}, false, fmt.Errorf("look up flow: %w", err)
	}
	var v loader.TcFlowValue
	err = f.m.LookupAndDelete(k, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return Flow{}, false, nil
	}
	if err != nil {
		return Flow{}, false, fmt.Errorf("look up flow %v->%v: %w", src, dst, err)
	}
	return Flow{Workload: v.Workload, Ifindex: v.Ifindex}, true, nil
}

// Listener is where the steer programs find the agent's transparent
// listener.
type Listener struct{ m *ebpf.Map }

// Set publishes the listener's address (IPv4, port not 0).
func (l *Listener) Set(a netip.AddrPort) error {
	addr, err := be32(a.Addr())
	if err != nil {
		return fmt.Errorf("set listener: %w", err)
	}
	if a.Port() == 0 {
		return fmt.Errorf("set listener %v: port 0: %w", a, ErrInvalid)
	}
	if err := l.m.Put(uint32(0), loader.TcListenerAddr{Addr: addr, Port: be16(a.Port())}); err != nil {
		return fmt.Errorf("set listener %v: %w", a, err)
	}
	return nil
}

// Get returns the published address; the zero AddrPort if none.
func (l *Listener) Get() (netip.AddrPort, error) {
	var v loader.TcListenerAddr
	if err := l.m.Lookup(uint32(0), &v); err != nil {
		return netip.AddrPort{}, fmt.Errorf("read listener: %w", err)
	}
	if v.Port == 0 {
		return netip.AddrPort{}, nil
	}
	return netip.AddrPortFrom(addrOf(v.Addr), portOf(v.Port)), nil
}

// Clear unpublishes the listener: every steered connection is refused.
func (l *Listener) Clear() error {
	if err := l.m.Put(uint32(0), loader.TcListenerAddr{}); err != nil {
		return fmt.Errorf("clear listener: %w", err)
	}
	return nil
}
