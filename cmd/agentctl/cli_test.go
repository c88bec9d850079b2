package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/agent/api"
	"github.com/sluicehq/sluice/agent/api/apitype"
	"github.com/sluicehq/sluice/agent/buildinfo"
	"github.com/sluicehq/sluice/cmd/internal/cli"
)

// TestHelpLint: every command has an Example, no flag's usage has a
// backquoted text pflag would show as its value name, and none says a
// default pflag prints too (the --agent default was shown twice).
func TestHelpLint(t *testing.T) {
	t.Setenv("SLUICE_AGENT", "/run/other.sock")
	t.Setenv("SLUICE_HUB_ADMIN", "/run/hub.sock")
	root := rootCommand(&env{out: io.Discard}, io.Discard, io.Discard)
	for _, p := range cli.Lint(root) {
		t.Error(p)
	}
	// Every list, get and create command prints -o json and yaml.
	n := 0
	cli.Walk(root, func(c *cobra.Command) {
		switch c.Name() {
		case "list", "create", "status", "version", "init":
			n++
			if f := c.Flags().Lookup("output"); f == nil || f.Value.Type() != "format" || f.Shorthand != "o" {
				t.Errorf("%s has no -o json|yaml", c.CommandPath())
			}
		}
	})
	if n < 14 {
		t.Errorf("only %d list, get and create commands", n)
	}
}

// fakeAPI serves the routes agentctl's tests need, on a socket of its own.
type fakeAPI struct {
	version   apitype.Version
	connected func() bool // the hub link, asked at each status
	dpError   string
	outlet    apitype.OutletSpec // the last one created
}

func (f *fakeAPI) serve(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := api.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	reply := func(v any) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) { json.NewEncoder(w).Encode(v) }
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/version", reply(f.version))
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		st := apitype.Status{Node: "n1", Credential: apitype.CredentialStatus{Expires: time.Now().Add(time.Hour)},
			Hub: apitype.HubStatus{Hub: "127.0.0.1:4443", LastError: "dial tcp 127.0.0.1:4443: connection refused"}}
		st.Hub.Connected = f.connected == nil || f.connected()
		st.Peers = []apitype.PeerPath{{Node: "n-peer", Path: "direct", Since: time.Now().Add(-time.Minute), RTT: 412 * time.Microsecond, DirectChannels: 3}}
		st.DirectPaths = apitype.DirectCounters{ChannelsDirect: 3, AttemptsOK: 3, AttemptsFailed: 1}
		json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("GET /v1/datapath", func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(apitype.DatapathStatus{Enabled: f.dpError != "", Error: f.dpError})
	})
	mux.HandleFunc("GET /v1/tcp-inlets", reply([]apitype.InletInfo{{Inlet: apitype.Inlet{InletSpec: apitype.InletSpec{Name: "pg", From: "127.0.0.1:15432", Via: "postgres", Allow: "postgres-outlet"}, Listening: "127.0.0.1:15432"}, State: apitype.StateRunning}}))
	mux.HandleFunc("GET /v1/tcp-outlets", reply([]apitype.OutletInfo{{Outlet: apitype.Outlet{OutletSpec: apitype.OutletSpec{Name: "db", To: "127.0.0.1:5432", Allow: "x"}}}}))
	mux.HandleFunc("GET /v1/relays", reply([]apitype.RelayInfo{{Name: "postgres", Claimed: true}, {Name: "mysql"}}))
	mux.HandleFunc("GET /v1/workloads", reply([]apitype.WorkloadInfo{{Workload: apitype.Workload{Name: "analytics", Address: "10.10.0.2"}}}))
	mux.HandleFunc("POST /v1/relays", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(apitype.ErrorBody{Error: `create relay: relay name "Bad Name": ...: invalid relay name`})
	})
	mux.HandleFunc("POST /v1/tcp-outlets", func(w http.ResponseWriter, r *http.Request) {
		var spec apitype.OutletSpec
		json.NewDecoder(r.Body).Decode(&spec)
		f.outlet = spec
		json.NewEncoder(w).Encode(apitype.Outlet{OutletSpec: spec})
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// agentctlCode runs agentctl as main does and returns its output and exit
// status.
func agentctlCode(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), args, &out, io.Discard)
	if err != nil {
		return out.String() + "agentctl: " + err.Error(), exitCode(err)
	}
	return out.String(), 0
}

