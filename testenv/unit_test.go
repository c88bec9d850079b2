package testenv

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Tests here need no privileges.

func TestParseCgroup2Mount(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"hybrid", `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`, "/sys/fs/cgroup/unified"},
		{"unified", `29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
`, "/sys/fs/cgroup"},
		{"escaped", `41 31 0:38 / /mnt/my\040cg rw - cgroup2 none rw
`, "/mnt/my cg"},
	} {
		got, err := parseCgroup2Mount(strings.NewReader(tc.in))
		if err != nil || got != tc.want {
			t.Errorf("%s: parseCgroup2Mount = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	if _, err := parseCgroup2Mount(strings.NewReader("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n")); err == nil {
		t.Error("parseCgroup2Mount found a cgroup2 mount where there is none")
	}
}

func TestOutputBufferWait(t *testing.T) {
	b := newOutputBuffer()
	done := make(chan struct{})
	got := make(chan error, 1)
	go func() { got <- b.wait(context.Background(), "ready now", done) }()
	b.Write([]byte("starting... rea"))
	time.Sleep(10 * time.Millisecond)
	b.Write([]byte("dy now\n")) // the marker spans two writes
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not see a marker split over two writes")
	}
	close(done)
	if err := b.wait(context.Background(), "never", done); !errors.Is(err, errExited) {
		t.Errorf("wait after exit = %v, want errExited", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := b.wait(ctx, "never", make(chan struct{})); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("wait with expired context = %v", err)
	}
}

func TestOutputBufferBounded(t *testing.T) {
	b := newOutputBuffer()
	chunk := []byte(strings.Repeat("x", 4096))
	for range 3 * maxOutput / len(chunk) {
		b.Write(chunk)
	}
	b.Write([]byte("END"))
	s := b.String()
	if len(s) != maxOutput || !strings.HasSuffix(s, "END") {
		t.Errorf("kept %d bytes ending %q; want %d ending END", len(s), s[len(s)-3:], maxOutput)
	}
	if len(b.buf) > 2*maxOutput {
		t.Errorf("buffer grew to %d bytes", len(b.buf))
	}
}

func TestValidNames(t *testing.T) {
	for _, r := range []string{"app", "postgres", "bank-2", "a_b"} {
		if !validRole.MatchString(r) {
			t.Errorf("role %q refused", r)
		}
	}
	for _, r := range []string{"", "../x", "App", "a b", strings.Repeat("a", 21)} {
		if validRole.MatchString(r) {
			t.Errorf("role %q accepted", r)
		}
	}
	if err := checkIfName("analysis_corp"); err != nil {
		t.Error(err)
	}
	if err := checkIfName("sixteen-chars-xx"); err == nil {
		t.Error("16-character interface name accepted")
	}
}

// writeTestPcap writes one TCP segment with payload and one without.
func writeTestPcap(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(snapLen, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for _, payload := range []string{"", "hello MARKER"} {
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: net.IPv4(10, 0, 0, 1), DstIP: net.IPv4(10, 0, 0, 2)}
		tcp := &layers.TCP{SrcPort: 40000, DstPort: 5432, Seq: 7, ACK: true, PSH: payload != ""}
		tcp.SetNetworkLayerForChecksum(ip)
		buf := gopacket.NewSerializeBuffer()
		opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
		if err := gopacket.SerializeLayers(buf, opts, eth, ip, tcp, gopacket.Payload(payload)); err != nil {
			t.Fatal(err)
		}
		data := buf.Bytes()
		ci := gopacket.CaptureInfo{Timestamp: time.Now(), CaptureLength: len(data), Length: len(data)}
		if err := w.WritePacket(ci, data); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadTCPPayloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pcap")
	writeTestPcap(t, path)
	segs, err := ReadTCPPayloads(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) != 1 {
		t.Fatalf("got %d segments, want 1 (the empty one skipped): %+v", len(segs), segs)
	}
	s := segs[0]
	if s.Src.String() != "10.0.0.1:40000" || s.Dst.String() != "10.0.0.2:5432" || string(s.Payload) != "hello MARKER" || s.Seq != 7 {
		t.Errorf("segment = %s -> %s seq %d %q", s.Src, s.Dst, s.Seq, s.Payload)
	}
	if _, err := ReadTCPPayloads(filepath.Join(t.TempDir(), "missing.pcap")); err == nil {
		t.Error("reading a missing file succeeded")
	}
}
