package loader_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/testenv"
)

// envPrivilegeChild makes TestPrivilegeChild run: the check, in a process
// whose capabilities TestWithoutPrivileges cleared.
const envPrivilegeChild = "SLUICE_LOADER_PRIVILEGE_CHILD"

// TestWithoutPrivileges: root without capabilities (setpriv clears them
// all, as a container without CAP_BPF has none of them) is told that
// privileges are missing, not that the kernel cannot run the data path,
// by the probe and by Open.
func TestWithoutPrivileges(t *testing.T) {
	testenv.RequireRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("setpriv (util-linux) is needed to run a process without capabilities")
		}
		t.Skip("setpriv (util-linux) is needed to run a process without capabilities")
	}
	pinDir := fmt.Sprintf("/sys/fs/bpf/sluice-noprivilege-%d", os.Getpid())
	t.Cleanup(func() { os.RemoveAll(pinDir) })
	cmd := exec.Command(setpriv, "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--",
		os.Args[0], "-test.run=^TestPrivilegeChild$", "-test.v")
	cmd.Env = append(os.Environ(), envPrivilegeChild+"="+pinDir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child without capabilities: %v\n%s", err, out)
	}
	for _, want := range []string{"probe: privileges", "open: privileges"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("child without capabilities lacks %q:\n%s", want, out)
		}
	}
}

// TestPrivilegeChild is TestWithoutPrivileges's child; alone it does
// nothing.
func TestPrivilegeChild(t *testing.T) {
	pinDir := os.Getenv(envPrivilegeChild)
	if pinDir == "" {
		t.Skip("run by TestWithoutPrivileges")
	}
	say := func(what string, err error) {
		switch {
		case errors.Is(err, loader.ErrNoPrivilege) && !errors.Is(err, loader.ErrNotSupported):
			fmt.Printf("%s: privileges: %v\n", what, err)
		default:
			t.Errorf("%s: %v, want ErrNoPrivilege (and not ErrNotSupported)", what, err)
		}
	}
	say("probe", loader.Missing(loader.Probe()))
	d, err := loader.Open(loader.Options{PinDir: pinDir})
	if err == nil {
		d.Close()
	}
	say("open", err)
}

// TestPrivilegeErrorMapping: an EPERM from the bpf syscall probe is a
// missing privilege; a feature the kernel lacks is not.
func TestPrivilegeErrorMapping(t *testing.T) {
	eperm := fmt.Errorf("detect support for SchedCLS: load program: %w", syscall.EPERM)
	err := loader.Missing([]loader.Feature{{Name: "bpf syscall and TC programs", Err: eperm}})
	if !errors.Is(err, loader.ErrNoPrivilege) || errors.Is(err, loader.ErrNotSupported) || !strings.Contains(err.Error(), "CAP_BPF") {
		t.Errorf("Missing(EPERM) = %v, want ErrNoPrivilege naming CAP_BPF", err)
	}
	err = loader.Missing([]loader.Feature{{Name: "helper bpf_sk_assign", Err: errors.New("not supported")}})
	if !errors.Is(err, loader.ErrNotSupported) || errors.Is(err, loader.ErrNoPrivilege) {
		t.Errorf("Missing(a helper) = %v, want ErrNotSupported", err)
	}
}
