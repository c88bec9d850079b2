package loader_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/testenv"
)

// TestIncompatiblePinKeepsBothErrors: a pinned counters map of another
// shape makes Open fail with an error that callers can match both as
// loader.ErrIncompatible and as cilium/ebpf's ErrMapIncompatible (the wrap
// keeps the kernel's error in the chain), that still says how to clean up,
// and that leaves nothing open: the pin directory's lock is free again.
func TestIncompatiblePinKeepsBothErrors(t *testing.T) {
	env := testenv.NewT(t)
	host, err := env.Namespace("host")
	if err != nil {
		t.Fatal(err)
	}
	fs, err := env.BPFFS()
	if err != nil {
		t.Fatal(err)
	}
	pinDir := filepath.Join(fs, "sluice")
	err = host.Do(func() error {
		if err := unix.Mkdir(pinDir, 0o700); err != nil {
			return err
		}
		m, err := ebpf.NewMapWithOptions(&ebpf.MapSpec{
			Name: "counters", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1, Pinning: ebpf.PinByName,
		}, ebpf.MapOptions{PinPath: pinDir})
		if err != nil {
			return err
		}
		m.Close() // the pin stays
		_, err = loader.Open(loader.Options{PinDir: pinDir})
		return err
	})
	if !errors.Is(err, loader.ErrIncompatible) || !errors.Is(err, ebpf.ErrMapIncompatible) {
		t.Fatalf("Open over a foreign counters pin: %v; want an error matching loader.ErrIncompatible and ebpf.ErrMapIncompatible", err)
	}
	if !strings.Contains(err.Error(), "load data path: ") || !strings.Contains(err.Error(), "run `agent cleanup --bpf-dir "+pinDir+"`") {
		t.Errorf("Open over a foreign counters pin: %q; want it to say how to clean up", err)
	}
	lock, err := unix.Open(pinDir, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(lock)
	if err := unix.Flock(lock, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Errorf("the failed Open still holds the pin directory's lock: %v", err)
	}
}
