package maps

import (
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/sluicehq/sluice/loader"
)

func (e Endpoint) key() (loader.TcEndpointKey, error) {
	k := loader.TcEndpointKey{Ifindex: e.Ifindex}
	if e.Addr.IsValid() {
		a, err := be32(e.Addr)
		if err != nil {
			return k, err
		}
		k.Addr = a
	}
	if k.Ifindex == 0 {
		return k, fmt.Errorf("endpoint %v without its device: an address alone names nobody: %w", e.Addr, ErrInvalid)
	}
	return k, nil
}

// Bindings is the anti-spoofing map: each workload address and the
// ifindex of the host-side interface it is bound to.
type Bindings struct{ m *ebpf.Map }

// Replace makes the map hold exactly these bindings (IPv4 address ->
// ifindex, not 0).
func (b *Bindings) Replace(want map[netip.Addr]uint32) error {
	keys := make(map[uint32]uint32, len(want))
	for a, idx := range want {
		k, err := be32(a)
		if err != nil {
			return fmt.Errorf("replace bindings: %w", err)
		}
		if idx == 0 {
			return fmt.Errorf("replace bindings: %v bound to ifindex 0: %w", a, ErrInvalid)
		}
		keys[k] = idx
	}
	return replace(b.m, keys)
}

// List returns the bindings.
func (b *Bindings) List() (map[netip.Addr]uint32, error) {
	out := map[netip.Addr]uint32{}
	var k, v uint32
	it := b.m.Iterate()
	for it.Next(&k, &v) {
		out[addrOf(k)] = v
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list bindings: %w", err)
	}
	return out, nil
}

// Endpoints maps endpoints to workload numbers.
type Endpoints struct{ m *ebpf.Map }

// Replace makes the map hold exactly these endpoints. Workload numbers
// must not be 0 (the unknown workload).
func (e *Endpoints) Replace(want map[Endpoint]uint32) error {
	keys := make(map[loader.TcEndpointKey]uint32, len(want))
	for ep, w := range want {
		k, err := ep.key()
		if err != nil {
			return fmt.Errorf("replace endpoints: %w", err)
		}
		if w == 0 {
			return fmt.Errorf("replace endpoints: %v: workload 0 is reserved: %w", ep, ErrInvalid)
		}
		keys[k] = w
	}
	return replace(e.m, keys)
}

// Verdicts is the set of allowed (workload, portal) pairs.
type Verdicts struct{ m *ebpf.Map }

// Replace makes the map hold exactly these verdicts.
func (v *Verdicts) Replace(allowed []Verdict) error {
	keys := make(map[loader.TcVerdictKey]uint32, len(allowed))
	for _, a := range allowed {
		keys[loader.TcVerdictKey{Workload: a.Workload, Portal: a.Portal}] = 1
	}
	return replace(v.m, keys)
}

// List returns the allowed pairs.
func (v *Verdicts) List() ([]Verdict, error) {
	var out []Verdict
	var k loader.TcVerdictKey
	var val uint32
	it := v.m.Iterate()
	for it.Next(&k, &val) {
		out = append(out, Verdict{Workload: k.Workload, Portal: k.Portal})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list verdicts: %w", err)
	}
	return out, nil
}
