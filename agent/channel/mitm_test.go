package channel

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/pipe"
)

// A man in the middle between two real channel ends: the client's and the
// server's TCP connections both end at the proxy, which forwards the TLS
// handshake as it is and then, record by record, whatever its tamper
// functions make of the records (the hub's position, or anyone's on the
// path).
//
//	client Conn ──TCP──> proxy ──TCP──> server Conn
//	            <──TCP──       <──TCP──
//
// The proxy passes resets through (a reset on one side resets the other) and
// FIN as FIN, as the hub does.

// dir names a direction of a channel.
type dir int

const (
	toServer dir = iota // client → server: the inlet's records
	toClient            // server → client: the outlet's records
)

func (d dir) String() string { return [...]string{"client→server", "server→client"}[d] }

// tamper sees the i-th record (header and body, 0-based, counted from the
// first after the handshake) of a direction and emits what the proxy sends
// instead; cut ends the direction with a FIN after what was emitted. typ is
// the record's type, which the proxy learns by opening the record with the
// channel's keys (an attacker without them sees only sizes: the type is
// sealed inside).
type tamper func(i uint64, typ byte, rec []byte, emit func([]byte)) (cut bool)

// pass forwards a record as it is.
func pass(_ uint64, _ byte, rec []byte, emit func([]byte)) bool { emit(rec); return false }

type mitm struct {
	t              *testing.T
	client, server *Conn
	km             []byte // the exported secrets: client→server, then server→client

	records atomic.Bool // the handshake is over: parse records
	mu      sync.Mutex  // guards tamper
	tamper  [2]tamper
	audit   *audit // opens every record with the specification's keys; set before the first record
	wg      sync.WaitGroup
}

// newMITM returns two channel ends after a real mutual TLS 1.3 handshake
// through the proxy. Nothing has been sent on the channel yet.
func newMITM(t *testing.T) *mitm {
	t.Helper()
	m := &mitm{t: t, tamper: [2]tamper{pass, pass}}
	front := listen(t)
	back := listen(t)
	craw := dial(t, front)
	pc1 := accept(t, front) // proxy ← client
	pc2 := dial(t, back)    // proxy → server
	sraw := accept(t, back)
	for _, c := range []*net.TCPConn{craw, pc1, pc2, sraw} {
		c.SetDeadline(time.Now().Add(20 * time.Second))
	}
	m.wg.Add(2)
	go m.forward(toServer, pc1, pc2)
	go m.forward(toClient, pc2, pc1)
	t.Cleanup(func() {
		for _, c := range []*net.TCPConn{craw, pc1, pc2, sraw} {
			c.Close()
		}
		m.wg.Wait()
	})

	cert := selfSigned(t)
	conf := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true,
		ClientAuth: tls.RequireAnyClientCert, SessionTicketsDisabled: true}
	type end struct {
		tc  *tls.Conn
		err error
	}
	sc := make(chan end, 1)
	go func() {
		tc := tls.Server(Boundary(sraw), conf)
		sc <- end{tc, tc.Handshake()}
	}()
	ctc := tls.Client(Boundary(craw), conf)
	if err := ctc.Handshake(); err != nil {
		t.Fatal(err)
	}
	se := <-sc
	if se.err != nil {
		t.Fatal(se.err)
	}
	// Both handshakes are done, so every handshake byte has crossed the
	// proxy; from now on it sees records only.
	m.records.Store(true)
	cs := ctc.ConnectionState()
	km, err := cs.ExportKeyingMaterial(exporterLabel, nil, 64)
	if err != nil {
		t.Fatal(err)
	}
	m.km = km
	m.audit = &audit{t: t, mu: new(sync.Mutex), shift: rekeyLog, name: "channel", km: km}
	if m.client, err = NewConn(craw, ctc, true); err != nil {
		t.Fatal(err)
	}
	if m.server, err = NewConn(sraw, se.tc, false); err != nil {
		t.Fatal(err)
	}
	return m
}

