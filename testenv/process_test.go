package testenv

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// newContainer makes a host with a bridge and one container.
func newContainer(t *testing.T, e *Env) *Container {
	t.Helper()
	host := mustNS(t, e, "host")
	must(t, e.Bridge(host, "br0", "10.31.0.1/24"))
	ct, err := e.Container(host, "br0", "ct", "10.31.0.2/24", "10.31.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

// relCgroup is a cgroup directory as /proc/PID/cgroup shows it.
func relCgroup(t *testing.T, dir string) string {
	t.Helper()
	mnt, err := cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(mnt, dir)
	if err != nil {
		t.Fatal(err)
	}
	return "/" + rel
}

func TestContainerProcess(t *testing.T) {
	RequireRoot(t)
	t.Parallel()
	e, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ct := newContainer(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A process that leaves a child behind in the background.
	p, err := ct.NS.Start("sleeper", []string{"sh", "-c", "sleep 300 & echo child $!; echo ready; exec sleep 300"}, ProcOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitOutput(ctx, "ready"); err != nil {
		t.Fatal(err)
	}
	if cg, err := procCgroup(p.Pid()); err != nil || cg != relCgroup(t, ct.Cgroup) {
		t.Errorf("process cgroup = %q, %v; want %q", cg, err, relCgroup(t, ct.Cgroup))
	}
	var child int
	for _, f := range strings.Fields(p.Output()) {
		if n, err := strconv.Atoi(f); err == nil {
			child = n
		}
	}
	if child == 0 {
		t.Fatalf("no child pid in %q", p.Output())
	}
	if cg, _ := procCgroup(child); cg != relCgroup(t, ct.Cgroup) {
		t.Errorf("child cgroup = %q", cg)
	}
	if b, err := os.ReadFile(p.LogPath()); err != nil || !strings.Contains(string(b), "ready") {
		t.Errorf("log file %s = %q, %v", p.LogPath(), b, err)
	}

	// Host processes go to the env's cgroup; users are switched.
	host := e.byName[e.NamespacePrefix()+"host"]
	who, err := host.Start("whoami", []string{"sh", "-c", "id -un; cat /proc/self/cgroup"}, ProcOptions{User: "nobody", Env: []string{"X=1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := who.Wait(); err != nil {
		t.Fatal(err)
	}
	if out := who.Output(); !strings.HasPrefix(out, "nobody\n") || !strings.Contains(out, "0::"+relCgroup(t, e.envCg)+"\n") {
		t.Errorf("output as nobody = %q, want nobody in %s", out, e.envCg)
	}
	if err := who.WaitOutput(ctx, "never printed"); err == nil || !strings.Contains(err.Error(), "nobody") {
		t.Errorf("WaitOutput on an exited process = %v, want an error with the output", err)
	}
	if _, err := host.Start("x", []string{"true"}, ProcOptions{Cgroup: "/sys/fs/cgroup"}); err == nil {
		t.Error("a process was started in a cgroup that is not the env's")
	}
	if out, err := host.Run(ctx, "sh", "-c", "echo oops-output; exit 3"); err == nil || !strings.Contains(err.Error(), "oops-output") {
		t.Errorf("Run of a failing command = %q, %v", out, err)
	}

	// Close kills the process and the child it left behind.
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, p.Pid())
	waitGone(t, child)
	if err := p.Wait(); err == nil {
		t.Error("killed process exited with status 0")
	}
}

func TestProcessStop(t *testing.T) {
	t.Parallel()
	e := NewT(t)
	ns := mustNS(t, e, "h")
	p, err := ns.Start("trap", []string{"sh", "-c", "trap 'echo bye; exit 0' TERM; echo up; while :; do sleep 0.05; done"}, ProcOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	must(t, p.WaitOutput(ctx, "up"))
	start := time.Now()
	must(t, p.Stop())
	if d := time.Since(start); d > 3*time.Second || !strings.Contains(p.Output(), "bye") {
		t.Errorf("Stop took %v, output %q", d, p.Output())
	}
	must(t, p.Stop()) // again: nothing to do
	must(t, p.Kill())
}

// TestMountCgroup checks that a process started with MountCgroup sees the
// container's cgroup directory at the path the caller sees it, and one
// started without does not (ip netns exec remounts /sys).
func TestMountCgroup(t *testing.T) {
	RequireRoot(t)
	t.Parallel()
	e, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ct := newContainer(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	procs := filepath.Join(ct.Cgroup, "cgroup.procs")
	out, err := ct.NS.RunOpts(ctx, []string{"cat", procs}, ProcOptions{MountCgroup: true})
	if err != nil || len(strings.Fields(string(out))) != 1 {
		t.Errorf("with MountCgroup, %s = %q, %v; want the process itself", procs, out, err)
	}
	if mnt, _ := cgroup2Mount(); strings.HasPrefix(mnt, "/sys/") {
		if out, err := ct.NS.Run(ctx, "cat", procs); err == nil {
			t.Errorf("without MountCgroup, %s = %q; want it hidden by ip netns exec", procs, out)
		}
	}
}
