package hub_test

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/wire"
)

func TestRevokeReachesEveryAgent(t *testing.T) {
	hub := testhub.Start(t, testhub.Options{})
	bank := hub.Enroll(t, map[string]string{"postgres-outlet": "true"}, "postgres")
	claim(t, bank, "postgres")
	analysis := hub.Enroll(t, map[string]string{"postgres-inlet": "true"})

	m, err := hub.Relay().Revoke(analysis.Identity.ID())
	if err != nil || !m.Revoked {
		t.Fatalf("revoke: %+v, %v", m, err)
	}
	u, err := bank.NextMemberOf(analysis.Identity.ID(), wait)
	for err == nil && !u.Revoked { // the word on its enrollment came first
		u, err = bank.NextMemberOf(analysis.Identity.ID(), wait)
	}
	if err != nil {
		t.Fatal(err)
	}
	if u.Node != analysis.Identity.ID() || !u.Revoked {
		t.Errorf("bank was told %+v, want %s revoked", u, analysis.Identity.ID())
	}
	if !testhub.WaitFor(wait, func() bool { return !analysis.Client.Status().Connected }) {
		t.Error("the revoked agent's control connection stayed up")
	}
	// It heard why before the hub closed it (its inlets deny in the kernel).
	if st, ok := analysis.Verifier.Current(analysis.Identity.ID()); !ok || !st.Revoked {
		t.Errorf("the revoked agent knows %+v (%v) about itself, want revoked", st, ok)
	}
	if _, _, err := analysis.Client.Dial(t.Context(), "postgres"); err == nil {
		t.Error("the revoked agent could still dial")
	}
	// An agent that connects later learns it with its credential.
	late := hub.Enroll(t, map[string]string{"x": "true"})
	u, err = late.NextMemberOf(analysis.Identity.ID(), wait)
	if err != nil || u.Node != analysis.Identity.ID() || !u.Revoked {
		t.Errorf("late agent was told %+v, %v; want %s revoked", u, err, analysis.Identity.ID())
	}
	// Revoked members get no credential again.
	if _, err := hub.Connect(t, testhub.AgentOptions{Identity: analysis.Identity}); !errors.Is(err, wire.ErrMemberRevoked) {
		t.Errorf("hello of a revoked member: %v, want %v", err, wire.ErrMemberRevoked)
	}
}

func TestSetAttributesReachesEveryAgent(t *testing.T) {
	hub := testhub.Start(t, testhub.Options{})
	bank := hub.Enroll(t, map[string]string{"postgres-outlet": "true"}, "postgres")
	analysis := hub.Enroll(t, map[string]string{"postgres-inlet": "true"})

	if _, err := hub.Relay().SetAttributes(bank.Identity.ID(), map[string]string{"postgres-outlet": "false"}); err != nil {
		t.Fatal(err)
	}
	u, err := analysis.NextMemberOf(bank.Identity.ID(), wait)
	for err == nil && u.Attributes["postgres-outlet"] == "true" { // the word on its enrollment came first
		u, err = analysis.NextMemberOf(bank.Identity.ID(), wait)
	}
	if err != nil {
		t.Fatal(err)
	}
	if u.Node != bank.Identity.ID() || u.Revoked || u.Attributes["postgres-outlet"] != "false" {
		t.Errorf("analysis was told %+v", u)
	}
	g, err := bank.Client.Renew(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if g.Attributes["postgres-outlet"] != "false" {
		t.Errorf("renewed credential has %v", g.Attributes)
	}
}

func TestAdminHandler(t *testing.T) {
	hub := testhub.Start(t, testhub.Options{})
	a := hub.Enroll(t, map[string]string{"k": "v"})
	srv := httptest.NewServer(hub.Relay().AdminHandler())
	t.Cleanup(srv.Close)

	for _, tc := range []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"GET", "/v1/members", "", 200, a.Identity.ID()},
		{"POST", "/v1/members/nosuchnode/revoke", "", 404, "not a member"},
		{"PUT", "/v1/members/" + a.Identity.ID() + "/attributes", `{"attributes": {"bad name": "x"}}`, 400, "attribute name"},
		{"PUT", "/v1/members/" + a.Identity.ID() + "/attributes", `{"nope": 1}`, 400, "decode request"},
		{"PUT", "/v1/members/" + a.Identity.ID() + "/attributes", `{"attributes": {"k": "w"}}`, 200, `"k": "w"`},
		{"POST", "/v1/members/" + a.Identity.ID() + "/revoke", "", 200, `"revoked": true`},
		{"PUT", "/v1/members/" + a.Identity.ID() + "/attributes", `{"attributes": {}}`, 409, "revoked"},
		{"GET", "/v1/cluster", "", 404, "keeps its records in hub.db alone"},
	} {
		req, err := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body json.RawMessage
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.want) {
			t.Errorf("%s %s: %d %s, want %d containing %q", tc.method, tc.path, resp.StatusCode, body, tc.code, tc.want)
		}
	}
}

