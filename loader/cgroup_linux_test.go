package loader_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/testenv"
)

// TestCgroupVeths resolves containers' cgroups to their host-side veths,
// as the kernel sees them from the host namespace.
func TestCgroupVeths(t *testing.T) {
	host, app, other, _ := bridgeHost(t, loader.Options{})
	resolve := func(dir string) ([]int, error) {
		var got []int
		err := host.Do(func() error {
			var err error
			got, err = loader.CgroupVeths(dir)
			return err
		})
		return got, err
	}
	var appVeth int
	if err := host.Do(func() error {
		ifi, err := net.InterfaceByName(app.Veth)
		if err == nil {
			appVeth = ifi.Index
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}

	t.Run("empty cgroup: none", func(t *testing.T) {
		if got, err := resolve(other.Cgroup); err != nil || len(got) != 0 {
			t.Errorf("CgroupVeths(empty) = %v, %v; want none", got, err)
		}
	})
	t.Run("missing cgroup: ErrNoCgroup", func(t *testing.T) {
		got, err := resolve(filepath.Join(other.Cgroup, "missing"))
		if !errors.Is(err, loader.ErrNoCgroup) || len(got) != 0 {
			t.Errorf("CgroupVeths(missing) = %v, %v; want ErrNoCgroup", got, err)
		}
	})

	// Two processes in the app container's cgroup share its namespace.
	for _, name := range []string{"sleep-1", "sleep-2"} {
		if _, err := app.NS.Start(name, []string{"sleep", "300"}, testenv.ProcOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("container's process: its host-side veth", func(t *testing.T) {
		want := []int{appVeth}
		got, err := waitVeths(resolve, app.Cgroup, want)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("CgroupVeths(app) = %v, %v; want %v (%s)", got, err, want, app.Veth)
		}
	})
	t.Run("from another namespace than the peer's: none", func(t *testing.T) {
		if got, err := loader.CgroupVeths(app.Cgroup); err != nil || len(got) != 0 {
			t.Errorf("CgroupVeths(app) outside host = %v, %v; want none", got, err)
		}
	})
	t.Run("process in the host namespace: none", func(t *testing.T) {
		if _, err := host.Start("host-sleep", []string{"sleep", "300"}, testenv.ProcOptions{Cgroup: other.Cgroup}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // past ip netns exec's setns
		if got, err := resolve(other.Cgroup); err != nil || len(got) != 0 {
			t.Errorf("CgroupVeths(host process) = %v, %v; want none", got, err)
		}
	})
}

// waitVeths resolves dir until it gives want or 5s pass: a process started
// with `ip netns exec` is briefly in the caller's namespace.
func waitVeths(resolve func(string) ([]int, error), dir string, want []int) ([]int, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := resolve(dir)
		if (err == nil && slices.Equal(got, want)) || time.Now().After(deadline) {
			return got, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestContainerVeths finds each container's address behind its host-side
// veth from the container's own configuration, a second address added
// inside a container included, and nothing of another host's containers.
func TestContainerVeths(t *testing.T) {
	host, app, other, _ := bridgeHost(t, loader.Options{})
	if _, err := other.NS.Run(context.Background(), "ip", "addr", "add", "10.10.0.2/32", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	var got []loader.ContainerVeth
	if err := host.Do(func() (err error) { got, err = loader.ContainerVeths(); return err }); err != nil {
		t.Fatal(err)
	}
	want := map[string][]netip.Addr{
		app.Veth:   {netip.MustParseAddr("10.10.0.2")},
		other.Veth: {netip.MustParseAddr("10.10.0.2"), netip.MustParseAddr("10.10.0.3")},
	}
	for _, cv := range got {
		w, ok := want[cv.Name]
		if !ok {
			t.Errorf("ContainerVeths lists %+v, not a veth of this host", cv)
			continue
		}
		if !slices.Equal(cv.Addrs, w) {
			t.Errorf("%s: addresses %v, want %v", cv.Name, cv.Addrs, w)
		}
		delete(want, cv.Name)
	}
	if len(want) != 0 {
		t.Errorf("ContainerVeths = %+v; missing %v", got, want)
	}
	// Outside the host namespace, its containers' veths are not ours.
	mine, err := loader.ContainerVeths()
	if err != nil {
		t.Fatal(err)
	}
	for _, cv := range mine {
		if cv.Name == app.Veth || cv.Name == other.Veth {
			t.Errorf("from another namespace, ContainerVeths lists %+v", cv)
		}
	}
	var addrs []netip.Addr
	if err := host.Do(func() (err error) { addrs, err = loader.HostAddrs(); return err }); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(addrs, netip.MustParseAddr("10.10.0.1")) || slices.Contains(addrs, netip.MustParseAddr("10.10.0.2")) {
		t.Errorf("HostAddrs = %v, want the bridge's 10.10.0.1 and no container's", addrs)
	}
}
