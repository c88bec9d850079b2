package relay_test

import (
	"errors"
	"os"
	"testing"

	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/testenv"
)

// relayModes runs test once per way data sessions cross the hub: splice(2)
// and the kernel's sockmap (which needs root; in CI it must run).
func relayModes(t *testing.T, test func(t *testing.T, hub relay.HubOptions)) {
	t.Run("splice", func(t *testing.T) { test(t, relay.HubOptions{}) })
	t.Run("sockmap", func(t *testing.T) { test(t, relay.HubOptions{Sockmap: openSockmap(t, relay.SockmapOptions{})}) })
}

// openSockmap loads the kernel relay for the test.
func openSockmap(t testing.TB, opts relay.SockmapOptions) *relay.Sockmap {
	t.Helper()
	testenv.RequireRoot(t)
	sm, err := relay.OpenSockmap(opts)
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
