package authority

import (
	"github.com/sluicehq/sluice/agent/wire"
)

// WordOf is the word on a member record.
func WordOf(project string, m *Member) wire.Word {
	return wire.Word{Kind: wire.KindWord, Project: project, Node: m.NodeID, Generation: m.Generation,
		Attributes: m.Attributes, Relays: m.Relays, Revoked: m.Revoked}
}
