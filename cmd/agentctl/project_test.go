package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestProjectInitExistOK: `project init --exist-ok`, as the hub's
// StatefulSet runs it in an init container at every start, creates the
// project once and keeps it afterwards (same project ID); a project for
// another hub address is still an error, and so, without --exist-ok, is
// any existing project.
func TestProjectInitExistOK(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "project")
	args := []string{"project", "init", "--exist-ok", "--dir", dir, "--hub-address", "hub.example.com:4443"}
	first, err := agentctl(t, args...)
	if err != nil || !strings.Contains(first, "created") {
		t.Fatalf("first init: %q, %v", first, err)
	}
	id := strings.Fields(first)[1]
	again, err := agentctl(t, args...)
	if err != nil || !strings.Contains(again, "project "+id+" exists") || !strings.Contains(again, "kept") {
		t.Errorf("init --exist-ok again: %q, %v; want project %s kept", again, err, id)
	}
	if _, err := agentctl(t, "project", "init", "--exist-ok", "--dir", dir, "--hub-address", "other.example.com:4443"); err == nil || !strings.Contains(err.Error(), "not other.example.com:4443") {
		t.Errorf("init --exist-ok for another hub address: %v, want a refusal naming both", err)
	}
	if _, err := agentctl(t, "project", "init", "--dir", dir, "--hub-address", "hub.example.com:4443"); err == nil || !strings.Contains(err.Error(), "already holds a project") {
		t.Errorf("init without --exist-ok: %v, want already holds a project", err)
	}
}
