package authority

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/wire"
)

// populate enrolls n nodes with one ticket and revokes every third; it
// returns the ticket (used up) and the node IDs.
func populate(t *testing.T, p *Project, a *Authority, n int) (string, []string) {
	t.Helper()
	ticket, _, err := p.NewTicket(TicketOptions{Attributes: map[string]string{"role": "a-long-enough-attribute-value"}, Usage: n})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := 0; i < n; i++ {
		m, err := a.Redeem(ticket, nodeKey(t))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.NodeID)
		if i%3 == 0 {
			if _, err := a.Revoke(m.NodeID); err != nil {
				t.Fatal(err)
			}
		}
	}
	return ticket, ids
}

// damagedProject makes a project whose database holds 60 members, closed,
// and returns it with its database's bytes and a member's node ID.
func damagedProject(t *testing.T) (*Project, []byte, string) {
	t.Helper()
	p := newProject(t)
	a, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, ids := populate(t, p, a, 60)
	a.Close()
	data, err := os.ReadFile(DatabasePath(p.Dir))
	if err != nil {
		t.Fatal(err)
	}
	return p, data, ids[30]
}

// livePage returns the number of the leaf page in use (not a free one,
// which bbolt's copy-on-write leaves behind) that holds needle.
func livePage(t *testing.T, path string, data []byte, needle string) int {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	found := -1
	db.View(func(tx *bolt.Tx) error {
		for id := 2; id*4096 < len(data); id++ {
			info, err := tx.Page(id)
			if err != nil || info == nil || info.Type != "leaf" {
				continue
			}
			if bytes.Contains(data[id*4096:(id+1)*4096], []byte(needle)) {
				found = id
			}
		}
		return nil
	})
	if found < 0 {
		t.Fatalf("no leaf page in use holds %s", needle)
	}
	return found
}

