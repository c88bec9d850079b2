package testenv

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"
)

// DialTCPFrom is DialTCP from the local address src, which must be
// configured in the namespace: what a container that claims another's
// address does.
func (ns *NS) DialTCPFrom(ctx context.Context, src netip.Addr, addr string, timeout time.Duration) (net.Conn, error) {
	addr = ns.resolve(addr)
	var c net.Conn
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s in %s: %w", addr, src, ns.name, err)
	}
	return c, nil
}

// GratuitousARP sends, from ifname in ns, a gratuitous ARP request that
// announces addr at ifname's MAC address (as `arping -U` does): the way a
// neighbour on a bridge claims another's address. It returns that MAC.
func (ns *NS) GratuitousARP(ifname string, addr netip.Addr) (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	err := ns.Do(func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		mac = ifc.HardwareAddr
		ip := addr.AsSlice()
		eth := &layers.Ethernet{SrcMAC: mac, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP}
		arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: mac, SourceProtAddress: ip,
			DstHwAddress: make([]byte, 6), DstProtAddress: ip}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, eth, arp); err != nil {
			return err
		}
		proto := uint16(layers.EthernetTypeARP)
		proto = proto<<8 | proto>>8 // network order
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, buf.Bytes(), 0, &unix.SockaddrLinklayer{Ifindex: ifc.Index, Protocol: proto})
	})
	if err != nil {
		return nil, fmt.Errorf("send gratuitous ARP for %s from %s in %s: %w", addr, ifname, ns.name, err)
	}
	return mac, nil
}
