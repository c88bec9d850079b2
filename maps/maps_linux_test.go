package maps

import (
	"errors"
	"net/netip"
	"testing"
)

// Bad entries are refused before any syscall: these wrappers hold no map.
func TestValidation(t *testing.T) {
	v6 := netip.MustParseAddrPort("[2001:db8::1]:5432")
	v4 := netip.MustParseAddrPort("10.200.0.10:5432")
	svcs := &Services{portals: 1024}
	for name, err := range map[string]error{
		"IPv6 service":          svcs.Put(Service{Addr: v6, Portal: 1}),
		"port 0":                svcs.Put(Service{Addr: netip.AddrPortFrom(v4.Addr(), 0), Portal: 1}),
		"portal 0":              svcs.Put(Service{Addr: v4, Portal: 0}),
		"portal too high":       svcs.Put(Service{Addr: v4, Portal: 1024}),
		"delete IPv6":           svcs.Delete(v6),
		"empty endpoint":        (&Endpoints{}).Replace(map[Endpoint]uint32{{}: 1}),
		"workload 0":            (&Endpoints{}).Replace(map[Endpoint]uint32{{Ifindex: 3}: 0}),
		"IPv6 endpoint":         (&Endpoints{}).Replace(map[Endpoint]uint32{{Ifindex: 3, Addr: v6.Addr()}: 1}),
		"address, no device":    (&Endpoints{}).Replace(map[Endpoint]uint32{{Addr: v4.Addr()}: 1}),
		"IPv6 binding":          (&Bindings{}).Replace(map[netip.Addr]uint32{v6.Addr(): 3}),
		"binding to ifindex 0":  (&Bindings{}).Replace(map[netip.Addr]uint32{v4.Addr(): 0}),
		"listener on IPv6":      (&Listener{}).Set(v6),
		"listener without port": (&Listener{}).Set(netip.AddrPortFrom(v4.Addr(), 0)),
	} {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if _, _, err := (&Flows{}).Take(v6, v4); !errors.Is(err, ErrInvalid) {
		t.Errorf("IPv6 flow: %v, want ErrInvalid", err)
	}
}

func TestByteOrder(t *testing.T) {
	a := netip.MustParseAddr("10.200.0.10")
	v, err := be32(a)
	if err != nil || addrOf(v) != a {
		t.Errorf("be32/addrOf round trip: %v %v", addrOf(v), err)
	}
	if portOf(be16(5432)) != 5432 {
		t.Error("be16/portOf round trip")
	}
	b := [2]byte{}
	p := be16(0x1538)                // 5432
	b[0], b[1] = byte(p), byte(p>>8) // little-endian memory of the u16
	if b != [2]byte{0x15, 0x38} {
		t.Errorf("port 5432 in memory is %x, want network order 1538", b)
	}
}
