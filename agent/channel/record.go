package channel

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// After the TLS 1.3 handshake a channel leaves crypto/tls's record layer
// (16 KiB records, one write(2) each) for its own, with large records sealed
// in place. The keys come from the handshake's exporter (RFC 8446 7.5), so
// they belong to this session, which both identities authenticated. The
// format is specified in docs/channel.md.
//
// Pipeline, per direction (see the pipe package for the goroutines):
//
//	seal:  src.Read ──> buf[hdr:] (pooled, nothing held while idle)
//	       ──> AES-GCM seal in place ──> one write(2) of header+ciphertext
//	open:  read(2) as much as is there ──> open each whole record in place
//	       ──> one write(2) of its plaintext
//
// One copy in and one copy out per direction, as through a socket; the
// crypto works in the same buffer.
//
// Record: a 4-byte header, the constant 0x80 and the ciphertext length
// (3 bytes, big endian), authenticated as additional data; then the
// AES-128-GCM ciphertext and tag of the content, its type (one byte) and
// padding (zeros). The type travels inside, as in TLS 1.3, and the end
// record is padded to the size of a control record or of a one-byte data
// record, so that the hub reads neither off the header. The nonce is the
// direction's IV XOR the record's sequence number (as in TLS 1.3). Every
// 2^20 records the direction moves to the next key generation, well within
// AES-GCM's limits: a ratchet from its exported secret, each generation's
// secret erased once it gave its key and the next one's secret. A record
// that fails ends reading for good; a stream ends cleanly only with its end
// record.

// Record types, sealed inside each record.
const (
	recData    byte = 1 // application bytes
	recEnd     byte = 2 // the sender's clean end of stream (its close_notify)
	recControl byte = 3 // one byte for the portal, see Conn.ReadControl
)

const (
	recSealed byte = 0x80 // the header's first byte: the same for every record
	hdrLen         = 4
	tagLen         = 16
	// MaxRecord is the largest content of one record.
	MaxRecord = 128 << 10
	// maxInner is the largest plaintext of one record: content, type and
	// padding.
	maxInner = MaxRecord + 1
	// overhead is what a record adds to its content, without padding.
	overhead = hdrLen + 1 + tagLen
	// bufSize holds two whole records, so that reading never waits for
	// room.
	bufSize = 2 * (hdrLen + maxInner + tagLen)
	// smallSize is the buffer a direction starts with after being idle:
	// thousands of connections waking at once for a few bytes each must
	// not take a large buffer each. A direction that fills it moves to
	// large buffers until its reads are small again.
	smallSize = 16 << 10
	rekeyLog  = 20 // a new key generation every 2^20 records
	maxSeq    = 1<<64 - 1

	exporterLabel = "EXPORTER-sluice-records-v2"
	keyLabel      = "sluice record key"         // HKDF info: a generation's key and IV
	nextLabel     = "sluice record next secret" // HKDF info: the next generation's secret

	tlsAlert   = 0x15 // TLS record types (RFC 8446 5.1)
	tlsAppData = 0x17
)

// Sentinel errors of the record layer.
var (
	// ErrTruncated means the stream ended without its end record: the
	// connection was cut, not closed.
	ErrTruncated = errors.New("channel ended without its end record")
	// ErrBadRecord means a record failed authentication or is malformed.
	ErrBadRecord = errors.New("bad channel record")
	// ErrPeerAlert means the first bytes from the peer were a TLS record,
	// not a channel record: a TLS alert after the handshake, such as the
	// one a TLS 1.3 server sends when it rejects the client's certificate
	// after the client's handshake has finished. It is not authenticated:
	// anyone on the path can send those bytes, so it is never taken as the
	// peer's refusal, only as a failed channel.
	ErrPeerAlert = errors.New("the peer closed with a TLS alert before any authenticated record")
)

var (
	bigPool   = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}
	smallPool = sync.Pool{New: func() any { b := make([]byte, smallSize); return &b }}
)

