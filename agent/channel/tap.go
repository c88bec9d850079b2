package channel

import "github.com/sluicehq/sluice/agent/capture"

// Taps for `agentctl capture` (package capture): the wire tap sees every
// record as it crosses the TCP connection (sealed), the stream tap the
// plaintext of the connection the channel carries now. Each costs one
// atomic load per chunk while nobody captures (capture.Point.Data).

// SetWireTap taps the channel's TCP connection; call it before the channel
// carries anything.
func (c *Conn) SetWireTap(p *capture.Point) { c.wireTap = p }

// SetStreamTap taps the plaintext of the next stream; call it while no
// stream runs (between pipe.Run calls), nil to stop.
func (c *Conn) SetStreamTap(p *capture.Point) { c.streamTap = p }