func listen(t *testing.T) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func dial(t *testing.T, ln *net.TCPListener) *net.TCPConn {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func accept(t *testing.T, ln *net.TCPListener) *net.TCPConn {
	t.Helper()
	ln.SetDeadline(time.Now().Add(10 * time.Second))
	c, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// setTamper replaces the tamper function of direction d.
func (m *mitm) setTamper(d dir, f tamper) {
	m.mu.Lock()
	m.tamper[d] = f
	m.mu.Unlock()
}

// forward copies src to dst: bytes as they come during the handshake, then
// record by record through the direction's tamper function.
func (m *mitm) forward(d dir, src, dst *net.TCPConn) {
	defer m.wg.Done()
	var (
		pending []byte
		i       uint64
		cut     bool
		buf     = make([]byte, 64<<10)
	)
	emit := func(rec []byte) {
		if !cut {
			dst.Write(rec)
		}
	}
	for {
		n, err := src.Read(buf)
		if !m.records.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil && err == nil {
				err = werr
			}
		} else {
			pending = append(pending, buf[:n]...)
			for len(pending) >= hdrLen {
				l := int(pending[1])<<16 | int(pending[2])<<8 | int(pending[3])
				if len(pending) < hdrLen+l {
					break
				}
				rec := bytes.Clone(pending[:hdrLen+l])
				pending = pending[hdrLen+l:]
				m.mu.Lock()
				f, a := m.tamper[d], m.audit
				m.mu.Unlock()
				typ := a.check(d, i, rec)
				if !cut && f(i, typ, rec, emit) {
					cut = true
					dst.CloseWrite()
				}
				i++
			}
		}
		switch {
		case err == io.EOF:
			if !cut {
				dst.CloseWrite()
			}
			return
		case err != nil:
			// A reset (or anything else) on one side resets the other.
			dst.SetLinger(0)
			dst.Close()
			src.SetLinger(0)
			src.Close()
			return
		}
	}
}

// secret returns the exported secret of direction d.
func (m *mitm) secret(d dir) []byte {
	if d == toServer {
		return m.km[:32]
	}
	return m.km[32:]
}

// forge seals a record of type typ as the sender of direction d with the
// given secret would at sequence number seq (of generation 0).
func forge(t *testing.T, secret []byte, seq uint64, typ byte, payload []byte) []byte {
	t.Helper()
	d, err := newDirection(secret)
	if err != nil {
		t.Fatal(err)
	}
	d.seq = seq
	return sealRecord(t, d, typ, payload)
}

// sealRecord seals d's next record as a Conn whose sending direction d is
// would.
func sealRecord(t testing.TB, d *direction, typ byte, payload []byte) []byte {
	t.Helper()
	buf := make([]byte, overhead+1+len(payload))
	copy(buf[hdrLen:], payload)
	rec, err := (&Conn{out: d}).seal(typ, buf, len(payload))
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// streamResult is what one stream did at both applications and both ends.
type streamResult struct {
	inletRes, outletRes pipe.Result // the agents' pipes
	gotA, gotB          []byte      // what each application read
	errA, errB          error       // how its read ended: nil is a clean EOF
}

const ctlOpen, statusOK = 0x10, 0 // as in package portal

// stream carries one connection over the channel as the portal does: the
// client asks with a control record, the server answers with its status,
// then app A (behind the client) sends request and half-closes, app B
// (behind the server) reads it to its end, answers and half-closes, and A
// reads the answer to its end. Both agents run pipe.Run with the channel
// kept for the next stream.
func (m *mitm) stream(request, answer []byte) streamResult {
	t := m.t
	t.Helper()
	appA, inletApp := pair(t)
	outletApp, appB := pair(t)
	m.client.OnControl = func(b byte) error {
		if b != statusOK {
			return errors.New("outlet status not OK")
		}
		return nil
	}
	var r streamResult
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := m.client.WriteControl(ctlOpen); err != nil {
			// As the inlet does (portal's openChannel): a channel that
			// fails before the stream began resets the application's
			// connection. A plain Close here sent a FIN, and under load
			// (the cut came before this write) the application read a
			// clean, empty answer.
			r.inletRes.Err = err
			pipe.TCP(inletApp).Abort()
			return
		}
		r.inletRes = pipe.Run(context.Background(), pipe.TCP(inletApp), pipe.Keep(m.client), nil)
	})
	wg.Go(func() {
		b, err := m.server.ReadControl()
		if err == nil && b != ctlOpen {
			err = errors.New("no open request")
		}
		if err == nil {
			err = m.server.WriteControl(statusOK)
		}
		if err != nil {
			r.outletRes.Err = err
			m.server.Abort()
			outletApp.Close()
			return
		}
		r.outletRes = pipe.Run(context.Background(), pipe.Keep(m.server), pipe.TCP(outletApp), nil)
	})
	wg.Go(func() {
		r.gotB, r.errB = io.ReadAll(appB)
		if r.errB == nil {
			appB.Write(answer)
			appB.CloseWrite()
		}
	})
	// The kernel reports a socket's reset once: to the write, if the reset
	// came first (under load the inlet can reset before the application
	// writes), and the read that follows sees a clean EOF. Keep the first.
	_, werr := appA.Write(request)
	appA.CloseWrite()
	r.gotA, r.errA = io.ReadAll(appA)
	if werr != nil && r.errA == nil {
		r.errA = werr
	}
	wg.Wait()
	return r
}

