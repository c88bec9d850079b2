package loader_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/maps"
	"github.com/sluicehq/sluice/testenv"
)

// TC verdicts as the kernel returns them (linux/pkt_cls.h).
const (
	actUnspec   = ^uint32(0) // TC_ACT_UNSPEC (-1): next program
	actOK       = 0
	actShot     = 2
	actRedirect = 7
)

// progEnv is a loaded, unpinned copy of the data path for BPF_PROG_TEST_RUN.
type progEnv struct {
	objs loader.TcObjects
	maps *maps.Set
	skb  skbLayout
}

// skbLayout is where the fields a test sets or reads sit in struct
// __sk_buff, read from the object's BTF rather than copied by hand.
type skbLayout struct {
	size                 int
	mark, ingressIfindex int
}

func newProgEnv(t *testing.T) *progEnv {
	t.Helper()
	testenv.RequireRoot(t)
	spec, err := loader.Spec(loader.DefaultMark)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	e := &progEnv{skb: sskbLayout(t, spec.Types)}
	if err := spec.LoadAndAssign(&e.objs, nil); err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { e.objs.Close() })
	e.maps = maps.New(&e.objs.TcMaps)
	return e
}

func sskbLayout(t *testing.T, types *btf.Spec) skbLayout {
	t.Helper()
	var s *btf.Struct
	if err := types.TypeByName("__sk_buff", &s); err != nil {
		t.Fatalf("find __sk_buff in the object's BTF: %v", err)
	}
	l := skbLayout{size: int(s.Size)}
	for _, m := range s.Members {
		switch m.Name {
		case "mark":
			l.mark = int(m.Offset.Bytes())
		case "ingress_ifindex":
			l.ingressIfindex = int(m.Offset.Bytes())
		}
	}
	if l.mark == 0 || l.ingressIfindex == 0 {
		t.Fatalf("__sk_buff in BTF lacks mark or ingress_ifindex: %v", s)
	}
	return l
}

// run runs prog on pkt with the given mark and ingress ifindex, and returns
// the verdict, the packet after the run and the mark it left.
func (e *progEnv) run(t *testing.T, prog *ebpf.Program, pkt []byte, mark, ifindex uint32) (uint32, []byte, uint32) {
	t.Helper()
	ctx := make([]byte, e.skb.size)
	binary.NativeEndian.PutUint32(ctx[e.skb.mark:], mark)
	binary.NativeEndian.PutUint32(ctx[e.skb.ingressIfindex:], ifindex)
	out := make([]byte, len(pkt)+256)
	ctxOut := make([]byte, e.skb.size)
	ret, err := prog.Run(&ebpf.RunOptions{Data: pkt, DataOut: out, Context: ctx, ContextOut: ctxOut})
	if err != nil {
		t.Fatalf("run %v: %v", prog, err)
	}
	return ret, out, binary.NativeEndian.Uint32(ctxOut[e.skb.mark:])
}

// seg describes a test packet.
type seg struct {
	src, dst      netip.AddrPort
	syn, ack, rst bool
	seq, ackNum   uint32
	payload       string
	arp           bool
}

var (
	appMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	gwMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
)

func (s seg) bytes(t *testing.T) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	eth := &layers.Ethernet{SrcMAC: appMAC, DstMAC: gwMAC, EthernetType: layers.EthernetTypeIPv4}
	if s.arp {
		eth.EthernetType = layers.EthernetTypeARP
		arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: appMAC, SourceProtAddress: []byte{10, 10, 0, 2},
			DstHwAddress: make([]byte, 6), DstProtAddress: []byte{10, 10, 0, 1}}
		if err := gopacket.SerializeLayers(buf, opts, eth, arp); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
		SrcIP: s.src.Addr().AsSlice(), DstIP: s.dst.Addr().AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(s.src.Port()), DstPort: layers.TCPPort(s.dst.Port()),
		SYN: s.syn, ACK: s.ack, RST: s.rst, Seq: s.seq, Ack: s.ackNum, Window: 64240}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, tcp, gopacket.Payload(s.payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// checksum is the Internet checksum (RFC 1071) of b.
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// decodeReset checks that out is a well-formed reset from `from` to `to`
// and returns its TCP layer.
func decodeReset(t *testing.T, out []byte, from, to netip.AddrPort) *layers.TCP {
	t.Helper()
	const ethLen, ipLen, tcpLen = 14, 20, 20
	pkt := gopacket.NewPacket(out[:ethLen+ipLen+tcpLen], layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if eth == nil || ip == nil || tcp == nil {
		t.Fatalf("reset does not decode as Ethernet/IPv4/TCP: %v", pkt)
	}
	if eth.DstMAC.String() != appMAC.String() || eth.SrcMAC.String() != gwMAC.String() {
		t.Errorf("reset MACs %v -> %v, want %v -> %v", eth.SrcMAC, eth.DstMAC, gwMAC, appMAC)
	}
	if ip.SrcIP.String() != from.Addr().String() || ip.DstIP.String() != to.Addr().String() ||
		uint16(tcp.SrcPort) != from.Port() || uint16(tcp.DstPort) != to.Port() {
		t.Errorf("reset %v:%d -> %v:%d, want %v -> %v", ip.SrcIP, tcp.SrcPort, ip.DstIP, tcp.DstPort, from, to)
	}
	if ip.Length != ipLen+tcpLen || tcp.DataOffset != 5 || !tcp.RST {
		t.Errorf("reset: ip length %d, data offset %d, RST %v", ip.Length, tcp.DataOffset, tcp.RST)
	}
	if c := checksum(out[ethLen : ethLen+ipLen]); c != 0 {
		t.Errorf("reset: IPv4 header checksum does not verify (%#x)", c)
	}
	pseudo := append(append(append([]byte{}, out[ethLen+12:ethLen+20]...), 0, 6, 0, tcpLen), out[ethLen+ipLen:ethLen+ipLen+tcpLen]...)
	if c := checksum(pseudo); c != 0 {
		t.Errorf("reset: TCP checksum does not verify (%#x)", c)
	}
	return tcp
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
