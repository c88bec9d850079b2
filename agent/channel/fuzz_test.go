package channel

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// The record layer's open path, fuzzed: the reader gets the fuzzer's bytes
// as its peer's records, with keys from a real TLS 1.3 key exchange (one per
// fuzzing process), over a real TCP connection that ends with a FIN.

// exportedKeys runs a mutual TLS 1.3 handshake in memory and returns the
// channel's 64 exported bytes, as NewConn takes them.
func exportedKeys(tb testing.TB) []byte {
	tb.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fuzz"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		tb.Fatal(err)
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, ClientAuth: tls.RequireAnyClientCert,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv}}, SessionTicketsDisabled: true}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	sc := tls.Server(b, conf)
	done := make(chan error, 1)
	go func() { done <- sc.Handshake() }()
	cc := tls.Client(a, conf)
	if err := cc.Handshake(); err != nil {
		tb.Fatal(err)
	}
	if err := <-done; err != nil {
		tb.Fatal(err)
	}
	cs, ss := cc.ConnectionState(), sc.ConnectionState()
	km, err := cs.ExportKeyingMaterial(exporterLabel, nil, 64)
	if err != nil {
		tb.Fatal(err)
	}
	if skm, _ := ss.ExportKeyingMaterial(exporterLabel, nil, 64); !bytes.Equal(km, skm) {
		tb.Fatal("the two ends exported different keys")
	}
	return km
}

// feeder hands byte strings to a fresh server-side channel end, one TCP
// connection each.
type feeder struct {
	km []byte
	ln *net.TCPListener
}

func newFeeder(f *testing.F) *feeder {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ln.Close() })
	return &feeder{km: exportedKeys(f), ln: ln}
}

// result is what a reader made of a stream.
type result struct {
	recs []record // records opened, up to and with an end record
	err  error    // why it stopped, or nil after an end record
	held bool     // the reader still held a buffer after a failure
}

