package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseMounts(t *testing.T) {
	const mountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:33 / /sys/fs/bpf rw,nosuid shared:14 - bpf bpf rw,mode=700
41 22 0:34 / /tmp/a\040b/bpffs rw - bpf bpf rw,mode=700
42 22 0:35 / /tmp/x rw - tmpfs tmpfs rw
garbage line
`
	got, err := parseMounts(strings.NewReader(mountinfo), "bpf")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/sys/fs/bpf", "/tmp/a b/bpffs"}; !reflect.DeepEqual(got, want) {
		t.Errorf("parseMounts = %q, want %q", got, want)
	}
}

func TestBPFFSToReap(t *testing.T) {
	mounts := []string{"/sys/fs/bpf", "/tmp/sluice-testenv-abc123-1/bpffs", "/tmp/sluice-testenv-abc123-10/bpffs", "/data/run/bpffs"}
	for _, tc := range []struct {
		name string
		rec  ownerRecord
		want []string
	}{
		{"nothing recorded", ownerRecord{}, nil},
		{"temporary dir", ownerRecord{Dir: "/tmp/sluice-testenv-abc123-1"}, []string{"/tmp/sluice-testenv-abc123-1/bpffs"}},
		{"recorded mount", ownerRecord{BPFFS: "/data/run/bpffs/"}, []string{"/data/run/bpffs"}},
		{"both", ownerRecord{Dir: "/tmp/sluice-testenv-abc123-1", BPFFS: "/tmp/sluice-testenv-abc123-1/bpffs"}, []string{"/tmp/sluice-testenv-abc123-1/bpffs"}},
		{"never the host's", ownerRecord{Dir: "/sys/fs", BPFFS: "/sys/fs/bpff"}, []string{"/sys/fs/bpf"}[:0]},
	} {
		got := bpffsToReap(&tc.rec, mounts)
		if len(got) != len(tc.want) || (len(got) > 0 && !reflect.DeepEqual(got, tc.want)) {
			t.Errorf("%s: bpffsToReap = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func isBPFMount(t *testing.T, dir string) bool {
	t.Helper()
	mounts, err := bpfMounts()
	if err != nil {
		t.Fatal(err)
	}
	return containsString(mounts, dir)
}

// TestBPFFS checks that the env's bpffs is one filesystem shared with
// processes started in its namespaces, and that Close unmounts it.
func TestBPFFS(t *testing.T) {
	RequireRoot(t)
	e, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	dir, err := e.BPFFS()
	if err != nil {
		t.Fatal(err)
	}
	if again, err := e.BPFFS(); err != nil || again != dir {
		t.Errorf("second BPFFS = %q, %v; want %q", again, err, dir)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
		t.Fatalf("%s is not a bpffs (%v)", dir, err)
	}
	rec, err := readOwner(filepath.Join(ownerDir, e.RunID()))
	if err != nil || rec.BPFFS != dir {
		t.Errorf("owner record %+v (%v) does not name %s", rec, err, dir)
	}
	// A directory made here shows inside `ip netns exec`, and the other way.
	must(t, os.Mkdir(filepath.Join(dir, "fromtest"), 0o700))
	ns := mustNS(t, e, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := ns.Run(ctx, "sh", "-c", "stat -f -c %T "+dir+" && ls "+dir+" && mkdir "+dir+"/fromns")
	if err != nil || !strings.Contains(string(out), "bpf") || !strings.Contains(string(out), "fromtest") {
		t.Errorf("inside the namespace: %q, %v", out, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "fromns")); err != nil {
		t.Errorf("a directory made inside the namespace is not seen outside: %v", err)
	}
	must(t, e.Close())
	if isBPFMount(t, dir) {
		t.Errorf("%s still mounted after Close", dir)
	}
	if _, err := e.BPFFS(); err == nil {
		t.Error("BPFFS after Close succeeded")
	}
}

// TestReapBPFFS checks that Reap unmounts the bpffs of a dead run.
func TestReapBPFFS(t *testing.T) {
	RequireRoot(t)
	must(t, os.MkdirAll(ownerDir, 0o755))
	id := freeRunID(t)
	tmp, err := os.MkdirTemp("", "sluice-testenv-"+id+"-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, bpffsDirName)
	must(t, os.Mkdir(dir, 0o700))
	must(t, unix.Mount("bpf", dir, "bpf", 0, "mode=0700"))
	defer unix.Unmount(dir, unix.MNT_DETACH)
	must(t, os.Mkdir(filepath.Join(dir, "agent"), 0o700))
	writeOwnerFile(t, id, ownerRecord{Pid: 0, Dir: tmp, BPFFS: dir})
	if err := Reap(); err != nil {
		t.Fatal(err)
	}
	if isBPFMount(t, dir) {
		t.Errorf("%s still mounted after Reap", dir)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("the dead run's directory is still there: %v", err)
	}
	if left := leftovers(t, id); len(left) > 0 {
		t.Errorf("left after Reap: %v", left)
	}
}

// TestTCXProgramsNone checks the TCX query on a fresh veth and a missing link.
func TestTCXProgramsNone(t *testing.T) {
	RequireRoot(t)
	e := NewT(t)
	a, b := mustNS(t, e, "a"), mustNS(t, e, "b")
	must(t, e.Veth(a, "eth0", "", b, "eth0", ""))
	in, eg, err := a.TCXPrograms("eth0")
	if err != nil || in != 0 || eg != 0 {
		t.Errorf("TCXPrograms(eth0) = %d, %d, %v; want 0, 0, nil", in, eg, err)
	}
	if _, _, err := a.TCXPrograms("nosuch0"); err == nil {
		t.Error("TCXPrograms of a missing link succeeded")
	}
}

// TestSeedAddContainer checks that a second container on analysis_corp
// reaches the first one and resolves "sluice".
func TestSeedAddContainer(t *testing.T) {
	e := NewT(t)
	s, err := NewSeed(e)
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.AddContainer(s.AnalysisHost, "other", "10.10.0.3")
	if err != nil {
		t.Fatal(err)
	}
	if other.Addr != "10.10.0.3" || other.Veth == s.App.Veth || other.Cgroup == "" {
		t.Errorf("container %+v", other)
	}
	addr := listen(t, s.App.NS, SeedAppAddr+":7000")
	if got := whoAmI(t, other.NS, addr); got != "10.10.0.3" {
		t.Errorf("the app saw %q, want 10.10.0.3", got)
	}
	if got := other.NS.resolve("sluice:1"); got != SeedAnalysisGW+":1" {
		t.Errorf("sluice resolves to %q in the new container", got)
	}
	if _, err := s.AddContainer(s.Internet, "x", "10.30.0.2"); err == nil {
		t.Error("AddContainer on the internet succeeded")
	}
}

// TestBPFMountsOfThisThread: bpfMounts reads the calling thread's mount
// namespace, not the thread group leader's: a bpffs mounted in a private
// namespace is listed there, and not outside it. (Reading /proc/self, a
// loader test that left the main thread in a private namespace made a
// later test's Close miss its bpffs: "remove bpffs dir: device or resource
// busy".)
func TestBPFMountsOfThisThread(t *testing.T) {
	RequireRoot(t)
	dir := t.TempDir()
	err := InPrivateMountNS(func() error {
		if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
			return err
		}
		mounts, err := bpfMounts()
		if err != nil {
			return err
		}
		if !slices.Contains(mounts, dir) {
			return fmt.Errorf("bpfMounts in the namespace that mounted %s: %q", dir, mounts)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mounts, err := bpfMounts()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(mounts, dir) {
		t.Errorf("bpfMounts outside the private namespace lists its bpffs %s", dir)
	}
}
