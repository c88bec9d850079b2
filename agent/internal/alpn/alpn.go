// Package alpn makes the application protocol of a TLS connection (ALPN,
// RFC 7301) a requirement. crypto/tls only refuses a peer that offers
// protocols and none in common: a client that offers none, or a server that
// selects none, gets through. Sluice's connections each speak one protocol,
// and a peer that did not agree to it is talking to the wrong service.
package alpn

import (
	"crypto/tls"
	"errors"
	"fmt"
)

// ErrMismatch means the handshake did not settle on the expected protocol.
var ErrMismatch = errors.New("peer did not negotiate the expected application protocol")

// Require returns nil if the handshake of cs negotiated proto. Call it from
// tls.Config.VerifyConnection, on both ends: crypto/tls has negotiated the
// protocol by then, on either side.
func Require(cs tls.ConnectionState, proto string) error {
	if cs.NegotiatedProtocol != proto {
		return fmt.Errorf("check application protocol: negotiated %q, want %q: %w", cs.NegotiatedProtocol, proto, ErrMismatch)
	}
	return nil
}
