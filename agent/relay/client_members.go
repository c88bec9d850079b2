package relay

import (
	"github.com/sluicehq/sluice/agent/wire"
)

// MemberUpdate is the authority's word on a node, as an agent's client
// hands it on once it checked the authority's signature (wire.Word):
// a newer Generation replaces an older one, and a credential issued before a
// node's newest word is stale.
type MemberUpdate struct {
	Node       string            `json:"node"`
	Generation uint64            `json:"generation"`
	Attributes map[string]string `json:"attributes,omitempty"`
	Revoked    bool              `json:"revoked,omitempty"`
}

func updateOf(w wire.Word) MemberUpdate {
	return MemberUpdate{Node: w.Node, Generation: w.Generation, Attributes: w.Attributes, Revoked: w.Revoked}
}
