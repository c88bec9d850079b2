package main

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/sluicehq/sluice/agent/api/apitype"
)

// The capture's packets are synthesized: the agent reports each
// connection's bytes (apitype.CaptureRecord), and pcapSynth writes them as
// the TCP stream a packet capture on that connection would show, so that
// tcpdump and Wireshark reassemble and dissect it:
//
//	open          ──> SYN, SYN-ACK, ACK
//	data (offset) ──> PSH-ACK segments: seq = ISN+1+offset, ack = what the
//	                  other direction has sent; a gap in the offsets (records
//	                  the agent dropped) shows as bytes not captured
//	end           ──> FIN-ACK both ways and the last ACK, or RST-ACK from
//	                  the server's side for a reset
//
// Frames are Ethernet with made-up, locally administered MACs (every tool
// reads LINKTYPE_ETHERNET), IPv4 or IPv6 after the connection's addresses.

// maxSegment is the most payload one synthesized segment carries: an IP
// packet's length field allows no more than 64 KiB.
const maxSegment = 65000

// snapLen is the capture file's snapshot length, tcpdump's default: no
// synthesized frame is longer.
const snapLen = 262144

var (
	macClient = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	macServer = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
)

// packetWriter is pcapgo's Writer or NgWriter.
type packetWriter interface {
	WritePacket(ci gopacket.CaptureInfo, data []byte) error
}

// newPacketWriter writes the file header of format ("pcap" or "pcapng")
// to w. flush, for pcapng, writes what NgWriter buffered.
func newPacketWriter(w io.Writer, format string) (pw packetWriter, flush func() error, err error) {
	switch format {
	case "pcap":
		pw := pcapgo.NewWriterNanos(w)
		if err := pw.WriteFileHeader(snapLen, layers.LinkTypeEthernet); err != nil {
			return nil, nil, fmt.Errorf("write pcap header: %w", err)
		}
		return pw, func() error { return nil }, nil
	case "pcapng":
		ng, err := pcapgo.NewNgWriterInterface(w, pcapgo.NgInterface{
			Name: "sluice", Description: "synthesized by agentctl capture",
			LinkType: layers.LinkTypeEthernet, SnapLength: snapLen, TimestampResolution: 9,
		}, pcapgo.DefaultNgWriterOptions)
		if err != nil {
			return nil, nil, fmt.Errorf("write pcapng header: %w", err)
		}
		return ng, ng.Flush, nil
	}
	return nil, nil, fmt.Errorf("--format %q: want pcap or pcapng", format)
}

// synthConn is one connection's TCP state.
type synthConn struct {
	client, server netip.AddrPort
	isn            [2]uint32 // [0] the client's, [1] the server's
	base           [2]uint64 // the offset of the first byte seen per direction
	baseSet        [2]bool
	sent           [2]uint64 // bytes per direction, relative to base
}

// pcapSynth turns capture records into packets.
type pcapSynth struct {
	w     packetWriter
	conns map[uint64]*synthConn
	buf   gopacket.SerializeBuffer

	Packets, Conns, Ended int // written so far
}

func newPcapSynth(w packetWriter) *pcapSynth {
	return &pcapSynth{w: w, conns: make(map[uint64]*synthConn), buf: gopacket.NewSerializeBuffer()}
}

// add writes the packets of one record.
func (s *pcapSynth) add(r apitype.CaptureRecord) error {
	switch r.Type {
	case apitype.CaptureOpen:
		return s.open(r)
	case apitype.CaptureData:
		c := s.conns[r.Conn]
		if c == nil {
			return fmt.Errorf("capture record: data of connection %d before its open", r.Conn)
		}
		return s.data(c, r)
	case apitype.CaptureEnd:
		c := s.conns[r.Conn]
		if c == nil {
			return fmt.Errorf("capture record: end of connection %d before its open", r.Conn)
		}
		delete(s.conns, r.Conn)
		s.Ended++
		return s.end(c, r)
	case apitype.CaptureDropped:
		return nil
	}
	return fmt.Errorf("capture record: unknown type %q", r.Type)
}

