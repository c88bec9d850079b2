package daemon

// Restoring the saved configuration (portals.json) never rewrites it: the
// file says what the operator asked for, and an item that cannot run now (a
// port another process holds, a relay name another node holds) stays
// configured. It is shown failed, with its reason and the time of the next
// try, in `agentctl status`, `tcp-inlet list`, `tcp-outlet list` and
// `relay list`, and is tried again with a capped exponential backoff and
// jitter until it runs. Only the operator's own changes (create, delete)
// save the configuration.
//
//	portals.json ──read──> cfg (all of it)
//	    relays  ──Claim──> held │ refused ──> relay client: ClaimLater, retried
//	    outlets ──start──> running │ failed ──> failures, retryLoop
//	    inlets  ──start──> running │ failed ──> failures, retryLoop
//	                                        (no retry without the data path)

import (
	"context"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/portal"
)

// Retries of items that failed to start.
const (
	retryMin = time.Second
	retryMax = 30 * time.Second
)

// Item states, as the API shows them.
const (
	StateRunning = "running" // an inlet or outlet that works
	StateFailed  = "failed"  // configured, not running: see Error and NextRetry
)

// failure is why a configured inlet or outlet does not run.
type failure struct {
	inlet  *portal.InletSpec // one of the two
	outlet *portal.OutletSpec
	err    error
	since  time.Time
	next   time.Time // zero: not retried (it waits for something a retry cannot bring)
	wait   time.Duration
}

func failureKey(kind, name string) string { return kind + "/" + name }

// key returns the item's kind and name.
func (f *failure) key() (kind, name string) {
	if f.inlet != nil {
		return "inlet", f.inlet.Name
	}
	return "outlet", f.outlet.Name
}

// restore reads the saved configuration and starts what it can; see the
// top of this file. Only an unreadable portals.json fails it.
func (a *Agent) restore(ctx context.Context) error {
	cfg, err := a.conf.load()
	if err != nil {
		return err
	}
	// The hub learns the saved outlets' policies before the relays are
	// claimed.
	a.publishOutlets(ctx, cfg.Outlets)
	for _, r := range cfg.Relays {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := a.client.Claim(cctx, r)
		cancel()
		if err != nil {
			a.client.ClaimLater(r, err)
			a.log.Warn("relay not claimed; kept, and claimed when it can be", zap.String("relay", r), zap.Error(err))
		}
	}
	a.conf.mu.Lock()
	defer a.conf.mu.Unlock()
	for _, o := range cfg.Outlets {
		if _, err := a.ports.AddOutlet(o); err != nil {
			a.conf.fail(failure{outlet: &o, err: err}, true)
		}
	}
	for _, in := range cfg.Inlets {
		if running, why := a.dp.running(); (in.Transparent || in.AllowLocal != "") && !running {
			a.conf.fail(failure{inlet: &in, err: errNoDatapathFor(why)}, false)
			continue
		}
		if _, err := a.dp.startInlet(in); err != nil {
			a.conf.fail(failure{inlet: &in, err: err}, true)
		}
	}
	return nil
}

// errNoDatapathFor is why an inlet that needs the data path does not run.
func errNoDatapathFor(reason string) error {
	return &noDatapathError{reason: reason}
}

type noDatapathError struct{ reason string }

func (e *noDatapathError) Error() string {
	return "kept, not running: it needs the BPF data path, which is not running on this agent (" + e.reason + ")"
}

func (e *noDatapathError) Unwrap() error { return ErrNoDatapath }

// retryLoop tries the failed items again, each when its backoff ends, until
// ctx is done.
func (a *Agent) retryLoop(ctx context.Context) {
	t := time.NewTicker(retryMin / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		var due []failure
		for _, f := range a.conf.failures() {
			if !f.next.IsZero() && !now.Before(f.next) {
				due = append(due, f)
			}
		}
		for _, f := range due {
			a.retry(ctx, f)
		}
	}
}

// retry starts a failed item again, if it is still configured and failed.
func (a *Agent) retry(ctx context.Context, f failure) {
	a.conf.mu.Lock()
	defer a.conf.mu.Unlock()
	kind, name := f.key()
	if !a.conf.stillFailed(kind, name) { // deleted meanwhile
		return
	}
	var err error
	if f.inlet != nil {
		_, err = a.dp.startInlet(*f.inlet)
	} else {
		_, err = a.ports.AddOutlet(*f.outlet)
	}
	if err != nil {
		next := a.conf.failedAgain(kind, name, err)
		a.log.Debug("saved "+kind+" still not started", zap.String(kind, name), zap.Error(err), zap.Time("next_retry", next))
		return
	}
	a.conf.forget(kind, name)
	a.log.Info("saved "+kind+" started", zap.String(kind, name))
	if f.inlet != nil {
		if err := a.dp.sync(); err != nil {
			a.log.Error("updating the data path for a restored inlet failed", zap.String("inlet", name), zap.Error(err))
		}
	} else {
		a.publishOutlets(ctx, a.conf.cfg.Outlets)
	}
}

// spread varies d by ±20%, so that retries do not come in step.
func spread(d time.Duration) time.Duration {
	return d - d/5 + rand.N(2*d/5+1)
}
