package hub

import (
	"slices"
	"sort"
)

// Outlet replicas. Every node whose tickets name a relay may claim it; the
// nodes that do are its replicas, one control connection each (a node's
// newer connection takes the name from its older one, hub_claims.go). A
// dial goes to the replica, among those whose published policies allow the
// caller, with the fewest active data sessions (announced and not yet
// ended), the oldest claim first among equals; a replica whose control
// connection died is dropped with it, and the sessions it relayed reset
// with its agent's connections.

// replicaOf returns the session of node among a name's holders, and its
// index, or nil and -1.
func replicaOf(holders []*session, node string) (*session, int) {
	for i, s := range holders {
		if s.nodeID == node {
			return s, i
		}
	}
	return nil, -1
}

// withoutReplica is holders without s.
func withoutReplica(holders []*session, s *session) []*session {
	return slices.DeleteFunc(slices.Clone(holders), func(o *session) bool { return o == s })
}

// pickReplica is the holder allowed to take a dial with the fewest active
// sessions; nil if none is allowed, with the first refusal.
func pickReplica(holders []*session, allowed func(*session) error) (*session, error) {
	var (
		best     *session
		firstErr error
	)
	for _, s := range holders {
		if err := allowed(s); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if best == nil || s.active.Load() < best.active.Load() {
			best = s
		}
	}
	return best, firstErr
}

// Replica is one holder of a relay name, in Stats.
type Replica struct {
	Node   string `json:"node"`
	Remote string `json:"remote"`
	// Active is how many data sessions the hub announced to it that have
	// not ended.
	Active int64 `json:"active"`
}

// replicasLocked lists the holders of every name; h.mu is held.
func (h *Hub) replicasLocked() map[string][]Replica {
	out := make(map[string][]Replica, len(h.relays))
	for name, holders := range h.relays {
		for _, s := range holders {
			out[name] = append(out[name], Replica{Node: s.nodeID, Remote: s.conn.RemoteAddr().String(), Active: s.active.Load()})
		}
		sort.Slice(out[name], func(i, j int) bool { return out[name][i].Node < out[name][j].Node })
	}
	return out
}
