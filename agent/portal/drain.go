package portal

import (
	"context"
	"errors"
	"fmt"
)

// Drain stops the manager taking new connections and waits, until ctx is
// done, for the live ones to end (an agent's graceful stop):
//
//	explicit inlets   stop listening: the kernel refuses new connections
//	transparent ones  reset what they are still handed (the agent's
//	                  listener closes first: see daemon.Agent.Drain)
//	warm channels     close, at both ends: they carry no connection
//	incoming sessions and direct channels: dropped
//	live connections  go on; when they end cleanly they end as always
//
// It returns ctx's error if connections were still live; Close then
// resets them.
func (m *Manager) Drain(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true // enter() refuses from now on, so m.wg only shrinks
	var errs []error
	for _, in := range m.inlets {
		errs = append(errs, in.stopAccepting())
	}
	m.mu.Unlock()
	m.drainDone()
	done := make(chan struct{})
	go func() {
		m.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("drain portals: connections still open: %w", ctx.Err()))
	}
	return errors.Join(errs...)
}

// Live is the number of connections the inlets and outlets carry now.
func (m *Manager) Live() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for _, in := range m.inlets {
		n += in.stats.Active.Load()
	}
	for _, o := range m.outlets {
		n += o.stats.Active.Load()
	}
	return n
}