// getBuf returns a pooled buffer, large or small.
func getBuf(big bool) *[]byte {
	if big {
		return bigPool.Get().(*[]byte)
	}
	return smallPool.Get().(*[]byte)
}

// putBuf gives a buffer of getBuf back.
func putBuf(bp *[]byte) {
	if len(*bp) == bufSize {
		bigPool.Put(bp)
	} else {
		smallPool.Put(bp)
	}
}

// direction is one direction's keys and record counter. Its keys come from
// a ratchet: each generation's secret gives that generation's key and IV
// and the next generation's secret, and is erased once it has, so that the
// state held at generation g opens nothing of earlier generations.
type direction struct {
	next   [32]byte // generation gen+1's secret: gen's and earlier ones are erased
	shift  uint     // a new key generation every 1<<shift records: rekeyLog (tests lower it)
	gen    uint64
	aead   cipher.AEAD
	iv     [12]byte
	seq    uint64
	nonceb [12]byte // the last nonce: one per direction, not one per record
}

// newDirection starts a direction at generation 0 from its exported
// secret, which the caller erases.
func newDirection(secret []byte) (*direction, error) {
	d := &direction{shift: rekeyLog}
	copy(d.next[:], secret)
	return d, d.ratchet()
}

// generation derives, from generation g's secret, g's key and IV and
// generation g+1's secret (docs/channel.md, "Keys").
func generation(secret []byte) (key, iv, next []byte, err error) {
	km, err := hkdf.Expand(sha256.New, secret, keyLabel, 16+12)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("derive record key: %w", err)
	}
	if next, err = hkdf.Expand(sha256.New, secret, nextLabel, 32); err != nil {
		return nil, nil, nil, fmt.Errorf("derive record key: %w", err)
	}
	return km[:16], km[16:], next, nil
}

// ratchet installs the keys of the generation whose secret d.next holds,
// keeps the following generation's secret in its place and erases the
// rest. The caller sets d.gen.
func (d *direction) ratchet() error {
	key, iv, next, err := generation(d.next[:])
	if err != nil {
		return err
	}
	defer clear(key[:cap(key)]) // the IV after it too: copied below
	defer clear(next)
	block, err := aes.NewCipher(key)
	if err != nil {
		return fmt.Errorf("derive record key: %w", err)
	}
	if d.aead, err = cipher.NewGCM(block); err != nil {
		return fmt.Errorf("derive record key: %w", err)
	}
	copy(d.iv[:], iv)
	copy(d.next[:], next)
	return nil
}

// rekey moves on to generation g, the next one: the ratchet turns one
// generation at a time, as the sequence number runs.
func (d *direction) rekey(g uint64) error {
	if g != d.gen+1 {
		return fmt.Errorf("derive record key: generation %d after %d: %w", g, d.gen, ErrBadRecord)
	}
	if err := d.ratchet(); err != nil {
		return err
	}
	d.gen = g
	return nil
}

// nonce returns the next record's nonce, moving to the next key generation
// when it is due. The last sequence number is never used: past it the
// nonces would start again under generation 0's key.
func (d *direction) nonce() ([]byte, error) {
	if d.seq == maxSeq {
		return nil, fmt.Errorf("channel direction used up its %d records: %w", uint64(maxSeq), ErrBadRecord)
	}
	if g := d.seq >> d.shift; g != d.gen {
		// The ratchet turns: from now on this direction cannot seal
		// or open a record of an earlier generation.
		if err := d.rekey(g); err != nil {
			return nil, err
		}
	}
	d.nonceb = d.iv
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], d.seq)
	for i := range s {
		d.nonceb[4+i] ^= s[i]
	}
	d.seq++
	return d.nonceb[:], nil
}

