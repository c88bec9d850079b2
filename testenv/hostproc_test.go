package testenv

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStartOnHost: a process started on the host runs in the host's network
// and mount namespaces (not a fresh /sys), is born in the env's cgroup,
// and is killed by Close with what it left behind. Namespace-only options
// are refused.
func TestStartOnHost(t *testing.T) {
	RequireRoot(t)
	t.Parallel()
	e, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := e.StartOnHost("host-sleeper", []string{"sh", "-c", "echo net=$(readlink /proc/self/ns/net) mnt=$(readlink /proc/self/ns/mnt); sleep 300 & echo child $!; echo ready; exec sleep 300"},
		ProcOptions{Env: []string{"HOSTPROC_TEST=1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitOutput(ctx, "ready"); err != nil {
		t.Fatal(err)
	}
	// This thread's namespaces, not /proc/self's: the main thread may be
	// locked inside a parallel test's namespace just now.
	runtime.LockOSThread()
	net, _ := os.Readlink("/proc/thread-self/ns/net")
	mnt, _ := os.Readlink("/proc/thread-self/ns/mnt")
	runtime.UnlockOSThread()
	if want := "net=" + net + " mnt=" + mnt; !strings.Contains(p.Output(), want) {
		t.Errorf("output %q; want the test's namespaces %q", p.Output(), want)
	}
	cg, err := e.envCgroup()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := procCgroup(p.Pid()); err != nil || got != relCgroup(t, cg) {
		t.Errorf("process cgroup = %q, %v; want the env's %q", got, err, relCgroup(t, cg))
	}
	var child int
	for _, l := range strings.Split(p.Output(), "\n") {
		if n, ok := strings.CutPrefix(l, "child "); ok {
			child, _ = strconv.Atoi(strings.TrimSpace(n))
		}
	}
	if child == 0 {
		t.Fatalf("no child pid in %q", p.Output())
	}
	for _, opts := range []ProcOptions{{User: "nobody"}, {Cgroup: cg}, {MountCgroup: true}} {
		if _, err := e.StartOnHost("refused", []string{"true"}, opts); err == nil {
			t.Errorf("StartOnHost with %+v: no error", opts)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, p.Pid())
	waitGone(t, child)
}
