package unixhttp

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

var errNoServer = errors.New("nothing there")

// TestNothingListens: a socket with no server, and a socket path that does
// not exist, are the caller's sentinel, with the hint.
func TestNothingListens(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // the file stays, nobody accepts
	for _, socket := range []string{filepath.Join(dir, "missing.sock"), stale} {
		err := New(socket, "agent", "start one", errNoServer).Do(context.Background(), "GET", "/v1/x", nil, nil, nil)
		if !errors.Is(err, errNoServer) || !strings.Contains(err.Error(), "(start one)") {
			t.Errorf("%s: %v, want errNoServer with the hint", socket, err)
		}
	}
}

// TestAnswers: a JSON body goes out, a JSON answer comes back; an error
// answer with a message is the caller's refusal with its status, one
// without says what answered what.
func TestAnswers(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		var in map[string]string
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"got": in["say"]})
	})
	mux.HandleFunc("GET /refuse", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"error":"bad name"}`))
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	c := New(socket, "agent", "", errNoServer)
	var out map[string]string
	if err := c.Do(context.Background(), "POST", "/echo", map[string]string{"say": "hi"}, &out, nil); err != nil || out["got"] != "hi" {
		t.Fatalf("echo: %v %v", out, err)
	}
	var status int
	err = c.Do(context.Background(), "GET", "/refuse", nil, nil, func(code int, msg string) error {
		status = code
		return errors.New("refused: " + msg)
	})
	if err == nil || err.Error() != "refused: bad name" || status != http.StatusBadRequest {
		t.Errorf("refusal: %v (status %d), want the message through refused with 400", err, status)
	}
	err = c.Do(context.Background(), "GET", "/nowhere", nil, nil, func(int, string) error { return errors.New("not this") })
	if err == nil || !strings.Contains(err.Error(), "agent answered 404") {
		t.Errorf("an answer without a message: %v, want what answered what", err)
	}
}
