package scenario_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/testenv/scenario"
)

// TestSplitAuthorityScenario plays the seed story with the relay on the
// internet holding no signing key (its directory has no authority.key) and
// the authority apart, linked to it: enrollment, the app's queries (no
// plaintext on the internet link), and a member change through the
// authority's own socket, which takes effect at once.
func TestSplitAuthorityScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end scenario skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := startScenarioWith(t, ctx, scenario.Options{AppDir: appDir, Mode: scenario.Explicit, SplitAuthority: true})
	if _, err := os.Stat(filepath.Join(s.RelayDir, "authority.key")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the relay's directory holds the authority's key (%v)", err)
	}
	if strings.Contains(s.Hub.Output(), "authority.key") {
		t.Errorf("the relay mentions the authority's key:\n%s", s.Hub.Output())
	}
	t.Run("AppThroughPortal", func(t *testing.T) { testAppThroughPortal(t, ctx, s) })
	t.Run("MemberChangeAtTheAuthority", func(t *testing.T) {
		analysis := nodeOf(t, ctx, s.Analysis)
		if err := member(s, "set-attributes", analysis, "--attribute", "team=ops")(ctx); err != nil {
			t.Fatal(err)
		}
		tg := memberTarget{name: "explicit", addr: "sluice:" + scenario.InletPort}
		if took, err := firstRefusal(ctx, s.Seed.App.NS, tg, time.Now(), 3*policyWithin); err != nil || took > policyWithin {
			t.Errorf("new connections refused %v after the change (%v); want within %v", took, err, policyWithin)
		}
		if err := member(s, "set-attributes", analysis, "--attribute", "postgres-inlet=true")(ctx); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Psql(ctx, s.Seed.App.NS, "sluice", scenario.InletPort, "SELECT 1"); err != nil || got != "1" {
			t.Errorf("psql after the attribute came back: %q, %v", got, err)
		}
	})
	t.Run("RelayRefusesMemberChanges", func(t *testing.T) {
		_, err := s.Ctl(ctx, "member", "list", "--hub-admin", filepath.Join(s.RelayDir, "hub.sock"))
		if err == nil || !strings.Contains(err.Error(), "relay only") {
			t.Errorf("member list at the relay's socket: %v; want a refusal that says it runs as a relay only", err)
		}
	})
}
