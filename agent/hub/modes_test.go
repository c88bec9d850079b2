package hub_test

import (
	"errors"
	"os"
	"testing"

	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/testenv"
)

// relayModes runs test once per way data sessions cross the hub: splice(2)
// and the kernel's sockmap (which needs root; in CI it must run).
func relayModes(t *testing.T, test func(t *testing.T, hub hub.HubOptions)) {
	t.Run("splice", func(t *testing.T) { test(t, hub.HubOptions{}) })
	t.Run("sockmap", func(t *testing.T) { test(t, hub.HubOptions{Sockmap: openSockmap(t, hub.SockmapOptions{})}) })
}

// openSockmap loads the kernel relay for the test.
func openSockmap(t testing.TB, opts hub.SockmapOptions) *hub.Sockmap {
	t.Helper()
	testenv.RequireRoot(t)
	sm, err := hub.OpenSockmap(opts)
	if errors.Is(err, loader.ErrRelayNotSupported) && os.Getenv("CI") != "true" {
		t.Skipf("this kernel cannot run the sockmap relay: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sm.Close(); err != nil {
			t.Error(err)
		}
	})
	return sm
}