// Conn is an established channel on its TCP connection. One goroutine may
// write (Write, PumpFrom, WriteControl, CloseWrite) while another reads
// (Read, PumpTo, ReadControl).
type Conn struct {
	raw  *net.TCPConn
	rc   syscall.RawConn
	out  *direction // guarded by the single writer
	in   *direction // guarded by the single reader
	idle *idleReader

	// reader state: buf[r:w] is received and not yet opened; nil while
	// nothing is pending, so that an idle channel holds no buffer.
	buf    *[]byte
	r, w   int
	plain  []byte // opened data not yet returned by Read
	ended  bool   // the peer's end record was read
	err    error  // the record that ended reading, returned ever after
	closed atomic.Bool

	// OnControl, if set, receives the control bytes that arrive among data
	// records (PumpTo, Read); an error ends the stream. Without it a control
	// record there is a protocol error. Set it before reading.
	OnControl func(b byte) error
}

// Boundary wraps a TCP connection for the TLS handshake so that crypto/tls
// never reads past the record it needs: the bytes after the handshake belong
// to the record layer of NewConn.
func Boundary(c *net.TCPConn) net.Conn { return &boundary{TCPConn: c} }

type boundary struct {
	*net.TCPConn
	hdr  [5]byte
	hdrN int
	left int
}

// Read returns bytes of the current TLS record only.
func (b *boundary) Read(p []byte) (int, error) {
	if b.hdrN < len(b.hdr) {
		n, err := b.TCPConn.Read(p[:min(len(p), len(b.hdr)-b.hdrN)])
		copy(b.hdr[b.hdrN:], p[:n])
		b.hdrN += n
		if b.hdrN == len(b.hdr) {
			b.left = int(binary.BigEndian.Uint16(b.hdr[3:]))
			if b.left == 0 {
				b.hdrN = 0
			}
		}
		return n, err
	}
	n, err := b.TCPConn.Read(p[:min(len(p), b.left)])
	b.left -= n
	if b.left == 0 {
		b.hdrN = 0
	}
	return n, err
}

// NewConn takes over raw after the handshake of tc (which must have run over
// Boundary(raw)); tc must not be used again. client says which end this is.
func NewConn(raw *net.TCPConn, tc *tls.Conn, client bool) (*Conn, error) {
	cs := tc.ConnectionState()
	km, err := cs.ExportKeyingMaterial(exporterLabel, nil, 64)
	if err != nil {
		return nil, fmt.Errorf("export channel keys: %w", err)
	}
	defer clear(km)
	return newConn(raw, km, client)
}

// newConn builds the record layer from the 64 exported bytes km: the
// client-to-server secret, then the server-to-client one. It keeps copies:
// the caller erases km.
func newConn(raw *net.TCPConn, km []byte, client bool) (*Conn, error) {
	toServer, err := newDirection(km[:32])
	if err != nil {
		return nil, err
	}
	toClient, err := newDirection(km[32:])
	if err != nil {
		return nil, err
	}
	rc, err := raw.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("take over channel connection: %w", err)
	}
	c := &Conn{raw: raw, rc: rc, out: toServer, in: toClient, idle: newIdleReader(rc, whole)}
	if !client {
		c.out, c.in = toClient, toServer
	}
	return c, nil
}

// Raw returns the TCP connection under the channel.
func (c *Conn) Raw() *net.TCPConn { return c.raw }

// seal seals the content buf[hdrLen:hdrLen+n] in place as a record of type
// typ and returns the whole record. buf has room for the type after the
// content and the tag (and an end record for its byte of padding).
func (c *Conn) seal(typ byte, buf []byte, n int) ([]byte, error) {
	nonce, err := c.out.nonce()
	if err != nil {
		return nil, err
	}
	buf[hdrLen+n] = typ
	n++
	if typ == recEnd {
		// Padded to the size of a control record (and of a one-byte data
		// record): content, type and padding, 2 bytes.
		buf[hdrLen+n] = 0
		n++
	}
	l := n + tagLen
	buf[0], buf[1], buf[2], buf[3] = recSealed, byte(l>>16), byte(l>>8), byte(l)
	sealed := c.out.aead.Seal(buf[hdrLen:hdrLen], nonce, buf[hdrLen:hdrLen+n], buf[:hdrLen])
	return buf[:hdrLen+len(sealed)], nil
}

