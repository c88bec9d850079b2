package main

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/sluicehq/sluice/agent/api/apitype"
)

// synthesize writes recs to a capture file of format and returns its path.
func synthesize(t *testing.T, format string, recs []apitype.CaptureRecord) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c."+format)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bw := bufio.NewWriter(f)
	pw, flush, err := newPacketWriter(bw, format)
	if err != nil {
		t.Fatal(err)
	}
	s := newPcapSynth(pw)
	for _, r := range recs {
		if err := s.add(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := flush(); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	return path
}

// readSegments reads a capture file back with gopacket.
func readSegments(t *testing.T, path string) []*layers.TCP {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var src interface {
		ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	}
	if strings.HasSuffix(path, "pcapng") {
		src, err = pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
	} else {
		src, err = pcapgo.NewReader(f)
	}
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	var segs []*layers.TCP
	for {
		data, _, err := src.ReadPacketData()
		if err == io.EOF {
			return segs
		}
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		pkt := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		if el := pkt.ErrorLayer(); el != nil {
			t.Fatalf("packet %d does not decode: %v", len(segs), el.Error())
		}
		tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok {
			t.Fatalf("packet %d has no TCP layer", len(segs))
		}
		segs = append(segs, tcp)
	}
}

func conn(id uint64, client, server string) apitype.CaptureRecord {
	return apitype.CaptureRecord{Type: apitype.CaptureOpen, Conn: id, Time: time.Unix(1700000000, 0), Kind: apitype.CaptureDecrypted, Client: client, Server: server}
}

func data(id uint64, fromClient bool, off uint64, b []byte) apitype.CaptureRecord {
	return apitype.CaptureRecord{Type: apitype.CaptureData, Conn: id, Time: time.Unix(1700000001, 0), FromClient: fromClient, Offset: off, Data: b}
}

func end(id uint64, reset bool) apitype.CaptureRecord {
	return apitype.CaptureRecord{Type: apitype.CaptureEnd, Conn: id, Time: time.Unix(1700000002, 0), Reset: reset}
}

// checkStream follows one connection's segments as a TCP receiver would:
// handshake, every data segment at the next expected sequence number with
// the ack of what the other side sent, FIN (or RST) at the end; it returns
// the bytes each direction carried.
func checkStream(t *testing.T, segs []*layers.TCP, clientPort uint16, wantReset bool) (up, down []byte) {
	t.Helper()
	if len(segs) < 3 || !segs[0].SYN || segs[0].ACK || !segs[1].SYN || !segs[1].ACK || segs[2].SYN || !segs[2].ACK {
		t.Fatalf("no SYN, SYN-ACK, ACK at the start")
	}
	next := [2]uint32{segs[0].Seq + 1, segs[1].Seq + 1} // [0] from the client
	if segs[1].Ack != next[0] || segs[2].Seq != next[0] || segs[2].Ack != next[1] {
		t.Fatalf("handshake numbers do not follow: %d %d / %d %d %d", segs[0].Seq, segs[1].Ack, segs[1].Seq, segs[2].Seq, segs[2].Ack)
	}
	var got [2][]byte
	fins := 0
	for i, s := range segs[3:] {
		d := 1
		if uint16(s.SrcPort) == clientPort {
			d = 0
		}
		if s.Seq != next[d] {
			t.Fatalf("segment %d (direction %d): seq %d, want %d (bytes lost or repeated)", i+3, d, s.Seq, next[d])
		}
		if s.ACK && s.Ack != next[1-d] {
			t.Fatalf("segment %d (direction %d): ack %d, want %d", i+3, d, s.Ack, next[1-d])
		}
		got[d] = append(got[d], s.Payload...)
		next[d] += uint32(len(s.Payload))
		if s.FIN {
			next[d]++
			fins++
		}
		if s.RST {
			if !wantReset || i+3 != len(segs)-1 {
				t.Fatalf("segment %d is a reset", i+3)
			}
			return got[0], got[1]
		}
	}
	if wantReset {
		t.Fatal("no reset at the end")
	}
	if fins != 2 || !segs[len(segs)-1].ACK || segs[len(segs)-1].FIN {
		t.Fatalf("the stream does not end with FIN both ways and the last ACK (%d FINs)", fins)
	}
	return got[0], got[1]
}

func TestSynthesizedStreamReassembles(t *testing.T) {
	query := []byte("Q\x00\x00\x00\x1dSELECT 'sluice-marker';\x00")
	big := make([]byte, 3*maxSegment+17) // more than one segment per record
	for i := range big {
		big[i] = byte(rand.IntN(256))
	}
	recs := []apitype.CaptureRecord{
		conn(1, "10.10.0.2:41000", "10.10.0.1:15432"),
		data(1, true, 0, query),
		data(1, false, 0, big),
		data(1, true, uint64(len(query)), []byte("X\x00\x00\x00\x04")),
		data(1, false, uint64(len(big)), []byte("tail")),
		end(1, false),
	}
	for _, format := range []string{"pcap", "pcapng"} {
		t.Run(format, func(t *testing.T) {
			segs := readSegments(t, synthesize(t, format, recs))
			up, down := checkStream(t, segs, 41000, false)
			if want := append(append([]byte{}, query...), "X\x00\x00\x00\x04"...); !bytes.Equal(up, want) {
				t.Fatalf("client to server reassembles to %q, want %q", up, want)
			}
			if want := append(append([]byte{}, big...), "tail"...); !bytes.Equal(down, want) {
				t.Fatalf("server to client: %d bytes reassembled, not the %d sent", len(down), len(want))
			}
			if n := len(segs); n != 3+1+4+1+1+3 {
				t.Fatalf("%d packets, want 13 (handshake, 1+4+1+1 data, FIN FIN ACK)", n)
			}
		})
	}
}

func TestSynthesizedResetAndIPv6(t *testing.T) {
	recs := []apitype.CaptureRecord{
		conn(7, "[fd00::1]:50000", "[fd00::2]:443"),
		data(7, true, 0, []byte("hello")),
		end(7, true),
	}
	segs := readSegments(t, synthesize(t, "pcap", recs))
	up, _ := checkStream(t, segs, 50000, true)
	if string(up) != "hello" {
		t.Fatalf("reassembled %q", up)
	}
}

// Records the agent dropped leave a hole in the sequence numbers, as bytes
// a capture missed do; they never shift what follows.
func TestDroppedRecordsLeaveAGap(t *testing.T) {
	recs := []apitype.CaptureRecord{
		conn(2, "10.0.0.1:1000", "10.0.0.2:2000"),
		data(2, true, 0, []byte("aaaa")),
		data(2, true, 10, []byte("bbbb")), // 6 bytes dropped
	}
	segs := readSegments(t, synthesize(t, "pcap", recs))
	if got := segs[4].Seq - segs[3].Seq; got != 10 {
		t.Fatalf("the segment after the gap is %d bytes on, want 10", got)
	}
}

func TestSynthesisRefusesBadRecords(t *testing.T) {
	s := newPcapSynth(pcapgo.NewWriter(io.Discard))
	for _, r := range []apitype.CaptureRecord{
		data(9, true, 0, []byte("x")), // before its open
		end(9, false),
		{Type: "nonsense"},
		conn(3, "not an address", "10.0.0.1:1"),
		conn(4, "10.0.0.1:1", "[fd00::1]:2"),
	} {
		if err := s.add(r); err == nil {
			t.Errorf("record %+v accepted", r)
		}
	}
}

// tcpdump, the real tool, reads the file and shows the query.
func TestTcpdumpReadsSynthesizedCapture(t *testing.T) {
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("tcpdump is missing (.ci/install-deps installs it)")
		}
		t.Skip("tcpdump is not installed")
	}
	recs := []apitype.CaptureRecord{
		conn(1, "10.10.0.2:41000", "10.10.0.1:5432"),
		data(1, true, 0, []byte("SELECT 'sluice-marker'")),
		end(1, false),
	}
	for _, format := range []string{"pcap", "pcapng"} {
		out, err := exec.Command(tcpdump, "-n", "-r", synthesize(t, format, recs), "-A").CombinedOutput()
		if err != nil {
			t.Fatalf("tcpdump -r of the %s file: %v\n%s", format, err, out)
		}
		for _, want := range []string{"10.10.0.2.41000 > 10.10.0.1.5432: Flags [S]", "Flags [P.]", "SELECT 'sluice-marker'", "Flags [F.]"} {
			if !strings.Contains(string(out), want) {
				t.Fatalf("tcpdump -r of the %s file shows no %q:\n%s", format, want, out)
			}
		}
	}
}
