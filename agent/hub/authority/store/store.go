// Package store is the authority's records and the interface of the
// database that keeps them: members (with their revocation), the uses of
// each ticket, and the project's member-state generation.
//
// It holds types and a contract, no database: the authority
// (agent/hub/authority) keeps its records in one hub.db bbolt file, its
// implementation of Store; a hub cluster puts another one behind the same
// interface. It is a leaf (standard library only), so that the admin API's
// client (agent/hub/admin) can decode a Member without linking a database.
// It is not the authority: checking tickets, issuing credentials and
// signing statements are agent/hub/authority's.
package store

import (
	"context"
	"io"
	"slices"
	"time"
)

// Member is a node that redeemed a ticket: the authority's record of it.
type Member struct {
	NodeID     string            `json:"node_id"`
	PublicKey  []byte            `json:"public_key"`
	Attributes map[string]string `json:"attributes"`
	Relays     []string          `json:"relays"`
	Enrolled   time.Time         `json:"enrolled"`
	Revoked    bool              `json:"revoked,omitempty"`
	// Generation is the project's member-state generation at this
	// record's last change (see Store.Generation). Credentials carry
	// it: a credential older than the member's generation is stale.
	Generation uint64 `json:"generation,omitempty"`
}

// MayClaim reports whether the member's tickets permitted relay name.
func (m *Member) MayClaim(name string) bool { return slices.Contains(m.Relays, name) }

// TicketUse is the record of a ticket's redemptions: how many, by which
// nodes (one entry a redemption).
type TicketUse struct {
	Used  int      `json:"used"`
	Nodes []string `json:"nodes"`
}

// Store keeps the authority's records. Every method is one transaction on
// a few small keys (a ticket's use, a member, the generation), so that a
// store shared by several hubs (etcd) can run each as one compare-and-set
// of the keys it read, retried on conflict:
//
//   - Redeem and Update move the generation up by one and write the
//     member at it, in the same transaction: the generation only grows,
//     and no two changes share one.
//   - The change functions they take may run more than once (a retry
//     after a conflict), each time on a fresh read of the record: they
//     must only change the record they are given, and may refuse by
//     returning an error, which aborts the transaction and is returned.
//
// Errors wrap the sentinels of agent/wire (ErrTicketUsed, ErrNotMember)
// where a caller branches on them.
type Store interface {
	// Redeem counts one use of ticket ticketID by nodeID, refusing with
	// wire.ErrTicketUsed once usage uses are counted, and applies change
	// to the node's record (found false: the node has none yet, m is
	// zero), storing it at the next generation; all of it or nothing.
	// This is where a ticket is redeemed at most usage times, across
	// every hub that shares the store.
	Redeem(ticketID string, usage int, nodeID string, change func(m *Member, found bool) error) (*Member, error)
	// Update applies change to the record of nodeID and stores it at the
	// next generation; wire.ErrNotMember if there is none.
	Update(nodeID string, change func(m *Member) error) (*Member, error)
	// Member returns the record of nodeID; wire.ErrNotMember if there is
	// none.
	Member(nodeID string) (*Member, error)
	// Snapshot returns the generation and every member, in node ID
	// order, as one consistent view.
	Snapshot() (generation uint64, members []Member, err error)
	// Generation is the project's member-state generation: it grows by
	// one with every change to a member.
	Generation() (uint64, error)
	// Backup writes a consistent copy of the records to the writer that
	// open returns for the copy's size, and returns the bytes written.
	Backup(open func(size int64) io.Writer) (int64, error)
	// Close releases the store.
	Close() error
}

// Shared is a Store that other hubs write too (etcd): a change any of them
// makes reaches this hub's agents through WatchMembers, the one path the
// authority then notifies from (agent/hub/authority's Service.Follow).
type Shared interface {
	Store
	// WatchMembers calls f with every member record changed after
	// generation gen, in generation order and once each, until ctx ends
	// (nil) or the watch fails. A record may be newer than the change
	// that made it move (f gets the record as it is when read).
	WatchMembers(ctx context.Context, gen uint64, f func(Member)) error
}
