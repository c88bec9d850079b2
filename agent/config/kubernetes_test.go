package config

import (
	"errors"
	"strings"
	"testing"
)

// TestKubernetesKey: the kubernetes: settings parse, and a misspelt field
// in them is refused like any other.
func TestKubernetesKey(t *testing.T) {
	f, err := Parse([]byte("kubernetes:\n  enabled: true\n  node_name: node-1\n  kubeconfig: /etc/kube.yaml\n"))
	if err != nil {
		t.Fatal(err)
	}
	if k := f.Kubernetes; k == nil || !k.Enabled || k.NodeName != "node-1" || k.Kubeconfig != "/etc/kube.yaml" {
		t.Errorf("Kubernetes = %+v", f.Kubernetes)
	}
	if _, err := Parse([]byte("kubernetes:\n  enabled: true\n  nodename: node-1\n")); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "nodename") {
		t.Errorf("a misspelt field: %v; want ErrInvalid naming it", err)
	}
}
