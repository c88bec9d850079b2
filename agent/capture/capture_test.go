package capture

import (
	"bytes"
	"net/netip"
	"testing"
)

var (
	client = netip.MustParseAddrPort("10.0.0.1:40000")
	server = netip.MustParseAddrPort("10.0.0.2:5432")
)

func TestNobodyCapturesCostsNoAllocation(t *testing.T) {
	var taps Taps
	p := taps.NewPoint(Decrypted, "pg", "n1", client, server, true)
	b := make([]byte, 1024)
	if n := testing.AllocsPerRun(1000, func() { p.Send(b); p.Receive(b) }); n != 0 {
		t.Fatalf("a tap with nobody capturing allocates %v times per chunk, want 0", n)
	}
	var nilPoint *Point // a Manager without Taps
	nilPoint.Send(b)
	nilPoint.Open()
	nilPoint.End(true)
	if (*Taps)(nil).NewPoint(Wire, "", "", client, server, true) != nil {
		t.Fatal("a nil Taps made a Point")
	}
}

func TestRecordsInOrderWithOffsets(t *testing.T) {
	var taps Taps
	p := taps.NewPoint(Decrypted, "pg", "n1", client, server, false) // the outlet's side: it sends the server's bytes
	p.Send([]byte("before"))                                         // nobody captures: not seen, and no offset
	sub := taps.Subscribe(Filter{}, 0)
	defer sub.Close()
	b := []byte("SELECT 1")
	p.Open()
	p.Receive(b)
	b[0] = 'X' // the tap kept its own copy
	p.Send([]byte("row"))
	p.Receive([]byte(";"))
	p.End(false)
	p.End(true) // once only
	want := []Record{
		{Type: Open},
		{Type: Data, FromClient: true, Offset: 0, Data: []byte("SELECT 1")},
		{Type: Data, FromClient: false, Offset: 0, Data: []byte("row")},
		{Type: Data, FromClient: true, Offset: 8, Data: []byte(";")},
		{Type: End},
	}
	for i, w := range want {
		r := <-sub.Records()
		if r.Point != p || r.Type != w.Type || r.FromClient != w.FromClient || r.Offset != w.Offset || !bytes.Equal(r.Data, w.Data) || r.Reset {
			t.Fatalf("record %d: %+v, want %+v", i, r, w)
		}
	}
	select {
	case r := <-sub.Records():
		t.Fatalf("unexpected record %+v", r)
	default:
	}
}

func TestFilterSelects(t *testing.T) {
	var taps Taps
	pg := taps.NewPoint(Decrypted, "pg", "bank", client, server, true)
	web := taps.NewPoint(Decrypted, "web", "bank", client, server, true)
	wire := taps.NewPoint(Wire, "pg", "bank", client, server, true)
	other := taps.NewPoint(Decrypted, "pg", "other", client, server, true)
	sub := taps.Subscribe(Filter{Kind: Decrypted, Portal: "pg", Peer: "bank"}, 0)
	defer sub.Close()
	for _, p := range []*Point{web, wire, other, pg} {
		p.Send([]byte("x"))
	}
	if r := <-sub.Records(); r.Point != pg {
		t.Fatalf("got a record of %+v, want only pg's", r.Point)
	}
	if len(sub.Records()) != 0 {
		t.Fatalf("%d more records, want none", len(sub.Records()))
	}
}

// A reader that never reads loses records, counted; the tap never waits.
func TestFullQueueDropsAndCounts(t *testing.T) {
	var taps Taps
	p := taps.NewPoint(Wire, "pg", "bank", client, server, true)
	sub := taps.Subscribe(Filter{}, 4)
	for range 10 {
		p.Send([]byte("x")) // would block here if the tap waited
	}
	if got := sub.Dropped(); got != 6 {
		t.Fatalf("dropped %d records, want 6", got)
	}
	sub.Close()
	if taps.Capturing() {
		t.Fatal("still capturing after the only capture closed")
	}
	p.Send([]byte("x"))
	if got := sub.Dropped(); got != 6 {
		t.Fatalf("a closed capture still receives: dropped %d", got)
	}
	// Offsets go on across captures (agentctl starts each direction at
	// the first offset it sees).
	sub2 := taps.Subscribe(Filter{}, 0)
	defer sub2.Close()
	p.Send([]byte("y"))
	if r := <-sub2.Records(); r.Offset != 10 {
		t.Fatalf("offset %d after 10 bytes captured, want 10", r.Offset)
	}
}
