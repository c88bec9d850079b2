package hub

import (
	"fmt"

	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/agent/wire"
)

// takeOver decides whether session s of a node may take relay name from
// cur, another connection of the same node (nil: nobody holds it). It may,
// since an agent that reconnects finds its old connection still there until
// the hub notices it is gone, unless s asked for the name only if free. The
// connection that loses the name is told at once (op "released"), so that
// its agent does not report a name it no longer holds, and takes it back
// when it is free again.
func takeOver(cur, s *session, name string, ifFree bool) error {
	if cur == nil || cur == s {
		return nil
	}
	if ifFree {
		return fmt.Errorf("claim relay %q: another connection of this node holds it: %w", name, wire.ErrRelayTaken)
	}
	cur.push(&relay.Message{Op: relay.OpReleased, Relay: name,
		Error: fmt.Sprintf("claimed by another connection of this node, from %s", s.conn.RemoteAddr())})
	return nil
}