// TestExitCodes: 2 for usage errors and input the agent refused (the
// command did nothing), 3 when no agent answers, 1 for other failures; the
// root's --help lists them.
func TestExitCodes(t *testing.T) {
	sock := (&fakeAPI{}).serve(t)
	none := filepath.Join(t.TempDir(), "none.sock")
	tests := []struct {
		args []string
		code int
	}{
		{[]string{"--agent", sock, "status"}, 0},
		{[]string{"--agent", sock, "status", "--bogus"}, cli.ExitUsage},
		{[]string{"--agent", sock, "status", "extra"}, cli.ExitUsage},
		{[]string{"frobnicate"}, cli.ExitUsage},
		{[]string{"relay", "frobnicate"}, cli.ExitUsage},
		{[]string{"relay", "create"}, cli.ExitUsage},
		{[]string{"--agent", sock, "tcp-inlet", "list", "-o", "xml"}, cli.ExitUsage},
		{[]string{"ticket", "create"}, cli.ExitUsage},
		{[]string{"ticket", "create", "--project", t.TempDir(), "--usage-count", "0"}, cli.ExitUsage},
		{[]string{"wait", "--agent", sock}, cli.ExitUsage},
		{[]string{"--agent", sock, "relay", "create", "Bad Name"}, cli.ExitUsage}, // the agent refused the input
		{[]string{"--agent", none, "status"}, cli.ExitNoAgent},
		{[]string{"--agent", none, "tcp-inlet", "delete", "pg"}, cli.ExitNoAgent},
		{[]string{"member", "list", "--hub-admin", none}, cli.ExitNoAgent},
		{[]string{"ticket", "create", "--project", t.TempDir()}, cli.ExitFailure},
	}
	for _, tt := range tests {
		if out, code := agentctlCode(t, tt.args...); code != tt.code {
			t.Errorf("agentctl %s: exit %d, want %d (%s)", strings.Join(tt.args, " "), code, tt.code, out)
		}
	}
	help, _ := agentctlCode(t, "--help")
	for _, want := range []string{"2   usage error", "3   no agent", "Exit status:"} {
		if !strings.Contains(help, want) {
			t.Errorf("agentctl --help lacks %q:\n%s", want, help)
		}
	}
}

// TestOutputFormats: -o yaml has the JSON's field names; create takes -o.
func TestOutputFormats(t *testing.T) {
	sock := (&fakeAPI{}).serve(t)
	js, code := agentctlCode(t, "--agent", sock, "tcp-inlet", "list", "-o", "json")
	ys, code2 := agentctlCode(t, "--agent", sock, "tcp-inlet", "list", "-o", "yaml")
	if code != 0 || code2 != 0 {
		t.Fatalf("list -o json: %d %s; -o yaml: %d %s", code, js, code2, ys)
	}
	var fromJSON, fromYAML []map[string]any
	if err := json.Unmarshal([]byte(js), &fromJSON); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(ys), &fromYAML); err != nil {
		t.Fatal(err)
	}
	if len(fromYAML) != 1 || fromYAML[0]["name"] != "pg" || fromYAML[0]["listening"] != "127.0.0.1:15432" {
		t.Errorf("-o yaml = %v", fromYAML)
	}
	for k := range fromJSON[0] {
		if _, ok := fromYAML[0][k]; !ok {
			t.Errorf("-o yaml lacks the JSON field %q:\n%s", k, ys)
		}
	}
	out, code := agentctlCode(t, "--agent", sock, "tcp-outlet", "create", "--name", "db", "--to", "127.0.0.1:5432", "--allow", "x", "-o", "yaml")
	if code != 0 || !strings.Contains(out, "name: db\n") || !strings.Contains(out, "to: 127.0.0.1:5432\n") {
		t.Errorf("tcp-outlet create -o yaml: %d %q", code, out)
	}
}

// TestNoResolve: --no-resolve reaches the agent.
func TestNoResolve(t *testing.T) {
	f := &fakeAPI{}
	sock := f.serve(t)
	for _, noResolve := range []bool{false, true} {
		args := []string{"--agent", sock, "tcp-outlet", "create", "--to", "db.internal:5432", "--allow", "x"}
		if noResolve {
			args = append(args, "--no-resolve")
		}
		if out, code := agentctlCode(t, args...); code != 0 || f.outlet.NoResolve != noResolve || f.outlet.To != "db.internal:5432" {
			t.Errorf("agentctl %s: %d %q, agent got %+v", strings.Join(args, " "), code, out, f.outlet)
		}
	}
}

