package channel

import (
	"encoding/binary"
	"net"
)

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
