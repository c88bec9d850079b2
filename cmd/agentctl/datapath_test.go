package main

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/agent/api"
	"github.com/sluicehq/sluice/agent/daemon"
	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/maps"
)

// fakeAgent serves the workload and data path routes and records the
// workload agentctl sent.
func fakeAgent(t *testing.T, dp daemon.DatapathStatus, got *daemon.Workload) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := api.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/workloads", func(w http.ResponseWriter, r *http.Request) {
		json.NewDecoder(r.Body).Decode(got)
		json.NewEncoder(w).Encode(daemon.WorkloadInfo{Workload: *got, Number: 1})
	})
	mux.HandleFunc("GET /v1/datapath", func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(dp) })
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestWorkloadCreateFlags(t *testing.T) {
	var got daemon.Workload
	sock := fakeAgent(t, daemon.DatapathStatus{}, &got)
	out, err := agentctl(t, "--agent", sock, "workload", "create", "analytics", "--interface", "veth1",
		"--attribute", "app=analytics", "--attribute", "tier")
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "analytics" || got.Interface != "veth1" || got.Address != "" ||
		got.Attributes["app"] != "analytics" || got.Attributes["tier"] != "true" {
		t.Errorf("agent received %+v", got)
	}
	if !strings.Contains(out, "workload analytics created: interface veth1, attributes app=analytics tier=true") {
		t.Errorf("output %q", out)
	}
}

func TestWorkloadCreateByCgroup(t *testing.T) {
	var got daemon.Workload
	sock := fakeAgent(t, daemon.DatapathStatus{}, &got)
	out, err := agentctl(t, "--agent", sock, "workload", "create", "jobs", "--cgroup", "/sys/fs/cgroup/jobs.slice",
		"--attribute", "app=analytics")
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "jobs" || got.Cgroup != "/sys/fs/cgroup/jobs.slice" || got.Address != "" || got.Interface != "" ||
		got.Attributes["app"] != "analytics" {
		t.Errorf("agent received %+v", got)
	}
	if !strings.Contains(out, "workload jobs created: cgroup /sys/fs/cgroup/jobs.slice, attributes app=analytics") {
		t.Errorf("output %q", out)
	}
	help, err := agentctl(t, "workload", "create", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"create NAME (--address IP | --interface DEV | --cgroup PATH) [--attribute K=V]...",
		"--cgroup string", "not in its child cgroups", "every 2 seconds"} {
		if !strings.Contains(help, want) {
			t.Errorf("workload create --help lacks %q:\n%s", want, help)
		}
	}
}

func TestDatapathStatusTable(t *testing.T) {
	st := daemon.DatapathStatus{Enabled: true, PinDir: "/sys/fs/bpf/sluice", Listener: "127.0.0.1:40000",
		Attachments: []loader.Attachment{{Device: "br-analysis", Role: "assign", Hook: "tcx/ingress", Program: 41, Link: 7}},
		Maps:        []maps.Size{{Name: "services", Entries: 1, Max: 1024}},
		Portals: []daemon.PortalStatus{{Inlet: "pg", Kind: "transparent", Service: "10.200.0.10:5432", Portal: 1,
			Counters: maps.PortalCounters{Steered: 3, Refused: 2, NoListener: 1, Spoofed: 1, Packets: 40, Bytes: 5000}},
			{Inlet: "explicit", Kind: "explicit", Service: "10.10.0.1:15432", Portal: 2,
				Counters: maps.PortalCounters{Refused: 4, Spoofed: 3, Packets: 9, Bytes: 700}}}}
	sock := fakeAgent(t, st, nil)
	out, err := agentctl(t, "--agent", sock, "datapath", "status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"transparent listener 127.0.0.1:40000", "br-analysis", "tcx/ingress", "services", "1/1024",
		"STEERED", "SPOOFED", "10.200.0.10:5432"} {
		if !strings.Contains(out, want) {
			t.Errorf("datapath status output lacks %q:\n%s", want, out)
		}
	}
	fields := strings.Join(strings.Fields(out), " ")
	if !strings.Contains(fields, "pg transparent 10.200.0.10:5432 1 3 2 1 1 40 5000") ||
		!strings.Contains(fields, "explicit explicit 10.10.0.1:15432 2 0 4 0 3 9 700") {
		t.Errorf("per-portal counters (with spoofed) missing:\n%s", out)
	}
	off := fakeAgent(t, daemon.DatapathStatus{Reason: "turned off (--datapath off)"}, nil)
	if out, err := agentctl(t, "--agent", off, "datapath", "status"); err != nil || out != "data path: off (turned off (--datapath off))\n" {
		t.Errorf("datapath status when off = %q, %v", out, err)
	}
}

func TestTransparentHelpAndArgs(t *testing.T) {
	out, err := agentctl(t, "tcp-inlet", "create", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--transparent", "--allow-local", "virtual service", `--allow-local 'app == "analytics"'`,
		"Without --allow-local, an explicit inlet admits anyone who can reach --from", "spoofed source address"} {
		if !strings.Contains(out, want) {
			t.Errorf("tcp-inlet create --help lacks %q", want)
		}
	}
	if _, err := agentctl(t, "workload", "create"); err == nil || !strings.Contains(err.Error(), "accepts 1 arg") {
		t.Errorf("workload create without a name: %v", err)
	}
}
