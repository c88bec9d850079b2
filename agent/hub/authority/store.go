package authority

// The hub's database file (hub.db): created once, by `agentctl project
// init` (or `agent hub --init` for a project made before that), checked
// before every use, never created by opening it. A missing, empty or
// damaged file is refused with a DatabaseError that names the file and the
// way out, since starting on it would forget members, used tickets and
// revocations (a used ticket would redeem again).

import (
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sluicehq/sluice/agent/identity"
)

// keyProject, in bucket meta, is the ID of the project the database belongs
// to (absent in databases made before it was recorded).
var keyProject = []byte("project")

// Sentinels of DatabaseError, for callers that branch.
var (
	// ErrNoDatabase means the database file does not exist.
	ErrNoDatabase = errors.New("hub database does not exist")
	// ErrDatabaseDamaged means the file is empty, truncated, not a
	// database, inconsistent, holds records that do not decode, or belongs
	// to another project.
	ErrDatabaseDamaged = errors.New("hub database is damaged")
	// ErrDatabaseBusy means another process (a running hub) holds it.
	ErrDatabaseBusy = errors.New("hub database is in use by another process")
	// ErrDatabaseExists means a database was to be created where one is.
	ErrDatabaseExists = errors.New("hub database already exists")
)

// DatabaseError says, in one line, which database file is unusable, what is
// wrong with it and what to do.
type DatabaseError struct {
	Path    string
	Problem string // "is empty (0 bytes)"
	Fix     string // what to do, for the one who runs the command
	Err     error  // one of the sentinels above
}

func (e *DatabaseError) Error() string {
	s := "hub database " + e.Path + " " + e.Problem
	if e.Fix != "" {
		s += "; " + e.Fix
	}
	return s
}

func (e *DatabaseError) Unwrap() error { return e.Err }

// DatabasePath is the hub database of the project in dir.
func DatabasePath(dir string) string { return filepath.Join(dir, DatabaseFile) }

// RestoreFix is what to do when the database of the project in dir is
// damaged.
func RestoreFix(dir string) string {
	return fmt.Sprintf("restore a backup with `agent hub --restore FILE --project %s`", dir)
}

func fixFor(dir string, sentinel error, empty bool) string {
	switch {
	case errors.Is(sentinel, ErrNoDatabase):
		return RestoreFix(dir) + fmt.Sprintf(", or, for a project made before `agentctl project init` created it, create it with `agent hub --init --project %s`", dir)
	case errors.Is(sentinel, ErrDatabaseBusy):
		return "is a hub already running on this project? Stop it first"
	case empty:
		return RestoreFix(dir) + fmt.Sprintf(" (to start the project's records anew instead, where every used ticket redeems again, remove it and run `agent hub --init --project %s`)", dir)
	}
	return RestoreFix(dir)
}

// DatabaseSummary counts what a database holds.
type DatabaseSummary struct {
	Project    string `json:"project,omitempty"` // "" for a database made before it was recorded
	Generation uint64 `json:"generation"`
	Members    int    `json:"members"`
	Revoked    int    `json:"revoked"`
	Tickets    int    `json:"tickets"` // tickets redeemed at least once
}

// CheckOptions tune CheckDatabase.
type CheckOptions struct {
	// ProjectID, if set, is the project the database must belong to.
	ProjectID string
	// Fix is what the error tells the reader to do (default: restore a
	// backup into the project in the file's directory).
	Fix string
	// Consistency also runs bbolt's page-level consistency check (free
	// pages, unreachable pages, key order). bbolt runs it on a goroutine
	// of its own, where some damaged pages crash the process instead of
	// failing: run it where a crash is an answer, as `agent hub` does in
	// a child process (`agent hub check`). It runs only after every
	// record was read without trouble.
	Consistency bool
}

