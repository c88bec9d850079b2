package peers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicehq/sluice/testenv"
)

// Socat starts socat at both ends of each forward: on the analysis host
// listening on 10.10.0.1:PORT and dialing the forwarder, on the bank host
// listening on its uplink and dialing the target (a child per connection).
func Socat(ctx context.Context, e Env, fw []Forward) (*Tunnel, error) {
	t := &Tunnel{}
	if err := openBank(e, t, "tcp", ports(fw)...); err != nil {
		return t.fail("socat", err)
	}
	if err := startForwarder(e, t, ports(fw)...); err != nil {
		return t.fail("socat", err)
	}
	for _, f := range fw {
		server, err := e.Seed.BankHost.Start("socat-server", []string{"socat",
			fmt.Sprintf("TCP-LISTEN:%d,bind=%s,fork,reuseaddr,backlog=1024", f.Port, testenv.SeedBankUp),
			"TCP:" + f.Target + ",nodelay"}, testenv.ProcOptions{})
		if err != nil {
			return t.fail("socat", err)
		}
		t.add("socat server", server, true)
		client, err := e.Seed.AnalysisHost.Start("socat-client", []string{"socat",
			fmt.Sprintf("TCP-LISTEN:%d,bind=%s,fork,reuseaddr,backlog=1024", f.Port, ClientAddr),
			"TCP:" + hostPort(testenv.SeedHubAddr, f.Port) + ",nodelay"}, testenv.ProcOptions{})
		if err != nil {
			return t.fail("socat", err)
		}
		t.add("socat client", client, true)
	}
	t.All = append([]Proc(nil), t.Procs...)
	t.Procs = mergeProcs(t.Procs)
	return t, nil
}

// mergeProcs keeps the first process of each name: the harness measures the
// ones that carry the bench port, which come first.
func mergeProcs(ps []Proc) []Proc {
	seen := map[string]bool{}
	var out []Proc
	for _, p := range ps {
		if !seen[p.Name] {
			seen[p.Name] = true
			out = append(out, p)
		}
	}
	return out
}

// stunnelService is one [service] section.
const stunnelService = `
[fw%[1]d]
accept = %[2]s
connect = %[3]s
cert = %[4]s
key = %[5]s
CAfile = %[6]s
verifyChain = yes
sslVersionMin = TLSv1.3
sslVersionMax = TLSv1.3
`

// Stunnel starts stunnel (TLS 1.3, mutual authentication with certificates
// from a CA the harness made) at both ends, through the forwarder.
func Stunnel(ctx context.Context, e Env, fw []Forward) (*Tunnel, error) {
	t := &Tunnel{}
	dir := filepath.Join(e.Dir, "stunnel")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return t.fail("stunnel", err)
	}
	pki, err := NewPKI(dir, []string{testenv.SeedBankUp, testenv.SeedHubAddr})
	if err != nil {
		return t.fail("stunnel", err)
	}
	head := "foreground = yes\npid =\nsyslog = no\ndebug = warning\n"
	client, server := head, head
	for _, f := range fw {
		client += fmt.Sprintf(stunnelService, f.Port, hostPort(ClientAddr, f.Port),
			hostPort(testenv.SeedHubAddr, f.Port), pki.ClientCert, pki.ClientKey, pki.CA) + "client = yes\n"
		server += fmt.Sprintf(stunnelService, f.Port, hostPort(testenv.SeedBankUp, f.Port), f.Target,
			pki.ServerCert, pki.ServerKey, pki.CA) + "requireCert = yes\n"
	}
	clientConf, err := writeFile(dir, "client.conf", client, 0o600)
	if err != nil {
		return t.fail("stunnel", err)
	}
	serverConf, err := writeFile(dir, "server.conf", server, 0o600)
	if err != nil {
		return t.fail("stunnel", err)
	}
	bin, err := lookPath("stunnel4", "stunnel")
	if err != nil {
		return t.fail("stunnel", err)
	}
	if err := openBank(e, t, "tcp", ports(fw)...); err != nil {
		return t.fail("stunnel", err)
	}
	if err := startForwarder(e, t, ports(fw)...); err != nil {
		return t.fail("stunnel", err)
	}
	sp, err := e.Seed.BankHost.Start("stunnel-server", []string{bin, serverConf}, testenv.ProcOptions{})
	if err != nil {
		return t.fail("stunnel", err)
	}
	t.add("stunnel server", sp, false)
	cp, err := e.Seed.AnalysisHost.Start("stunnel-client", []string{bin, clientConf}, testenv.ProcOptions{})
	if err != nil {
		return t.fail("stunnel", err)
	}
	t.add("stunnel client", cp, false)
	return t, nil
}

