package hub_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/pipe"
)

// TestHubDeathResetsSessions: when the hub dies (SIGKILL, as a crash) its
// relayed data connections reach both agents as resets, never as a FIN
// that a peer could take for the other side's clean end.
func TestHubDeathResetsSessions(t *testing.T) {
	p := testhub.StartProcess(t, testhub.ProcessOptions{})
	inlet, outlet := session(t, p.Hub)
	for _, c := range []struct{ from, to *net.TCPConn }{{inlet, outlet}, {outlet, inlet}} {
		if _, err := c.from.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c.to, make([]byte, 4)); err != nil {
			t.Fatal(err)
		}
	}
	p.Kill()
	for name, c := range map[string]*net.TCPConn{"inlet": inlet, "outlet": outlet} {
		c.SetReadDeadline(time.Now().Add(wait))
		if _, err := io.ReadAll(c); !pipe.IsReset(err) {
			t.Errorf("the %s's data connection ended with %v when the hub died, want a reset", name, err)
		}
	}
}
