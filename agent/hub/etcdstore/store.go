// Package etcdstore keeps the authority's records in etcd: the store.Store
// of every hub that does not run on its own hub.db. A single hub runs an
// embedded one-member etcd in its project directory (member.go); a cluster
// of hubs runs one member each, or shares an external etcd. The package
// also migrates a project's hub.db into etcd once (migrate.go), holds the
// hubs' relay claims under leases (claims.go) and reports the cluster's
// health (status.go).
package etcdstore

// Keys, under the prefix /sluice/<project ID>/:
//
//	gen          the member-state generation, decimal
//	m/<node ID>  a member (JSON store.Member)
//	t/<ticket>   a ticket's uses (JSON store.TicketUse)
//	claims/<relay name>/<hub>  a hub's agent holds the name (leased)
//	hubs/<hub>   a hub is alive (leased; its status)
//
// Every change to a member is one etcd transaction that compares the
// revisions of the keys it read (the generation, the member, the ticket)
// and writes them all, retried on a conflict: two hubs redeeming one
// ticket at once both read "unused", one commits, the other's compare
// fails, it reads again and finds the ticket used. Every read is
// linearizable (etcd's default): a member cut off from the majority
// answers nothing, so a hub without quorum refuses (wire.ErrNoQuorum)
// instead of issuing from a stale view.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/hub/authority/store"
	"github.com/sluicehq/sluice/agent/wire"
)

// DefaultTimeout bounds one operation on etcd, retries included: a hub
// whose member has no quorum refuses after it.
const DefaultTimeout = 3 * time.Second

// Options tune a Store. Zero values mean the defaults.
type Options struct {
	// Timeout bounds each operation (DefaultTimeout).
	Timeout time.Duration
	// TempDir is where Backup builds its copy (os.TempDir()).
	TempDir string
}

// Store is a store.Store on etcd.
type Store struct {
	c       *clientv3.Client
	prefix  string
	project string
	timeout time.Duration
	tmp     string
	close   func() error

	closeOnce sync.Once
	closeErr  error
}

var _ store.Shared = (*Store)(nil)

// Prefix is the key prefix of a project's records.
func Prefix(projectID string) string { return "/sluice/" + projectID + "/" }

// New keeps the records of project projectID in etcd through c. close, if
// not nil, runs on Close (after the client is closed): the embedded
// member's.
func New(c *clientv3.Client, projectID string, opts Options, close func() error) *Store {
	s := &Store{c: c, prefix: Prefix(projectID), project: projectID, timeout: opts.Timeout, tmp: opts.TempDir, close: close}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	return s
}

// Client is the etcd client the store uses.
func (s *Store) Client() *clientv3.Client { return s.c }

// Close closes the client, then what New was given to close; once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.c.Close()
		if s.close != nil {
			s.closeErr = errors.Join(s.closeErr, s.close())
		}
	})
	return s.closeErr
}

func (s *Store) genKey() string               { return s.prefix + "gen" }
func (s *Store) memberKey(node string) string { return s.prefix + "m/" + node }
func (s *Store) ticketKey(id string) string   { return s.prefix + "t/" + id }

// unavailable wraps an etcd error: the store cannot reach a quorum (or
// etcd at all) within its timeout.
func unavailable(what string, err error) error {
	return fmt.Errorf("%s: %w: %w", what, wire.ErrNoQuorum, err)
}

// kv is one key as read: its value and the revision to compare against
// (0: absent).
type kv struct {
	val []byte
	rev int64
}

// readKeys reads keys in one transaction.
func (s *Store) readKeys(ctx context.Context, keys ...string) ([]kv, error) {
	ops := make([]clientv3.Op, len(keys))
	for i, k := range keys {
		ops[i] = clientv3.OpGet(k)
	}
	resp, err := s.c.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, err
	}
	out := make([]kv, len(keys))
	for i, r := range resp.Responses {
		if kvs := r.GetResponseRange().Kvs; len(kvs) == 1 {
			out[i] = kv{val: kvs[0].Value, rev: kvs[0].ModRevision}
		}
	}
	return out, nil
}

func parseGen(b []byte) (uint64, error) {
	if b == nil {
		return 0, nil
	}
	g, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("decode generation %q: %w", b, err)
	}
	return g, nil
}