// TestVersion: agentctl's build and the agent's, a mismatch named, and
// exit status 3 with a clear line when no agent runs.
func TestVersion(t *testing.T) {
	own := buildinfo.Get()
	same := (&fakeAPI{version: own}).serve(t)
	out, code := agentctlCode(t, "--agent", same, "version")
	if code != 0 || strings.Count(out, buildinfo.String(own)) != 2 || strings.Contains(out, "different builds") {
		t.Errorf("version, same build: %d %q", code, out)
	}
	other := own
	other.Revision = "0123456789abcdef0123456789abcdef01234567"
	diff := (&fakeAPI{version: other}).serve(t)
	out, code = agentctlCode(t, "--agent", diff, "version")
	if code != 0 || !strings.Contains(out, "agent:    "+buildinfo.String(other)) || !strings.Contains(out, "different builds") {
		t.Errorf("version, another build: %d %q", code, out)
	}
	none := filepath.Join(t.TempDir(), "none.sock")
	out, code = agentctlCode(t, "--agent", none, "version")
	if code != cli.ExitNoAgent || !strings.Contains(out, "agent:    none running at "+none) || !strings.Contains(out, "agentctl: "+buildinfo.String(own)) {
		t.Errorf("version, no agent: %d %q", code, out)
	}
	if out, code = agentctlCode(t, "--agent", none, "version", "--client", "-o", "json"); code != 0 || !strings.Contains(out, `"go_version"`) || strings.Contains(out, `"agent"`) {
		t.Errorf("version --client -o json: %d %q", code, out)
	}
}

// TestWaitReady: wait returns once the agent is ready, and fails at the
// timeout with the reason, or with exit status 3 if no agent answered.
func TestWaitReady(t *testing.T) {
	var asked atomic.Int32
	late := (&fakeAPI{connected: func() bool { return asked.Add(1) > 3 }}).serve(t)
	if out, code := agentctlCode(t, "--agent", late, "wait", "--ready", "--timeout", "20s"); code != 0 || !strings.Contains(out, "is ready") || asked.Load() < 4 {
		t.Errorf("wait for an agent that connects on its 4th status: %d %q (asked %d)", code, out, asked.Load())
	}
	never := (&fakeAPI{connected: func() bool { return false }}).serve(t)
	out, code := agentctlCode(t, "--agent", never, "wait", "--ready", "--timeout", "2s")
	if code != cli.ExitFailure || !strings.Contains(out, "not connected to the hub 127.0.0.1:4443 (dial tcp 127.0.0.1:4443: connection refused)") {
		t.Errorf("wait for an agent that never connects: %d %q", code, out)
	}
	broken := (&fakeAPI{dpError: "read links: permission denied"}).serve(t)
	if out, code := agentctlCode(t, "--agent", broken, "wait", "--ready", "--timeout", "2s"); code != cli.ExitFailure || !strings.Contains(out, "data path is not attached: read links") {
		t.Errorf("wait for an agent whose data path failed: %d %q", code, out)
	}
	none := filepath.Join(t.TempDir(), "none.sock")
	if out, code := agentctlCode(t, "--agent", none, "wait", "--ready", "--timeout", "2s"); code != cli.ExitNoAgent || !strings.Contains(out, "no agent is running") {
		t.Errorf("wait with no agent: %d %q", code, out)
	}
}

// TestWaitHub: wait --hub-admin returns once a hub answers on the socket,
// even one that starts listening after the wait began.
func TestWaitHub(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "hub.sock")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("[]")) })
	srv := &http.Server{Handler: mux}
	t.Cleanup(func() { srv.Close() })
	go func() {
		time.Sleep(500 * time.Millisecond)
		if ln, err := api.Listen(sock); err == nil {
			srv.Serve(ln)
		}
	}()
	if out, code := agentctlCode(t, "wait", "--ready", "--hub-admin", sock, "--timeout", "20s"); code != 0 || out != "hub is ready\n" {
		t.Errorf("wait for a hub that starts late: %d %q", code, out)
	}
	none := filepath.Join(t.TempDir(), "none.sock")
	if out, code := agentctlCode(t, "wait", "--ready", "--hub-admin", none, "--timeout", "300ms"); code != cli.ExitNoAgent || !strings.Contains(out, "wait 300ms for the hub") {
		t.Errorf("wait with no hub: %d %q", code, out)
	}
}

// TestCompletion: names complete from the running agent.
func TestCompletion(t *testing.T) {
	sock := (&fakeAPI{}).serve(t)
	for cmd, want := range map[string]string{"tcp-inlet": "pg", "tcp-outlet": "db", "relay": "postgres\nmysql", "workload": "analytics"} {
		out, code := agentctlCode(t, "__complete", "--agent", sock, cmd, "delete", "")
		if code != 0 || !strings.HasPrefix(out, want+"\n:4\n") {
			t.Errorf("complete %s delete: %d %q, want %q first", cmd, code, out, want)
		}
	}
	out, _ := agentctlCode(t, "completion", "bash")
	if !strings.Contains(out, "__start_agentctl") {
		t.Errorf("completion bash: %.200q", out)
	}
}
