package server

import (
	"context"
	"runtime"
	"testing"

	"github.com/sluicehq/sluice/agent/buildinfo"
)

// TestVersionRoute: the agent answers GET /v1/version with its own build.
func TestVersionRoute(t *testing.T) {
	v, err := serve(t, &fakeBackend{}).Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if v != buildinfo.Get() || v.GoVersion != runtime.Version() || v.Version == "" {
		t.Errorf("Version = %+v, want %+v", v, buildinfo.Get())
	}
}
