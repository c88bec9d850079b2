package relay

import (
	"github.com/sluicehq/sluice/agent/wire"
)

// InjectForTest makes the hub push to every member session what a
// malicious relay could: any statement, any credential.
func (h *Hub) InjectForTest(op string, st *wire.Statement, cred []byte) {
	h.broadcast(&message{Op: op, Statement: st, Credential: cred})
}

// ExchangeConfigForTest is the TLS configuration of an agent's exchange
// with the authority.
var ExchangeConfigForTest = exchangeConfig
