package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// leftovers lists what exists of run id: namespaces, /etc/netns dirs, the
// cgroup directory and the owner file.
func leftovers(t *testing.T, id string) []string {
	t.Helper()
	prefix := nsPrefix + id + "-"
	var left []string
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, prefix) {
			left = append(left, "netns "+line)
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(etcNetnsDir, prefix+"*"))
	left = append(left, dirs...)
	mnt, err := cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(mnt, cgroupBase, id), filepath.Join(ownerDir, id)} {
		if _, err := os.Stat(p); err == nil {
			left = append(left, p)
		}
	}
	return left
}

func TestCloseLeavesNothing(t *testing.T) {
	RequireRoot(t)
	e, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ct := newContainer(t, e)
	other := mustNS(t, e, "other")
	must(t, e.Veth(other, "eth0", "10.32.0.1/24", ct.NS, "eth1", "10.32.0.2/24"))
	must(t, other.SetHosts(map[string]string{"x": "10.32.0.2"}))
	must(t, e.Firewall(other, "eth0"))
	p, err := ct.NS.Start("sleep", []string{"sleep", "300"}, ProcOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ct.NS.Capture("eth0", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := other.ListenTCP("10.32.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(t, e.RunID()); len(left) < 5 {
		t.Fatalf("before Close, only %v exist", left)
	}
	dir := e.Dir()

	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(t, e.RunID()); len(left) > 0 {
		t.Errorf("left after Close: %v", left)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("env dir %s still there: %v", dir, err)
	}
	waitGone(t, p.Pid())
	if err := e.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, err := e.Namespace("late"); !errors.Is(err, ErrClosed) {
		t.Errorf("Namespace after Close = %v, want ErrClosed", err)
	}
	if left := leftovers(t, e.RunID()); len(left) > 0 {
		t.Errorf("left after a late Namespace: %v", left)
	}
}

func TestKeepDir(t *testing.T) {
	RequireRoot(t)
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "given")
	e, err := New(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if e.Dir() != dir {
		t.Errorf("Dir = %s, want %s", e.Dir(), dir)
	}
	must(t, e.Close())
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("a given Dir was removed: %v", err)
	}
}

// TestReap builds the remains of a run whose owner died, with a process
// still running in its cgroup, and of a run whose Close died before it
// removed the cgroup directory, and checks that Reap removes both but
// leaves a live run alone.
func TestReap(t *testing.T) {
	RequireRoot(t)
	mnt, err := cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(mnt, cgroupBase)
	must(t, os.MkdirAll(base, 0o755))
	must(t, os.MkdirAll(ownerDir, 0o755))
	stale, orphan, live := freeRunID(t), freeRunID(t), freeRunID(t)

	// The dead owner: a process that has exited.
	dead := exec.Command("true")
	must(t, dead.Run())
	ns, err := newNamed(nsPrefix + stale + "-x")
	if err != nil {
		t.Fatal(err)
	}
	ns.Close()
	must(t, os.MkdirAll(filepath.Join(etcNetnsDir, nsPrefix+stale+"-x"), 0o755))
	writeOwnerFile(t, stale, ownerRecord{Pid: dead.Process.Pid, Start: 1})
	must(t, os.MkdirAll(filepath.Join(base, stale, "ct-x"), 0o755))
	sleeper := startIn(t, filepath.Join(base, stale, "ct-x"))

	must(t, os.MkdirAll(filepath.Join(base, orphan, "env"), 0o755))

	start, err := procStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	writeOwnerFile(t, live, ownerRecord{Pid: os.Getpid(), Start: start})
	must(t, os.Mkdir(filepath.Join(base, live), 0o755))
	defer func() {
		os.Remove(filepath.Join(base, live))
		os.Remove(filepath.Join(ownerDir, live))
	}()

	if err := Reap(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{stale, orphan} {
		if left := leftovers(t, id); len(left) > 0 {
			t.Errorf("run %s: left after Reap: %v", id, left)
		}
	}
	if left := leftovers(t, live); len(left) != 2 {
		t.Errorf("live run %s: Reap left only %v", live, left)
	}
	select {
	case <-sleeper:
	case <-time.After(5 * time.Second):
		t.Error("the stale run's process still runs")
	}
}

func freeRunID(t *testing.T) string {
	t.Helper()
	for {
		var b [runIDLen / 2]byte
		rand.Read(b[:])
		id := hex.EncodeToString(b[:])
		if _, err := os.Stat(filepath.Join(ownerDir, id)); errors.Is(err, os.ErrNotExist) {
			return id
		}
	}
}

func writeOwnerFile(t *testing.T, id string, rec ownerRecord) {
	t.Helper()
	f, err := os.Create(filepath.Join(ownerDir, id))
	if err != nil {
		t.Fatal(err)
	}
	must(t, errors.Join(writeOwner(f, rec), f.Close()))
}

// startIn starts `sleep 300` born in cgroup dir; the channel closes when it
// has exited.
func startIn(t *testing.T, dir string) <-chan struct{} {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	cmd := exec.Command("sleep", "300")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	must(t, cmd.Start())
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	return done
}
