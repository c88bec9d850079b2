package etcdstore

// Member changes made on any hub reach this one's agents through a watch
// on the member prefix:
//
//	read (one revision R): generation G, every member
//	    ──> f(each member changed after gen), in generation order
//	watch m/ from R+1 ──> f(each put), in revision order
//
// A change writes the member and the generation in one transaction, and
// the generation grows by one with each, so revision order is generation
// order: f sees generations strictly growing, each once. A watch that
// fails (compacted past R, its member restarted) reads again from the
// newest generation f saw, and goes on.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sluicehq/sluice/agent/hub/authority/store"
)

// WatchMembers calls f with every member record changed after generation
// gen, in generation order and once each, until ctx ends (store.Shared).
// It returns only when ctx ends (nil) or a record does not decode; while
// the store has no quorum it waits.
func (s *Store) WatchMembers(ctx context.Context, gen uint64, f func(store.Member)) error {
	for {
		rctx, cancel := context.WithTimeout(ctx, s.timeout)
		v, err := s.read(rctx, false)
		cancel()
		if err != nil { // no quorum: wait for it
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(watchRetry):
			}
			continue
		}
		ms := slices.Clone(v.members)
		slices.SortFunc(ms, func(a, b store.Member) int { return compareGen(a.Generation, b.Generation) })
		for _, m := range ms {
			if m.Generation > gen {
				f(m)
				gen = m.Generation
			}
		}
		err = s.follow(ctx, v.rev+1, &gen, f)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !errors.Is(err, errWatchEnded) {
			return err
		}
	}
}

var errWatchEnded = errors.New("watch ended")

// watchRetry is how long WatchMembers waits before it reads again after a
// failed read.
const watchRetry = 200 * time.Millisecond

// follow passes on the member puts from revision rev until the watch
// ends.
func (s *Store) follow(ctx context.Context, rev int64, gen *uint64, f func(store.Member)) error {
	// No WithRequireLeader: a member cut off from the majority keeps its
	// watch, silent, and passes on what it missed once it catches up.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for resp := range s.c.Watch(wctx, s.prefix+"m/", clientv3.WithPrefix(), clientv3.WithRev(rev)) {
		if err := resp.Err(); err != nil {
			return fmt.Errorf("%w: %w", errWatchEnded, err)
		}
		for _, ev := range resp.Events {
			if ev.Type != clientv3.EventTypePut {
				continue
			}
			var m store.Member
			if err := json.Unmarshal(ev.Kv.Value, &m); err != nil {
				return fmt.Errorf("watch members: decode %s: %w", ev.Kv.Key, err)
			}
			if m.Generation > *gen {
				f(m)
				*gen = m.Generation
			}
		}
	}
	return errWatchEnded
}

func compareGen(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
