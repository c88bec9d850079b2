package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/agent/api/apitype"
)

// TestStatusShowsPeers: agentctl status lists each peer's path, its
// round trip and its channels, and -o json has them under "peers" and the
// counts under "direct_paths".
func TestStatusShowsPeers(t *testing.T) {
	sock := (&fakeAPI{}).serve(t)
	out, code := agentctlCode(t, "--agent", sock, "status")
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, out)
	}
	for _, want := range []string{"PEER", "n-peer", "direct", "412µs", "3 direct, 0 through the hub", "1 fell back"} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not show %q:\n%s", want, out)
		}
	}
	out, code = agentctlCode(t, "--agent", sock, "status", "-o", "json")
	if code != 0 {
		t.Fatalf("status -o json: exit %d: %s", code, out)
	}
	var st apitype.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Peers) != 1 || st.Peers[0].Path != "direct" || st.Peers[0].DirectChannels != 3 || st.DirectPaths.AttemptsFailed != 1 {
		t.Errorf("status -o json: peers %+v, direct_paths %+v", st.Peers, st.DirectPaths)
	}
	if !strings.Contains(out, `"rtt_ns"`) || !strings.Contains(out, `"attempts_not_offered"`) {
		t.Errorf("status -o json lacks the documented fields:\n%s", out)
	}
}
