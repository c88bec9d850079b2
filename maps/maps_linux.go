package maps

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/sluicehq/sluice/loader"
)

// Set holds a wrapper for every map of the data path.
type Set struct {
	Services  *Services
	Endpoints *Endpoints
	Bindings  *Bindings
	Verdicts  *Verdicts
	Counters  *Counters
	Flows     *Flows
	Listener  *Listener
}

// New wraps the loaded maps; they stay owned by the loader.
func New(m *loader.TcMaps) *Set {
	return &Set{
		Services:  &Services{m: m.Services, portals: m.Counters.MaxEntries()},
		Endpoints: &Endpoints{m: m.Endpoints},
		Bindings:  &Bindings{m: m.Bindings},
		Verdicts:  &Verdicts{m: m.Verdicts},
		Counters:  &Counters{m: m.Counters},
		Flows:     &Flows{m: m.Flows},
		Listener:  &Listener{m: m.Listener},
	}
}

// Sizes reports how full each hash map is.
func (s *Set) Sizes() ([]Size, error) {
	var out []Size
	var errs []error
	for _, m := range []struct {
		name string
		m    *ebpf.Map
	}{{"services", s.Services.m}, {"endpoints", s.Endpoints.m}, {"bindings", s.Bindings.m}, {"verdicts", s.Verdicts.m}, {"flows", s.Flows.m}} {
		n, err := count(m.m)
		errs = append(errs, err)
		out = append(out, Size{Name: m.name, Entries: n, Max: m.m.MaxEntries()})
	}
	return out, errors.Join(errs...)
}

func count(m *ebpf.Map) (int, error) {
	var k []byte
	n := 0
	it := m.Iterate()
	for it.Next(&k, new([]byte)) {
		n++
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("count entries: %w", err)
	}
	return n, nil
}

// be32 turns an IPv4 address into the u32 the C side sees (network order).
func be32(a netip.Addr) (uint32, error) {
	if !a.Is4() {
		return 0, fmt.Errorf("address %v: the data path carries IPv4 only: %w", a, ErrInvalid)
	}
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:]), nil
}

func addrOf(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// be16 turns a port into network order as the C side sees it.
func be16(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func portOf(v uint16) uint16 { return be16(v) }

// replace makes m hold exactly keys→values: it writes them in one batch and
// deletes the keys it no longer has. Keys must be comparable structs.
func replace[K comparable, V any](m *ebpf.Map, want map[K]V) error {
	keys := make([]K, 0, len(want))
	vals := make([]V, 0, len(want))
	for k, v := range want {
		keys = append(keys, k)
		vals = append(vals, v)
	}
	if len(keys) > 0 {
		if _, err := m.BatchUpdate(keys, vals, nil); err != nil {
			if !errors.Is(err, ebpf.ErrNotSupported) {
				return fmt.Errorf("update %s: %w", m, err)
			}
			for i := range keys {
				if err := m.Put(keys[i], vals[i]); err != nil {
					return fmt.Errorf("update %s: %w", m, err)
				}
			}
		}
	}
	var stale []K
	var k K
	var v []byte
	it := m.Iterate()
	for it.Next(&k, &v) {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list %s: %w", m, err)
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from %s: %w", m, err)
		}
	}
	return nil
}
