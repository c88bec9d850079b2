package channel

import (
	"errors"
	"fmt"
	"io"
	"os"
)

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
			c.streamTap.Receive(rec)
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
		c.wireTap.Receive((*bp)[:nr])
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
		c.wireTap.Receive(room[:nr])
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
