package testenv

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sendMarker sends marker over TCP from one namespace to a listener in
// another and reads the echo back.
func sendMarker(t *testing.T, from *NS, addr, marker string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := from.DialTCP(ctx, addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, marker); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 256)
	for !strings.Contains(string(buf), marker) {
		n, err := c.Read(buf[len(buf):cap(buf)])
		if err != nil {
			t.Fatalf("read echo: %v", err)
		}
		buf = buf[:len(buf)+n]
	}
}

// payloadSeen tells whether marker appears in a segment from src to dst.
func payloadSeen(t *testing.T, path, marker, src, dst string) bool {
	t.Helper()
	segs, err := ReadTCPPayloads(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range segs {
		if strings.Contains(string(s.Payload), marker) && s.Src.Addr().String() == src && s.Dst.String() == dst {
			return true
		}
	}
	t.Logf("%d segments in %s, none %s -> %s with the marker", len(segs), path, src, dst)
	return false
}

func TestCapture(t *testing.T) {
	t.Parallel()
	e := NewT(t)
	// a and b talk over a bridge in sw: capture on b's eth0 and on the
	// bridge, which must show what it forwards too.
	a, sw, b := mustNS(t, e, "a"), mustNS(t, e, "sw"), mustNS(t, e, "b")
	must(t, e.Bridge(sw, "br0", ""))
	for _, end := range []struct {
		ns   *NS
		cidr string
	}{{a, "10.40.0.1/24"}, {b, "10.40.0.2/24"}} {
		port := e.LinkName()
		must(t, e.Veth(end.ns, "eth0", end.cidr, sw, port, ""))
		must(t, e.AttachToBridge(sw, port, "br0"))
	}
	addr := listen(t, b, "10.40.0.2:0")
	dir := t.TempDir()
	onB, err := b.Capture("eth0", filepath.Join(dir, "b.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	onBridge, err := sw.Capture("br0", filepath.Join(dir, "br.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	marker := "SLUICE-TESTENV-MARKER-" + e.RunID()
	sendMarker(t, a, addr, marker)
	must(t, onB.Stop())
	must(t, onBridge.Stop())
	must(t, onB.Stop()) // idempotent
	if !payloadSeen(t, onB.Path(), marker, "10.40.0.1", addr) {
		t.Error("marker not in the capture on b's eth0")
	}
	if !payloadSeen(t, onBridge.Path(), marker, "10.40.0.1", addr) {
		t.Error("marker not in the capture on the bridge")
	}
	if payloadSeen(t, onB.Path(), "NOT-SENT-"+e.RunID(), "10.40.0.1", addr) {
		t.Error("a string never sent was found")
	}
}
