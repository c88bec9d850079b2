package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/api"
	"github.com/sluicehq/sluice/agent/api/apitype"
)

// fakeCaptureAgent serves GET /v1/capture with recs, then holds the
// stream open until the client goes (hold) or ends it.
func fakeCaptureAgent(t *testing.T, recs []apitype.CaptureRecord, hold bool) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := api.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/capture", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("kind") != apitype.CaptureDecrypted || r.URL.Query().Get("portal") != "pg" {
			http.Error(w, "unexpected query "+r.URL.RawQuery, http.StatusBadRequest)
			return
		}
		enc := json.NewEncoder(w)
		for _, rec := range recs {
			enc.Encode(rec)
		}
		w.(http.Flusher).Flush()
		if hold {
			<-r.Context().Done()
		}
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func runCapture(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = run(ctx, args, &out, &errOut)
	return out.String(), errOut.String(), err
}

var pgConn = []apitype.CaptureRecord{
	conn(1, "10.10.0.2:41000", "10.10.0.1:15432"),
	data(1, true, 0, []byte("SELECT 'marker'")),
	{Type: apitype.CaptureDropped, Dropped: 5},
	end(1, false),
	conn(2, "10.10.0.2:41001", "10.10.0.1:15432"), // after --count 1: not written
	data(2, true, 0, []byte("after the count")),
}

// -w - writes the capture to standard output; --count 1 ends it once one
// connection ended; the summary reports the records the agent dropped.
func TestCaptureToStdoutCountsConnections(t *testing.T) {
	sock := fakeCaptureAgent(t, pgConn, true)
	out, errOut, err := runCapture(t, "--agent", sock, "capture", "-w", "-", "--portal", "pg", "--count", "1")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "out.pcap")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	up, _ := checkStream(t, readSegments(t, path), 41000, false)
	if string(up) != "SELECT 'marker'" {
		t.Fatalf("standard output reassembles to %q", up)
	}
	if !strings.Contains(errOut, "of 1 connections (1 ended)") || !strings.Contains(errOut, "5 records dropped") {
		t.Fatalf("summary %q lacks the connection count or the dropped records", errOut)
	}
}

// An agent that ends the capture (it stopped) leaves a complete file.
func TestCaptureEndedByTheAgent(t *testing.T) {
	sock := fakeCaptureAgent(t, pgConn[:2], false)
	path := filepath.Join(t.TempDir(), "c.pcapng")
	_, errOut, err := runCapture(t, "--agent", sock, "capture", "-w", path, "--format", "pcapng", "--portal", "pg")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut, "the agent ended the capture") {
		t.Fatalf("stderr %q does not say the agent ended it", errOut)
	}
	segs := readSegments(t, path)
	if len(segs) != 4 || string(segs[3].Payload) != "SELECT 'marker'" {
		t.Fatalf("%d segments; want the handshake and the query", len(segs))
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("capture file: %v, %v; want mode 0600", fi, err)
	}
}

// --duration ends a capture that saw nothing with a valid, empty file.
func TestCaptureDuration(t *testing.T) {
	sock := fakeCaptureAgent(t, nil, true)
	path := filepath.Join(t.TempDir(), "c.pcap")
	if _, _, err := runCapture(t, "--agent", sock, "capture", "-w", path, "--portal", "pg", "--duration", "200ms"); err != nil {
		t.Fatal(err)
	}
	if segs := readSegments(t, path); len(segs) != 0 {
		t.Fatalf("%d packets from a capture that saw nothing", len(segs))
	}
}

func TestCaptureBadFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"capture"}, `"write" not set`},
		{[]string{"capture", "-w", "x", "--count", "-1"}, "--count -1: must not be negative"},
		{[]string{"capture", "-w", "x", "--duration", "-1s"}, "--duration -1s: must not be negative"},
		{[]string{"capture", "-w", "x", "--format", "cap"}, `--format "cap": want pcap or pcapng`},
		{[]string{"capture", "-w", "x", "--wire", "--decrypted"}, "none of the others can be"},
	} {
		if _, _, err := runCapture(t, tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("agentctl %s: %v, want an error that mentions %q", strings.Join(tt.args, " "), err, tt.want)
		}
	}
}
