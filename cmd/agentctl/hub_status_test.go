package main

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/api"
	hubadmin "github.com/sluicehq/sluice/agent/hub/admin"
)

// TestHubStatus: agentctl hub status prints the cluster the hub reports
// (GET /v1/cluster): the leader, a hub without quorum saying so with its
// error, each hub's agents and relay names; -o json gives the same status
// back.
func TestHubStatus(t *testing.T) {
	st := hubadmin.ClusterStatus{Store: "etcd (embedded)", Hub: "c", Leader: "", Healthy: false,
		Error: "read generation: the hub cannot reach a quorum", Generation: 7,
		Members: []hubadmin.ClusterMember{{Name: "a", ID: "1", Live: true}, {Name: "c", ID: "3"}},
		Hubs:    []hubadmin.HubPresence{{Name: "a", Listen: "10.0.0.1:4443", Agents: 4, Relays: []string{"db"}, Updated: time.Now()}},
		Claims:  map[string][]string{"db": {"a"}}}
	sock := filepath.Join(t.TempDir(), "hub.sock")
	ln, err := api.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/cluster", func(w http.ResponseWriter, _ *http.Request) { json.NewEncoder(w).Encode(st) })
	srv := &http.Server{Handler: mux}
	t.Cleanup(func() { srv.Close() })
	go srv.Serve(ln)

	out, err := agentctl(t, "hub", "status", "--hub-admin", sock)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NO QUORUM", "the hub cannot reach a quorum", "leader:     none known", "10.0.0.1:4443", "relay db: held on a"} {
		if !strings.Contains(out, want) {
			t.Errorf("hub status lacks %q:\n%s", want, out)
		}
	}
	out, err = agentctl(t, "hub", "status", "--hub-admin", sock, "-o", "json")
	var got hubadmin.ClusterStatus
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || got.Generation != 7 || got.Hubs[0].Agents != 4 {
		t.Fatalf("hub status -o json = %q, %v", out, err)
	}
}
