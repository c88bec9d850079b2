package maps

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/sluicehq/sluice/loader"
)

// Service is an inlet's entry: connections to Addr belong to portal
// Portal; Deny refuses them all. A transparent inlet's Addr is its virtual
// service address (the kernel steers allowed connections to the agent's
// transparent listener); an Explicit inlet's is one of the host addresses
// it listens on (the kernel checks the sender and passes allowed
// connections on to the inlet's own listener, unmarked).
type Service struct {
	Addr     netip.AddrPort `json:"addr"`
	Portal   uint32         `json:"portal"`
	Deny     bool           `json:"deny,omitempty"`
	Explicit bool           `json:"explicit,omitempty"`
}

// Services is the services map.
type Services struct {
	m       *ebpf.Map
	portals uint32 // portal numbers are below this (the counters' size)
}

// serviceDeny and serviceExplicit are SERVICE_F_DENY and
// SERVICE_F_EXPLICIT; keep in sync with bpf/include/sluice.h (the loader's
// TestSteer and TestExplicitService check them against the programs'
// behaviour).
const (
	serviceDeny     = 1
	serviceExplicit = 2
)

func (s *Services) key(a netip.AddrPort) (loader.TcServiceKey, error) {
	addr, err := be32(a.Addr())
	if err != nil {
		return loader.TcServiceKey{}, err
	}
	if a.Port() == 0 {
		return loader.TcServiceKey{}, fmt.Errorf("service %v: port 0: %w", a, ErrInvalid)
	}
	return loader.TcServiceKey{Addr: addr, Port: be16(a.Port())}, nil
}

// entry checks a service and turns it into its key and value.
func (s *Services) entry(svc Service) (loader.TcServiceKey, loader.TcServiceValue, error) {
	k, err := s.key(svc.Addr)
	if err != nil {
		return k, loader.TcServiceValue{}, err
	}
	if svc.Portal == 0 || svc.Portal >= s.portals {
		return k, loader.TcServiceValue{}, fmt.Errorf("service %v: portal %d not in 1..%d: %w", svc.Addr, svc.Portal, s.portals-1, ErrInvalid)
	}
	v := loader.TcServiceValue{Portal: svc.Portal}
	if svc.Deny {
		v.Flags |= serviceDeny
	}
	if svc.Explicit {
		v.Flags |= serviceExplicit
	}
	return k, v, nil
}

// Put adds or changes services.
func (s *Services) Put(svcs ...Service) error {
	for _, svc := range svcs {
		k, v, err := s.entry(svc)
		if err != nil {
			return fmt.Errorf("put service: %w", err)
		}
		if err := s.m.Put(k, v); err != nil {
			return fmt.Errorf("put service %v: %w", svc.Addr, err)
		}
	}
	return nil
}

// Replace makes the map hold exactly these services.
func (s *Services) Replace(svcs []Service) error {
	want := make(map[loader.TcServiceKey]loader.TcServiceValue, len(svcs))
	for _, svc := range svcs {
		k, v, err := s.entry(svc)
		if err != nil {
			return fmt.Errorf("replace services: %w", err)
		}
		want[k] = v
	}
	return replace(s.m, want)
}

// Delete removes a service; a missing one is not an error.
func (s *Services) Delete(a netip.AddrPort) error {
	k, err := s.key(a)
	if err != nil {
		return fmt.Errorf("delete service: %w", err)
	}
	if err := s.m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete service %v: %w", a, err)
	}
	return nil
}

// List returns every service.
func (s *Services) List() ([]Service, error) {
	var out []Service
	var k loader.TcServiceKey
	var v loader.TcServiceValue
	it := s.m.Iterate()
	for it.Next(&k, &v) {
		out = append(out, Service{
			Addr:     netip.AddrPortFrom(addrOf(k.Addr), portOf(k.Port)),
			Portal:   v.Portal,
			Deny:     v.Flags&serviceDeny != 0,
			Explicit: v.Flags&serviceExplicit != 0,
		})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	return out, nil
}
