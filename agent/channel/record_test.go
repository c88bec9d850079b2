package channel

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// pair returns two TCP connections joined on loopback.
func pair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan *net.TCPConn, 1)
	go func() {
		c, _ := ln.AcceptTCP()
		acc <- c
	}()
	d, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	a := <-acc
	if a == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { d.Close(); a.Close() })
	d.SetDeadline(time.Now().Add(10 * time.Second))
	a.SetDeadline(time.Now().Add(10 * time.Second))
	return d, a
}

func selfSigned(t testing.TB) tls.Certificate {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
}

// conns runs a mutual TLS 1.3 handshake over Boundary and returns both ends'
// record layers. The server writes a control record right after its
// handshake, which the client's crypto/tls must leave unread.
func conns(t testing.TB) (client, server *Conn) {
	t.Helper()
	craw, sraw := pair(t)
	cert := selfSigned(t)
	conf := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true,
		ClientAuth: tls.RequireAnyClientCert, SessionTicketsDisabled: true}
	sc := make(chan *Conn, 1)
	go func() {
		tc := tls.Server(Boundary(sraw), conf)
		if err := tc.Handshake(); err != nil {
			sc <- nil
			return
		}
		s, err := NewConn(sraw, tc, false)
		if err != nil {
			sc <- nil
			return
		}
		// Records right behind the handshake must not be swallowed by
		// the client's crypto/tls.
		s.WriteControl(7)
		sc <- s
	}()
	tc := tls.Client(Boundary(craw), conf)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c, err := NewConn(craw, tc, true)
	if err != nil {
		t.Fatal(err)
	}
	s := <-sc
	if s == nil {
		t.Fatal("server handshake failed")
	}
	if b, err := c.ReadControl(); err != nil || b != 7 {
		t.Fatalf("first record after the handshake: %d, %v; want control 7", b, err)
	}
	return c, s
}

func TestRecordsBothWays(t *testing.T) {
	c, s := conns(t)
	msg := make([]byte, 3*MaxRecord+12345)
	rand.Read(msg)
	done := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = c.CloseWrite()
		}
		done <- err
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("server read %d bytes that differ from the %d sent", len(got), len(msg))
	}
	if s.buf != nil {
		t.Error("the reader still holds a buffer after the stream ended")
	}
	// And the other way, through PumpTo into a TCP connection.
	if _, err := s.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	s.CloseWrite()
	dst, far := pair(t)
	var n atomic.Int64
	if err := c.PumpTo(dst, &n); err != nil {
		t.Fatal(err)
	}
	dst.CloseWrite()
	if got, _ := io.ReadAll(far); string(got) != "answer" || n.Load() != 6 {
		t.Fatalf("PumpTo delivered %q (counted %d), want \"answer\"", got, n.Load())
	}
}

func TestPumpFrom(t *testing.T) {
	c, s := conns(t)
	src, feed := pair(t)
	msg := bytes.Repeat([]byte("sluice "), 100000)
	go func() {
		feed.Write(msg)
		feed.CloseWrite()
	}()
	done := make(chan error, 1)
	var n atomic.Int64
	go func() {
		err := c.PumpFrom(src, &n)
		if err == nil {
			err = c.CloseWrite()
		}
		done <- err
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) || n.Load() != int64(len(msg)) {
		t.Fatalf("got %d bytes (counted %d), want %d equal bytes", len(got), n.Load(), len(msg))
	}
}

func TestTruncatedAndTampered(t *testing.T) {
	c, s := conns(t)
	c.Write([]byte("no end record follows"))
	c.Raw().CloseWrite()
	if _, err := io.ReadAll(s); !errors.Is(err, ErrTruncated) {
		t.Errorf("read after FIN without end record: %v, want ErrTruncated", err)
	}

	c, s = conns(t)
	bp := getBuf(false)
	buf := *bp
	copy(buf[hdrLen:], "tampered")
	rec, err := c.seal(recData, buf, 8)
	if err != nil {
		t.Fatal(err)
	}
	rec[len(rec)-1] ^= 1
	c.Raw().Write(rec)
	putBuf(bp)
	if _, err := s.Read(make([]byte, 64)); !errors.Is(err, ErrBadRecord) {
		t.Errorf("read of a tampered record: %v, want ErrBadRecord", err)
	}
}

func TestRekey(t *testing.T) {
	c, s := conns(t)
	// Jump both ends to just before a key generation boundary.
	c.out.seq, s.in.seq = 1<<rekeyLog-2, 1<<rekeyLog-2
	for i := range 4 {
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		if _, err := io.ReadFull(s, b[:]); err != nil || b[0] != byte(i) {
			t.Fatalf("record %d across the rekey: %v %v", i, b, err)
		}
	}
	if c.out.gen != 1 || s.in.gen != 1 {
		t.Errorf("key generations %d and %d, want 1", c.out.gen, s.in.gen)
	}
}

// TestAlertIsNotRefusal: a TLS record where the peer's first channel record
// should be is reported as a TLS alert, which nothing authenticates, never
// as a policy refusal.
func TestAlertIsNotRefusal(t *testing.T) {
	for _, typ := range []byte{tlsAppData, tlsAlert} {
		c, s := conns(t)
		c.in.seq = 0 // as if the control record had not come: first record
		s.Raw().Write([]byte{typ, 3, 3, 0, 19})
		_, err := c.Read(make([]byte, 1))
		if !errors.Is(err, ErrPeerAlert) || errors.Is(err, ErrDenied) {
			t.Errorf("read of a TLS record of type %#x: %v, want ErrPeerAlert and not ErrDenied", typ, err)
		}
	}
}

// TestBufferSizes: a direction starts small, moves to large buffers for
// large records and back to small ones for small records; records larger
// than a small buffer arrive intact.
func TestBufferSizes(t *testing.T) {
	c, s := conns(t)
	small := []byte("ping")
	large := bytes.Repeat([]byte{7}, 3*smallSize)
	for i, msg := range [][]byte{small, large, small, large} {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("message %d: %d bytes, %v", i, len(got), err)
		}
		if want := len(msg) > smallSize/2; s.idle.big != want {
			t.Errorf("after message %d of %d bytes: large buffers %v, want %v", i, len(msg), s.idle.big, want)
		}
	}
}