// TestSetAttributesPushesCredential: the changed node gets a credential
// that carries its new attributes at once, without asking; its generation
// is the member record's, the one every agent is told.
func TestSetAttributesPushesCredential(t *testing.T) {
	hub := testhub.Start(t, testhub.Options{})
	bank := hub.Enroll(t, map[string]string{"postgres-outlet": "true"}, "postgres")
	analysis := hub.Enroll(t, map[string]string{"postgres-inlet": "true"})
	m, err := hub.Relay().SetAttributes(analysis.Identity.ID(), map[string]string{"team": "ops"})
	if err != nil {
		t.Fatal(err)
	}
	g, err := analysis.NextGrant(wait)
	if err != nil {
		t.Fatalf("no credential pushed to the changed node: %v", err)
	}
	c, err := credential.ParseDER(g.Credential)
	if err != nil {
		t.Fatal(err)
	}
	if c.Generation != m.Generation || c.Attributes["team"] != "ops" || c.Attributes["postgres-inlet"] != "" {
		t.Errorf("pushed credential: generation %d, attributes %v; want generation %d, team=ops only", c.Generation, c.Attributes, m.Generation)
	}
	if _, ok := analysis.Verifier.Current(analysis.Identity.ID()); !ok {
		t.Error("the changed node was not told of its own change")
	}
	u, err := bank.NextMemberOf(analysis.Identity.ID(), wait)
	for err == nil && u.Generation < m.Generation {
		u, err = bank.NextMemberOf(analysis.Identity.ID(), wait)
	}
	if err != nil || u.Generation != m.Generation {
		t.Errorf("bank was told generation %d (%v), want %d", u.Generation, err, m.Generation)
	}
	// Every change moves the project on: a later word is always newer.
	m2, err := hub.Relay().SetAttributes(analysis.Identity.ID(), map[string]string{"team": "dev"})
	if err != nil || m2.Generation <= m.Generation {
		t.Errorf("second change: generation %d after %d (%v)", m2.Generation, m.Generation, err)
	}
}

// TestReconnectGetsMissedWords: words said while an agent was away reach it
// with its first credential after reconnecting, before the connection
// carries anything else; the words it already had are not sent again.
func TestReconnectGetsMissedWords(t *testing.T) {
	hub := testhub.Start(t, testhub.Options{})
	bank := hub.Enroll(t, map[string]string{"postgres-outlet": "true"}, "postgres")
	analysis := hub.Enroll(t, map[string]string{"postgres-inlet": "true"})
	node := analysis.Identity.ID()
	if err := hub.Stop(); err != nil {
		t.Fatal(err)
	}
	// The change is made while no hub runs: nobody is told now.
	if _, err := hub.Auth.SetAttributes(node, map[string]string{"postgres-inlet": "false"}); err != nil {
		t.Fatal(err)
	}
	want, err := hub.Auth.Generation()
	if err != nil {
		t.Fatal(err)
	}
	before := bank.Client.Status().Since
	hub.Restart(t)
	if !testhub.WaitFor(wait, func() bool { st := bank.Client.Status(); return st.Connected && st.Since.After(before) }) {
		t.Fatal("bank did not reconnect")
	}
	// Connected means the member state came first.
	st, ok := bank.Verifier.Current(node)
	if !ok || st.Generation != want || st.Attributes["postgres-inlet"] != "false" {
		t.Errorf("after reconnecting bank knows %+v (%v); want generation %d with postgres-inlet=false", st, ok, want)
	}
	if got := bank.Client.Synced(); got != want {
		t.Errorf("bank synced to generation %d, want %d", got, want)
	}
	// A fresh agent that joins now hears every member.
	late := hub.Enroll(t, map[string]string{"x": "true"})
	for _, n := range []string{node, bank.Identity.ID(), late.Identity.ID()} {
		if _, ok := late.Verifier.Current(n); !ok {
			t.Errorf("a new agent was not told about member %s", n)
		}
	}
}

// TestSilentMemberDelaysNoOne: a member that stops reading its control
// connection does not hold up the words the hub sends everyone else, and
// is disconnected once its backlog passes the hub's bound.
func TestSilentMemberDelaysNoOne(t *testing.T) {
	hub := testhub.Start(t, testhub.Options{})
	listener := hub.Enroll(t, map[string]string{"role": "listener"})
	var silent []*tls.Conn
	for range 3 {
		silent = append(silent, silentMember(t, hub))
	}
	target := hub.Enroll(t, map[string]string{"role": "target"})
	// Words large enough to fill the silent members' socket buffers fast.
	big := map[string]string{}
	for i := range 1000 {
		big[fmt.Sprintf("a%04d", i)] = strings.Repeat("x", 256)
	}
	for i := range 60 {
		start := time.Now()
		big["round"] = fmt.Sprint(i)
		m, err := hub.Relay().SetAttributes(target.Identity.ID(), big)
		if err != nil {
			t.Fatal(err)
		}
		if !testhub.WaitFor(wait, func() bool {
			st, _ := listener.Verifier.Current(target.Identity.ID())
			return st.Generation >= m.Generation
		}) {
			t.Fatalf("round %d: the listener never heard generation %d", i, m.Generation)
		}
		if took := time.Since(start); took > testhub.Slowdown*time.Second {
			t.Fatalf("round %d: the listener heard the change after %v; want within a second (x%d for this build)", i, took, testhub.Slowdown)
		}
	}
	for _, c := range silent {
		c.Close()
	}
}

// silentMember enrolls a node with a raw control connection that says
// hello and then never reads.
func silentMember(t *testing.T, hub *testhub.Hub) *tls.Conn {
	t.Helper()
	id, err := identity.New()
	if err != nil {
		t.Fatal(err)
	}
	ticket := hub.Ticket(t, authority.TicketOptions{Attributes: map[string]string{"role": "silent"}})
	self, err := id.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Dial("tcp", hub.Addr)
	if err != nil {
		t.Fatal(err)
	}
	raw.(*net.TCPConn).SetReadBuffer(4096)
	c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{self},
		NextProtos: []string{"sluice-control/1"}, MinVersion: tls.VersionTLS13})
	t.Cleanup(func() { c.Close() })
	if err := json.NewEncoder(c).Encode(map[string]any{"id": 1, "op": "enroll", "ticket": ticket}); err != nil {
		t.Fatal(err)
	}
	return c
}