// sshdConfig is a private sshd configuration: key authentication only.
const sshdConfig = `Port %[1]d
ListenAddress %[2]s
HostKey %[3]s/host_key
PidFile %[3]s/sshd.pid
AuthorizedKeysFile %[3]s/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding local
X11Forwarding no
PermitTTY no
LogLevel ERROR
`

// SSHPort is where sshd listens on the bank host (and the forwarder on the
// internet).
const SSHPort = 7422

// SSH starts sshd on the bank host (host and client keys made here, a
// private sshd_config) and `ssh -N -L` on the analysis host, through the
// forwarder; one ssh connection carries every forward.
func SSH(ctx context.Context, e Env, fw []Forward) (*Tunnel, error) {
	t := &Tunnel{}
	dir := filepath.Join(e.Dir, "ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return t.fail("ssh", err)
	}
	sshd, err := lookPath("sshd")
	if err != nil {
		return t.fail("ssh", err)
	}
	for _, k := range []string{"host_key", "client_key"} {
		if out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench-"+k, "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			return t.fail("ssh", fmt.Errorf("generate %s: %w: %s", k, err, out))
		}
	}
	clientPub, err := os.ReadFile(filepath.Join(dir, "client_key.pub"))
	if err != nil {
		return t.fail("ssh", err)
	}
	hostPub, err := os.ReadFile(filepath.Join(dir, "host_key.pub"))
	if err != nil {
		return t.fail("ssh", err)
	}
	if _, err := writeFile(dir, "authorized_keys", string(clientPub), 0o600); err != nil {
		return t.fail("ssh", err)
	}
	known := fmt.Sprintf("[%s]:%d %s", testenv.SeedHubAddr, SSHPort, hostPub)
	if _, err := writeFile(dir, "known_hosts", known, 0o600); err != nil {
		return t.fail("ssh", err)
	}
	conf, err := writeFile(dir, "sshd_config", fmt.Sprintf(sshdConfig, SSHPort, testenv.SeedBankUp, dir), 0o600)
	if err != nil {
		return t.fail("ssh", err)
	}
	// sshd wants its privilege separation directory; Debian's service
	// makes it, and we are not the service.
	if _, err := os.Stat("/run/sshd"); errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir("/run/sshd", 0o755); err != nil {
			return t.fail("ssh", err)
		}
		t.onClose(func() error { return os.Remove("/run/sshd") })
	}
	if err := openBank(e, t, "tcp", SSHPort); err != nil {
		return t.fail("ssh", err)
	}
	if err := startForwarder(e, t, SSHPort); err != nil {
		return t.fail("ssh", err)
	}
	sp, err := e.Seed.BankHost.Start("sshd", []string{sshd, "-D", "-e", "-f", conf}, testenv.ProcOptions{})
	if err != nil {
		return t.fail("ssh", err)
	}
	t.add("sshd", sp, true)
	if err := waitListening(ctx, e.Seed.BankHost, hostPort(testenv.SeedBankUp, SSHPort)); err != nil {
		return t.fail("ssh", err)
	}
	args := []string{"ssh", "-N", "-F", "/dev/null", "-i", filepath.Join(dir, "client_key"),
		"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + filepath.Join(dir, "known_hosts"), "-o", "ExitOnForwardFailure=yes",
		"-p", fmt.Sprint(SSHPort)}
	for _, f := range fw {
		args = append(args, "-L", fmt.Sprintf("%s:%d:%s", ClientAddr, f.Port, f.Target))
	}
	args = append(args, "root@"+testenv.SeedHubAddr)
	cp, err := e.Seed.AnalysisHost.Start("ssh-client", args, testenv.ProcOptions{})
	if err != nil {
		return t.fail("ssh", err)
	}
	t.add("ssh client", cp, false)
	return t, nil
}

// waitListening waits until something accepts on addr from ns.
func waitListening(ctx context.Context, ns *testenv.NS, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		c, err := ns.DialTCP(ctx, addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// lookPath finds the first of names in PATH or the sbin directories.
func lookPath(names ...string) (string, error) {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
		for _, d := range []string{"/usr/sbin", "/sbin"} {
			if _, err := os.Stat(filepath.Join(d, n)); err == nil {
				return filepath.Join(d, n), nil
			}
		}
	}
	return "", fmt.Errorf("find %s: not installed (make bench installs it)", strings.Join(names, " or "))
}
