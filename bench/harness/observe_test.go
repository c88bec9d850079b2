package harness

import (
	"slices"
	"testing"
)

func TestObserverArgs(t *testing.T) {
	var off Config
	args := map[string][]string{"bank": {"--max-conns", "1100"}}
	if hub := off.observerArgs(args); hub != nil || len(args) != 1 || len(args["bank"]) != 2 {
		t.Errorf("without --metrics: hub %q, agents %q; want nothing added", hub, args)
	}
	if obs := off.Observers(); obs != nil {
		t.Errorf("Observers() = %q without observers", obs)
	}

	on := Config{Capture: true, Metrics: true}
	if obs := on.Observers(); !slices.Equal(obs, []string{ObserveCapture, ObserveMetrics}) {
		t.Errorf("Observers() = %q", obs)
	}
	hub := on.observerArgs(args)
	addrs := map[string]string{} // address: who serves it
	want := map[string][]string{"hub": hub}
	for _, a := range []string{"analysis", "bank", transparentAgent} {
		want[a] = args[a]
	}
	for who, argv := range want {
		i := slices.Index(argv, "--metrics")
		if i < 0 || i+1 >= len(argv) {
			t.Fatalf("%s: %q has no --metrics ADDR", who, argv)
		}
		if other, ok := addrs[argv[i+1]]; ok {
			// The two analysis agents share a namespace: one address each.
			t.Errorf("%s and %s both serve metrics on %s", who, other, argv[i+1])
		}
		addrs[argv[i+1]] = who
		if argv[i+1] != metricsAddr(who) {
			t.Errorf("%s serves on %s but is scraped on %s", who, argv[i+1], metricsAddr(who))
		}
	}
	if !slices.Equal(args["bank"][:2], []string{"--max-conns", "1100"}) {
		t.Errorf("bank's own arguments lost: %q", args["bank"])
	}
}

func TestLastLine(t *testing.T) {
	out := "capturing decrypted on every portal (Ctrl-C to stop)\n12 packets of 3 connections (3 ended) written; 5 records dropped by the agent\n"
	if got := lastLine(out); got != "12 packets of 3 connections (3 ended) written; 5 records dropped by the agent" {
		t.Errorf("lastLine = %q", got)
	}
	if got := lastLine("one"); got != "one" {
		t.Errorf("lastLine(one) = %q", got)
	}
}
