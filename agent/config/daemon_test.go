package config_test

import (
	"context"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/agent/api"
	"github.com/sluicehq/sluice/agent/api/server"
	"github.com/sluicehq/sluice/agent/config"
	"github.com/sluicehq/sluice/agent/daemon"
	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
)

func TestMain(m *testing.M) { testhub.Main(m) }

// The file the round trip applies: what a datapath-off agent can run
// (a transparent inlet needs the BPF data path; plan_test.go has one).
const roundTrip = `relays: [postgres]
outlets:
  - name: db
    to: 127.0.0.1:5432
    allow: postgres-inlet
inlets:
  - name: pg
    from: 127.0.0.1:0
    via: postgres
    allow: postgres-outlet
  - name: pg-db
    from: 127.0.0.1:0
    via: postgres
    outlet: db
    allow: postgres-outlet and env == "prod"
workloads:
  - name: app
    address: 10.10.0.2
    attributes:
      app: analytics
`

// TestApplyRoundTrip: against a real agent through its API, apply creates
// what the file lists, a second apply changes nothing, the agent's objects
// printed as a file apply back to no changes, and a changed file updates
// and deletes exactly what changed.
func TestApplyRoundTrip(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	ticket := h.Ticket(t, authority.TicketOptions{Relays: []string{"postgres", "mysql"}})
	a, err := daemon.Start(context.Background(), daemon.Options{StateDir: t.TempDir(), Ticket: ticket, Datapath: daemon.DatapathOff})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := api.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: server.Handler(a)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := api.NewClient(sock)

	got := applyFile(t, c, roundTrip)
	want := []string{"created workload app", "created relay postgres", "created outlet db", "created inlet pg", "created inlet pg-db"}
	if !slices.Equal(got, want) {
		t.Errorf("first apply:\n got %q\nwant %q", got, want)
	}
	if got := applyFile(t, c, roundTrip); len(got) != 0 {
		t.Errorf("second apply changed %q, want no changes", got)
	}

	cur, err := config.Read(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	out, err := config.Marshal(config.FromCurrent(cur, "all"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("get all -o yaml:\n%s", out)
	if got := applyFile(t, c, string(out)); len(got) != 0 {
		t.Errorf("apply of get's file changed %q, want no changes", got)
	}

	next := strings.NewReplacer("relays: [postgres]", "relays: [mysql]",
		`allow: postgres-outlet and env == "prod"`, `allow: postgres-outlet and env == "test"`).Replace(roundTrip)
	next = next[:strings.Index(next, "workloads:")] + "workloads: []\n"
	got = applyFile(t, c, next)
	want = []string{
		`deleted inlet pg-db (update: allow differs)`,
		"deleted relay postgres",
		"deleted workload app",
		"created relay mysql",
		`created inlet pg-db (update: allow differs)`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("changed file:\n got %q\nwant %q", got, want)
	}
	ins, _ := c.Inlets(context.Background())
	rs, _ := c.Relays(context.Background())
	ws, _ := c.Workloads(context.Background())
	if len(ins) != 2 || len(rs) != 1 || rs[0].Name != "mysql" || len(ws) != 0 {
		t.Errorf("agent after the change: inlets %+v, relays %+v, workloads %+v", ins, rs, ws)
	}
	if got := applyFile(t, c, next); len(got) != 0 {
		t.Errorf("second apply of the changed file changed %q", got)
	}
}

func applyFile(t *testing.T, c *api.Client, file string) []string {
	t.Helper()
	f, err := config.Parse([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := config.Read(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	err = config.Diff(f, cur).Apply(context.Background(), c, func(s config.Step) { lines = append(lines, s.String()) })
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) == 0 {
		t.Log("apply: no changes")
	}
	for _, l := range lines {
		t.Log("apply: " + l)
	}
	return lines
}
