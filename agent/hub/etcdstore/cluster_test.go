package etcdstore_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub/admin"
	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/hub/authority/store"
	"github.com/sluicehq/sluice/agent/hub/etcdstore"
	"github.com/sluicehq/sluice/agent/wire"
)

// hubs is a cluster of three hubs' stores in this process, their members
// on 127.0.0.1 with peer TLS on the project's certificates.
type hubs struct {
	p      *authority.Project
	peers  []etcdstore.Peer
	dirs   []string
	stores []*etcdstore.Store
	auths  []*authority.Authority
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var lns []net.Listener
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

func newHubs(t *testing.T) *hubs {
	t.Helper()
	h := &hubs{p: newProject(t)}
	for i, port := range freePorts(t, 3) {
		h.peers = append(h.peers, etcdstore.Peer{Name: fmt.Sprintf("hub-%c", 'a'+i), URL: fmt.Sprintf("https://127.0.0.1:%d", port)})
		h.dirs = append(h.dirs, t.TempDir())
	}
	h.stores = make([]*etcdstore.Store, 3)
	h.auths = make([]*authority.Authority, 3)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() { h.start(t, i) })
	}
	wg.Wait()
	for i := range 3 {
		if h.stores[i] == nil {
			t.FailNow()
		}
	}
	t.Logf("three members formed a cluster in %v", time.Since(start))
	t.Cleanup(func() {
		for _, a := range h.auths {
			if a != nil {
				a.Close()
			}
		}
	})
	return h
}

// start starts hub i (hub a holds the project's hub.db and migrates it).
func (h *hubs) start(t *testing.T, i int) {
	dir := h.dirs[i]
	files, err := etcdstore.IssuePeerFiles(filepath.Join(dir, "tls"), h.p.ID, h.p.Cert, h.p.Key, h.peers[i].URL, "")
	if err != nil {
		t.Error(err)
		return
	}
	p := *h.p
	if i != 0 {
		p.Dir = dir // no hub.db: waits for hub a's
	}
	st, err := etcdstore.Open(context.Background(), etcdstore.OpenOptions{Project: &p, Timeout: time.Second,
		Member: etcdstore.MemberOptions{Dir: filepath.Join(dir, "hub.etcd"), Name: h.peers[i].Name, Peers: h.peers, PeerTLS: files}})
	if err != nil {
		t.Errorf("hub %d: %v", i, err)
		return
	}
	a, err := authority.Open(&p, authority.Options{Store: st})
	if err != nil {
		t.Error(err)
		return
	}
	h.stores[i], h.auths[i] = st, a
}

// stop stops hub i's member, as a kill would.
func (h *hubs) stop(i int) {
	h.auths[i].Close()
	h.auths[i] = nil
}

// leader returns the index of the hub whose member leads.
func (h *hubs) leader(t *testing.T) int {
	t.Helper()
	for i, st := range h.stores {
		if h.auths[i] == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s, err := st.Client().Status(ctx, "")
		cancel()
		if err == nil && s.Leader == s.Header.MemberId {
			return i
		}
	}
	t.Fatal("no leader")
	return -1
}

// TestClusterTicketRedeemedOnce: 20 rounds of three enrollments with one
// one-use ticket, one per hub, at once: exactly one wins each round, the
// others are refused with ErrTicketUsed.
func TestClusterTicketRedeemedOnce(t *testing.T) {
	h := newHubs(t)
	for round := range 20 {
		tk := ticket(t, h.p, 1)
		errs := make([]error, 3)
		var wg sync.WaitGroup
		startLine := make(chan struct{})
		for i := range 3 {
			pub := nodeKey(t)
			wg.Go(func() {
				<-startLine
				_, errs[i] = h.auths[i].Redeem(tk, pub)
			})
		}
		close(startLine)
		wg.Wait()
		won := 0
		for i, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, wire.ErrTicketUsed):
				t.Fatalf("round %d, hub %d: %v, want success or ErrTicketUsed", round, i, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d hubs redeemed the one-use ticket (%v), want exactly 1", round, won, errs)
		}
	}
}