// audit opens every record the proxy sees with keys and nonces derived as
// docs/channel.md specifies, independently of the code under test, and
// returns its type. When seen is set it keeps every (key, nonce) pair used
// there, failing on a repeat.
type audit struct {
	t  *testing.T
	mu *sync.Mutex // guards seen, shared by audits, and the fields below

	shift uint
	// seen maps key||nonce to where it was first used; nil: not kept.
	seen  map[string]string
	name  string // the channel, in messages
	km    []byte
	count [2]uint64
	gens  [2]uint64 // highest generation seen per direction
	// secret is, per direction, the secret of generation gens (the
	// ratchet's state); nil before the first record.
	secret [2][]byte
}

func (a *audit) check(d dir, seq uint64, rec []byte) byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	gen := seq >> a.shift
	if a.secret[d] == nil {
		// Generation 0's secret is the direction's half of the exporter's
		// 64 bytes.
		a.secret[d] = a.km[:32]
		if d == toClient {
			a.secret[d] = a.km[32:]
		}
	}
	if gen < a.gens[d] {
		a.t.Errorf("%s %s record %d is of generation %d, after generation %d", a.name, d, seq, gen, a.gens[d])
		return 0
	}
	// The ratchet: secret(g+1) = HKDF-Expand(SHA-256, secret(g),
	// "sluice record next secret", 32).
	for ; a.gens[d] < gen; a.gens[d]++ {
		next, err := hkdf.Expand(sha256.New, a.secret[d], "sluice record next secret", 32)
		if err != nil {
			a.t.Error(err)
			return 0
		}
		a.secret[d] = next
	}
	// Keys: HKDF-Expand(SHA-256, secret(g), "sluice record key", 28): the
	// first 16 bytes the AES-128 key, the last 12 the IV.
	km, err := hkdf.Expand(sha256.New, a.secret[d], "sluice record key", 28)
	if err != nil {
		a.t.Error(err)
		return 0
	}
	key, iv := km[:16], km[16:]
	// Nonce: the IV XOR the sequence number, 64-bit big endian, aligned
	// right.
	nonce := bytes.Clone(iv)
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], seq)
	for i := range s {
		nonce[4+i] ^= s[i]
	}
	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)
	// Header: 0x80, then the length; the additional data.
	inner, err := gcm.Open(nil, nonce, rec[4:], rec[:4])
	if err != nil || rec[0] != 0x80 {
		a.t.Errorf("%s %s record %d (%d bytes) does not open with the specified key and nonce of generation %d",
			a.name, d, seq, len(rec), gen)
		return 0
	}
	// The type is the last byte of the plaintext that is not zero.
	typ := byte(0)
	for i := len(inner) - 1; i >= 0 && typ == 0; i-- {
		typ = inner[i]
	}
	if a.seen != nil {
		id := string(key) + string(nonce)
		where := a.name + " " + d.String() + " record " + strconv.FormatUint(seq, 10)
		if first, ok := a.seen[id]; ok {
			a.t.Errorf("(key, nonce) of %s was already used by %s", where, first)
		}
		a.seen[id] = where
	}
	a.count[d]++
	return typ
}
