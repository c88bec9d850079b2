package main

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/api"
	"github.com/sluicehq/sluice/agent/api/apitype"
)

func TestFormatFlow(t *testing.T) {
	at := time.Date(2026, 12, 1, 8, 0, 0, 123e6, time.Local)
	for _, tc := range []struct {
		ev   apitype.FlowEvent
		want string
	}{
		{apitype.FlowEvent{Time: at, Type: "refused", Verdict: "refused", Direction: "inlet", Portal: "postgres", Client: "10.10.0.3:5000",
			Target: "10.200.0.10:5432", By: "kernel", Reason: "workload not allowed"},
			`08:00:00.123 REFUSED inlet/postgres 10.10.0.3:5000 -> 10.200.0.10:5432 by="kernel" reason="workload not allowed"`},
		{apitype.FlowEvent{Time: at, Type: "close", Verdict: "allowed", Direction: "outlet", Portal: "db", Target: "db:5432",
			Peer: "n1", PeerAttributes: map[string]string{"b": "2", "a": "1"}, BytesSent: 10, BytesReceived: 20, Duration: 1.5, Error: "reset"},
			`08:00:00.123 CLOSE   outlet/db - -> db:5432 peer=n1{a=1,b=2} sent=10 received=20 duration=1.5s error="reset"`},
		{apitype.FlowEvent{Time: at, Type: "lost", Lost: 7}, `08:00:00.123 LOST 7 events: this observer read too slowly`},
	} {
		if got := formatFlow(tc.ev); got != tc.want {
			t.Errorf("got\n%s\nwant\n%s", got, tc.want)
		}
	}
}

func TestObserveFlagsChecked(t *testing.T) {
	for _, args := range [][]string{
		{"observe", "--verdict", "maybe"},
		{"observe", "--last", "-1"},
		{"observe", "-o", "yaml"},
	} {
		err := run(t.Context(), append([]string{"--agent", "/nonexistent.sock"}, args...), io.Discard, io.Discard)
		if err == nil || errors.Is(err, api.ErrNoAgent) {
			t.Errorf("%v: %v, want a usage error before connecting", args, err)
		}
	}
}
