package scenario_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

// imageVersion is the version the test's image is built with: the agent in
// the container must report it (the binaries' version is linked in from
// the Dockerfile's build arguments).
const imageVersion = "v0.0.0-imagetest"

// TestImageScenario builds the container image (deploy/docker/Dockerfile,
// with deploy/docker/build.sh: buildah, no registry) and plays the
// transparent scenario with the analysis agent running from it under
// podman, with the capabilities of scenario.ContainerCaps and not
// --privileged. The container is then killed: the data path it pinned on
// the host's bpffs stays and refuses the app's connections (nothing in
// plaintext on any link), and a new container from the same image, on the
// same state directory, adopts the pins and carries the app again as the
// same node; stopped gracefully (podman stop), the same. Everything it made (containers, the image, namespaces, pins)
// is gone afterwards; the Go build image stays cached (make clean-images).
func TestImageScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end scenario skipped in -short mode")
	}
	testenv.RequireRoot(t)
	for _, tool := range []string{"podman", "buildah", "runc", "busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (.ci/install-deps installs it): %v", tool, err)
			}
			t.Skipf("needs %s (apt-get install podman buildah runc busybox-static): %v", tool, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	image := buildImage(t, ctx)

	env := testenv.NewT(t)
	s, err := scenario.New(env, scenario.Options{Bin: bin, AppDir: appDir, Mode: scenario.Transparent,
		AgentImages: map[string]string{"analysis": image}, Progress: func(m string) { t.Log(m) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close scenario: %v", err)
		}
		if out, err := exec.Command("podman", "ps", "--all", "--quiet", "--filter", "label="+scenario.ContainerLabel+"="+env.RunID()).Output(); err != nil || len(out) > 0 {
			t.Errorf("containers of the scenario left after it closed: %q, %v", out, err)
		}
	})
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	a := s.Analysis
	node := nodeID(t, ctx, a)

	t.Run("FromTheImage", func(t *testing.T) {
		out, err := exec.CommandContext(ctx, "podman", "inspect", "--format", "{{.ImageName}} {{.State.Running}}", a.ContainerName()).Output()
		if err != nil || strings.TrimSpace(string(out)) != image+" true" {
			t.Fatalf("podman inspect %s: %q, %v; want %s running", a.ContainerName(), out, err, image)
		}
		// The version linked in from the build arguments, over the API.
		if out, err := a.Ctl(ctx, "version"); err != nil || !strings.Contains(out, "agent:    "+imageVersion+", revision ") {
			t.Errorf("agentctl version: %q, %v; want the agent at %s", out, err, imageVersion)
		}
		// The image's own health check finds the agent ready.
		if out, err := exec.CommandContext(ctx, "podman", "healthcheck", "run", a.ContainerName()).CombinedOutput(); err != nil {
			t.Errorf("health check in the container: %v\n%s", err, out)
		}
		// The pins are on the host's bpffs, and the agent knows they outlive it.
		var st struct {
			Pins         struct{ State, Reason string } `json:"pins"`
			Acceleration string                         `json:"acceleration"`
		}
		status, err := a.Ctl(ctx, "datapath", "status", "-o", "json")
		if err == nil {
			err = json.Unmarshal([]byte(status), &st)
		}
		if err != nil || st.Pins.State != "persistent" {
			t.Errorf("datapath status: pins %+v, %v; want persistent", st.Pins, err)
		}
		// Socket acceleration attaches to the host's cgroup v2 root: the
		// container's cgroup namespace and mounts must not be what turns
		// it off (a kernel without it may).
		t.Logf("socket acceleration in the container: %s", st.Acceleration)
		if strings.Contains(st.Acceleration, "cgroup") {
			t.Errorf("socket acceleration: %s; want the host's cgroup v2 root in the container", st.Acceleration)
		}
	})
	t.Run("AppThroughService", func(t *testing.T) {
		before := inletCounters(t, ctx, a)
		testAppThroughPortal(t, ctx, s)
		if after := inletCounters(t, ctx, a); after.Steered <= before.Steered {
			t.Errorf("steered counter %d -> %d: the app's connections were not steered", before.Steered, after.Steered)
		}
	})
	// The container killed: refused, nothing in plaintext, then a new
	// container adopts the pins and carries the app.
	t.Run("ContainerKilledFailsClosed", func(t *testing.T) { testAgentKilled(t, ctx, s) })
	t.Run("NewContainerSameNode", func(t *testing.T) {
		if got := nodeID(t, ctx, a); got != node {
			t.Errorf("the new container's node is %s, the first one's %s", got, node)
		}
		testAppThroughPortal(t, ctx, s)
	})
	// Stopped gracefully (podman stop), the same: refused while down.
	t.Run("ContainerStoppedFailsClosed", func(t *testing.T) {
		if err := a.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		refused(t, ctx, s.Seed.App.NS)
		if err := a.StartAgain(ctx); err != nil {
			t.Fatal(err)
		}
		if got := nodeID(t, ctx, a); got != node {
			t.Errorf("the new container's node is %s, the first one's %s", got, node)
		}
		if got, err := s.Psql(ctx, s.Seed.App.NS, scenario.ServiceIP, scenario.ServicePort, "SELECT 1"); err != nil || got != "1" {
			t.Errorf("psql through the new container: %q, %v", got, err)
		}
	})
	t.Run("CleanupLeavesNothing", func(t *testing.T) { testCleanup(t, ctx, s) })
}

// buildImage builds the image with deploy/docker/build.sh under a tag of
// its own, removed when the test ends, and returns the tag.
func buildImage(t *testing.T, ctx context.Context) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("localhost/sluice-agent:imagetest-%d", os.Getpid())
	cmd := exec.CommandContext(ctx, filepath.Join(root, "deploy", "docker", "build.sh"), tag)
	cmd.Env = append(os.Environ(), "VERSION="+imageVersion)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Cleanup(func() {
		if out, err := exec.Command("podman", "rmi", "--force", "--ignore", tag).CombinedOutput(); err != nil {
			t.Errorf("remove image %s: %v\n%s", tag, err, out)
		}
	})
	if err != nil {
		t.Fatalf("build the image: %v\n%s", err, out)
	}
	t.Logf("image %s built in %v", tag, time.Since(start).Round(time.Second))
	return tag
}

// nodeID is the agent's node identity (agentctl status).
func nodeID(t *testing.T, ctx context.Context, a *scenario.Agent) string {
	t.Helper()
	out, err := a.Ctl(ctx, "status", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Node string `json:"node"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Node == "" {
		t.Fatalf("agentctl status: node %q, %v\n%s", st.Node, err, out)
	}
	return st.Node
}
