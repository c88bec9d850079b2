// Package peers sets up the tools a user would pick instead of Sluice
// (socat, stunnel, ssh -L, WireGuard) in the seed topology, placed where a
// user would place them: the tunnel's client end on the analysis host
// listening on 10.10.0.1 for the app, its server end on the bank host
// dialing the service container, and a plain TCP forwarder in the hub's
// position on the internet, so that every tunnel crosses the same hops as
// Sluice. Namespaces, links, routes and firewall holes come from testenv.
package peers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/agent/pipe"
	"github.com/sluicehq/sluice/bench/load"
	"github.com/sluicehq/sluice/testenv"
)

// Proc is a process on a path whose CPU the harness measures.
type Proc struct {
	Name string // such as "stunnel client"
	Pid  int
	// Tree: the process forks a child per connection (socat, sshd); count
	// its descendants too.
	Tree bool
}

// Forward is one port a tunnel carries: the app dials ClientAddr():Port and
// reaches Target.
type Forward struct {
	Port   int    // the port of the tunnel's client end (and of the forwarder and the server end)
	Target string // where the server end dials, such as 10.20.0.2:5201
}

// Env is what every peer needs.
type Env struct {
	Seed *testenv.Seed
	Self string // the bench binary, for the forwarder subcommand
	Dir  string // where configurations and keys go
	Bin  string // the repository's bin directory (wireguard-go)
}

// Tunnel is a running peer; Close stops it and closes its firewall holes.
type Tunnel struct {
	Procs []Proc
	// All is every process of the tunnel where Procs keeps one of each
	// name (socat: a pair per forwarded port, Procs those of the bench
	// port); nil if Procs is all of them.
	All     []Proc
	closers []func() error
}

func (t *Tunnel) onClose(f func() error) { t.closers = append(t.closers, f) }

func (t *Tunnel) add(name string, p *testenv.Process, tree bool) {
	t.Procs = append(t.Procs, Proc{Name: name, Pid: p.Pid(), Tree: tree})
	t.onClose(p.Stop)
}

// Close stops the tunnel's processes and undoes its openings, last first.
func (t *Tunnel) Close() error {
	var errs []error
	for i := len(t.closers) - 1; i >= 0; i-- {
		errs = append(errs, t.closers[i]())
	}
	t.closers = nil
	return errors.Join(errs...)
}

// ClientAddr is where a tunnel's client end listens for the app.
const ClientAddr = testenv.SeedAnalysisGW

// fail closes what was opened and returns err wrapped.
func (t *Tunnel) fail(what string, err error) (*Tunnel, error) {
	return nil, errors.Join(fmt.Errorf("start %s: %w", what, err), t.Close())
}

// startForwarder starts the bench binary's forwarder in the internet
// namespace (the hub's position): 198.18.0.1:P to the bank host's uplink
// 198.18.0.3:P for each port.
func startForwarder(e Env, t *Tunnel, ports ...int) error {
	args := []string{e.Self, "fwd"}
	for _, p := range ports {
		args = append(args, fmt.Sprintf("%s:%d=%s:%d", testenv.SeedHubAddr, p, testenv.SeedBankUp, p))
	}
	p, err := e.Seed.Internet.Start("forwarder", args, testenv.ProcOptions{})
	if err != nil {
		return err
	}
	t.add("forwarder", p, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.WaitOutput(ctx, "forwarding")
}

// openBank opens the bank host's firewall for the server end's ports.
func openBank(e Env, t *Tunnel, proto string, ports ...int) error {
	o, err := e.Seed.AllowInbound(e.Seed.BankHost, proto, ports...)
	if err != nil {
		return err
	}
	t.onClose(o.Close)
	return nil
}

// WaitReady waits until the load server greets a connection to addr made
// from the app container: the whole path works.
func WaitReady(ctx context.Context, seed *testenv.Seed, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		c, err := seed.App.NS.DialTCP(ctx, addr, 2*time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			var b [1]byte
			_, err = io.ReadFull(c, b[:])
			c.Close()
			if err == nil && b[0] == load.Hello {
				return nil
			}
			if err == nil {
				err = fmt.Errorf("got %q instead of the hello byte", b[0])
			}
		}
		last = err
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("wait for %s from the app: %w (last: %v)", addr, ctx.Err(), last)
}

// writeFile writes a configuration or key file in dir.
func writeFile(dir, name, content string, mode os.FileMode) (string, error) {
	path := dir + "/" + name
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	return path, nil
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

func ports(fw []Forward) []int {
	out := make([]int, len(fw))
	for i, f := range fw {
		out[i] = f.Port
	}
	return out
}

// RunForwarder is the forwarder subcommand: for each "LISTEN=TARGET" pair
// it accepts on LISTEN and copies bytes both ways to a new connection to
// TARGET, half-closes and resets included, until ctx ends, with the pipe
// Sluice's hub splices with. ready is called once every listener
// is open.
func RunForwarder(ctx context.Context, pairs []string, ready func()) error {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	errc := make(chan error, len(pairs))
	for _, pair := range pairs {
		listen, target, ok := strings.Cut(pair, "=")
		if !ok {
			return fmt.Errorf("run forwarder: %q is not LISTEN=TARGET", pair)
		}
		l, err := net.Listen("tcp", listen)
		if err != nil {
			return fmt.Errorf("run forwarder: %w", err)
		}
		ls = append(ls, l)
		go func() { errc <- forward(l, target) }()
	}
	ready()
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return fmt.Errorf("run forwarder: %w", err)
	}
}

func forward(l net.Listener, target string) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		go splice(c.(*net.TCPConn), target)
	}
}

// splice connects a to a new connection to target and relays both ways
// with the hub's own pipe (splice(2), half-closes and resets passed on).
func splice(a *net.TCPConn, target string) {
	conn, err := net.DialTimeout("tcp", target, 10*time.Second)
	if err != nil {
		a.Close()
		return
	}
	pipe.Run(context.Background(), pipe.TCP(a), pipe.TCP(conn.(*net.TCPConn)), nil)
}