// writeRecord seals p (at most MaxRecord bytes) and writes it.
func (c *Conn) writeRecord(typ byte, p []byte) error {
	bp := getBuf(overhead+1+len(p) > smallSize) // +1: an end record's padding
	defer putBuf(bp)
	rec, err := c.seal(typ, *bp, copy(plainRoom(*bp), p))
	if err != nil {
		return err
	}
	_, err = c.raw.Write(rec)
	return err
}

// Write seals p in records and writes them.
func (c *Conn) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n := min(len(p)-done, MaxRecord)
		if err := c.writeRecord(recData, p[done:done+n]); err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// WriteControl sends a control byte.
func (c *Conn) WriteControl(b byte) error { return c.writeRecord(recControl, []byte{b}) }

// CloseWrite ends the stream this side sends with the end record. The
// connection stays open: after both ends the channel can carry another
// stream, and Close ends it.
func (c *Conn) CloseWrite() error { return c.writeRecord(recEnd, nil) }

// Idle reports whether a channel between streams is still usable: nothing
// unread, no record failed and the peer has not closed it. Call it only
// while no one reads.
func (c *Conn) Idle() bool {
	if c.buf != nil || c.err != nil || c.closed.Load() {
		return false
	}
	alive := false
	err := c.rc.Control(func(fd uintptr) {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = err == syscall.EAGAIN
	})
	return err == nil && alive
}

// Abort closes the connection with a reset.
func (c *Conn) Abort() error {
	c.raw.SetLinger(0) // close sends RST: https://man7.org/linux/man-pages/man7/socket.7.html (SO_LINGER)
	return c.Close()
}

// Close closes the connection.
func (c *Conn) Close() error {
	c.closed.Store(true)
	return c.raw.Close()
}

// PumpFrom seals what src sends into data records until src ends (nil) or
// anything fails. n counts plaintext bytes as they move.
func (c *Conn) PumpFrom(src *net.TCPConn, n *atomic.Int64) error {
	rc, err := src.SyscallConn()
	if err != nil {
		return err
	}
	r := newIdleReader(rc, plainRoom)
	for {
		bp, nr, err := r.read()
		if err != nil || nr == 0 {
			return err // nil at EOF
		}
		// A read that filled its buffer means more is coming.
		room := len(plainRoom(*bp))
		r.big = nr == room || (r.big && nr > smallSize/2)
		rec, err := c.seal(recData, *bp, nr)
		if err == nil {
			_, err = c.raw.Write(rec)
		}
		putBuf(bp)
		if err != nil {
			return err
		}
		n.Add(int64(nr))
	}
}

// plainRoom is where a data record's content goes in a buffer: the type
// and the tag follow it.
func plainRoom(b []byte) []byte { return b[hdrLen:min(len(b)-1-tagLen, hdrLen+MaxRecord)] }

// whole is the whole buffer.
func whole(b []byte) []byte { return b }

// idleReader waits until a socket is readable without holding a buffer,
// then reads into window of a pooled one, large or small.
type idleReader struct {
	rc     syscall.RawConn
	window func([]byte) []byte
	big    bool // read into a large buffer
	fn     func(fd uintptr) bool

	// results of the last fn
	bp  *[]byte
	nr  int
	err error
}

func newIdleReader(rc syscall.RawConn, window func([]byte) []byte) *idleReader {
	r := &idleReader{rc: rc, window: window}
	r.fn = r.readFD // bound once: no closure to allocate per read
	return r
}

// readFD is RawConn.Read's callback: false (and no buffer held) on EAGAIN.
func (r *idleReader) readFD(fd uintptr) bool {
	r.bp = getBuf(r.big)
	b := r.window(*r.bp)
	for {
		r.nr, r.err = syscall.Read(int(fd), b)
		if r.err != syscall.EINTR {
			break
		}
	}
	if r.err == syscall.EAGAIN {
		putBuf(r.bp)
		r.bp = nil
		return false
	}
	return true
}

