package portal

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Drain stops the manager taking new connections and waits, until ctx is
// done, for the live ones to end (an agent's graceful stop):
//
//	explicit inlets   stop listening: the kernel refuses new connections
//	warm channels     close, at both ends: they carry no connection
//	new portals       refused (ErrClosed)
//	live connections  go on; when they end cleanly they end as always
//
// A connection already handed over (a transparent one accepted before the
// agent's listener closed, a data session the hub announced before the
// relay was released) is served like a live one. Drain returns ctx's error
// if connections were still live; Close then resets them.
func (m *Manager) Drain(ctx context.Context) error {
	m.mu.Lock()
	m.draining = true
	var errs []error
	for _, in := range m.inlets {
		errs = append(errs, in.stopAccepting())
	}
	m.mu.Unlock()
	m.drainDone()
	if err := m.work.wait(ctx); err != nil {
		errs = append(errs, fmt.Errorf("drain portals: connections still open: %w", err))
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

// work counts what enter registered, so that Drain can wait for it with a
// deadline (a WaitGroup cannot) while new work may still come.
type work struct {
	mu   sync.Mutex // guards the following
	n    int
	idle chan struct{} // closed when n drops to 0; nil when no one waits
}

func (w *work) add() {
	w.mu.Lock()
	w.n++
	w.mu.Unlock()
}

func (w *work) done() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n--; w.n == 0 && w.idle != nil {
		close(w.idle)
		w.idle = nil
	}
}

// wait waits until no work is left, or ctx is done.
func (w *work) wait(ctx context.Context) error {
	w.mu.Lock()
	if w.n == 0 {
		w.mu.Unlock()
		return nil
	}
	if w.idle == nil {
		w.idle = make(chan struct{})
	}
	idle := w.idle
	w.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
