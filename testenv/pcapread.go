package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// TCPSegment is one TCP segment with payload, read from a capture.
type TCPSegment struct {
	Time    time.Time
	Src     netip.AddrPort // source ip:port
	Dst     netip.AddrPort // destination ip:port
	Seq     uint32
	Payload []byte
}

// packetSource is what both pcap and pcapng readers offer.
type packetSource interface {
	ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	LinkType() layers.LinkType
}

// ReadTCPPayloads reads a pcap (or pcapng) file and returns, in capture
// order, every TCP segment that carries payload. Retransmissions appear
// as often as they were captured.
func ReadTCPPayloads(path string) ([]TCPSegment, error) { return readTCP(path, false) }

// ReadTCPSegments is ReadTCPPayloads with the segments that carry no
// payload too (SYNs, bare ACKs, resets).
func ReadTCPSegments(path string) ([]TCPSegment, error) { return readTCP(path, true) }

func readTCP(path string, empty bool) ([]TCPSegment, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read capture: %w", err)
	}
	defer f.Close()
	src, err := openPacketSource(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("read capture %s: %w", path, err)
	}
	var segs []TCPSegment
	for {
		data, ci, err := src.ReadPacketData()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return segs, nil // a capture cut short still has its whole packets
		}
		if err != nil {
			return segs, fmt.Errorf("read capture %s: %w", path, err)
		}
		pkt := gopacket.NewPacket(data, src.LinkType(), gopacket.DecodeOptions{Lazy: true, NoCopy: true})
		if seg, ok := tcpSegment(pkt, empty); ok {
			seg.Time = ci.Timestamp
			segs = append(segs, seg)
		}
	}
}

// openPacketSource tells pcapng from pcap by the first four bytes.
func openPacketSource(r *bufio.Reader) (packetSource, error) {
	magic, err := r.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	if magic[0] == 0x0a && magic[1] == 0x0d && magic[2] == 0x0d && magic[3] == 0x0a {
		return pcapgo.NewNgReader(r, pcapgo.DefaultNgReaderOptions)
	}
	return pcapgo.NewReader(r)
}

// tcpSegment extracts the addresses and payload of a TCP/IP packet; one
// without payload only if empty.
func tcpSegment(pkt gopacket.Packet, empty bool) (TCPSegment, bool) {
	tl, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !ok || len(tl.Payload) == 0 && !empty {
		return TCPSegment{}, false
	}
	var src, dst netip.Addr
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
		dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
	case *layers.IPv6:
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ = netip.AddrFromSlice(ip.DstIP)
	default:
		return TCPSegment{}, false
	}
	return TCPSegment{
		Src:     netip.AddrPortFrom(src, uint16(tl.SrcPort)),
		Dst:     netip.AddrPortFrom(dst, uint16(tl.DstPort)),
		Seq:     tl.Seq,
		Payload: append([]byte(nil), tl.Payload...),
	}, true
}