// read returns a buffer holding nr bytes read; nr == 0 with a nil error is
// EOF.
func (r *idleReader) read() (bp *[]byte, nr int, err error) {
	r.bp, r.nr, r.err = nil, 0, nil
	err = r.rc.Read(r.fn)
	if err == nil {
		err = r.err
	}
	if err != nil || r.nr <= 0 {
		if r.bp != nil {
			putBuf(r.bp)
		}
		r.bp = nil
		return nil, 0, wrapRead(err)
	}
	bp, r.bp = r.bp, nil
	return bp, r.nr, nil
}

func wrapRead(err error) error {
	if err == nil {
		return nil
	}
	return &net.OpError{Op: "read", Net: "tcp", Err: err}
}

// PumpTo opens data records into dst until the peer's end record (nil) or
// anything fails. n counts plaintext bytes as they move.
func (c *Conn) PumpTo(dst *net.TCPConn, n *atomic.Int64) error {
	for {
		typ, p, err := c.next()
		if err != nil {
			return err
		}
		switch typ {
		case recData:
			if _, err := dst.Write(p); err != nil {
				return err
			}
			n.Add(int64(len(p)))
		case recEnd:
			return nil
		default:
			if err := c.control(typ, p); err != nil {
				return err
			}
		}
	}
}

// control hands a control record that came among data to OnControl.
func (c *Conn) control(typ byte, p []byte) error {
	if typ != recControl || len(p) != 1 || c.OnControl == nil {
		return fmt.Errorf("read channel: unexpected record type %d: %w", typ, ErrBadRecord)
	}
	return c.OnControl(p[0])
}

// Read returns opened data; io.EOF after the peer's end record.
func (c *Conn) Read(p []byte) (int, error) {
	for len(c.plain) == 0 {
		if c.ended {
			return 0, io.EOF
		}
		typ, rec, err := c.next()
		if err != nil {
			return 0, err
		}
		switch typ {
		case recData:
			c.plain = rec
		case recEnd:
			c.ended = true
		default:
			if err := c.control(typ, rec); err != nil {
				return 0, err
			}
		}
	}
	n := copy(p, c.plain)
	c.plain = c.plain[n:]
	return n, nil
}

// ReadControl reads the next record, which must be a control byte.
func (c *Conn) ReadControl() (byte, error) {
	typ, p, err := c.next()
	if err != nil {
		return 0, err
	}
	if typ != recControl || len(p) != 1 {
		return 0, fmt.Errorf("read channel: record type %d of %d bytes, want a control byte: %w", typ, len(p), ErrBadRecord)
	}
	c.ended = false // a new stream may begin
	return p[0], nil
}

// next returns the next record, opened in place; its payload is valid until
// the next call.
func (c *Conn) next() (byte, []byte, error) {
	if c.err != nil {
		return 0, nil, c.err
	}
	for {
		need := hdrLen // bytes of the record at c.r needed to go on
		if c.buf != nil && c.w-c.r >= hdrLen {
			buf := *c.buf
			h := buf[c.r : c.r+hdrLen]
			if c.in.seq == 0 && (h[0] == tlsAlert || h[0] == tlsAppData) {
				// A TLS 1.3 server that rejects our certificate does so after
				// our handshake is done, with an alert (sealed, so it looks
				// like application data); our own records never start this
				// way. Nothing authenticates it: report it for what it is.
				return 0, nil, c.fail(fmt.Errorf("read channel: %w", ErrPeerAlert))
			}
			if h[0] != recSealed {
				return 0, nil, c.fail(fmt.Errorf("read channel: record header starts with %#x: %w", h[0], ErrBadRecord))
			}
			l := int(h[1])<<16 | int(h[2])<<8 | int(h[3])
			if l < 1+tagLen || l > maxInner+tagLen {
				return 0, nil, c.fail(fmt.Errorf("read channel: record of %d bytes: %w", l, ErrBadRecord))
			}
			need = hdrLen + l
			if c.w-c.r >= need {
				return c.open(h, buf[c.r+hdrLen:c.r+need])
			}
		}
		c.makeRoom(need)
		if err := c.fill(); err != nil {
			return 0, nil, err
		}
	}
}

