package channel

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"

	"github.com/sluicehq/sluice/agent/capture"
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

	wireTap, streamTap *capture.Point // tap.go; nil: no taps

	// OnControl, if set, receives the control bytes that arrive among data
	// records (PumpTo, Read); an error ends the stream. Without it a control
	// record there is a protocol error. Set it before reading.
	OnControl func(b byte) error
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

// writeRecord seals p (at most MaxRecord bytes) and writes it.
func (c *Conn) writeRecord(typ byte, p []byte) error {
	bp := getBuf(overhead+1+len(p) > smallSize) // +1: an end record's padding
	defer putBuf(bp)
	if typ == recData {
		c.streamTap.Send(p)
	}
	rec, err := c.seal(typ, *bp, copy(plainRoom(*bp), p))
	if err != nil {
		return err
	}
	_, err = c.raw.Write(rec)
	if err == nil {
		c.wireTap.Send(rec)
	}
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
	c.wireTap.End(true)
	return c.Close()
}

// Close closes the connection.
func (c *Conn) Close() error {
	c.wireTap.End(false)
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
		c.streamTap.Send(plainRoom(*bp)[:nr]) // before sealing in place
		rec, err := c.seal(recData, *bp, nr)
		if err == nil {
			_, err = c.raw.Write(rec)
		}
		if err == nil {
			c.wireTap.Send(rec)
		}
		putBuf(bp)
		if err != nil {
			return err
		}
		n.Add(int64(nr))
	}
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
			c.streamTap.Receive(p)
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
