package portal

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/agent/channel"
)

// A new channel's first connection sends the app's bytes before the
// outlet's verdict has come back: its status, or the TLS alert with which
// it refused this agent's credential after the handshake (TLS 1.3 clients
// finish first). An outlet that refuses closes the channel, and the app's
// bytes arriving after that make its kernel reset it: the direction that
// writes to the channel may then fail first, with a reset that would hide
// the refusal the direction that reads it is about to find. verdictPump
// holds such a write error back until the reading direction has read the
// verdict or ended (verdictWait at most), and then returns the reading
// direction's error in its place: the pipe reports the refusal whichever
// direction reaches it first. (Only signalling the reader's end was not
// enough: the writer could still report before the reader did.)
//
//	app ──PumpFrom──> channel   write fails (reset) ──> wait for the reader
//	app <──PumpTo──── channel   status / alert / end ──> verdict read

// verdictWait bounds how long a failed write waits for the verdict.
const verdictWait = time.Second

// verdictPump is a new channel for its first connection.
type verdictPump struct {
	*channel.Conn
	read chan struct{} // closed once the outlet said it connected, or reading ended
	once sync.Once
	// readErr is what ended reading, set before read is closed when
	// reading ended first.
	readErr atomic.Pointer[error]
	// allowed, if set before the pipe runs, is called when the outlet's
	// status says it connected to its target (the flow log's open event).
	allowed func()
}

// newVerdictPump wraps ch, whose outlet's status comes among its data.
func newVerdictPump(ch *channel.Conn) *verdictPump {
	v := &verdictPump{Conn: ch, read: make(chan struct{})}
	ch.OnControl = func(b byte) error {
		err := outletStatus(b)
		if err != nil {
			return err // it ends PumpTo, which records it and marks the end
		}
		v.readDone()
		if v.allowed != nil {
			v.allowed()
		}
		return nil
	}
	return v
}

func (v *verdictPump) readDone() { v.once.Do(func() { close(v.read) }) }

// PumpTo is channel.Conn's, and records how reading ended.
func (v *verdictPump) PumpTo(dst *net.TCPConn, n *atomic.Int64) error {
	err := v.Conn.PumpTo(dst, n)
	if err != nil {
		v.readErr.Store(&err)
	}
	v.readDone()
	return err
}

// PumpFrom is channel.Conn's; a failed write to the channel waits for the
// verdict first, and gives way to the reader's error if reading ended with one.
func (v *verdictPump) PumpFrom(src *net.TCPConn, n *atomic.Int64) error {
	err := v.Conn.PumpFrom(src, n)
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "write" {
		select {
		case <-v.read:
			if rerr := v.readErr.Load(); rerr != nil {
				return *rerr
			}
		case <-time.After(verdictWait):
		}
	}
	return err
}
