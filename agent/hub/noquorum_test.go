package hub_test

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/hub/authority/store"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/wire"
)

// records are the authority's records in memory, shared by the hubs of a
// test as a cluster's hubs share etcd.
type records struct {
	mu      sync.Mutex
	gen     uint64
	tickets map[string]int
	members map[string]store.Member
}

func newRecords() *records {
	return &records{tickets: map[string]int{}, members: map[string]store.Member{}}
}

// quorum is one hub's view of records: while cut, every call fails as a
// hub's etcd member cut off from the majority does (wire.ErrNoQuorum).
type quorum struct {
	r   *records
	cut atomic.Bool
}

func (q *quorum) check(what string) error {
	if q.cut.Load() {
		return fmt.Errorf("%s: %w", what, wire.ErrNoQuorum)
	}
	return nil
}

func (q *quorum) Redeem(ticketID string, usage int, nodeID string, change func(m *store.Member, found bool) error) (*store.Member, error) {
	if err := q.check("redeem ticket"); err != nil {
		return nil, err
	}
	r := q.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tickets[ticketID] >= usage {
		return nil, fmt.Errorf("redeem ticket %s: %w", ticketID, wire.ErrTicketUsed)
	}
	m, found := r.members[nodeID]
	if err := change(&m, found); err != nil {
		return nil, err
	}
	r.tickets[ticketID]++
	r.gen++
	m.Generation = r.gen
	r.members[nodeID] = m
	return &m, nil
}

func (q *quorum) Update(nodeID string, change func(m *store.Member) error) (*store.Member, error) {
	if err := q.check("update member"); err != nil {
		return nil, err
	}
	r := q.r
	r.mu.Lock()
	defer r.mu.Unlock()
	m, found := r.members[nodeID]
	if !found {
		return nil, fmt.Errorf("look up member %s: %w", nodeID, wire.ErrNotMember)
	}
	if err := change(&m); err != nil {
		return nil, err
	}
	r.gen++
	m.Generation = r.gen
	r.members[nodeID] = m
	return &m, nil
}

func (q *quorum) Member(nodeID string) (*store.Member, error) {
	if err := q.check("look up member"); err != nil {
		return nil, err
	}
	q.r.mu.Lock()
	defer q.r.mu.Unlock()
	m, found := q.r.members[nodeID]
	if !found {
		return nil, fmt.Errorf("look up member %s: %w", nodeID, wire.ErrNotMember)
	}
	return &m, nil
}

func (q *quorum) Snapshot() (uint64, []store.Member, error) {
	if err := q.check("read members"); err != nil {
		return 0, nil, err
	}
	q.r.mu.Lock()
	defer q.r.mu.Unlock()
	var ms []store.Member
	for _, m := range q.r.members {
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].NodeID < ms[j].NodeID })
	return q.r.gen, ms, nil
}

func (q *quorum) Generation() (uint64, error) {
	if err := q.check("read generation"); err != nil {
		return 0, err
	}
	q.r.mu.Lock()
	defer q.r.mu.Unlock()
	return q.r.gen, nil
}

func (q *quorum) Backup(func(int64) io.Writer) (int64, error) {
	return 0, errors.New("backup: not kept by this test's records")
}

func (q *quorum) Close() error { return nil }

// quorumPair is two hubs of one project on shared records, each with its
// own view of them (quorum), so that one can lose its quorum alone.
func quorumPair(t *testing.T, lifetime time.Duration) (a, b *testhub.Hub, qa, qb *quorum) {
	r := newRecords()
	qa, qb = &quorum{r: r}, &quorum{r: r}
	a = testhub.Start(t, testhub.Options{Authority: authority.Options{Store: qa, CredentialLifetime: lifetime}})
	auth, err := authority.Open(a.Project, authority.Options{Store: qb, CredentialLifetime: lifetime})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { auth.Close() })
	b = a.StartPeerWith(t, authority.NewService(auth))
	return a, b, qa, qb
}

// TestStartSkipsHubWithoutQuorum: an agent whose first hub has no quorum
// (it refuses the enrollment with no_quorum) enrolls through the next hub
// its ticket lists, instead of giving up: no_quorum is the hub's own
// trouble, not the project's answer.
func TestStartSkipsHubWithoutQuorum(t *testing.T) {
	a, b, _, qb := quorumPair(t, 0)
	hubs := []string{b.Addr, a.Addr}
	// b serves (an agent enrolls there), then loses its quorum.
	if _, err := a.Connect(t, testhub.AgentOptions{Hubs: []string{b.Addr}, Ticket: a.Ticket(t, authority.TicketOptions{})}); err != nil {
		t.Fatal(err)
	}
	qb.cut.Store(true)
	ag, err := a.Connect(t, testhub.AgentOptions{Hubs: hubs, Ticket: a.Ticket(t, authority.TicketOptions{Hubs: hubs})})
	if err != nil {
		t.Fatalf("enroll with the first hub without quorum: %v, want it enrolled through the second", err)
	}
	if st := ag.Client.Status(); !st.Connected || st.Hub != a.Addr {
		t.Errorf("the agent's control link is on %s (connected %v), want %s", st.Hub, st.Connected, a.Addr)
	}
}

// TestStartStopsAtProjectRefusal: a refusal that is the project's answer
// (here a used ticket) still ends Start at the first hub: every hub would
// say the same, and the ticket is not tried on each.
func TestStartStopsAtProjectRefusal(t *testing.T) {
	a, b, _, _ := quorumPair(t, 0)
	hubs := []string{b.Addr, a.Addr}
	ticket := a.Ticket(t, authority.TicketOptions{Hubs: hubs})
	if _, err := a.Connect(t, testhub.AgentOptions{Hubs: hubs, Ticket: ticket}); err != nil {
		t.Fatal(err)
	}
	_, err := a.Connect(t, testhub.AgentOptions{Hubs: hubs, Ticket: ticket})
	if !errors.Is(err, wire.ErrTicketUsed) {
		t.Fatalf("second use of a one-use ticket: %v, want %v", err, wire.ErrTicketUsed)
	}
}

// TestRenewMovesOffHubWithoutQuorum: a hub that loses its quorum refuses
// the agent's renewal with no_quorum; the agent moves its control link to
// another hub of its ticket (which renews it), as it does from a hub going
// away, instead of retrying the cut-off hub until its credential expires.
func TestRenewMovesOffHubWithoutQuorum(t *testing.T) {
	const lifetime = 3 * time.Second // renewed at two thirds: 2s
	a, b, _, qb := quorumPair(t, lifetime)
	hubs := []string{b.Addr, a.Addr}
	ag, err := a.Connect(t, testhub.AgentOptions{Hubs: hubs, Ticket: a.Ticket(t, authority.TicketOptions{Hubs: hubs})})
	if err != nil {
		t.Fatal(err)
	}
	if st := ag.Client.Status(); st.Hub != b.Addr {
		t.Fatalf("the agent starts on %s, want %s", st.Hub, b.Addr)
	}
	qb.cut.Store(true)
	cut := time.Now()
	if !testhub.WaitFor(wait, func() bool {
		st := ag.Client.Status()
		return st.Connected && st.Hub == a.Addr
	}) {
		t.Fatalf("the agent's control link stays on the hub without quorum: %+v", ag.Client.Status())
	}
	// It has a fresh credential from the other hub.
	if _, err := ag.NextGrant(wait); err != nil {
		t.Fatalf("no credential after the move: %v", err)
	}
	t.Logf("moved off the hub without quorum %v after it lost it", time.Since(cut).Round(time.Millisecond))
}
