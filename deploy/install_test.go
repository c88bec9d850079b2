package deploy_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstallVerify: `make install` into a temporary PREFIX (and CONFDIR)
// puts the binaries, the units (ExecStart and the configuration paths
// rewritten to the PREFIX) and the example configuration in place;
// `systemd-analyze verify` finds nothing to say about any unit (it checks
// every directive and that ExecStart's binary exists); a second install
// keeps a configuration the operator changed; `make uninstall` removes
// the rest and keeps that configuration.
func TestInstallVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze (Debian's systemd package, .ci/install-deps) is needed")
		}
		t.Skip("systemd-analyze (Debian's systemd package) is needed")
	}
	prefix := t.TempDir()
	conf := filepath.Join(prefix, "etc/sluice")
	make := func(target string) string {
		t.Helper()
		cmd := exec.Command("make", "-C", "..", "-s", target, "PREFIX="+prefix, "CONFDIR="+conf, "BIN="+filepath.Join(prefix, "build"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
		return string(out)
	}
	make("install")
	units, _ := filepath.Glob("systemd/*.service")
	if len(units) < 3 {
		t.Fatalf("units: %v", units)
	}
	for _, u := range units {
		installed := filepath.Join(prefix, "lib/systemd/system", filepath.Base(u))
		data, err := os.ReadFile(installed)
		if err != nil {
			t.Fatal(err)
		}
		rest := strings.ReplaceAll(strings.ReplaceAll(string(data), conf+"/", ""), prefix+"/bin/", "")
		if strings.Contains(rest, "/usr/local/bin/") || strings.Contains(rest, "/etc/sluice/") {
			t.Errorf("%s still names /usr/local/bin or /etc/sluice", installed)
		}
		cmd := exec.Command(analyze, "verify", installed)
		cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice")
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", filepath.Base(u), err, out)
		}
	}
	for _, f := range []string{"bin/agent", "bin/agentctl", "etc/sluice/agent.yaml"} {
		if _, err := os.Stat(filepath.Join(prefix, f)); err != nil {
			t.Errorf("make install: %v", err)
		}
	}
	cfg := filepath.Join(conf, "agent.yaml")
	if err := os.WriteFile(cfg, []byte("datapath: off\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := make("install"); !strings.Contains(out, "kept") {
		t.Errorf("a second make install does not say it kept the configuration:\n%s", out)
	}
	if b, _ := os.ReadFile(cfg); string(b) != "datapath: off\n" {
		t.Errorf("make install overwrote the configuration: %q", b)
	}
	make("uninstall")
	for _, f := range []string{"bin/agent", "bin/agentctl", "lib/systemd/system/sluice-agent.service", "lib/systemd/system/sluice-hub.service", "lib/systemd/system/sluice-authority.service"} {
		if _, err := os.Stat(filepath.Join(prefix, f)); err == nil {
			t.Errorf("make uninstall left %s", f)
		}
	}
	if _, err := os.Stat(cfg); err != nil {
		t.Errorf("make uninstall removed the changed configuration: %v", err)
	}
}