// open authenticates and decrypts the whole record at c.r in place.
func (c *Conn) open(h, body []byte) (byte, []byte, error) {
	nonce, err := c.in.nonce()
	if err != nil {
		return 0, nil, c.fail(err)
	}
	p, err := c.in.aead.Open(body[:0], nonce, body, h)
	if err != nil {
		return 0, nil, c.fail(fmt.Errorf("read channel: %w", ErrBadRecord))
	}
	// The type is the last byte that is not padding (zeros).
	i := len(p) - 1
	for i >= 0 && p[i] == 0 {
		i--
	}
	if i < 0 {
		return 0, nil, c.fail(fmt.Errorf("read channel: record without a type: %w", ErrBadRecord))
	}
	typ := p[i]
	p = p[:i]
	if typ != recData && typ != recEnd && typ != recControl {
		return 0, nil, c.fail(fmt.Errorf("read channel: record of type %d: %w", typ, ErrBadRecord))
	}
	if typ == recEnd && len(p) != 0 {
		return 0, nil, c.fail(fmt.Errorf("read channel: end record with %d bytes: %w", len(p), ErrBadRecord))
	}
	c.r += hdrLen + len(body)
	c.idle.big = hdrLen+len(body) > smallSize/2
	if typ == recEnd && c.r == c.w {
		c.release() // nothing more should come
	}
	return typ, p, nil
}

// makeRoom makes room to read more of the record at c.r, of which need bytes
// are needed (its header while that is incomplete). A record that would run
// past the end of the buffer is moved to its front, whatever part of it has
// arrived, even 1 to 3 bytes of a header. A small buffer is exchanged for a
// large one only when it is full of a record too large for it: the buffer
// grows as bytes arrive, never on the word of a header alone, which is not
// authenticated before its record is whole.
func (c *Conn) makeRoom(need int) {
	if c.buf == nil {
		return
	}
	buf := *c.buf
	switch {
	case c.r+need <= len(buf):
		// There is room where the record is.
	case c.r > 0:
		c.w = copy(buf, buf[c.r:c.w])
		c.r = 0
	case c.w == len(buf):
		nb := getBuf(true)
		c.w = copy(*nb, buf[:c.w])
		putBuf(c.buf)
		c.buf, c.idle.big = nb, true
	}
}

// fill reads more ciphertext; with nothing pending it first gives the buffer
// back and waits for the connection to be readable.
func (c *Conn) fill() error {
	if c.r == c.w {
		c.release()
	}
	if c.buf == nil {
		bp, nr, err := c.idle.read()
		if err != nil {
			return c.readErr(err)
		}
		if nr == 0 {
			return c.readErr(io.EOF)
		}
		c.buf, c.r, c.w = bp, 0, nr
		return nil
	}
	room := (*c.buf)[c.w:]
	if len(room) == 0 {
		// makeRoom prevents this: a read into nothing returns 0 bytes
		// and no error, which is not the end of the stream.
		return c.fail(fmt.Errorf("read channel: no room in the read buffer: %w", ErrBadRecord))
	}
	nr, err := c.raw.Read(room)
	c.w += nr
	if nr > 0 {
		return nil
	}
	if err == nil {
		err = io.EOF
	}
	return c.readErr(err)
}

// fail ends reading for good: after a bad record, or a read that failed,
// what follows could not be read in its place.
func (c *Conn) fail(err error) error {
	c.release()
	c.err = err
	return err
}

// release gives the read buffer back to the pool.
func (c *Conn) release() {
	if c.buf != nil {
		putBuf(c.buf)
		c.buf, c.r, c.w = nil, 0, 0
	}
}

// readErr ends reading after a failed read (a TCP end without the end record
// is a truncation), except for a passed deadline.
func (c *Conn) readErr(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// A read deadline passed: the stream is intact and a later read
		// goes on where this one stopped, as on any net.Conn.
		if c.r == c.w {
			c.release()
		}
		return err
	}
	if err == io.EOF {
		err = fmt.Errorf("read channel: %w", ErrTruncated)
	}
	return c.fail(err)
}