// CheckDatabase checks the database file at path read-only, as the hub
// would open it: it exists, is not empty, is a bbolt database whose pages
// are all in the file, has the buckets, every record decodes, and it
// belongs to opts.ProjectID. A panic or a memory fault while reading a
// damaged file is an error, not a crash (except in opts.Consistency).
func CheckDatabase(path string, opts CheckOptions) (DatabaseSummary, error) {
	var sum DatabaseSummary
	fix := func(sentinel error, empty bool) string {
		if opts.Fix != "" {
			return opts.Fix
		}
		return fixFor(filepath.Dir(path), sentinel, empty)
	}
	err := guarded(path, fix, func() error {
		db, err := openFile(path, true, fix)
		if err != nil {
			return err
		}
		defer db.Close() // also when reading it panics
		return db.View(func(tx *bolt.Tx) error {
			var err error
			if sum, err = verify(tx, path, opts.ProjectID, fix); err != nil || !opts.Consistency {
				return err
			}
			return consistent(tx, path, fix)
		})
	})
	return sum, err
}

// openDatabase opens the project's database read-write for the hub, after
// the same checks as CheckDatabase (without Consistency), and records the
// project's ID in it (and its meta bucket) if an older version made it.
func openDatabase(p *Project) (*bolt.DB, error) {
	path := DatabasePath(p.Dir)
	fix := func(sentinel error, empty bool) string { return fixFor(p.Dir, sentinel, empty) }
	var db *bolt.DB
	err := guarded(path, fix, func() error {
		opened, err := openFile(path, false, fix)
		if err != nil {
			return err
		}
		ok := false
		defer func() { // also when reading it panics
			if !ok {
				opened.Close()
			}
		}()
		err = opened.Update(func(tx *bolt.Tx) error {
			sum, err := verify(tx, path, p.ID, fix)
			if err != nil || sum.Project != "" {
				return err
			}
			// Made by an older version: record whose it is.
			meta, err := tx.CreateBucketIfNotExists(bucketMeta)
			if err != nil {
				return fmt.Errorf("upgrade hub database %s: %w", path, err)
			}
			return meta.Put(keyProject, []byte(p.ID))
		})
		if ok = err == nil; ok {
			db = opened
		}
		return err
	})
	return db, err
}

// guarded runs f on a goroutine of its own where a panic, or a memory fault
// in the database's mapping (debug.SetPanicOnFault), becomes a
// DatabaseError: bbolt panics on some damaged pages.
func guarded(path string, fix func(error, bool) string, f func() error) error {
	done := make(chan error, 1)
	go func() {
		debug.SetPanicOnFault(true)
		defer func() {
			if r := recover(); r != nil {
				done <- &DatabaseError{Path: path, Problem: fmt.Sprintf("is damaged (reading it failed: %v)", r),
					Fix: fix(ErrDatabaseDamaged, false), Err: ErrDatabaseDamaged}
			}
		}()
		done <- f()
	}()
	return <-done
}

// openFile opens a database that must exist and not be empty; it never
// creates one (bbolt would, and would make an empty file a fresh database).
func openFile(path string, readOnly bool, fix func(error, bool) string) (*bolt.DB, error) {
	fail := func(problem string, sentinel error, empty bool) error {
		return &DatabaseError{Path: path, Problem: problem, Fix: fix(sentinel, empty), Err: sentinel}
	}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fail("does not exist", ErrNoDatabase, false)
	case err != nil:
		return nil, fmt.Errorf("open hub database: %w", err)
	case !st.Mode().IsRegular():
		return nil, fail("is not a regular file", ErrDatabaseDamaged, false)
	case st.Size() == 0:
		return nil, fail("is empty (0 bytes): its members, used tickets and revocations are gone", ErrDatabaseDamaged, true)
	}
	if problem := preflight(path, st.Size()); problem != "" {
		return nil, fail("is damaged ("+problem+")", ErrDatabaseDamaged, false)
	}
	var file *os.File
	defer func() {
		// bbolt does not close the file when opening it panics. Closing
		// it here is not enough to release its lock, which its mapping
		// keeps (preflight spares most damaged files this).
		if r := recover(); r != nil {
			if file != nil {
				file.Close()
			}
			panic(r)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		ReadOnly:        readOnly,
		Timeout:         2 * time.Second,
		PreLoadFreelist: true, // read here, where a panic is caught, not in Check's goroutine
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag&^os.O_CREATE, perm)
			file = f
			return f, err
		},
	})
	switch {
	case err == nil:
	case errors.Is(err, bolt.ErrTimeout):
		return nil, fail("is in use by another process", ErrDatabaseBusy, false)
	case errors.Is(err, fs.ErrNotExist):
		return nil, fail("does not exist", ErrNoDatabase, false)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("open hub database %s: %w", path, err)
	default: // invalid, version mismatch, checksum, too small
		return nil, fail(fmt.Sprintf("is not a readable bbolt database (%v)", err), ErrDatabaseDamaged, false)
	}
	var need int64
	db.View(func(tx *bolt.Tx) error {
		need = tx.Size()
		return nil
	})
	if st, err := os.Stat(path); err == nil && st.Size() < need {
		db.Close()
		return nil, fail(fmt.Sprintf("is damaged (truncated: %d bytes, its pages need %d)", st.Size(), need), ErrDatabaseDamaged, false)
	}
	return db, nil
}

