package testhub

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/agent/hub/authority"
)

// envProcess makes a test binary that uses Main serve a hub (StartProcess)
// instead of running its tests; its value is the processConfig, as JSON.
const envProcess = "SLUICE_TESTHUB_PROCESS"

// ProcessOptions tune a hub process. Zero values mean the relay package's
// defaults and the test binary's own resource limits.
type ProcessOptions struct {
	Limits         hub.Limits
	HelloTimeout   time.Duration
	SessionTimeout time.Duration
	// NoFile, if set, is the hub process's RLIMIT_NOFILE.
	NoFile uint64
	// FailWrites makes every write to the hub's database fail once it is
	// open (RLIMIT_FSIZE below the file's first data page), as a full disk
	// would: bbolt's error names the file.
	FailWrites bool
}

// processConfig is what a hub process is told.
type processConfig struct {
	Dir, Admin string
	Options    ProcessOptions
}

// Process is a hub serving in a process of its own (the test binary run
// again), so that tests can measure it (its memory, its descriptors) apart
// from the agents they run. Its Hub has no Auth and no Relay: ask the
// process for Stats.
type Process struct {
	*Hub
	Pid    int
	admin  string
	out    *syncBuffer
	cmd    *exec.Cmd
	killed atomic.Bool
}

// Kill kills the hub process with SIGKILL, as a crash would, and waits
// for it to die.
func (p *Process) Kill() {
	p.killed.Store(true)
	p.cmd.Process.Kill()
	// Dead once a zombie: the cleanup reaps it.
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid))
		if err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// StartProcess makes a project for a hub on an ephemeral port of 127.0.0.1
// and serves it from another process until the test ends. The test binary
// must use Main.
func StartProcess(t testing.TB, opts ProcessOptions) *Process {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := authority.Init(t.TempDir(), ln.Addr().String())
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	lnFile, err := ln.(*net.TCPListener).File()
	ln.Close() // the process's copy goes on listening
	if err != nil {
		t.Fatal(err)
	}
	defer lnFile.Close()
	sockDir, err := os.MkdirTemp("", "testhub") // short: unix socket paths are
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	cfg, _ := json.Marshal(processConfig{Dir: p.Dir, Admin: filepath.Join(sockDir, "hub.sock"), Options: opts})
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envProcess+"="+string(cfg))
	cmd.ExtraFiles = []*os.File{lnFile}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	stdin, err := cmd.StdinPipe() // the process serves until it reads EOF
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	proc := &Process{Hub: &Hub{Project: p, Addr: p.HubAddress}, Pid: cmd.Process.Pid, admin: filepath.Join(sockDir, "hub.sock"), out: out, cmd: cmd}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil && !proc.killed.Load() {
				t.Errorf("hub process: %v\n%s", err, out.String())
			}
		case <-time.After(StopTimeout):
			cmd.Process.Kill()
			<-done
			t.Errorf("hub process did not stop within %v of its stdin closing\n%s", StopTimeout, out.String())
		}
	})
	if !WaitFor(10*time.Second, func() bool { _, err := proc.stats(); return err == nil }) {
		t.Fatalf("hub process does not answer on %s:\n%s", proc.admin, out.String())
	}
	return proc
}

// Stats asks the hub process for its hub.Stats.
func (p *Process) Stats(t testing.TB) hub.Stats {
	t.Helper()
	st, err := p.stats()
	if err != nil {
		t.Fatalf("hub process stats: %v\n%s", err, p.Output())
	}
	return st
}

func (p *Process) stats() (hub.Stats, error) {
	c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", p.admin)
		},
	}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://hub/v1/stats")
	if err != nil {
		return hub.Stats{}, err
	}
	defer resp.Body.Close()
	var st hub.Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return hub.Stats{}, fmt.Errorf("decode stats: %w", err)
	}
	return st, nil
}

// RSS is the hub process's resident set size in bytes (VmRSS).
func (p *Process) RSS(t testing.TB) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.Pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("parse VmRSS %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", p.Pid)
	return 0
}

// Output is what the hub process logged so far (JSON lines, info and up).
func (p *Process) Output() string { return p.out.String() }

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serveProcess is the hub process: it serves until its stdin ends and
// returns the exit code.
func serveProcess(cfgJSON string) int {
	if err := runProcess(cfgJSON); err != nil {
		fmt.Fprintf(os.Stderr, "hub process: %v\n", err)
		return 1
	}
	return 0
}

func runProcess(cfgJSON string) error {
	var cfg processConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		return fmt.Errorf("decode %s: %w", envProcess, err)
	}
	o := cfg.Options
	if o.NoFile > 0 {
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: o.NoFile, Max: o.NoFile}); err != nil {
			return fmt.Errorf("set RLIMIT_NOFILE: %w", err)
		}
	}
	p, err := authority.Load(cfg.Dir)
	if err != nil {
		return err
	}
	auth, err := authority.Open(p, authority.Options{})
	if err != nil {
		return err
	}
	defer auth.Close()
	if o.FailWrites {
		// Pages 0 and 1 are bbolt's meta pages; every other page, which a
		// transaction writes first, lies beyond two pages of 4096 bytes.
		// The Go runtime ignores SIGXFSZ, so the write fails with EFBIG.
		if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: 8192, Max: 8192}); err != nil {
			return fmt.Errorf("set RLIMIT_FSIZE: %w", err)
		}
	}
	log, err := zap.NewProduction() // JSON lines on stderr, info and up
	if err != nil {
		return err
	}
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		return fmt.Errorf("listener: %w", err)
	}
	h := hub.NewHub(auth.Project(), hub.HubOptions{Authority: authority.NewService(auth), Logger: log, Limits: o.Limits, HelloTimeout: o.HelloTimeout, SessionTimeout: o.SessionTimeout})
	admin, err := net.Listen("unix", cfg.Admin)
	if err != nil {
		ln.Close()
		return fmt.Errorf("admin socket: %w", err)
	}
	srv := &http.Server{Handler: h.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(admin)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	return h.Serve(ctx, ln)
}