// TestDatabaseRefused: the hub opens only a database that exists, is not
// empty, is whole and readable, and is its project's; what it refuses is a
// one-line DatabaseError that names the file and the way out, never a
// panic and never a fresh database.
func TestDatabaseRefused(t *testing.T) {
	p, data, node := damagedProject(t)
	path := DatabasePath(p.Dir)
	record := node + `{"node_id":"` + node // the key, then the value
	page := livePage(t, path, data, record)
	at := page*4096 + bytes.Index(data[page*4096:], []byte(record))
	flip := func(from, to int) []byte {
		c := bytes.Clone(data)
		for i := from; i < to; i++ {
			c[i] ^= 0xff
		}
		return c
	}
	other := newProject(t)
	otherData, err := os.ReadFile(DatabasePath(other.Dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		content []byte // nil: no file
		want    error
		says    []string
	}{
		{"missing", nil, ErrNoDatabase, []string{"does not exist", "agent hub --restore FILE --project " + p.Dir, "agent hub --init --project " + p.Dir}},
		{"empty", []byte{}, ErrDatabaseDamaged, []string{"is empty (0 bytes)", "agent hub --restore FILE"}},
		{"truncated", data[:page*4096], ErrDatabaseDamaged, []string{"is damaged (truncated: ", "agent hub --restore FILE"}},
		{"leaf page elements", flip(page*4096+16, page*4096+64), ErrDatabaseDamaged, []string{"is damaged", "agent hub --restore FILE"}},
		{"leaf page records", flip(at, at+300), ErrDatabaseDamaged, []string{"is damaged (member record"}},
		{"page header", flip(page*4096, page*4096+16), ErrDatabaseDamaged, []string{"is damaged"}},
		{"garbage", bytes.Repeat([]byte("garbage!"), 4096), ErrDatabaseDamaged, []string{"is not a readable bbolt database"}},
		{"another project's", otherData, ErrDatabaseDamaged, []string{"belongs to project " + other.ID}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(path)
			if tc.content != nil {
				if err := os.WriteFile(path, tc.content, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			for _, open := range []func() error{
				func() error {
					a, err := Open(p, Options{})
					if err == nil {
						a.Close()
					}
					return err
				},
				func() error { _, err := CheckDatabase(path, CheckOptions{ProjectID: p.ID}); return err },
			} {
				err := open()
				var de *DatabaseError
				if !errors.Is(err, tc.want) || !errors.As(err, &de) {
					t.Fatalf("open = %v, want a DatabaseError matching %v", err, tc.want)
				}
				msg := err.Error()
				if strings.Contains(msg, "\n") || !strings.Contains(msg, path) {
					t.Errorf("error %q is not one line naming %s", msg, path)
				}
				for _, s := range tc.says {
					if !strings.Contains(msg, s) {
						t.Errorf("error %q does not say %q", msg, s)
					}
				}
			}
			got, err := os.ReadFile(path)
			if tc.content == nil && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("opening a missing database created one")
			}
			if tc.content != nil && !bytes.Equal(got, tc.content) {
				t.Errorf("opening the refused database changed it (%d bytes, was %d)", len(got), len(tc.content))
			}
		})
	}
}

// TestDatabaseChecked: a sound database passes every check, consistency
// included, and counts what it holds; a database cannot be made twice,
// nor opened by two hubs.
func TestDatabaseChecked(t *testing.T) {
	p := newProject(t)
	a := openAuthority(t, p, Options{})
	populate(t, p, a, 9)
	sum, err := CheckDatabase(DatabasePath(p.Dir)+"", CheckOptions{ProjectID: p.ID, Consistency: true})
	if !errors.Is(err, ErrDatabaseBusy) {
		t.Errorf("check while a hub holds the database = %v, want ErrDatabaseBusy", err)
	}
	a.Close()
	sum, err = CheckDatabase(DatabasePath(p.Dir), CheckOptions{ProjectID: p.ID, Consistency: true})
	if err != nil || sum.Members != 9 || sum.Revoked != 3 || sum.Tickets != 1 || sum.Generation != 12 || sum.Project != p.ID {
		t.Errorf("check = %+v, %v; want 9 members, 3 revoked, 1 ticket, generation 12", sum, err)
	}
	if err := CreateDatabase(p); !errors.Is(err, ErrDatabaseExists) {
		t.Errorf("CreateDatabase over an existing one = %v, want ErrDatabaseExists", err)
	}
	a = openAuthority(t, p, Options{})
	if _, err := Open(p, Options{}); !errors.Is(err, ErrDatabaseBusy) || !strings.Contains(err.Error(), "hub already running") {
		t.Errorf("a second Open = %v, want ErrDatabaseBusy asking about a running hub", err)
	}
}

// TestBackupWhileServingAndRestore: a backup taken while the authority
// writes is consistent; restored (only while no hub holds the database, and
// only from a sound backup), it keeps members, used tickets and
// revocations: a used ticket stays used.
func TestBackupWhileServingAndRestore(t *testing.T) {
	p := newProject(t)
	a := openAuthority(t, p, Options{})
	used, ids := populate(t, p, a, 20)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a hub at work during the backup
		defer wg.Done()
		for i := 0; i < 50; i++ {
			a.SetAttributes(ids[1], map[string]string{"round": strings.Repeat("x", i)})
		}
	}()
	var buf bytes.Buffer
	var size int64
	n, err := a.Backup(func(s int64) io.Writer { size = s; return &buf })
	wg.Wait()
	if err != nil || n != size || int64(buf.Len()) != size {
		t.Fatalf("backup wrote %d bytes of %d (%d in the buffer): %v", n, size, buf.Len(), err)
	}
	backup := filepath.Join(t.TempDir(), "hub.backup")
	if err := os.WriteFile(backup, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	later, _, err := p.NewTicket(TicketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Redeem(later, nodeKey(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(p, backup, nil); !errors.Is(err, ErrDatabaseBusy) {
		t.Errorf("restore while a hub holds the database = %v, want ErrDatabaseBusy", err)
	}
	a.Close()

	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o600)
	before, _ := os.ReadFile(DatabasePath(p.Dir))
	if _, err := Restore(p, empty, nil); !errors.Is(err, ErrDatabaseDamaged) || !strings.Contains(err.Error(), empty) {
		t.Errorf("restore from an empty file = %v, want ErrDatabaseDamaged naming it", err)
	}
	if after, _ := os.ReadFile(DatabasePath(p.Dir)); !bytes.Equal(before, after) {
		t.Error("a refused restore changed the database")
	}

	kept, err := Restore(p, backup, nil)
	if err != nil {
		t.Fatal(err)
	}
	if k, err := os.ReadFile(kept); err != nil || !bytes.Equal(k, before) {
		t.Errorf("the replaced database was not kept at %q (%v)", kept, err)
	}
	a = openAuthority(t, p, Options{})
	_, ms, err := a.Snapshot()
	if err != nil || len(ms) != 20 {
		t.Fatalf("restored: %d members (%v), want the backup's 20", len(ms), err)
	}
	for _, m := range ms {
		if want := m.NodeID == ids[0] || m.NodeID == ids[3]; want && !m.Revoked {
			t.Errorf("restored member %s is no longer revoked", m.NodeID)
		}
	}
	if _, err := a.Redeem(used, nodeKey(t)); !errors.Is(err, wire.ErrTicketUsed) {
		t.Errorf("a ticket used before the backup redeems again after the restore: %v", err)
	}
	if _, _, err := a.Issue(ids[0]); !errors.Is(err, wire.ErrMemberRevoked) {
		t.Errorf("a member revoked before the backup gets a credential after the restore: %v", err)
	}
}

// TestOlderDatabaseOpens: a database made by an older hub (tickets and
// members only: no meta bucket, no generation, no project ID) passes the
// checks and is opened; the hub records whose it is.
func TestOlderDatabaseOpens(t *testing.T) {
	p := newProject(t)
	path := DatabasePath(p.Dir)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub := nodeKey(t)
	err = db.Update(func(tx *bolt.Tx) error {
		tickets, err1 := tx.CreateBucket(bucketTickets)
		members, err2 := tx.CreateBucket(bucketMembers)
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		m := Member{NodeID: identity.NodeID(pub), PublicKey: pub, Attributes: map[string]string{"a": "b"}}
		return errors.Join(putJSON(members, m.NodeID, m), putJSON(tickets, "t1", ticketRecord{Used: 1, Nodes: []string{m.NodeID}}))
	})
	if err = errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}
	if sum, err := CheckDatabase(path, CheckOptions{ProjectID: p.ID, Consistency: true}); err != nil || sum.Members != 1 || sum.Project != "" {
		t.Fatalf("check of an older database = %+v, %v", sum, err)
	}
	a := openAuthority(t, p, Options{})
	if ms, err := a.Members(); err != nil || len(ms) != 1 {
		t.Errorf("members of an older database: %v, %v", ms, err)
	}
	a.Close()
	if sum, err := CheckDatabase(path, CheckOptions{ProjectID: p.ID}); err != nil || sum.Project != p.ID {
		t.Errorf("after the hub opened it: %+v, %v; want the project recorded", sum, err)
	}
}
