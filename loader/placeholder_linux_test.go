package loader_test

import (
	"os"
	"os/exec"
	"testing"

	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/testenv"
)

// envPlaceholderChild makes TestPlaceholderChild run.
const envPlaceholderChild = "SLUICE_LOADER_PLACEHOLDER_CHILD"

// placeholderScript runs in a mount and network namespace of its own: a
// tmpfs over /run holds files where runtimes keep named namespaces that
// are no namespace (podman and Docker create the file, then bind-mount
// the namespace on it; they unmount it, then remove the file), and the
// test binary runs the child.
const placeholderScript = `mount -t tmpfs tmpfs /run || exit 125
mkdir -p /run/netns /run/docker/netns || exit 125
: > /run/netns/placeholder && : > /run/docker/netns/placeholder || exit 125
exec "$0" -test.run='^TestPlaceholderChild$' -test.v`

// TestNamespacePlaceholders: a file where named namespaces live that is
// not (or no longer) a mounted namespace is skipped when listing the
// containers' addresses, not an error that fails every workload: another
// runtime creating or removing a container meanwhile failed the agent's
// workload creation with "failed to set into network namespace: invalid
// argument".
func TestNamespacePlaceholders(t *testing.T) {
	testenv.RequireRoot(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatal("unshare (util-linux) is needed")
	}
	cmd := exec.Command(unshare, "--mount", "--net", "--propagation", "private", "sh", "-c", placeholderScript, os.Args[0])
	cmd.Env = append(os.Environ(), envPlaceholderChild+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child with placeholder files: %v\n%s", err, out)
	}
}

// TestPlaceholderChild is TestNamespacePlaceholders's child; alone it does
// nothing.
func TestPlaceholderChild(t *testing.T) {
	if os.Getenv(envPlaceholderChild) == "" {
		t.Skip("run by TestNamespacePlaceholders")
	}
	if _, err := loader.ContainerVeths(); err != nil {
		t.Fatalf("ContainerVeths with placeholder files: %v", err)
	}
}
