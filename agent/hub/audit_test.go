package hub_test

import (
	"io"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/agent/internal/testhub"
)

// TestAuditDataSession checks that a data session writes exactly two audit
// lines: one when the hub pairs it, one when it ends, with the bytes it
// relayed both ways.
func TestAuditDataSession(t *testing.T) {
	relayModes(t, func(t *testing.T, opts hub.HubOptions) {
		core, logs := observer.New(zap.InfoLevel)
		opts.Audit = zap.New(core).Named("audit")
		inlet, outlet := session(t, testhub.Start(t, testhub.Options{Hub: opts}))
		if _, err := inlet.Write([]byte("ping!")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(outlet, make([]byte, 5)); err != nil {
			t.Fatal(err)
		}
		if _, err := outlet.Write([]byte("pong")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(inlet, make([]byte, 4)); err != nil {
			t.Fatal(err)
		}
		inlet.CloseWrite()
		outlet.CloseWrite()
		io.ReadAll(inlet)
		io.ReadAll(outlet)
		if !testhub.WaitFor(wait, func() bool { return logs.FilterMessage("data session ended").Len() > 0 }) {
			t.Fatalf("no \"data session ended\" line: %v", logs.All())
		}
		got := logs.All()
		if len(got) != 2 || got[0].Message != "data session paired" || got[1].Message != "data session ended" {
			t.Fatalf("audit lines %v, want paired then ended", got)
		}
		for _, e := range got {
			if e.LoggerName != "audit" || e.ContextMap()["relay"] != "svc" || e.ContextMap()["from"] == "" {
				t.Errorf("line %q from %q with %v, want relay svc and the inlet's node", e.Message, e.LoggerName, e.ContextMap())
			}
		}
		if b := got[1].ContextMap()["bytes"]; b != int64(9) {
			t.Errorf("ended with bytes %v, want 9", b)
		}
	})
}
