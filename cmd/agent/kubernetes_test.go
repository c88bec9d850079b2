package main

import (
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKubernetesFlagsChecked: --kubernetes without a node name, or its
// settings without it, stop the agent before it starts, exit status 2.
func TestKubernetesFlagsChecked(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no node name", []string{"--kubernetes"}, "give --node-name or set $NODE_NAME"},
		{"node name alone", []string{"--node-name", "n1"}, "need --kubernetes"},
		{"kubeconfig alone", []string{"--kubeconfig", "/nonexistent"}, "need --kubernetes"},
		{"config file", []string{"--config", "FILE"}, "give --node-name or set $NODE_NAME"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("NODE_NAME", "")
			dir := t.TempDir()
			if tc.args[0] == "--config" {
				tc.args[1] = filepath.Join(dir, "agent.yaml")
				writeFile(t, tc.args[1], "kubernetes:\n  enabled: true\n  kubeconfig: /nonexistent\n")
			}
			a := startCommand(t, append([]string{"run", "--state-dir", filepath.Join(dir, "state"), "--api", filepath.Join(dir, "agent.sock"), "--datapath", "off"}, tc.args...)...)
			if code := a.exit(t); code != 2 || !strings.Contains(a.out.String(), tc.want) {
				t.Errorf("exit %d, output %q; want 2 and %q", code, a.out.String(), tc.want)
			}
		})
	}
}

// TestKubernetesUnreachableNotReady: an agent whose API server cannot be
// reached starts, says so in its log, is not ready (/readyz says why), and
// stops cleanly.
func TestKubernetesUnreachableNotReady(t *testing.T) {
	h := startHub(t)
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	writeFile(t, kubeconfig, `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
users: [{name: u, user: {}}]
current-context: c
`)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metrics := ln.Addr().String()
	ln.Close()
	a := startCommand(t, "run", "--state-dir", filepath.Join(dir, "state"), "--api", filepath.Join(dir, "agent.sock"), "--datapath", "off",
		"--ticket", h.ticket(t), "--kubernetes", "--node-name", "node-a", "--kubeconfig", kubeconfig, "--metrics", metrics)
	a.waitOutput(t, "", "cannot list the pods of this node on the Kubernetes API server")
	a.alive(t)
	var body string
	for deadline := time.Now().Add(wait); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + metrics + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			if resp.StatusCode == http.StatusOK {
				t.Fatalf("/readyz is 200 with no API server: %s", body)
			}
			if strings.Contains(body, "pods of this node are not listed yet") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never said why: %q, %v", body, err)
		}
	}
	if !strings.Contains(body, "connection refused") {
		t.Errorf("/readyz: %q; want the reason (connection refused)", body)
	}
	a.signal(t, syscall.SIGTERM)
	if code := a.exit(t); code != 0 {
		t.Errorf("exit %d after SIGTERM:\n%s", code, a.out.String())
	}
}
