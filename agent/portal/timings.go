package portal

import "time"

// Timings receives how long each connection of an inlet took to set up, for
// the agent's metrics (agent/metrics turns them into histograms). It is
// called once per connection or new channel, never per byte, from the
// connection's goroutine: it must not block.
type Timings interface {
	// Handshake is the time a new channel of inlet took from asking the
	// hub for a data session (or dialing the outlet's agent) to the end of
	// its TLS handshake.
	Handshake(inlet string, d time.Duration)
	// Setup is the time from accepting a connection of inlet to having a
	// channel (new or warm) whose outlet was asked to open its target.
	Setup(inlet string, d time.Duration)
}

// noTimings is the Timings of a Manager without Options.Timings.
type noTimings struct{}

func (noTimings) Handshake(string, time.Duration) {}
func (noTimings) Setup(string, time.Duration)     {}
