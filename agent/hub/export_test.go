package hub

import (
	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/agent/wire"
)

// InjectForTest makes the hub push to every member session what a
// malicious relay could: any statement, any credential.
func (h *Hub) InjectForTest(op string, st *wire.Statement, cred []byte) {
	h.broadcast(&relay.Message{Op: op, Statement: st, Credential: cred})
}