func (s *pcapSynth) open(r apitype.CaptureRecord) error {
	client, err1 := netip.ParseAddrPort(r.Client)
	server, err2 := netip.ParseAddrPort(r.Server)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("capture record: connection %d between %q and %q: not IP:port", r.Conn, r.Client, r.Server)
	}
	client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	server = netip.AddrPortFrom(server.Addr().Unmap(), server.Port())
	if client.Addr().Is4() != server.Addr().Is4() {
		return fmt.Errorf("capture record: connection %d between %s and %s: mixed IP versions", r.Conn, client, server)
	}
	// Made-up initial sequence numbers, distinct per connection, so that
	// a tool never mistakes one for another on a reused port pair.
	c := &synthConn{client: client, server: server, isn: [2]uint32{uint32(r.Conn) * 0x10001, uint32(r.Conn)*0x10001 + 0x40000000}}
	s.conns[r.Conn] = c
	s.Conns++
	t := r.Time
	return firstErr(
		s.packet(c, 0, t, c.isn[0], 0, flags{syn: true}, nil),
		s.packet(c, 1, t, c.isn[1], c.isn[0]+1, flags{syn: true, ack: true}, nil),
		s.packet(c, 0, t, c.isn[0]+1, c.isn[1]+1, flags{ack: true}, nil),
	)
}

func (s *pcapSynth) data(c *synthConn, r apitype.CaptureRecord) error {
	d := 1
	if r.FromClient {
		d = 0
	}
	if !c.baseSet[d] {
		c.base[d], c.baseSet[d] = r.Offset, true
	}
	if r.Offset < c.base[d] {
		return fmt.Errorf("capture record: connection %d: offset %d before the first seen, %d", r.Conn, r.Offset, c.base[d])
	}
	rel := r.Offset - c.base[d]
	for p := r.Data; len(p) > 0; {
		n := min(len(p), maxSegment)
		seq := c.isn[d] + 1 + uint32(rel)
		ack := c.isn[1-d] + 1 + uint32(c.sent[1-d])
		if err := s.packet(c, d, r.Time, seq, ack, flags{ack: true, psh: true}, p[:n]); err != nil {
			return err
		}
		p, rel = p[n:], rel+uint64(n)
	}
	c.sent[d] = max(c.sent[d], rel)
	return nil
}

func (s *pcapSynth) end(c *synthConn, r apitype.CaptureRecord) error {
	next := func(d int) uint32 { return c.isn[d] + 1 + uint32(c.sent[d]) }
	t := r.Time
	if r.Reset {
		return s.packet(c, 1, t, next(1), next(0), flags{rst: true, ack: true}, nil)
	}
	return firstErr(
		s.packet(c, 0, t, next(0), next(1), flags{fin: true, ack: true}, nil),
		s.packet(c, 1, t, next(1), next(0)+1, flags{fin: true, ack: true}, nil),
		s.packet(c, 0, t, next(0)+1, next(1)+1, flags{ack: true}, nil),
	)
}

type flags struct{ syn, ack, psh, fin, rst bool }

// packet writes one segment of c in direction d (0: from the client).
func (s *pcapSynth) packet(c *synthConn, d int, t time.Time, seq, ack uint32, f flags, payload []byte) error {
	src, dst := c.client, c.server
	smac, dmac := macClient, macServer
	if d == 1 {
		src, dst, smac, dmac = dst, src, dmac, smac
	}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()),
		Seq: seq, Ack: ack, SYN: f.syn, ACK: f.ack, PSH: f.psh, FIN: f.fin, RST: f.rst, Window: 65535}
	if !f.ack {
		tcp.Ack = 0
	}
	eth := &layers.Ethernet{SrcMAC: smac, DstMAC: dmac}
	var ip gopacket.SerializableLayer
	if src.Addr().Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
			SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
		tcp.SetNetworkLayerForChecksum(ip4)
		ip = ip4
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
			SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
		tcp.SetNetworkLayerForChecksum(ip6)
		ip = ip6
	}
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(s.buf, opts, eth, ip, tcp, gopacket.Payload(payload)); err != nil {
		return fmt.Errorf("build packet: %w", err)
	}
	b := s.buf.Bytes()
	if err := s.w.WritePacket(gopacket.CaptureInfo{Timestamp: t, CaptureLength: len(b), Length: len(b)}, b); err != nil {
		return fmt.Errorf("write packet: %w", err)
	}
	s.Packets++
	return nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