// commit writes puts if none of the keys read changed since; ok false
// means one did (retry).
func (s *Store) commit(ctx context.Context, read map[string]int64, puts map[string]any) (bool, error) {
	var cmps []clientv3.Cmp
	for k, rev := range read {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", rev))
	}
	var ops []clientv3.Op
	for k, v := range puts {
		var data []byte
		switch v := v.(type) {
		case uint64:
			data = []byte(strconv.FormatUint(v, 10))
		default:
			var err error
			if data, err = json.Marshal(v); err != nil {
				return false, fmt.Errorf("encode record %s: %w", k, err)
			}
		}
		ops = append(ops, clientv3.OpPut(k, string(data)))
	}
	resp, err := s.c.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// Redeem counts a use of a ticket and changes the node's record at the next
// generation, in one transaction that holds only if none of the three keys
// changed since they were read (store.Store).
func (s *Store) Redeem(ticketID string, usage int, nodeID string, change func(m *store.Member, found bool) error) (*store.Member, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	tk, mk, gk := s.ticketKey(ticketID), s.memberKey(nodeID), s.genKey()
	for {
		kvs, err := s.readKeys(ctx, tk, mk, gk)
		if err != nil {
			return nil, unavailable("redeem ticket "+ticketID, err)
		}
		var rec store.TicketUse
		if kvs[0].val != nil {
			if err := json.Unmarshal(kvs[0].val, &rec); err != nil {
				return nil, fmt.Errorf("decode ticket record %s: %w", ticketID, err)
			}
		}
		if rec.Used >= usage {
			return nil, fmt.Errorf("redeem ticket %s: used %d of %d times: %w", ticketID, rec.Used, usage, wire.ErrTicketUsed)
		}
		rec.Used++
		rec.Nodes = append(rec.Nodes, nodeID)
		var m store.Member
		found := kvs[1].val != nil
		if found {
			if err := json.Unmarshal(kvs[1].val, &m); err != nil {
				return nil, fmt.Errorf("decode member record %s: %w", nodeID, err)
			}
		}
		if err := change(&m, found); err != nil {
			return nil, err
		}
		gen, err := parseGen(kvs[2].val)
		if err != nil {
			return nil, err
		}
		m.Generation = gen + 1
		ok, err := s.commit(ctx, map[string]int64{tk: kvs[0].rev, mk: kvs[1].rev, gk: kvs[2].rev},
			map[string]any{tk: rec, mk: m, gk: m.Generation})
		if err != nil {
			return nil, unavailable("redeem ticket "+ticketID, err)
		}
		if ok {
			return &m, nil
		}
	}
}

// Update changes a member's record at the next generation (store.Store).
func (s *Store) Update(nodeID string, change func(m *store.Member) error) (*store.Member, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	mk, gk := s.memberKey(nodeID), s.genKey()
	for {
		kvs, err := s.readKeys(ctx, mk, gk)
		if err != nil {
			return nil, unavailable("update member "+nodeID, err)
		}
		if kvs[0].val == nil {
			return nil, fmt.Errorf("look up member %s: %w", nodeID, wire.ErrNotMember)
		}
		var m store.Member
		if err := json.Unmarshal(kvs[0].val, &m); err != nil {
			return nil, fmt.Errorf("decode member record %s: %w", nodeID, err)
		}
		if err := change(&m); err != nil {
			return nil, err
		}
		gen, err := parseGen(kvs[1].val)
		if err != nil {
			return nil, err
		}
		m.Generation = gen + 1
		ok, err := s.commit(ctx, map[string]int64{mk: kvs[0].rev, gk: kvs[1].rev}, map[string]any{mk: m, gk: m.Generation})
		if err != nil {
			return nil, unavailable("update member "+nodeID, err)
		}
		if ok {
			return &m, nil
		}
	}
}

// Member reads a member's record, linearizably (store.Store).
func (s *Store) Member(nodeID string) (*store.Member, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	resp, err := s.c.Get(ctx, s.memberKey(nodeID))
	if err != nil {
		return nil, unavailable("look up member "+nodeID, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("look up member %s: %w", nodeID, wire.ErrNotMember)
	}
	var m store.Member
	if err := json.Unmarshal(resp.Kvs[0].Value, &m); err != nil {
		return nil, fmt.Errorf("decode member record %s: %w", nodeID, err)
	}
	return &m, nil
}

// view is the store's records at one revision.
type view struct {
	rev     int64
	gen     uint64
	members []store.Member // in node ID order
	tickets map[string]store.TicketUse
}

// read reads the generation and the members (and the tickets) in one
// transaction.
func (s *Store) read(ctx context.Context, tickets bool) (view, error) {
	ops := []clientv3.Op{clientv3.OpGet(s.genKey()), clientv3.OpGet(s.prefix+"m/", clientv3.WithPrefix())}
	if tickets {
		ops = append(ops, clientv3.OpGet(s.prefix+"t/", clientv3.WithPrefix()))
	}
	resp, err := s.c.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return view{}, unavailable("read members", err)
	}
	v := view{rev: resp.Header.Revision}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
		if v.gen, err = parseGen(kvs[0].Value); err != nil {
			return view{}, err
		}
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var m store.Member
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			return view{}, fmt.Errorf("decode member record %s: %w", kv.Key, err)
		}
		v.members = append(v.members, m)
	}
	if tickets {
		v.tickets = map[string]store.TicketUse{}
		for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
			var t store.TicketUse
			if err := json.Unmarshal(kv.Value, &t); err != nil {
				return view{}, fmt.Errorf("decode ticket record %s: %w", kv.Key, err)
			}
			v.tickets[string(kv.Key[len(s.prefix)+2:])] = t
		}
	}
	return v, nil
}

