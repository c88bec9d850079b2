package relay_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/agent/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
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
	u, err := bank.NextMember(wait)
	if err != nil {
		t.Fatal(err)
	}
	if u.Node != analysis.Identity.ID() || !u.Revoked {
		t.Errorf("bank was told %+v, want %s revoked", u, analysis.Identity.ID())
	}
	if !testhub.WaitFor(wait, func() bool { return !analysis.Client.Status().Connected }) {
		t.Error("the revoked agent's control connection stayed up")
	}
	if _, _, err := analysis.Client.Dial(t.Context(), "postgres"); err == nil {
		t.Error("the revoked agent could still dial")
	}
	// An agent that connects later learns it with its credential.
	late := hub.Enroll(t, map[string]string{"x": "true"})
	u, err = late.NextMember(wait)
	if err != nil || u.Node != analysis.Identity.ID() || !u.Revoked {
		t.Errorf("late agent was told %+v, %v; want %s revoked", u, err, analysis.Identity.ID())
	}
	// Revoked members get no credential again.
	if _, err := hub.Connect(t, testhub.AgentOptions{Identity: analysis.Identity}); !errors.Is(err, authority.ErrMemberRevoked) {
		t.Errorf("hello of a revoked member: %v, want %v", err, authority.ErrMemberRevoked)
	}
}

func TestSetAttributesReachesEveryAgent(t *testing.T) {
	hub := testhub.Start(t, testhub.Options{})
	bank := hub.Enroll(t, map[string]string{"postgres-outlet": "true"}, "postgres")
	analysis := hub.Enroll(t, map[string]string{"postgres-inlet": "true"})

	if _, err := hub.Relay().SetAttributes(bank.Identity.ID(), map[string]string{"postgres-outlet": "false"}); err != nil {
		t.Fatal(err)
	}
	u, err := analysis.NextMember(wait)
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