// verify reads every record of the database.
func verify(tx *bolt.Tx, path, project string, fix func(error, bool) string) (DatabaseSummary, error) {
	var sum DatabaseSummary
	bad := func(format string, args ...any) error {
		return &DatabaseError{Path: path, Problem: "is damaged (" + fmt.Sprintf(format, args...) + ")",
			Fix: fix(ErrDatabaseDamaged, false), Err: ErrDatabaseDamaged}
	}
	for _, name := range [][]byte{bucketTickets, bucketMembers} {
		if tx.Bucket(name) == nil {
			return sum, bad("it has no %s bucket", name)
		}
	}
	// Databases made before generations have no meta bucket: generation 0.
	if meta := tx.Bucket(bucketMeta); meta != nil {
		if v := meta.Get(keyGeneration); v != nil {
			if len(v) != 8 {
				return sum, bad("its generation is %d bytes long, want 8", len(v))
			}
			sum.Generation = binary.BigEndian.Uint64(v)
		}
		sum.Project = string(meta.Get(keyProject))
	}
	if project != "" && sum.Project != "" && sum.Project != project {
		return sum, &DatabaseError{Path: path, Problem: fmt.Sprintf("belongs to project %s, not to this project (%s)", sum.Project, project),
			Fix: fix(ErrDatabaseDamaged, false), Err: ErrDatabaseDamaged}
	}
	err := tx.Bucket(bucketTickets).ForEach(func(k, v []byte) error {
		var rec ticketRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return bad("ticket record %q does not decode: %v", k, err)
		}
		if rec.Used != len(rec.Nodes) || slices.ContainsFunc(rec.Nodes, notNodeID) {
			return bad("ticket record %q counts %d uses for %d nodes, or names one wrongly", k, rec.Used, len(rec.Nodes))
		}
		sum.Tickets++
		return nil
	})
	if err != nil {
		return sum, err
	}
	err = tx.Bucket(bucketMembers).ForEach(func(k, v []byte) error {
		var m Member
		if err := json.Unmarshal(v, &m); err != nil {
			return bad("member record %q does not decode: %v", k, err)
		}
		if m.NodeID != string(k) || len(m.PublicKey) != ed25519.PublicKeySize || identity.NodeID(m.PublicKey) != m.NodeID {
			return bad("member record %q names node %q, whose key it does not hold", k, m.NodeID)
		}
		if m.Generation > sum.Generation {
			return bad("member %s is at generation %d, past the project's %d", m.NodeID, m.Generation, sum.Generation)
		}
		sum.Members++
		if m.Revoked {
			sum.Revoked++
		}
		return nil
	})
	return sum, err
}

// notNodeID reports whether s is not a node ID (identity.NodeID).
func notNodeID(s string) bool {
	b, err := hex.DecodeString(s)
	return err != nil || len(b) != 16 || hex.EncodeToString(b) != s
}

