package peers

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicehq/sluice/testenv"
)

// WireGuard settings: the UDP port on both company hosts and the tunnel's
// own addresses.
const (
	WGPort      = 7500
	wgAnalysis  = "10.99.0.1/24"
	wgBank      = "10.99.0.2/24"
	analysisNet = "10.10.0.0/24"
	bankNet     = "10.20.0.0/24"
)

// WireGuardBinary is the wireguard-go binary that `go install
// golang.zx2c4.com/wireguard@...` puts in bin.
const WireGuardBinary = "wireguard"

// WireGuard runs wireguard-go on both company hosts (an interface on each,
// UDP between their uplinks over the internet's bridge, a firewall hole for
// the bank's UDP port) and routes each company's container network through
// it, so that the app reaches 10.20.0.2 directly. The returned error says
// exactly why when it cannot run here.
func WireGuard(ctx context.Context, e Env, fw []Forward) (*Tunnel, error) {
	t := &Tunnel{}
	bin := filepath.Join(e.Bin, WireGuardBinary)
	if _, err := os.Stat(bin); err != nil {
		return t.fail("wireguard", fmt.Errorf("wireguard-go not installed in %s (make bench installs it): %w", e.Bin, err))
	}
	if _, err := lookPath("wg"); err != nil {
		return t.fail("wireguard", err)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return t.fail("wireguard", fmt.Errorf("no TUN device: %w", err))
	}
	dir := filepath.Join(e.Dir, "wireguard")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return t.fail("wireguard", err)
	}
	type end struct {
		role, addr, local, remote string
		endpoint                  string // where its peer reaches it
		ns                        *testenv.NS
		ifname, priv, pub         string
	}
	id := e.Seed.Env.RunID()
	ends := []*end{
		{role: "analysis", ns: e.Seed.AnalysisHost, ifname: "wg" + id + "a", addr: wgAnalysis, local: analysisNet, remote: bankNet,
			endpoint: hostPort(testenv.SeedAnalysisUp, WGPort)},
		{role: "bank", ns: e.Seed.BankHost, ifname: "wg" + id + "b", addr: wgBank, local: bankNet, remote: analysisNet,
			endpoint: hostPort(testenv.SeedBankUp, WGPort)},
	}
	for _, x := range ends {
		k, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			return t.fail("wireguard", fmt.Errorf("generate key: %w", err))
		}
		x.priv = base64.StdEncoding.EncodeToString(k.Bytes())
		x.pub = base64.StdEncoding.EncodeToString(k.PublicKey().Bytes())
	}
	if err := openBank(e, t, "udp", WGPort); err != nil {
		return t.fail("wireguard", err)
	}
	for i, x := range ends {
		peer := ends[1-i]
		p, err := x.ns.Start("wireguard-go-"+x.role, []string{bin, "-f", x.ifname}, testenv.ProcOptions{
			Env: []string{"LOG_LEVEL=error", "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1"}})
		if err != nil {
			return t.fail("wireguard", err)
		}
		t.add("wireguard-go "+x.role, p, false)
		sock := filepath.Join("/var/run/wireguard", x.ifname+".sock")
		t.onClose(func() error {
			if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove wireguard socket: %w", err)
			}
			return nil
		})
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = x.ns.WaitLink(wctx, x.ifname)
		cancel()
		if err != nil {
			return t.fail("wireguard", fmt.Errorf("%w: wireguard-go says: %s", err, strings.TrimSpace(p.OutputTail(500))))
		}
		keyFile, err := writeFile(dir, x.role+".key", x.priv+"\n", 0o600)
		if err != nil {
			return t.fail("wireguard", err)
		}
		if err := waitSocket(ctx, sock, p); err != nil {
			return t.fail("wireguard", err)
		}
		if _, err := x.ns.Run(ctx, "wg", "set", x.ifname, "private-key", keyFile, "listen-port", fmt.Sprint(WGPort),
			"peer", peer.pub, "allowed-ips", peer.local+","+strings.Split(peer.addr, "/")[0]+"/32", "endpoint", peer.endpoint); err != nil {
			return t.fail("wireguard", err)
		}
		if err := x.ns.ConfigureLink(x.ifname, x.addr); err != nil {
			return t.fail("wireguard", err)
		}
		if err := x.ns.AddDeviceRoute(x.remote, x.ifname); err != nil {
			return t.fail("wireguard", err)
		}
		t.onClose(func() error { return x.ns.DeleteRoute(x.remote) })
	}
	return t, nil
}

// waitSocket waits for wireguard-go's control socket.
func waitSocket(ctx context.Context, path string, p *testenv.Process) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w: wireguard-go says: %s", path, ctx.Err(), strings.TrimSpace(p.OutputTail(500)))
		case <-p.Exited():
			return fmt.Errorf("wireguard-go exited: %s", strings.TrimSpace(p.OutputTail(500)))
		case <-time.After(20 * time.Millisecond):
		}
	}
}
