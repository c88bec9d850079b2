package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/sluicehq/sluice/agent/api/apitype"
	"github.com/sluicehq/sluice/agent/daemon"
	"github.com/sluicehq/sluice/agent/portal"
)

// recorder is a backend that accepts everything and keeps what it was given.
type recorder struct {
	fakeBackend
	got any
}

func (r *recorder) CreateRelay(_ context.Context, name string) error {
	r.got = &apitype.RelayRequest{Name: name}
	return nil
}

func (r *recorder) CreateInlet(s portal.InletSpec) (portal.InletInfo, error) {
	r.got = &s
	return portal.InletInfo{InletSpec: s}, nil
}

func (r *recorder) CreateOutlet(s portal.OutletSpec) (portal.OutletInfo, error) {
	r.got = &s
	return portal.OutletInfo{OutletSpec: s}, nil
}

func (r *recorder) CreateWorkload(w daemon.Workload) (daemon.WorkloadInfo, error) {
	r.got = &w
	return daemon.WorkloadInfo{Workload: w, Number: 1}, nil
}

// fuzzRoutes are the requests that carry a JSON body.
var fuzzRoutes = []string{"/v1/relays", "/v1/tcp-inlets", "/v1/tcp-outlets", "/v1/workloads"}

// FuzzRequestBodies sends arbitrary bodies to every API request that
// carries JSON. The handler never panics, answers 200 or 400 with a JSON
// body (an error message for 400), accepts only a body that is one JSON
// value with known fields, and hands the backend a value that survives the
// trip through JSON that the agent's state file makes.
func FuzzRequestBodies(f *testing.F) {
	for i, body := range []string{
		`{"name": "postgres"}`,
		`{"name": "pg", "from": "127.0.0.1:15432", "via": "postgres", "allow": "postgres-outlet"}`,
		`{"name": "pg", "to": "10.0.0.2:5432", "allow": "postgres-inlet and env == \"prod\""}`,
		`{"name": "app", "address": "10.10.0.2", "attributes": {"app": "analytics", "": ""}}`,
	} {
		f.Add(byte(i), []byte(body))
		f.Add(byte(i), []byte(body+" {}"))
		f.Add(byte(i), []byte(body+" garbage"))
	}
	f.Add(byte(0), []byte(`{"frm": "typo"}`))
	f.Add(byte(1), []byte(`{"transparent": "yes"}`))
	f.Add(byte(3), []byte(`{"attributes": {"a": 1}}`))
	f.Add(byte(3), []byte("{\"name\": \"\xff\xfe\"}"))
	f.Add(byte(2), []byte(`[]`))
	f.Add(byte(2), []byte(``))
	f.Fuzz(func(t *testing.T, route byte, body []byte) {
		path := fuzzRoutes[int(route)%len(fuzzRoutes)]
		b := &recorder{}
		w := httptest.NewRecorder()
		Handler(b).ServeHTTP(w, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
		out := w.Body.Bytes()
		if ct := w.Header().Get("Content-Type"); ct != "application/json" || !json.Valid(out) {
			t.Fatalf("POST %s %q: answer %q of type %q is not JSON", path, body, out, ct)
		}
		switch w.Code {
		case http.StatusBadRequest:
			var e apitype.ErrorBody
			if err := json.Unmarshal(out, &e); err != nil || e.Error == "" {
				t.Fatalf("POST %s %q: 400 without an error message: %q", path, body, out)
			}
			if b.got != nil {
				t.Fatalf("POST %s %q: 400, but the backend was called with %+v", path, body, b.got)
			}
		case http.StatusOK:
			if !json.Valid(body) {
				t.Fatalf("POST %s %q: accepted a body that is not one JSON value", path, body)
			}
			if b.got == nil {
				t.Fatalf("POST %s %q: 200, but the backend was not called", path, body)
			}
			checkJSONTrip(t, b.got)
		default:
			t.Fatalf("POST %s %q: status %d, want 200 or 400", path, body, w.Code)
		}
	})
}

// checkJSONTrip checks that v's JSON decodes, strictly, to a value with the
// same JSON.
func checkJSONTrip(t *testing.T, v any) {
	t.Helper()
	enc, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %+v: %v", v, err)
	}
	again := reflect.New(reflect.TypeOf(v).Elem()).Interface()
	dec := json.NewDecoder(bytes.NewReader(enc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(again); err != nil {
		t.Fatalf("decode %s: %v", enc, err)
	}
	if enc2, err := json.Marshal(again); err != nil || !bytes.Equal(enc, enc2) {
		t.Fatalf("%s came back from JSON as %s (%v)", enc, enc2, err)
	}
}
