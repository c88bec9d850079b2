package channel

import (
	"errors"
	"fmt"
)

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