// feed sends b then a FIN to a server-side end and reads records until an
// end record or an error.
func (fd *feeder) feed(t *testing.T, b []byte) result {
	raw, err := net.DialTCP("tcp", nil, fd.ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := fd.ln.AcceptTCP()
	if err != nil {
		raw.Close()
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer func() {
		// Closing unblocks a writer whose reader gave up.
		srv.Close()
		raw.Close()
		wg.Wait()
	}()
	srv.SetDeadline(time.Now().Add(10 * time.Second))
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	wg.Go(func() {
		raw.Write(b)
		raw.CloseWrite()
	})
	s, err := newConn(srv, fd.km, false)
	if err != nil {
		t.Fatal(err)
	}
	var r result
	for {
		typ, p, err := s.next()
		if err != nil {
			r.err, r.held = err, s.buf != nil
			return r
		}
		r.recs = append(r.recs, record{typ, bytes.Clone(p)})
		if typ == recEnd {
			return r
		}
	}
}

// FuzzOpen feeds arbitrary bytes as the peer's records. Nothing the fuzzer
// writes can be authenticated without the key, so the reader must refuse the
// stream: a bad record, a truncated stream, or (a first record that looks
// like TLS) a TLS alert, never a policy refusal; never a record, never a
// panic, and no buffer held after the failure.
func FuzzOpen(f *testing.F) {
	fd := newFeeder(f)
	l := maxInner + tagLen
	for _, seed := range [][]byte{
		{},
		{recSealed},
		{recSealed, 0, 0, tagLen + 1},
		append([]byte{recSealed, 0, 0, tagLen + 1}, make([]byte, tagLen+1)...),
		append([]byte{recSealed, 0, 0, tagLen + 2}, make([]byte, tagLen+2)...),
		append([]byte{recData, 0, 0, tagLen + 1}, make([]byte, tagLen+1)...), // the first format's header
		{recSealed, byte(l >> 16), byte(l >> 8), byte(l)},
		{recSealed, byte((l + 1) >> 16), byte((l + 1) >> 8), byte(l + 1)},
		{recSealed, 0, 0, tagLen},
		{tlsAlert, 3, 3, 0, 19},
		{tlsAppData, 3, 3, 0, 19},
		append([]byte{recSealed, 0, 0x40, 0x10}, make([]byte, 0x4010)...),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := fd.feed(t, b)
		switch {
		case len(r.recs) > 0:
			t.Fatalf("%d bytes of no one's making opened as %d records, first of type %d", len(b), len(r.recs), r.recs[0].typ)
		case errors.Is(r.err, ErrDenied):
			t.Fatalf("unauthenticated bytes taken as a policy refusal: %v", r.err)
		case errors.Is(r.err, ErrPeerAlert):
			if b[0] != tlsAlert && b[0] != tlsAppData {
				t.Fatalf("TLS alert reported without a TLS record: %v", r.err)
			}
		case !errors.Is(r.err, ErrBadRecord) && !errors.Is(r.err, ErrTruncated):
			t.Fatalf("stream of %d bytes ended with %v, want a bad record or a truncation", len(b), r.err)
		}
		if r.held {
			t.Fatal("the reader still holds its buffer after the failure")
		}
	})
}

// FuzzTamper builds a genuine stream (data and control records of sizes the
// fuzzer picks, then the end record), rewrites it as the fuzzer says (flip a
// bit, cut, delete or insert bytes, drop, duplicate, swap or replay a
// record, splice in a record of the other direction) and reads it. An
// untouched stream must come out whole with its end; a stream only extended
// past its end record too; any other must yield a prefix of the genuine
// records and then a bad record or a truncation, never the end record.
func FuzzTamper(f *testing.F) {
	fd := newFeeder(f)
	f.Add([]byte{0, 10, 1, 0}, byte(0), uint32(0), byte(0))
	f.Add([]byte{0x3f, 0xe9, 0, 100}, byte(0), uint32(0), byte(0)) // leaves 3 bytes at the end of the small buffer
	f.Add([]byte{0, 10, 0x80, 0, 0, 200}, byte(1), uint32(77), byte(0))
	f.Add([]byte{0, 10, 0, 20}, byte(2), uint32(30), byte(0))
	f.Add([]byte{0, 10, 0, 20}, byte(3), uint32(4), byte(9))
	f.Add([]byte{0, 10, 0, 20}, byte(4), uint32(4), byte(9))
	f.Add([]byte{0, 10, 0, 20, 0, 30}, byte(5), uint32(1), byte(0))
	f.Add([]byte{0, 10, 0, 20, 0, 30}, byte(6), uint32(0), byte(0))
	f.Add([]byte{0, 10, 0, 20, 0, 30}, byte(7), uint32(2), byte(0))
	f.Add([]byte{0, 10, 0, 20, 0, 30}, byte(8), uint32(0), byte(0))
	f.Add([]byte{0, 10, 0, 20, 0, 30}, byte(9), uint32(3), byte(0))
	f.Fuzz(func(t *testing.T, plan []byte, op byte, pos uint32, arg byte) {
		orig, recs := genuine(t, fd.km[:32], plan)
		tampered := rewrite(t, fd.km, orig, recs, op, pos, arg)
		r := fd.feed(t, tampered)
		if bytes.HasPrefix(tampered, orig) {
			if r.err != nil || len(r.recs) != len(recs) {
				t.Fatalf("genuine stream of %d records (%d more bytes after it): %d records, then %v", len(recs), len(tampered)-len(orig), len(r.recs), r.err)
			}
		} else if !errors.Is(r.err, ErrBadRecord) && !errors.Is(r.err, ErrTruncated) &&
			!(errors.Is(r.err, ErrPeerAlert) && (tampered[0] == tlsAlert || tampered[0] == tlsAppData)) {
			t.Fatalf("rewritten stream (op %d): %d records, then %v; want a bad record or a truncation", op%10, len(r.recs), r.err)
		}
		for i, got := range r.recs {
			if i >= len(recs) || got.typ != recs[i].typ || !bytes.Equal(got.p, recs[i].p) {
				t.Fatalf("record %d opened as type %d, %d bytes: not the genuine record", i, got.typ, len(got.p))
			}
		}
		if r.held {
			t.Fatal("the reader still holds its buffer after the failure")
		}
	})
}

// genuine seals a stream as the client would: each 2 bytes of plan make a
// record (big endian: bit 15 set, a control record; else data of the low 14
// bits' length, times 8 if bit 14 is set), at most 12 of them, then the end
// record. It
// returns the bytes and each record's bounds and content.
func genuine(t *testing.T, secret, plan []byte) ([]byte, []sealedRecord) {
	d, err := newDirection(secret)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	var recs []sealedRecord
	add := func(typ byte, p []byte) {
		start := len(out)
		out = append(out, sealRecord(t, d, typ, p)...)
		recs = append(recs, sealedRecord{record{typ, p}, start, len(out)})
	}
	for i := 0; i+1 < len(plan) && len(recs) < 12; i += 2 {
		v := binary.BigEndian.Uint16(plan[i:])
		if v&0x8000 != 0 {
			add(recControl, []byte{byte(v)})
			continue
		}
		n := int(v & 0x3fff) // byte by byte up to the small buffer's size
		if v&0x4000 != 0 {
			n *= 8 // up to MaxRecord
		}
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(len(recs) + j)
		}
		add(recData, p)
	}
	add(recEnd, nil)
	return out, recs
}

type sealedRecord struct {
	record
	start, end int // in the stream
}

// rewrite applies operation op%10 to the stream.
func rewrite(t *testing.T, km, orig []byte, recs []sealedRecord, op byte, pos uint32, arg byte) []byte {
	n := len(recs)
	k := int(pos % uint32(n))
	rec := func(i int) []byte { return orig[recs[i].start:recs[i].end] }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	switch op % 10 {
	case 1: // flip one bit
		out := bytes.Clone(orig)
		bit := int(pos % uint32(8*len(out)))
		out[bit/8] ^= 1 << (bit % 8)
		return out
	case 2: // cut
		return bytes.Clone(orig[:int(pos%uint32(len(orig)+1))])
	case 3: // delete bytes
		at := int(pos % uint32(len(orig)))
		return cat(orig[:at], orig[min(len(orig), at+1+int(arg)):])
	case 4: // insert bytes
		at := int(pos % uint32(len(orig)+1))
		return cat(orig[:at], bytes.Repeat([]byte{arg}, 1+int(arg%16)), orig[at:])
	case 5: // duplicate a record
		return cat(orig[:recs[k].end], rec(k), orig[recs[k].end:])
	case 6: // swap a record with the next
		if k+1 >= n {
			return bytes.Clone(orig)
		}
		return cat(orig[:recs[k].start], rec(k+1), rec(k), orig[recs[k+1].end:])
	case 7: // drop a record
		return cat(orig[:recs[k].start], orig[recs[k].end:])
	case 8: // replay a record before the end record
		return cat(orig[:recs[n-1].start], rec(k), rec(n-1))
	case 9: // a record of the other direction, same position
		forged := forge(t, km[32:], uint64(k), recs[k].typ, recs[k].p)
		return cat(orig[:recs[k].start], forged, orig[recs[k].end:])
	}
	return bytes.Clone(orig)
}
