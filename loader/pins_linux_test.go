package loader_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/testenv"
)

// TestPinLife: pins on the host's bpffs outlive the agent, also from a
// private mount namespace that has a copy of its mount (as under `ip netns
// exec` with --bpf-dir on it); pins on a bpffs mounted in a private mount
// namespace only do not, and Open refuses them when asked for pins that
// outlive the agent, saying how to mount the host's, before it loads or
// pins anything.
func TestPinLife(t *testing.T) {
	env := testenv.NewT(t)
	shared, err := env.BPFFS()
	if err != nil {
		t.Fatal(err)
	}
	if p := loader.PinLife(shared, false); p.State != loader.PinsPersistent {
		t.Errorf("pins on a bpffs of the host's mount namespace: %s, want persistent", p)
	}
	private := filepath.Join(env.Dir(), "private-bpffs")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	err = testenv.InPrivateMountNS(func() error {
		if p := loader.PinLife(shared, false); p.State != loader.PinsPersistent {
			return fmt.Errorf("pins on the host's bpffs, seen from a private mount namespace: %s, want persistent", p)
		}
		if err := unix.Mount("bpf", private, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount a private bpffs: %w", err)
		}
		p := loader.PinLife(private, true)
		if p.State != loader.PinsEphemeral || !strings.Contains(p.Reason, "own mount namespace") {
			return fmt.Errorf("pins on a bpffs of a private mount namespace: %s, want ephemeral, saying why", p)
		}
		pinDir := filepath.Join(private, "sluice")
		_, err := loader.Open(loader.Options{PinDir: pinDir, RequirePersistentPins: true})
		if !errors.Is(err, loader.ErrEphemeralPins) || !strings.Contains(err.Error(), "mount -t bpf bpf /sys/fs/bpf") ||
			!strings.Contains(err.Error(), "-v /sys/fs/bpf:/sys/fs/bpf") {
			return fmt.Errorf("Open on it, pins required to outlive the agent: %v; want ErrEphemeralPins saying how to mount the host's bpffs", err)
		}
		if entries, _ := os.ReadDir(filepath.Join(pinDir, "links")); len(entries) != 0 {
			return fmt.Errorf("the refused Open pinned %d links", len(entries))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The private namespace, and its bpffs, went with its thread.
	var st unix.Statfs_t
	if err := unix.Statfs(private, &st); err != nil || st.Type == unix.BPF_FS_MAGIC {
		t.Errorf("the private bpffs is visible outside its namespace (%v)", err)
	}
}