// consistent runs bbolt's consistency check (see CheckOptions.Consistency).
func consistent(tx *bolt.Tx, path string, fix func(error, bool) string) error {
	var first error
	n := 0
	for err := range tx.Check() {
		if first == nil {
			first = err
		}
		n++
	}
	if first == nil {
		return nil
	}
	return &DatabaseError{Path: path, Problem: fmt.Sprintf("fails bbolt's consistency check (%d problems; the first: %v)", n, first),
		Fix: fix(ErrDatabaseDamaged, false), Err: ErrDatabaseDamaged}
}

// CreateDatabase creates the project's database with its buckets, the
// member-state generation (0) and the project's ID. It refuses where a file
// is already, whatever its state: `agent hub --restore` replaces one.
func CreateDatabase(p *Project) error {
	path := DatabasePath(p.Dir)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: 2 * time.Second,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			return os.OpenFile(name, flag|os.O_EXCL, perm)
		},
	})
	if errors.Is(err, fs.ErrExist) {
		return &DatabaseError{Path: path, Problem: "already exists",
			Fix: fmt.Sprintf("check it with `agent hub check --project %s`; replace it with `agent hub --restore FILE --project %s`", p.Dir, p.Dir), Err: ErrDatabaseExists}
	}
	if err != nil {
		return fmt.Errorf("create hub database %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketTickets, bucketMembers, bucketMeta} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		return errors.Join(meta.Put(keyGeneration, binary.BigEndian.AppendUint64(nil, 0)), meta.Put(keyProject, []byte(p.ID)))
	})
	if err = errors.Join(err, db.Close()); err != nil {
		os.Remove(path)
		return fmt.Errorf("create hub database %s: %w", path, err)
	}
	return nil
}

// preflight reads the file's two meta pages as bbolt lays them out (a
// 16-byte page header, then magic, version, page size, flags, root bucket
// (16 bytes), free list page, page count, transaction ID and an FNV-64a
// checksum of what precedes it, in the machine's byte order) and, with the
// newer valid one, checks that the file holds every page it counts and
// that its free list is one of them: bbolt would read past the end of a
// truncated file while opening it, and panic or fault there. It returns
// the problem, or "" (also when no meta page is valid: bbolt says so).
func preflight(path string, size int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const magic, version, noFreelist = 0xED0CDAED, 2, ^uint64(0)
	type meta struct{ pageSize, freelist, pgid, txid uint64 }
	read := func(off int64) (meta, bool) {
		var b [16 + 64]byte
		if _, err := f.ReadAt(b[:], off); err != nil {
			return meta{}, false
		}
		m, e := b[16:], binary.NativeEndian
		h := fnv.New64a()
		h.Write(m[:56])
		if e.Uint32(m[0:]) != magic || e.Uint32(m[4:]) != version || h.Sum64() != e.Uint64(m[56:]) {
			return meta{}, false
		}
		return meta{pageSize: uint64(e.Uint32(m[8:])), freelist: e.Uint64(m[32:]), pgid: e.Uint64(m[40:]), txid: e.Uint64(m[48:])}, true
	}
	m0, ok0 := read(0)
	off := int64(os.Getpagesize())
	if ok0 && m0.pageSize >= 1024 && m0.pageSize <= 1<<20 {
		off = int64(m0.pageSize)
	}
	m1, ok1 := read(off)
	m := m0
	switch {
	case ok1 && (!ok0 || m1.txid > m0.txid):
		m = m1
	case !ok0:
		return ""
	}
	if m.pageSize == 0 || m.pgid > uint64(size)/m.pageSize {
		return fmt.Sprintf("truncated: %d bytes, its pages need %d", size, m.pgid*m.pageSize)
	}
	if m.freelist != noFreelist && (m.freelist < 2 || m.freelist >= m.pgid) {
		return fmt.Sprintf("its free list is on page %d, outside its %d pages", m.freelist, m.pgid)
	}
	return ""
}
