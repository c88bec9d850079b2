package etcdstore

// Opening the project's store: the embedded member (alone or in a
// cluster) or an external etcd, then, once, the project's hub.db moved
// into it:
//
//	store has the records (its generation key) ──> serve
//	else hub.db here ──> check it, load it, rename it hub.db.migrated-TIME ──> serve
//	else, alone ──> refuse as a missing database (agentctl project init)
//	else, in a cluster ──> wait for the hub that has hub.db to load it

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/agent/hub/authority"
)

// External is an etcd the hubs share and do not run.
type External struct {
	Endpoints         []string
	CA, Cert, KeyFile string // PEM files; all empty: no TLS
}

// OpenOptions say where the project's records are.
type OpenOptions struct {
	Project *authority.Project
	// External, if set, is the etcd to use; otherwise the hub embeds a
	// member (Member; Member.Dir defaults to DataDir(Project.Dir)).
	External *External
	Member   MemberOptions
	Timeout  time.Duration // per operation (DefaultTimeout)
	Logger   *zap.Logger   // what the migration and the wait say
}

// Open opens the project's store and migrates its hub.db into it once.
func Open(ctx context.Context, opts OpenOptions) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	p := opts.Project
	var (
		c       *clientv3.Client
		closeFn func() error
		cluster = opts.External != nil || len(opts.Member.Peers) > 0
	)
	if opts.External != nil {
		var err error
		if c, err = dialExternal(*opts.External); err != nil {
			return nil, err
		}
	} else {
		mo := opts.Member
		if mo.Dir == "" {
			mo.Dir = DataDir(p.Dir)
		}
		if mo.Token == "" {
			mo.Token = p.ID
		}
		if mo.Name == "" {
			mo.Name = "hub"
		}
		if !cluster && !fileutilExists(filepath.Join(mo.Dir, "member")) && !fileutilExists(authority.DatabasePath(p.Dir)) {
			return nil, missing(p) // before a member is made for nothing
		}
		unlock, err := LockDir(mo.Dir)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		m, err := StartMember(mo, func(d time.Duration) {
			log.Info("waiting for a quorum of the cluster's hubs", zap.Duration("waited", d.Round(time.Second)))
		})
		if err != nil {
			unlock()
			return nil, err
		}
		log.Info("etcd member serving", zap.String("dir", mo.Dir), zap.String("name", mo.Name),
			zap.Int("peers", len(mo.Peers)), zap.Duration("start", time.Since(start).Round(time.Millisecond)))
		c = m.Client()
		closeFn = func() error { err := m.Close(); unlock(); return err }
	}
	s := New(c, p.ID, Options{Timeout: opts.Timeout, TempDir: p.Dir}, closeFn)
	if err := s.migrate(ctx, p, cluster, log); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// migrate loads the project's hub.db into a store that has no records.
func (s *Store) migrate(ctx context.Context, p *authority.Project, cluster bool, log *zap.Logger) error {
	path := authority.DatabasePath(p.Dir)
	waited := false
	for {
		ictx, cancel := context.WithTimeout(ctx, s.timeout)
		ok, err := s.initialized(ictx)
		cancel()
		if err != nil {
			return fmt.Errorf("open the project's records in etcd: %w", err)
		}
		_, statErr := os.Stat(path)
		switch {
		case ok:
			if statErr == nil {
				log.Warn("hub.db is not migrated: etcd holds the project's records already (another hub migrated its own); this one is left as it is",
					zap.String("file", path))
			}
			return nil
		case statErr == nil:
			return s.migrateFile(ctx, p, path, log)
		case !errors.Is(statErr, fs.ErrNotExist):
			return fmt.Errorf("open hub database: %w", statErr)
		case !cluster:
			return missing(p)
		}
		if !waited {
			log.Info("waiting for the hub that holds the project's hub.db to load it into the cluster")
			waited = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// migrateFile loads hub.db and renames it hub.db.migrated-TIME.
func (s *Store) migrateFile(ctx context.Context, p *authority.Project, path string, log *zap.Logger) error {
	d, err := authority.ReadDump(path, p.ID)
	if err != nil {
		return err
	}
	if d.Project == "" {
		d.Project = p.ID
	}
	lctx, cancel := context.WithTimeout(ctx, 10*s.timeout)
	defer cancel()
	if err := s.load(lctx, d); err != nil {
		return fmt.Errorf("migrate %s into etcd: %w", path, err)
	}
	kept := path + ".migrated-" + time.Now().UTC().Format("20060102T150405Z")
	if err := os.Rename(path, kept); err != nil {
		return fmt.Errorf("migrate %s into etcd: keep it aside: %w", path, err)
	}
	log.Info("migrated the hub database into etcd, once: the hub keeps its records there from now on; the old file is kept, unused",
		zap.String("from", path), zap.String("kept_as", kept), zap.Int("members", len(d.Members)),
		zap.Int("tickets", len(d.Tickets)), zap.Uint64("generation", d.Generation))
	return nil
}

// dialExternal connects to an external etcd.
func dialExternal(x External) (*clientv3.Client, error) {
	cfg := clientv3.Config{Endpoints: x.Endpoints, DialTimeout: 5 * time.Second}
	if x.CA != "" || x.Cert != "" || x.KeyFile != "" {
		info := transport.TLSInfo{TrustedCAFile: x.CA, CertFile: x.Cert, KeyFile: x.KeyFile}
		tc, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
		tc.MinVersion = tls.VersionTLS12
		cfg.TLS = tc
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", x.Endpoints, err)
	}
	return c, nil
}

// ErrBusy means another process (a running hub) holds the embedded
// member's data directory.
var ErrBusy = errors.New("the hub's etcd data is in use by another process")

// LockDir takes the lock a running hub holds on its member's data
// directory (creating it), so that no two hubs, and no restore, run on it
// at once.
func LockDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: a hub is running on this project; stop it first: %w", dir, ErrBusy)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// missing is the error of a project with neither records in etcd nor a
// hub.db to migrate: starting empty would let every used ticket redeem
// again.
func missing(p *authority.Project) error {
	path := authority.DatabasePath(p.Dir)
	return &authority.DatabaseError{Path: path, Problem: "does not exist, and etcd (" + DataDir(p.Dir) + ") holds no records of the project",
		Fix: authority.RestoreFix(p.Dir) + fmt.Sprintf(", or, for a project made before `agentctl project init` created it, create it with `agent hub --init --project %s`", p.Dir),
		Err: authority.ErrNoDatabase}
}
