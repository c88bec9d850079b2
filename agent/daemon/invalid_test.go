package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/agent/portal"
)

// TestInvalidIsNotAPortal: a bad relay name or workload is refused with
// its own sentinel and words, never "invalid portal specification".
func TestInvalidIsNotAPortal(t *testing.T) {
	err := (&Agent{}).CreateRelay(context.Background(), "Bad Name")
	if !errors.Is(err, ErrInvalidRelayName) || errors.Is(err, portal.ErrInvalid) || !strings.HasSuffix(err.Error(), ": invalid relay name") {
		t.Errorf("CreateRelay(%q) = %v, want ErrInvalidRelayName alone", "Bad Name", err)
	}
	err = (&Workload{Name: "-bad", Address: "10.10.0.2"}).check()
	if !errors.Is(err, ErrInvalidWorkload) || errors.Is(err, portal.ErrInvalid) || !strings.HasSuffix(err.Error(), ": invalid workload") {
		t.Errorf("a workload with a bad name: %v, want ErrInvalidWorkload alone", err)
	}
}
