package daemon

import (
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/portal"
)

// configStore is the configuration store. It owns the operator's
// configuration (portals.json: the relay names, inlets and outlets asked
// for), read at start and written atomically (identity.WriteFileAtomic) on
// every change the operator makes, and the record of the saved inlets and
// outlets that did not start, with their next retry (restore.go). It says
// what the operator asked for; what runs is the portal registry's
// (portal.Manager).
//
// Lock order: mu, held for a whole configuration change, comes before the
// data path controller's locks and the portal Manager's; failMu is taken
// last and nothing is locked while it is held.
type configStore struct {
	path string // portals.json
	log  *zap.Logger

	mu  sync.Mutex // serializes configuration changes; guards cfg
	cfg config

	failMu sync.Mutex          // guards failed
	failed map[string]*failure // saved inlets and outlets that did not start
}

func newConfigStore(dir string, log *zap.Logger) *configStore {
	return &configStore{path: filepath.Join(dir, portalsFile), log: log, failed: map[string]*failure{}}
}

// load reads the saved configuration into the store and returns it.
func (s *configStore) load() (config, error) {
	var cfg config
	if _, err := readJSON(s.path, &cfg); err != nil {
		return config{}, err
	}
	s.mu.Lock()
	s.cfg = cfg
	s.mu.Unlock()
	return cfg, nil
}

// saveLocked writes the configuration.
func (s *configStore) saveLocked() error { return writeJSON(s.path, s.cfg) }

func (s *configStore) hasInletLocked(name string) bool {
	return slices.ContainsFunc(s.cfg.Inlets, func(in portal.InletSpec) bool { return in.Name == name })
}

func (s *configStore) hasOutletLocked(name string) bool {
	return slices.ContainsFunc(s.cfg.Outlets, func(o portal.OutletSpec) bool { return o.Name == name })
}

// relays returns the relay names configured.
func (s *configStore) relays() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.cfg.Relays)
}

// fail records a failed item; retry schedules its next try.
func (s *configStore) fail(f failure, retry bool) {
	kind, name := f.key()
	f.since = time.Now()
	if retry {
		f.wait = retryMin
		f.next = f.since.Add(spread(f.wait))
	}
	s.failMu.Lock()
	s.failed[failureKey(kind, name)] = &f
	s.failMu.Unlock()
	s.log.Warn("saved "+kind+" not started; it stays configured", zap.String(kind, name), zap.Error(f.err), zap.Bool("retried", retry))
}

// forget drops the record of a failed item (deleted, or running).
func (s *configStore) forget(kind, name string) {
	s.failMu.Lock()
	delete(s.failed, failureKey(kind, name))
	s.failMu.Unlock()
}

// stillFailed reports whether the item is still recorded as failed.
func (s *configStore) stillFailed(kind, name string) bool {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	return s.failed[failureKey(kind, name)] != nil
}

// failedAgain records that a retry failed too, and returns its next try.
func (s *configStore) failedAgain(kind, name string, err error) time.Time {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	cur := s.failed[failureKey(kind, name)]
	if cur == nil {
		return time.Time{}
	}
	cur.err = err
	cur.wait = min(cur.wait*2, retryMax)
	cur.next = time.Now().Add(spread(cur.wait))
	return cur.next
}

// failures returns copies of the failed items' records, in key order.
func (s *configStore) failures() []failure {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	keys := make([]string, 0, len(s.failed))
	for k := range s.failed {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]failure, 0, len(keys))
	for _, k := range keys {
		out = append(out, *s.failed[k])
	}
	return out
}
