package scenario_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/agent/wire"
)

// These tests run the real `agent hub` and agentctl on loopback, without
// namespaces: the hub's database is refused when missing, empty, truncated,
// damaged or not a database, and a backup taken while the hub serves
// restores its members, used tickets and revocations.

// hubProcess is `agent hub` running in this test.
type hubProcess struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error // Wait's, once done is closed
}

type lockedBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func runAgentBin(t *testing.T, args ...string) *hubProcess {
	t.Helper()
	h := &hubProcess{cmd: exec.Command(filepath.Join(bin, "agent"), args...), out: &lockedBuffer{}, done: make(chan struct{})}
	h.cmd.Stdout, h.cmd.Stderr = h.out, h.out
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		h.err = h.cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() { h.stop() })
	return h
}

// stop ends the process (SIGTERM, then SIGKILL) and waits for it.
func (h *hubProcess) stop() {
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		h.cmd.Process.Kill()
		<-h.done
	}
}

// exited waits up to d for the process to end by itself.
func (h *hubProcess) exited(d time.Duration) bool {
	select {
	case <-h.done:
		return true
	case <-time.After(d):
		return false
	}
}

// waitOutput waits up to d for the process to print want.
func (h *hubProcess) waitOutput(t *testing.T, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(h.out.String(), want) {
		if time.Now().After(deadline) || h.exited(0) {
			t.Fatalf("agent %s did not print %q:\n%s", strings.Join(h.cmd.Args[1:], " "), want, h.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ctl runs agentctl and returns its standard output.
func ctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "agentctl"), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), errors.New(strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// newHubProject makes a project with agentctl for a hub on a free loopback
// port, and returns its directory and the hub's address.
func newHubProject(t *testing.T) (dir, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	dir = filepath.Join(t.TempDir(), "project")
	if _, err := ctl(t, "project", "init", "--dir", dir, "--hub-address", addr); err != nil {
		t.Fatal(err)
	}
	return dir, addr
}

func newKey(t *testing.T) ed25519.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// TestHubRefusesDamagedDatabase: `agent hub` refuses a missing, empty,
// truncated, damaged or garbage hub.db at start, with one line that names
// the file and how to restore it, and never panics; it neither serves nor
// makes a fresh database.
func TestHubRefusesDamagedDatabase(t *testing.T) {
	dir, addr := newHubProject(t)
	p, err := authority.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := authority.Open(p, authority.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ticket, _, err := p.NewTicket(authority.TicketOptions{Attributes: map[string]string{"role": "a-long-enough-attribute-value"}, Usage: 60})
	if err != nil {
		t.Fatal(err)
	}
	var node string
	for i := 0; i < 60; i++ {
		m, err := a.Redeem(ticket, newKey(t))
		if err != nil {
			t.Fatal(err)
		}
		node = m.NodeID
	}
	a.Close()
	path := authority.DatabasePath(dir)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	page := memberPage(t, path, data, node)
	flipped := bytes.Clone(data)
	for i := page*4096 + 16; i < page*4096+64; i++ { // the leaf's first elements
		flipped[i] ^= 0xff
	}
	for _, tc := range []struct {
		name    string
		content []byte // nil: no file
	}{
		{"missing", nil},
		{"empty", []byte{}},
		{"truncated", data[:page*4096]}, // the member page and what follows are lost
		{"leaf page", flipped},
		{"garbage", bytes.Repeat([]byte("not a database\n"), 3000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(path)
			if tc.content != nil {
				if err := os.WriteFile(path, tc.content, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			h := runAgentBin(t, "hub", "--project", dir, "--listen", addr)
			if !h.exited(20 * time.Second) {
				t.Fatalf("the hub serves on a %s database:\n%s", tc.name, h.out.String())
			}
			out := strings.TrimSpace(h.out.String())
			if h.err == nil || strings.Contains(out, "\n") || !strings.HasPrefix(out, "agent: hub database "+path+" ") ||
				!strings.Contains(out, "agent hub --restore FILE --project "+dir) {
				t.Errorf("hub on a %s database: %v, printed:\n%s\nwant one line naming %s and `agent hub --restore`", tc.name, h.err, out, path)
			}
			if got, err := os.ReadFile(path); (tc.content == nil) != errors.Is(err, os.ErrNotExist) || !bytes.Equal(got, tc.content) {
				t.Errorf("the refused database was changed or created (%d bytes, %v)", len(got), err)
			}
		})
	}
}

// memberPage returns the number of the leaf page in use that holds node's
// member record (bbolt's copy-on-write leaves stale copies in free pages).
func memberPage(t *testing.T, path string, data []byte, node string) int {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	record := []byte(node + `{"node_id":"` + node)
	found := -1
	db.View(func(tx *bolt.Tx) error {
		for id := 2; (id+1)*4096 <= len(data); id++ {
			if info, err := tx.Page(id); err == nil && info != nil && info.Type == "leaf" && bytes.Contains(data[id*4096:(id+1)*4096], record) {
				found = id
			}
		}
		return nil
	})
	if found < 0 {
		t.Fatalf("no leaf page in use holds the record of %s", node)
	}
	return found
}

// enroll enrolls a new node with ticket at the hub; it returns its node ID.
func enroll(t *testing.T, p *authority.Project, addr, ticket string) (string, error) {
	t.Helper()
	id, _, err := identity.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c, err := relay.NewClient(relay.ClientOptions{Hub: addr, Identity: id, AuthorityKey: p.AuthorityPublicKey(), Ticket: ticket})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err = c.Start(ctx)
	return id.ID(), err
}

// TestHubBackupRestore: a backup taken with agentctl while the hub serves
// (on its embedded etcd member, in hub.db's format), restored with `agent
// hub --restore` (refused while the hub runs) and migrated again, brings
// back members, used tickets and revocations: a used ticket stays used, a
// revoked node stays out.
func TestHubBackupRestore(t *testing.T) {
	dir, addr := newHubProject(t)
	p, err := authority.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	hub := runAgentBin(t, "hub", "--project", dir, "--listen", addr)
	hub.waitOutput(t, "hub listening", 20*time.Second)
	tickets := make([]string, 3)
	for i := range tickets {
		if tickets[i], _, err = p.NewTicket(authority.TicketOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	kept, err := enroll(t, p, addr, tickets[0])
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := enroll(t, p, addr, tickets[1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctl(t, "member", "revoke", revoked, "--project", dir); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "hub.backup")
	out, err := ctl(t, "hub", "backup", "--project", dir, "-o", backup)
	if err != nil || !strings.Contains(out, "2 members (1 revoked), 2 tickets used") {
		t.Fatalf("hub backup = %q, %v", out, err)
	}
	if st, err := os.Stat(backup); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v; want mode 0600", st, err)
	}
	later, err := enroll(t, p, addr, tickets[2]) // after the backup: the restore forgets it
	if err != nil {
		t.Fatal(err)
	}
	r := runAgentBin(t, "hub", "--project", dir, "--restore", backup)
	if !r.exited(20*time.Second) || r.err == nil || !strings.Contains(r.out.String(), "a hub is running on this project") {
		t.Fatalf("restore while the hub runs: %v\n%s", r.err, r.out.String())
	}

	hub.stop()
	// The disaster: the hub's records are gone (its hub.db was migrated
	// into the embedded etcd member's data at its first start).
	if _, err := os.Stat(authority.DatabasePath(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("hub.db after the hub ran: %v, want it migrated away", err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "hub.etcd")); err != nil {
		t.Fatal(err)
	}
	r = runAgentBin(t, "hub", "--project", dir, "--restore", backup)
	if !r.exited(20*time.Second) || r.err != nil || !strings.Contains(r.out.String(), "restored the hub database") {
		t.Fatalf("restore: %v\n%s", r.err, r.out.String())
	}
	hub = runAgentBin(t, "hub", "--project", dir, "--listen", addr)
	hub.waitOutput(t, "hub listening", 20*time.Second)
	out, err = ctl(t, "member", "list", "-o", "json", "--project", dir)
	var ms []authority.Member
	if err != nil || json.Unmarshal([]byte(out), &ms) != nil {
		t.Fatalf("member list = %q, %v", out, err)
	}
	state := map[string]bool{}
	for _, m := range ms {
		state[m.NodeID] = m.Revoked
	}
	if r, ok := state[kept]; !ok || r || !state[revoked] || len(state) != 2 {
		t.Errorf("members after the restore: %+v; want %s a member, %s revoked, %s (enrolled after the backup) gone", state, kept, revoked, later)
	}
	if _, err := enroll(t, p, addr, tickets[0]); !errors.Is(err, wire.ErrTicketUsed) {
		t.Errorf("a ticket used before the backup, after the restore: %v, want ErrTicketUsed", err)
	}
	hub.stop()
	// The restored hub.db was migrated again: --init would make a hub.db
	// that etcd ignores, so it refuses.
	r = runAgentBin(t, "hub", "--project", dir, "--init")
	if !r.exited(20*time.Second) || r.err == nil || !strings.Contains(r.out.String(), "holds the project's records already") {
		t.Errorf("--init on a project whose records are in etcd: %v\n%s", r.err, r.out.String())
	}
}
