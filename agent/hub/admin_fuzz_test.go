package hub_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/agent/hub/admin"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/wire"
)

// FuzzAdminAPI sends arbitrary requests to the hub's admin API (in
// process, as its unix socket would): an operation, the node its path names
// and, to change attributes, the JSON body. Whatever they are, the API must
// answer with JSON and one of the statuses it documents for a caller's
// mistake (400, 404, 409) or success, never 500 (nothing here is the hub's
// own failure), and do exactly what it answered: attributes replaced by
// those of the body on 200, nothing changed otherwise.
func FuzzAdminAPI(f *testing.F) {
	h := testhub.Start(f, testhub.Options{})
	a := h.Enroll(f, map[string]string{"role": "inlet"})
	member := a.Identity.ID()
	api := h.Relay().AdminHandler()
	for _, seed := range []struct {
		op   byte
		node string
		body string
	}{
		{0, "", ""},
		{3, "", ""},
		{2, member, `{"attributes":{"role":"outlet","env":"prod"}}`},
		{2, member, `{"attributes":{}}`},
		{2, member, `{"attributes":{"bad name":"x"}}`},
		{2, member, `{"attributes":{"k":"v"},"extra":1}`},
		{2, member, `{"attributes":{"k":1}}`},
		{2, member, `{"attributes":null}`},
		{2, member, `{"attributes":{"k":"v"}} trailing`},
		{2, member, `[`},
		{2, member, ""},
		{2, "no-such-node", `{"attributes":{"k":"v"}}`},
		{1, "no-such-node", ""},
		{2, "a/b", `{"attributes":{}}`},
		{2, "%zz", `{}`},
	} {
		f.Add(seed.op, seed.node, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, op byte, node string, body []byte) {
		if node == "" || node == "." || node == ".." {
			return // the path is not canonical: the mux redirects
		}
		var method, path string
		switch op % 4 {
		case 0:
			method, path = http.MethodGet, "/v1/members"
		case 1:
			if node == member {
				return // keep the member for the other inputs
			}
			method, path = http.MethodPost, "/v1/members/"+url.PathEscape(node)+"/revoke"
		case 2:
			method, path = http.MethodPut, "/v1/members/"+url.PathEscape(node)+"/attributes"
		case 3:
			method, path = http.MethodGet, "/v1/stats"
		}
		req, err := http.NewRequest(method, "http://hub"+path, bytes.NewReader(body))
		if err != nil {
			return
		}
		before, err := h.Auth.Member(member)
		if err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		api.ServeHTTP(w, req)
		var reply struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &reply); err != nil && w.Code != http.StatusOK {
			t.Fatalf("%s %s %q: %d with a body that is not a JSON object: %q", method, path, body, w.Code, w.Body.Bytes())
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %s %q: %d with a body that is not JSON: %q", method, path, body, w.Code, w.Body.Bytes())
		}
		after, err := h.Auth.Member(member)
		if err != nil {
			t.Fatal(err)
		}
		// What the request should have done.
		want := http.StatusOK
		wantAttrs := before.Attributes
		if op%4 == 2 {
			var ar admin.AttributesRequest
			dec := json.NewDecoder(io.LimitReader(bytes.NewReader(body), 1<<20))
			dec.DisallowUnknownFields()
			switch {
			case dec.Decode(&ar) != nil || !validAttributes(ar.Attributes):
				want = http.StatusBadRequest
			case node != member:
				want = http.StatusNotFound
			default:
				wantAttrs = ar.Attributes
			}
		}
		if op%4 == 1 {
			want = http.StatusNotFound // never the member: see above
		}
		if (op%4 == 1 || op%4 == 2) && strings.Contains(node, "/") && w.Code == http.StatusNotFound &&
			strings.Contains(reply.Error, "no such request") {
			// The mux may route an escaped slash in a path segment or not.
			want = http.StatusNotFound
			wantAttrs = before.Attributes
		}
		if w.Code != want || (w.Code != http.StatusOK && reply.Error == "") {
			t.Fatalf("%s %s %q: %d %s, want %d", method, path, body, w.Code, w.Body.Bytes(), want)
		}
		if len(wantAttrs) == 0 && len(after.Attributes) == 0 {
			return
		}
		if !maps.Equal(after.Attributes, wantAttrs) || after.Revoked {
			t.Fatalf("%s %s %q (%d): the member has %v (revoked %v), want %v", method, path, body, w.Code, after.Attributes, after.Revoked, wantAttrs)
		}
	})
}

// validAttributes reports whether every attribute may be carried in a
// credential.
func validAttributes(attrs map[string]string) bool {
	var errs []error
	for k, v := range attrs {
		errs = append(errs, wire.CheckAttribute(k, v))
	}
	return errors.Join(errs...) == nil
}
