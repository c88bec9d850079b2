package portal_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/channel"
	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/portal"
	"github.com/sluicehq/sluice/agent/relay"
)

// envProcess makes the test binary serve one agent's portals (startProcess)
// instead of running its tests; its value is the processConfig, as JSON.
const envProcess = "SLUICE_PORTAL_PROCESS"

// processConfig is what an agent process is told: its hub, its ticket, the
// relays it claims and its one portal.
type processConfig struct {
	Hub          string
	AuthorityKey ed25519.PublicKey
	Ticket       string
	Relays       []string
	Inlet        *portal.InletSpec
	Outlet       *portal.OutletSpec
}

// agentProcess is an agent's portals served by another process (the test
// binary run again), so that a test can kill it as a crash would.
type agentProcess struct {
	cmd       *exec.Cmd
	out       *lockedBuffer
	listening string // the inlet's address
	done      chan struct{}
}

// startProcess starts an agent process for hub h and waits until its
// portal is ready. The process ends with the test.
func startProcess(t *testing.T, h *testhub.Hub, cfg processConfig) *agentProcess {
	t.Helper()
	cfg.Hub, cfg.AuthorityKey = h.Addr, h.AuthorityKey()
	js, _ := json.Marshal(cfg)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envProcess+"="+string(js))
	stdin, err := cmd.StdinPipe() // the process serves until it reads EOF
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &agentProcess{cmd: cmd, out: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "ready "); ok {
				ready <- addr
			}
		}
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-p.done:
		case <-time.After(wait):
			cmd.Process.Kill()
			<-p.done
		}
	})
	select {
	case p.listening = <-ready:
	case <-p.done:
		t.Fatalf("agent process exited before it was ready:\n%s", p.out.String())
	case <-time.After(wait):
		t.Fatalf("agent process not ready within %v:\n%s", wait, p.out.String())
	}
	return p
}

// kill kills the process with SIGKILL and waits until it is gone.
func (p *agentProcess) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// serveProcess is the agent process: it serves until its stdin ends and
// returns the exit code.
func serveProcess(cfgJSON string) int {
	if err := runProcess(cfgJSON); err != nil {
		fmt.Fprintf(os.Stderr, "agent process: %v\n", err)
		return 1
	}
	return 0
}

func runProcess(cfgJSON string) error {
	var cfg processConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		return fmt.Errorf("decode %s: %w", envProcess, err)
	}
	log, err := zap.NewDevelopment() // on stderr
	if err != nil {
		return err
	}
	id, err := identity.New()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var m *portal.Manager
	ready := make(chan struct{})
	members := new(credential.Members)
	c, err := relay.NewClient(relay.ClientOptions{Hub: cfg.Hub, Identity: id, AuthorityKey: cfg.AuthorityKey, Ticket: cfg.Ticket, Logger: log,
		OnIncoming: func(in relay.Incoming) { <-ready; m.HandleIncoming(in.Token, in.From) },
		OnMember: func(u relay.MemberUpdate) {
			members.Update(u.Node, credential.State{Generation: u.Generation, Attributes: u.Attributes, Revoked: u.Revoked})
		}})
	if err != nil {
		return err
	}
	g, err := c.Start(ctx)
	if err != nil {
		return err
	}
	cred, err := credential.ParseDER(g.Credential)
	if err != nil {
		return err
	}
	root, err := x509.ParseCertificate(g.Authority)
	if err != nil {
		return err
	}
	keys := new(channel.Keys)
	keys.Set(&tls.Certificate{Certificate: [][]byte{g.Credential}, PrivateKey: id.PrivateKey(), Leaf: cred.Cert})
	m = portal.New(portal.Options{Hub: c, Keys: keys, Logger: log,
		Verifier: &credential.Verifier{Root: root, ProjectID: g.Project, Current: members.Current}})
	defer m.Close()
	close(ready)
	for _, r := range cfg.Relays {
		if err := c.Claim(ctx, r); err != nil {
			return err
		}
	}
	var listening string
	if cfg.Inlet != nil {
		info, err := m.AddInlet(*cfg.Inlet)
		if err != nil {
			return err
		}
		listening = info.Listening
	}
	if cfg.Outlet != nil {
		if _, err := m.AddOutlet(*cfg.Outlet); err != nil {
			return err
		}
	}
	fmt.Printf("ready %s\n", listening)
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// lockedBuffer is a strings.Builder safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex // guards b
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
