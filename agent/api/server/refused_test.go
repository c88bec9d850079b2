package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/sluicehq/sluice/agent/api"
	"github.com/sluicehq/sluice/agent/api/apitype"
	"github.com/sluicehq/sluice/agent/daemon"
	"github.com/sluicehq/sluice/agent/portal"
)

// TestRefusedInputReachesTheClient: the client's error matches
// api.ErrRefusedInput exactly when the agent refused the input (400), and
// keeps the agent's words.
func TestRefusedInputReachesTheClient(t *testing.T) {
	for _, err := range []error{
		fmt.Errorf("create outlet: --to: %w: %w", portal.ErrUnresolved, portal.ErrInvalid),
		fmt.Errorf("create relay: bad: %w", daemon.ErrInvalidRelayName),
		fmt.Errorf("create inlet %q: %w", "x", portal.ErrExists),
		errors.New("disk on fire"),
	} {
		_, got := serve(t, &fakeBackend{err: err}).CreateInlet(context.Background(), apitype.InletSpec{})
		if refused := statusOf(err) == http.StatusBadRequest; errors.Is(got, api.ErrRefusedInput) != refused || got.Error() != err.Error() {
			t.Errorf("agent error %q reached the client as %v (refused input: %v, want %v)", err, got, errors.Is(got, api.ErrRefusedInput), refused)
		}
	}
}
