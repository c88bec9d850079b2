package scenario_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

// flowEvent is the part of `agentctl observe -o json`'s lines the test reads.
type flowEvent struct {
	Type           string            `json:"type"`
	Portal         string            `json:"portal"`
	Direction      string            `json:"direction"`
	Verdict        string            `json:"verdict"`
	By             string            `json:"by"`
	Reason         string            `json:"reason"`
	Peer           string            `json:"peer"`
	PeerAttributes map[string]string `json:"peer_attributes"`
	Workload       string            `json:"workload"`
	Client         string            `json:"client"`
	Target         string            `json:"target"`
	BytesSent      int64             `json:"bytes_sent"`
	BytesReceived  int64             `json:"bytes_received"`
}

// testObserve watches the analysis agent's flow log while the app makes
// one allowed connection through the transparent inlet and a container
// that is no workload makes one the kernel refuses: the stream shows the
// allowed one opened and closed (the app's workload, the bank agent as
// peer, bytes both ways) and the refused one with the kernel's verdict,
// which came through the TC program's ring buffer.
func testObserve(t *testing.T, ctx context.Context, s *scenario.Scenario, other *testenv.Container) {
	if other == nil {
		t.Skip("no second container: OtherWorkloadRefused failed")
	}
	bankNode := nodeOf(t, ctx, s.Bank)
	octx, stop := context.WithCancel(ctx)
	lines, wait, err := s.Analysis.Observe(octx, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		stop()
		if err := wait(); err != nil {
			t.Error(err)
		}
	}()
	next := func(within time.Duration) (flowEvent, bool) {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("observe ended: %v", wait())
			}
			var e flowEvent
			if err := json.Unmarshal([]byte(l), &e); err != nil {
				t.Fatalf("observe printed %q: %v", l, err)
			}
			return e, true
		case <-time.After(within):
			return flowEvent{}, false
		}
	}
	// The refused connection first: the observer may subscribe after the
	// first try, so try again until it shows (each try is refused anyway).
	var kernel *flowEvent
	for try := 0; kernel == nil; try++ {
		if try == 5 {
			t.Fatal("no kernel refusal in the flow log after 5 refused connections")
		}
		refused(t, ctx, other.NS)
		for kernel == nil {
			e, ok := next(2 * time.Second)
			if !ok {
				break
			}
			if e.Type == "refused" && strings.HasPrefix(e.Client, other.Addr+":") {
				kernel = &e
			}
		}
	}
	if got, err := s.Psql(ctx, s.Seed.App.NS, scenario.ServiceIP, scenario.ServicePort, "SELECT 1"); err != nil || got != "1" {
		t.Fatalf("the app through the portal: %q, %v", got, err)
	}
	var open, closed *flowEvent
	for open == nil || closed == nil {
		e, ok := next(10 * time.Second)
		if !ok {
			t.Fatalf("within 10s of the app's connection: open %+v, close %+v; want both", open, closed)
		}
		switch {
		case e.Portal != scenario.TransparentInlet || !strings.HasPrefix(e.Client, s.Seed.App.Addr+":"):
		case e.Type == "open":
			open = &e
		case e.Type == "close":
			closed = &e
		}
	}
	for _, e := range []*flowEvent{open, closed} {
		if e.Verdict != "allowed" || e.Direction != "inlet" || e.Workload != scenario.AppWorkload ||
			e.Target != scenario.ServiceAddr || e.Peer != bankNode || len(e.PeerAttributes) == 0 {
			t.Errorf("allowed connection's %s event: %+v, want inlet %s, workload %s, target %s, peer %s with attributes",
				e.Type, *e, scenario.TransparentInlet, scenario.AppWorkload, scenario.ServiceAddr, bankNode)
		}
	}
	if closed.BytesSent <= 0 || closed.BytesReceived <= 0 {
		t.Errorf("close: sent %d, received %d; want bytes both ways", closed.BytesSent, closed.BytesReceived)
	}
	if kernel.Portal != scenario.TransparentInlet || kernel.Verdict != "refused" || kernel.By != "kernel" || kernel.Reason != "workload not allowed" || kernel.Target != scenario.ServiceAddr {
		t.Errorf("refused connection: %+v, want refused by the kernel: workload not allowed, target %s", *kernel, scenario.ServiceAddr)
	}
	// The same, as an operator reads it.
	out, err := s.Analysis.Ctl(ctx, "observe", "--portal", scenario.TransparentInlet, "--last", "3", "--follow=false")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("agentctl observe --portal %s --last 3 --follow=false:\n%s", scenario.TransparentInlet, out)
	if n := strings.Count(out, "\n"); n != 3 {
		t.Errorf("--last 3 printed %d lines", n)
	}
	out, err = s.Analysis.Ctl(ctx, "observe", "--verdict", "refused", "--last", "100", "--follow=false", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.Contains(l, `"verdict":"refused"`) {
			t.Errorf("--verdict refused printed %s", l)
		}
	}
}
