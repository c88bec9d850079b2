package loader_test

import (
	"testing"

	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/testenv"
)

// This machine runs the whole data path: the probe must say so.
func TestProbe(t *testing.T) {
	testenv.RequireRoot(t)
	fs := loader.Probe()
	for _, f := range fs {
		t.Logf("%-70s ok=%v %s", f.Name, f.OK, f.Why)
	}
	if err := loader.Missing(fs); err != nil {
		t.Errorf("Missing: %v", err)
	}
	if len(fs) < 8 {
		t.Errorf("probe checked %d features", len(fs))
	}
}
