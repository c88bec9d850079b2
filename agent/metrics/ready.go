package metrics

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sluicehq/sluice/agent/daemon"
)

// Reasons an agent is not ready, for callers that branch on them.
var (
	ErrStarting      = errors.New("starting")
	ErrStopping      = errors.New("stopping")
	ErrNoCredential  = errors.New("no valid credential")
	ErrHubDown       = errors.New("not connected to the hub")
	ErrDatapathOff   = errors.New("the BPF data path is not attached")
	ErrPending       = errors.New("waiting for")
	ErrNoAuthority   = errors.New("no authority")
	ErrDatabaseError = errors.New("the authority's database is not usable")
)

// AgentReady says why an agent whose state is st is not ready at now, or
// nil: its credential must be valid and its hub connection up, and its
// BPF data path attached if needDatapath (--datapath on) or if a
// transparent inlet needs it; and nothing may hold it back (st.Pending:
// its configuration file not applied yet, say).
func AgentReady(st daemon.Status, dp daemon.DatapathStatus, needDatapath bool, now time.Time) error {
	if exp := st.Credential.Expires; exp.IsZero() || !now.Before(exp) {
		return fmt.Errorf("%w (expired %s)", ErrNoCredential, exp.Format(time.RFC3339))
	}
	if !st.Hub.Connected {
		if st.Hub.LastError != "" {
			return fmt.Errorf("%w %s: %s", ErrHubDown, st.Hub.Hub, st.Hub.LastError)
		}
		return fmt.Errorf("%w %s", ErrHubDown, st.Hub.Hub)
	}
	if !needDatapath {
		for _, in := range st.Inlets {
			needDatapath = needDatapath || in.Transparent
		}
	}
	if needDatapath && !dp.Enabled {
		if dp.Reason != "" {
			return fmt.Errorf("%w: %s", ErrDatapathOff, dp.Reason)
		}
		return ErrDatapathOff
	}
	if len(st.Pending) > 0 {
		return fmt.Errorf("%w: %s", ErrPending, strings.Join(st.Pending, "; "))
	}
	return nil
}
