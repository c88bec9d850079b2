package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

func TestBadInputIsExplained(t *testing.T) {
	state := t.TempDir()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"run"}, "--state-dir is required"},
		{[]string{"run", "--state-dir", state, "--api", filepath.Join(t.TempDir(), "a.sock")}, "holds no enrollment; pass --ticket"},
		{[]string{"run", "--state-dir", state, "--api", filepath.Join(t.TempDir(), "a.sock"), "--ticket", "garbage"}, "ticket is malformed"},
		{[]string{"run", "--state-dir", state, "--ticket", "@" + filepath.Join(t.TempDir(), "missing")}, "--ticket: read"},
		{[]string{"run", "--state-dir", state, "--log-level", "loud"}, "--log-level"},
		{[]string{"run", "--state-dir", state, "--datapath", "maybe"}, `--datapath "maybe": want auto, on or off`},
		{[]string{"run", "--state-dir", state, "--shutdown-timeout", "-1s"}, "--shutdown-timeout -1s: want 0 or more"},
		{[]string{"run", "--state-dir", state, "--warm-idle", "-1s"}, "--warm-idle -1s: want 0 (no warm channels) to 30s"},
		{[]string{"run", "--state-dir", state, "--warm-idle", "1m"}, "--warm-idle 1m0s: want 0 (no warm channels) to 30s"},
		{[]string{"run", "--state-dir", state, "--direct-paths", "on"}, `--direct-paths "on": want auto or off`},
		{[]string{"run", "--state-dir", state, "--log-file", filepath.Join(t.TempDir(), "missing", "agent.log")}, "--log-file: open"},
		{[]string{"hub", "--project", t.TempDir(), "--listen", "127.0.0.1:0", "--shutdown-timeout", "-1s"}, "--shutdown-timeout -1s: want 0 or more"},
		{[]string{"hub"}, "--project and --listen are required"},
		{[]string{"hub", "--project", t.TempDir(), "--listen", "127.0.0.1:0"}, "agentctl project init"},
		{[]string{"hub", "--project", t.TempDir(), "--listen", "127.0.0.1:0", "--init"}, "--init and --restore FILE each take only --project"},
		{[]string{"hub", "--project", t.TempDir(), "--init", "--restore", "x"}, "--init and --restore FILE each take only --project"},
		{[]string{"hub", "--init"}, "--init and --restore FILE each take only --project"},
		{[]string{"hub", "--project", "p", "--listen", "127.0.0.1:0", "--store", "bolt", "--cluster-name", "a"}, "--store bolt is one hub alone"},
		{[]string{"hub", "--project", "p", "--listen", "127.0.0.1:0", "--store", "sqlite"}, `--store "sqlite": want etcd or bolt`},
		{[]string{"hub", "--project", "p", "--listen", "127.0.0.1:0", "--cluster-name", "a"}, "a cluster needs --cluster-name and --cluster-peers"},
		{[]string{"hub", "--project", "p", "--listen", "127.0.0.1:0", "--cluster-name", "a", "--cluster-peers", "a=http://10.0.0.1:2380"}, "peer traffic is always TLS"},
		{[]string{"hub", "--project", "p", "--listen", "127.0.0.1:0", "--cluster-name", "d", "--cluster-peers", "a=https://10.0.0.1:2380"}, `--cluster-name "d" is not one of --cluster-peers`},
		{[]string{"hub", "--project", "p", "--listen", "127.0.0.1:0", "--cluster-name", "a", "--cluster-peers", "a=https://10.0.0.1:2380", "--etcd-endpoints", "https://e:2379"}, "exclude each other"},
		{[]string{"hub", "--project", "p", "--listen", "127.0.0.1:0", "--etcd-ca", "ca.pem"}, "go with --etcd-endpoints"},
		{[]string{"hub", "--project", "p", "--listen", "127.0.0.1:0", "--role", "relay", "--etcd-endpoints", "https://e:2379"}, "for a hub that runs the authority"},
		{[]string{"hub", "check"}, "--project is required"},
		{[]string{"hub", "--project", t.TempDir(), "--listen", "127.0.0.1:0", "--credential-lifetime", "1s"}, "too short"},
		{[]string{"hub", "--project", t.TempDir(), "--listen", "127.0.0.1:0", "--relay", "fast"}, "want auto, splice or sockmap"},
		{[]string{"hub", "--project", t.TempDir(), "--listen", "127.0.0.1:0", "--max-pending", "0"}, "--max-pending 0: must be positive"},
		{[]string{"hub", "--project", t.TempDir(), "--listen", "127.0.0.1:0", "--reserved-for-members", "2000"}, "reserved for members (2000) must be less"},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		err := run(context.Background(), tt.args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("agent %s: error %v, want it to mention %q", strings.Join(tt.args, " "), err, tt.want)
		}
	}
}

func TestDatapathHelp(t *testing.T) {
	for _, args := range [][]string{{"run", "--help"}, {"cleanup", "--help"}} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), args, &out, &errOut); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "--bpf-dir") || !strings.Contains(out.String(), "fail") {
			t.Errorf("agent %s does not explain --bpf-dir and failing closed:\n%s", strings.Join(args, " "), out.String())
		}
	}
}