// TestClusterChangeReachesOtherHub: a revocation made through hub a is
// seen by hub b's watch, in generation order, once; the time is logged.
func TestClusterChangeReachesOtherHub(t *testing.T) {
	h := newHubs(t)
	m, err := h.auths[0].Redeem(ticket(t, h.p, 1), nodeKey(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := make(chan store.Member, 16)
	go h.stores[1].WatchMembers(ctx, m.Generation, func(m store.Member) { seen <- m })
	var worst time.Duration
	for i := range 5 {
		start := time.Now()
		changed, err := h.auths[0].SetAttributes(m.NodeID, map[string]string{"round": fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-seen:
			if got.Generation != changed.Generation || got.Attributes["round"] != fmt.Sprint(i) {
				t.Fatalf("hub b saw generation %d %v, want %d %v", got.Generation, got.Attributes, changed.Generation, changed.Attributes)
			}
			worst = max(worst, time.Since(start))
		case <-time.After(5 * time.Second):
			t.Fatalf("change %d made on hub a never reached hub b", i)
		}
	}
	select {
	case got := <-seen:
		t.Fatalf("hub b saw a change twice or one never made: %+v", got)
	case <-time.After(100 * time.Millisecond):
	}
	t.Logf("a change made on hub a reached hub b's watch in at most %v (5 changes)", worst)
}

// TestClusterSurvivesLeaderLoss: with the leader's hub gone the two
// others elect one and go on; with only one left it refuses to commit
// (ErrNoQuorum), and a revocation made while a hub was down holds on it
// once it is back.
func TestClusterSurvivesLeaderLoss(t *testing.T) {
	h := newHubs(t)
	victim, err := h.auths[0].Redeem(ticket(t, h.p, 1), nodeKey(t))
	if err != nil {
		t.Fatal(err)
	}
	lead := h.leader(t)
	h.stop(lead)
	rest := []int{}
	for i := range 3 {
		if i != lead {
			rest = append(rest, i)
		}
	}
	start := time.Now()
	var m *authority.Member
	for { // the first write after the loss waits for the election
		if m, err = h.auths[rest[0]].Redeem(ticket(t, h.p, 1), nodeKey(t)); err == nil || time.Since(start) > 10*time.Second {
			break
		}
	}
	if err != nil {
		t.Fatalf("enroll after the leader's hub died: %v", err)
	}
	t.Logf("first enrollment after the leader's hub died took %v", time.Since(start))
	if _, err := h.auths[rest[1]].Revoke(victim.NodeID); err != nil { // while lead is down
		t.Fatal(err)
	}

	h.start(t, lead) // back: it catches up
	if h.auths[lead] == nil {
		t.FailNow()
	}
	got, err := h.auths[lead].Member(victim.NodeID)
	if err != nil || !got.Revoked {
		t.Fatalf("revocation made while the hub was down, on it once back: %+v, %v", got, err)
	}
	if _, _, err := h.auths[lead].Issue(victim.NodeID); !errors.Is(err, wire.ErrMemberRevoked) {
		t.Fatalf("issue for the revoked node on the hub that was down: %v, want ErrMemberRevoked", err)
	}
	if _, err := h.auths[lead].Member(m.NodeID); err != nil {
		t.Fatalf("member enrolled while the hub was down: %v", err)
	}

	// Two down: the last hub has no quorum and refuses what it cannot
	// commit, and what it cannot read as committed.
	h.stop(rest[0])
	h.stop(rest[1])
	if _, err := h.auths[lead].Redeem(ticket(t, h.p, 1), nodeKey(t)); !errors.Is(err, wire.ErrNoQuorum) {
		t.Fatalf("enroll on a hub without quorum: %v, want ErrNoQuorum", err)
	}
	if _, _, err := h.auths[lead].Issue(m.NodeID); !errors.Is(err, wire.ErrNoQuorum) {
		t.Fatalf("issue on a hub without quorum: %v, want ErrNoQuorum", err)
	}
	if code := authority.Code(fmt.Errorf("x: %w", wire.ErrNoQuorum)); code != "no_quorum" {
		t.Fatalf("wire code of a refusal without quorum: %q", code)
	}
}

// TestServiceFollowsCluster: each hub's authority service notifies every
// change, made through it or another hub, once, in generation order, with
// a fresh credential for the node (the path to the agents, members.go).
func TestServiceFollowsCluster(t *testing.T) {
	h := newHubs(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type seen struct {
		gens   []uint64
		grants int
	}
	var mu sync.Mutex
	got := make([]seen, 2)
	svcs := make([]*authority.Service, 2)
	for i := range 2 {
		svcs[i] = authority.NewService(h.auths[i])
		svcs[i].Subscribe(func(c authority.Change) {
			w, err := wire.OpenWord(h.p.Cert.PublicKey.(ed25519.PublicKey), h.p.ID, c.Word)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			got[i].gens = append(got[i].gens, w.Generation)
			if c.Grant != nil {
				got[i].grants++
			}
			mu.Unlock()
		})
		go svcs[i].Follow(ctx)
	}
	m, err := svcs[0].Authority().Redeem(ticket(t, h.p, 1), nodeKey(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 { // through hub a and hub b in turn
		if _, err := svcs[i%2].SetAttributes(m.NodeID, map[string]string{"n": fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	want := []uint64{1, 2, 3, 4, 5, 6, 7}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		done := len(got[0].gens) >= len(want) && len(got[1].gens) >= len(want)
		mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a duplicate would come now
	mu.Lock()
	defer mu.Unlock()
	for i, s := range got {
		if !slices.Equal(s.gens, want) || s.grants != len(want) {
			t.Errorf("hub %d notified generations %v with %d credentials, want %v, each with one", i, s.gens, s.grants, want)
		}
	}
}

// TestClusterPresenceAndClaims: each hub publishes its agents and relay
// claims under its lease; every hub's status shows them, with the leader;
// a hub that stops takes its claims and presence with it at once.
func TestClusterPresenceAndClaims(t *testing.T) {
	h := newHubs(t)
	relays := [][]string{{"db"}, {"db", "web"}, nil}
	stops := make([]context.CancelFunc, 3)
	done := make([]chan struct{}, 3)
	for i := range 3 {
		c := etcdstore.NewCluster(h.stores[i], etcdstore.ClusterOptions{Name: h.peers[i].Name, Embedded: true, Interval: 50 * time.Millisecond,
			Presence: func() admin.HubPresence { return admin.HubPresence{Agents: i + 1, Relays: relays[i]} }})
		ctx, cancel := context.WithCancel(context.Background())
		stops[i], done[i] = cancel, make(chan struct{})
		go func() { c.Run(ctx); close(done[i]) }()
	}
	defer func() {
		for i := range 3 {
			stops[i]()
			<-done[i]
		}
	}()
	status := func(i int) *admin.ClusterStatus {
		st, err := etcdstore.NewCluster(h.stores[i], etcdstore.ClusterOptions{Name: h.peers[i].Name, Embedded: true}).ClusterStatus(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	var st *admin.ClusterStatus
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if st = status(2); len(st.Hubs) == 3 && len(st.Claims["db"]) == 2 && len(st.Claims["web"]) == 1 {
			break
		}
	}
	if len(st.Members) != 3 || st.Leader == "" || !st.Healthy || len(st.Hubs) != 3 ||
		!slices.Equal(st.Claims["db"], []string{"hub-a", "hub-b"}) || !slices.Equal(st.Claims["web"], []string{"hub-b"}) {
		t.Fatalf("status through hub c: %+v", st)
	}
	for _, m := range st.Members {
		if !m.Live {
			t.Errorf("member %s not live", m.Name)
		}
	}
	stops[1]() // hub b stops: its lease is revoked
	<-done[1]
	st = status(0)
	if !slices.Equal(st.Claims["db"], []string{"hub-a"}) || len(st.Claims["web"]) != 0 || len(st.Hubs) != 2 {
		t.Fatalf("status after hub b stopped: claims %v, hubs %+v", st.Claims, st.Hubs)
	}
}