// Snapshot returns the generation and every member at one revision
// (store.Store).
func (s *Store) Snapshot() (uint64, []store.Member, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	v, err := s.read(ctx, false)
	return v.gen, v.members, err
}

// Generation reads the member-state generation (store.Store).
func (s *Store) Generation() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	resp, err := s.c.Get(ctx, s.genKey())
	if err != nil {
		return 0, unavailable("read generation", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	return parseGen(resp.Kvs[0].Value)
}

// Backup writes the records at one revision in hub.db's format (bbolt), so
// that `agent hub check` checks it and `agent hub --restore` takes it
// (store.Store).
func (s *Store) Backup(open func(size int64) io.Writer) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	v, err := s.read(ctx, true)
	if err != nil {
		return 0, err
	}
	tmp := s.tmp
	if tmp == "" {
		tmp = os.TempDir()
	}
	return authority.WriteDump(tmp, authority.Dump{Project: s.project, Generation: v.gen, Members: v.members, Tickets: v.tickets}, open)
}

// loadBatch is how many records load writes in one transaction, well
// inside etcd's default --max-txn-ops (128) and request size (1.5 MiB).
const loadBatch = 64

// load writes a dump's records into a store that holds none: the records
// in batches, then the generation, in a transaction that fails if the
// store has one already. The generation is what makes the records the
// store's (initialized): a load cut short leaves none, and runs again.
func (s *Store) load(ctx context.Context, d authority.Dump) error {
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		resp, err := s.c.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(s.genKey()), "=", 0)).Then(ops...).Commit()
		ops = ops[:0]
		if err != nil {
			return unavailable("load records", err)
		}
		if !resp.Succeeded {
			return fmt.Errorf("load records: %w", ErrNotEmpty)
		}
		return nil
	}
	put := func(k string, v any) error {
		data, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode record %s: %w", k, err)
		}
		ops = append(ops, clientv3.OpPut(k, string(data)))
		if len(ops) == loadBatch {
			return flush()
		}
		return nil
	}
	for _, m := range d.Members {
		if err := put(s.memberKey(m.NodeID), m); err != nil {
			return err
		}
	}
	for id, t := range d.Tickets {
		if err := put(s.ticketKey(id), t); err != nil {
			return err
		}
	}
	if err := flush(); err != nil {
		return err
	}
	ops = append(ops, clientv3.OpPut(s.genKey(), strconv.FormatUint(d.Generation, 10)))
	return flush()
}

// ErrNotEmpty means records were to be loaded into a store that has some.
var ErrNotEmpty = errors.New("the store holds the project's records already")

// initialized reports whether the store holds the project's records (its
// generation key).
func (s *Store) initialized(ctx context.Context) (bool, error) {
	resp, err := s.c.Get(ctx, s.genKey(), clientv3.WithCountOnly())
	if err != nil {
		return false, unavailable("read generation", err)
	}
	return resp.Count > 0, nil
}
