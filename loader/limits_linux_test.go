package loader_test

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/sluicehq/sluice/loader"
)

// TestLimits: every map sized by a MAX_* macro of bpf/include/sluice.h has,
// in the compiled objects, the size of the Go constant generated from it
// (limits.go), so Go code that counts on a limit (the daemon's portal
// numbers) cannot drift from the C. No privilege: it reads the specs only.
func TestLimits(t *testing.T) {
	want := map[string]uint32{
		"counters":    loader.MaxPortals,
		"services":    loader.MaxServices,
		"endpoints":   loader.MaxEndpoints,
		"bindings":    loader.MaxBindings,
		"verdicts":    loader.MaxVerdicts,
		"flows":       loader.MaxFlows,
		"socks":       loader.MaxSocks,
		"apps":        loader.MaxSocks,
		"peers":       loader.MaxSocks,
		"relay_peers": loader.MaxRelaySocks,
		"relay_flows": loader.MaxRelaySocks,
		"relay_hubs":  loader.MaxRelaySocks,
	}
	seen := map[string]bool{}
	for name, load := range map[string]func() (*ebpf.CollectionSpec, error){
		"tc": loader.LoadTc, "sockops": loader.LoadSockops, "relay": loader.LoadRelay,
	} {
		spec, err := load()
		if err != nil {
			t.Fatalf("load the %s spec: %v", name, err)
		}
		for m, ms := range spec.Maps {
			n, ok := want[m]
			if !ok {
				continue
			}
			seen[m] = true
			if ms.MaxEntries != n {
				t.Errorf("%s: map %s has %d entries, the Go limit says %d: run make generate", name, m, ms.MaxEntries, n)
			}
		}
	}
	for m := range want {
		if !seen[m] {
			t.Errorf("no object has a map %s: update TestLimits", m)
		}
	}
}
