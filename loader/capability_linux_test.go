package loader_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/testenv"
)

// envCapabilityChild makes TestCapabilityChild run: "open PINDIR" or
// "veths".
const envCapabilityChild = "SLUICE_LOADER_CAPABILITY_CHILD"

// TestCapabilities: root with loader.Capabilities (as the agent's systemd
// unit and DaemonSet run it) opens the data path and lists the
// containers' addresses; with one of them left out, the error names the
// one missing and matches ErrNoPrivilege. (Without CAP_SYS_PTRACE the
// namespaces of processes holding capabilities the agent lacks cannot be
// opened and are skipped, as those of processes that ended are: nothing
// fails, docs/deploy.md says what is missed.) Each child runs in a network
// namespace of its own (Open installs a route and a rule there).
func TestCapabilities(t *testing.T) {
	testenv.RequireRoot(t)
	unshare, err1 := exec.LookPath("unshare")
	setpriv, err2 := exec.LookPath("setpriv")
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("unshare and setpriv (util-linux) are needed: %v", err)
	}
	pinDir := fmt.Sprintf("/sys/fs/bpf/sluice-capabilities-%d", os.Getpid())
	t.Cleanup(func() { os.RemoveAll(pinDir) })
	for _, tc := range []struct {
		drop, call, want string
	}{
		{"", "open " + pinDir, "result: ok"},
		{"", "veths", "result: ok"},
		{"CAP_NET_ADMIN", "open " + pinDir, "operation not permitted (CAP_NET_ADMIN is missing)"},
		{"CAP_SYS_ADMIN", "veths", "operation not permitted (CAP_SYS_ADMIN is missing)"},
	} {
		t.Run(strings.TrimPrefix(tc.drop+"-"+strings.Fields(tc.call)[0], "-"), func(t *testing.T) {
			bound := "-all"
			for _, c := range loader.Capabilities {
				if c != tc.drop {
					bound += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
				}
			}
			cmd := exec.Command(unshare, "--net", "--", setpriv, "--bounding-set="+bound, "--inh-caps=-all", "--ambient-caps=-all", "--",
				os.Args[0], "-test.run=^TestCapabilityChild$", "-test.v")
			cmd.Env = append(os.Environ(), envCapabilityChild+"="+tc.call)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("without %s, %s: want %q in\n%s", tc.drop, tc.call, tc.want, out)
			}
		})
	}
}

// TestCapabilityChild is TestCapabilities's child; alone it does nothing.
func TestCapabilityChild(t *testing.T) {
	call := strings.Fields(os.Getenv(envCapabilityChild))
	if len(call) == 0 {
		t.Skip("run by TestCapabilities")
	}
	var err error
	switch call[0] {
	case "open":
		var d *loader.Datapath
		if d, err = loader.Open(loader.Options{PinDir: call[1]}); err == nil {
			d.Close()
		}
	case "veths":
		_, err = loader.ContainerVeths()
	}
	switch {
	case err == nil:
		fmt.Println("result: ok")
	case errors.Is(err, loader.ErrNoPrivilege):
		fmt.Printf("result: %v\n", err)
	default:
		t.Errorf("%s: %v, want nil or ErrNoPrivilege", call[0], err)
	}
}
