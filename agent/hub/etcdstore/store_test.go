package etcdstore_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/hub/etcdstore"
	"github.com/sluicehq/sluice/agent/wire"
)

func newProject(t *testing.T) *authority.Project {
	t.Helper()
	p, err := authority.Init(t.TempDir(), "127.0.0.1:4443")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func nodeKey(t *testing.T) ed25519.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func ticket(t *testing.T, p *authority.Project, usage int) string {
	t.Helper()
	tk, _, err := p.NewTicket(authority.TicketOptions{Attributes: map[string]string{"role": "db"}, Usage: usage})
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// openSingle opens the project's store as `agent hub` does alone.
func openSingle(t *testing.T, p *authority.Project) *authority.Authority {
	t.Helper()
	start := time.Now()
	st, err := etcdstore.Open(context.Background(), etcdstore.OpenOptions{Project: p})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("embedded member and store open in %v", time.Since(start))
	a, err := authority.Open(p, authority.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// TestSingleMemberStore: the authority's promises hold on the embedded
// member: a ticket redeems as often as its usage says, every change moves
// the generation by one, a revocation holds, the records survive a
// restart.
func TestSingleMemberStore(t *testing.T) {
	p := newProject(t)
	a := openSingle(t, p)
	tk := ticket(t, p, 2)
	m1, err := a.Redeem(tk, nodeKey(t))
	if err != nil {
		t.Fatal(err)
	}
	m2, err := a.Redeem(tk, nodeKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Redeem(tk, nodeKey(t)); !errors.Is(err, wire.ErrTicketUsed) {
		t.Fatalf("third use of a two-use ticket: %v, want ErrTicketUsed", err)
	}
	if m1.Generation != 1 || m2.Generation != 2 {
		t.Errorf("generations %d, %d; want 1, 2", m1.Generation, m2.Generation)
	}
	if _, err := a.Revoke(m1.NodeID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Issue(m1.NodeID); !errors.Is(err, wire.ErrMemberRevoked) {
		t.Fatalf("issue for a revoked member: %v, want ErrMemberRevoked", err)
	}
	if _, err := a.Revoke(strings.Repeat("ab", 16)); !errors.Is(err, wire.ErrNotMember) {
		t.Fatalf("revoke a stranger: %v, want ErrNotMember", err)
	}
	a.Close()

	a = openSingle(t, p) // restart
	gen, ms, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if gen != 3 || len(ms) != 2 {
		t.Fatalf("after a restart: generation %d, %d members; want 3, 2", gen, len(ms))
	}
	if m, _ := a.Member(m1.NodeID); !m.Revoked {
		t.Error("revocation lost in a restart")
	}
	if _, err := a.Redeem(tk, nodeKey(t)); !errors.Is(err, wire.ErrTicketUsed) {
		t.Fatalf("used ticket after a restart: %v, want ErrTicketUsed", err)
	}
}

// TestMigration: a hub.db made by the bbolt store moves into etcd once,
// whole (members, revocations, used tickets, generation), and is kept
// renamed; a second start does not migrate again.
func TestMigration(t *testing.T) {
	p := newProject(t)
	old, err := authority.Open(p, authority.Options{}) // hub.db, as before
	if err != nil {
		t.Fatal(err)
	}
	tk := ticket(t, p, 1)
	m, err := old.Redeem(tk, nodeKey(t))
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := old.Redeem(ticket(t, p, 1), nodeKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Revoke(revoked.NodeID); err != nil {
		t.Fatal(err)
	}
	if _, err := old.SetAttributes(m.NodeID, map[string]string{"role": "changed"}); err != nil {
		t.Fatal(err)
	}
	wantGen, _ := old.Generation()
	old.Close()

	a := openSingle(t, p)
	if _, err := os.Stat(authority.DatabasePath(p.Dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("hub.db still in place after the migration: %v", err)
	}
	kept, _ := filepath.Glob(authority.DatabasePath(p.Dir) + ".migrated-*")
	if len(kept) != 1 {
		t.Fatalf("kept files %v, want one hub.db.migrated-*", kept)
	}
	gen, ms, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if gen != wantGen || len(ms) != 2 {
		t.Fatalf("migrated: generation %d, %d members; want %d, 2", gen, len(ms), wantGen)
	}
	if got, _ := a.Member(m.NodeID); got.Attributes["role"] != "changed" {
		t.Errorf("migrated attributes %v", got.Attributes)
	}
	if got, _ := a.Member(revoked.NodeID); !got.Revoked {
		t.Error("migrated revocation lost")
	}
	if _, err := a.Redeem(tk, nodeKey(t)); !errors.Is(err, wire.ErrTicketUsed) {
		t.Fatalf("ticket used before the migration: %v, want ErrTicketUsed", err)
	}
	next, err := a.Revoke(m.NodeID)
	if err != nil || next.Generation != wantGen+1 {
		t.Fatalf("first change after the migration: generation %v (%v), want %d", next, err, wantGen+1)
	}

	// A backup is in hub.db's format: the bbolt checks take it.
	var buf bytes.Buffer
	if _, err := a.Backup(func(int64) io.Writer { return &buf }); err != nil {
		t.Fatal(err)
	}
	a.Close()
	file := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	sum, err := authority.CheckDatabase(file, authority.CheckOptions{ProjectID: p.ID, Consistency: true})
	if err != nil || sum.Members != 2 || sum.Revoked != 2 || sum.Generation != wantGen+1 || sum.Tickets != 2 {
		t.Fatalf("backup from etcd: %+v, %v; want 2 members, both revoked, 2 tickets, generation %d", sum, err, wantGen+1)
	}
	openSingle(t, p) // no hub.db: nothing to migrate, the records are there
}

// TestMissingDatabaseRefused: a project with neither hub.db nor records in
// etcd is refused as a missing database, not started empty (a used ticket
// would redeem again).
func TestMissingDatabaseRefused(t *testing.T) {
	p := newProject(t)
	os.Remove(authority.DatabasePath(p.Dir))
	_, err := etcdstore.Open(context.Background(), etcdstore.OpenOptions{Project: p})
	if !errors.Is(err, authority.ErrNoDatabase) {
		t.Fatalf("open without hub.db or records: %v, want ErrNoDatabase", err)
	}
}

// TestSecondHubOnOneDirRefused: the member's data directory is locked.
func TestSecondHubOnOneDirRefused(t *testing.T) {
	p := newProject(t)
	openSingle(t, p)
	_, err := etcdstore.Open(context.Background(), etcdstore.OpenOptions{Project: p})
	if !errors.Is(err, etcdstore.ErrBusy) {
		t.Fatalf("second open: %v, want ErrBusy", err)
	}
}
