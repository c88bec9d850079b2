package loader

import (
	"os"
	"path/filepath"
	"testing"
)

// TestIsNamespace: a namespace file is one; the empty file a runtime's
// namespace bind mount leaves once unmounted (a Docker container that
// stopped while ContainerVeths listed /var/run/docker/netns) is not, and
// ContainerVeths skips it instead of failing to enter it (EINVAL).
func TestIsNamespace(t *testing.T) {
	ns, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if !isNamespace(int(ns.Fd())) {
		t.Error("/proc/self/ns/net is not taken for a namespace")
	}
	path := filepath.Join(t.TempDir(), "0c3e9713bf9d")
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isNamespace(int(f.Fd())) {
		t.Error("an empty file is taken for a namespace")
	}
}
