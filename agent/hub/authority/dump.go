package authority

// A database's records as plain values, for moving them between stores:
// the hub's hub.db (bbolt) is migrated into etcd once (agent/hub/etcdstore),
// and a store on etcd backs up into the same bbolt format, so that
// `agent hub check` and `agent hub --restore` take either store's backups.

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	bolt "go.etcd.io/bbolt"

	"github.com/sluicehq/sluice/agent/hub/authority/store"
)

// Dump is every record of the authority's database.
type Dump struct {
	Project    string                     // the project's ID ("" if the database did not record it)
	Generation uint64                     // the member-state generation
	Members    []Member                   // in node ID order
	Tickets    map[string]store.TicketUse // ticket ID -> its uses
}

// ReadDump reads every record of the database file at path, after the
// checks of CheckDatabase (without Consistency) against project (if not
// "").
func ReadDump(path, project string) (Dump, error) {
	var d Dump
	fix := func(sentinel error, empty bool) string { return fixFor(filepath.Dir(path), sentinel, empty) }
	err := guarded(path, fix, func() error {
		db, err := openFile(path, true, fix)
		if err != nil {
			return err
		}
		defer db.Close()
		return db.View(func(tx *bolt.Tx) error {
			sum, err := verify(tx, path, project, fix)
			if err != nil {
				return err
			}
			d = Dump{Project: sum.Project, Generation: sum.Generation, Tickets: map[string]store.TicketUse{}}
			err = tx.Bucket(bucketTickets).ForEach(func(k, _ []byte) error {
				var rec ticketRecord
				if err := getJSON(tx.Bucket(bucketTickets), string(k), &rec); err != nil {
					return err
				}
				d.Tickets[string(k)] = rec
				return nil
			})
			if err != nil {
				return err
			}
			return tx.Bucket(bucketMembers).ForEach(func(k, _ []byte) error {
				var m Member
				if _, err := getJSONFound(tx.Bucket(bucketMembers), string(k), &m); err != nil {
					return err
				}
				d.Members = append(d.Members, m)
				return nil
			})
		})
	})
	return d, err
}

// WriteDump writes d as a hub database (the bbolt format of hub.db) to w,
// through a temporary file in dir, and returns the bytes written.
func WriteDump(dir string, d Dump, open func(size int64) io.Writer) (int64, error) {
	f, err := os.CreateTemp(dir, ".dump-*.db")
	if err != nil {
		return 0, fmt.Errorf("write database copy: %w", err)
	}
	path := f.Name()
	f.Close()
	os.Remove(path) // bbolt creates it
	defer os.Remove(path)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		return 0, fmt.Errorf("write database copy: %w", err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketTickets, bucketMembers, bucketMeta} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if err := setGeneration(meta, d.Generation); err != nil {
			return err
		}
		if d.Project != "" {
			if err := meta.Put(keyProject, []byte(d.Project)); err != nil {
				return err
			}
		}
		ids := make([]string, 0, len(d.Tickets))
		for id := range d.Tickets {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			if err := putJSON(tx.Bucket(bucketTickets), id, d.Tickets[id]); err != nil {
				return err
			}
		}
		for _, m := range d.Members {
			if err := putJSON(tx.Bucket(bucketMembers), m.NodeID, m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("write database copy: %w", err)
	}
	var n int64
	err = db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(open(tx.Size()))
		return err
	})
	if err != nil {
		return n, fmt.Errorf("write database copy: %w", err)
	}
	return n, nil
}

// setGeneration records the generation in bucket meta.
func setGeneration(meta *bolt.Bucket, gen uint64) error {
	if err := meta.Put(keyGeneration, binary.BigEndian.AppendUint64(nil, gen)); err != nil {
		return fmt.Errorf("record generation: %w", err)
	}
	return nil
}
