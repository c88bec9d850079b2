package authority

// The authority's records in the project's hub.db (bbolt), the one
// store.Store a single hub uses: bucket "tickets" (ticket ID -> JSON
// store.TicketUse), bucket "members" (node ID -> JSON store.Member),
// bucket "meta" ("generation": 8 bytes big-endian; "project": the
// project's ID). store.go opens, checks and creates the file; backup.go
// copies and restores it.

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"

	"github.com/sluicehq/sluice/agent/hub/authority/store"
	"github.com/sluicehq/sluice/agent/wire"
)

var (
	bucketTickets = []byte("tickets")
	bucketMembers = []byte("members")
	bucketMeta    = []byte("meta")
	keyGeneration = []byte("generation")
)

// boltStore is a store.Store on one bbolt database: each method is one
// bbolt transaction, which bbolt serializes with every other writer.
type boltStore struct{ db *bolt.DB }

var _ store.Store = (*boltStore)(nil)

func (s *boltStore) Close() error { return s.db.Close() }

func (s *boltStore) Redeem(ticketID string, usage int, nodeID string, change func(m *Member, found bool) error) (*Member, error) {
	var m Member
	err := s.db.Update(func(tx *bolt.Tx) error {
		tickets, members := tx.Bucket(bucketTickets), tx.Bucket(bucketMembers)
		var rec ticketRecord
		if err := getJSON(tickets, ticketID, &rec); err != nil {
			return err
		}
		if rec.Used >= usage {
			return fmt.Errorf("redeem ticket %s: used %d of %d times: %w", ticketID, rec.Used, usage, wire.ErrTicketUsed)
		}
		rec.Used++
		rec.Nodes = append(rec.Nodes, nodeID)
		found, err := getJSONFound(members, nodeID, &m)
		if err != nil {
			return err
		}
		if err := change(&m, found); err != nil {
			return err
		}
		gen, err := bumpGeneration(tx)
		if err != nil {
			return err
		}
		m.Generation = gen
		return errors.Join(putJSON(tickets, ticketID, rec), putJSON(members, nodeID, m))
	})
	if err != nil {
		return nil, err
	}
	return &m, nil
}

func (s *boltStore) Update(nodeID string, change func(m *Member) error) (*Member, error) {
	var m Member
	err := s.db.Update(func(tx *bolt.Tx) error {
		members := tx.Bucket(bucketMembers)
		found, err := getJSONFound(members, nodeID, &m)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("look up member %s: %w", nodeID, wire.ErrNotMember)
		}
		if err := change(&m); err != nil {
			return err
		}
		gen, err := bumpGeneration(tx)
		if err != nil {
			return err
		}
		m.Generation = gen
		return putJSON(members, nodeID, m)
	})
	if err != nil {
		return nil, err
	}
	return &m, nil
}

func (s *boltStore) Member(nodeID string) (*Member, error) {
	var m Member
	err := s.db.View(func(tx *bolt.Tx) error {
		found, err := getJSONFound(tx.Bucket(bucketMembers), nodeID, &m)
		if err == nil && !found {
			err = fmt.Errorf("look up member %s: %w", nodeID, wire.ErrNotMember)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &m, nil
}

func (s *boltStore) Snapshot() (gen uint64, members []Member, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		gen = generation(tx)
		return tx.Bucket(bucketMembers).ForEach(func(_, v []byte) error {
			var m Member
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("decode member: %w", err)
			}
			members = append(members, m)
			return nil
		})
	})
	if err != nil {
		return 0, nil, fmt.Errorf("read members: %w", err)
	}
	return gen, members, nil
}

func (s *boltStore) Generation() (uint64, error) {
	var gen uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		gen = generation(tx)
		return nil
	})
	return gen, err
}

// Backup writes the database in one read transaction: the hub goes on
// serving meanwhile (writers wait for nothing).
func (s *boltStore) Backup(open func(size int64) io.Writer) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(open(tx.Size()))
		return err
	})
	return n, err
}

func generation(tx *bolt.Tx) uint64 {
	v := tx.Bucket(bucketMeta).Get(keyGeneration)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// bumpGeneration moves the project to its next generation and returns it.
func bumpGeneration(tx *bolt.Tx) (uint64, error) {
	gen := generation(tx) + 1
	if err := tx.Bucket(bucketMeta).Put(keyGeneration, binary.BigEndian.AppendUint64(nil, gen)); err != nil {
		return 0, fmt.Errorf("record generation: %w", err)
	}
	return gen, nil
}

func getJSON(b *bolt.Bucket, key string, v any) error {
	_, err := getJSONFound(b, key, v)
	return err
}

func getJSONFound(b *bolt.Bucket, key string, v any) (bool, error) {
	data := b.Get([]byte(key))
	if data == nil {
		return false, nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return true, fmt.Errorf("decode record %s: %w", key, err)
	}
	return true, nil
}

func putJSON(b *bolt.Bucket, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode record %s: %w", key, err)
	}
	return b.Put([]byte(key), data)
}
