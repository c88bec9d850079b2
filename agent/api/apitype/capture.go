package apitype

import "time"

// Capture kinds (the kind query parameter of GET /v1/capture).
const (
	CaptureDecrypted = "decrypted" // what portals carried, in plaintext
	CaptureWire      = "wire"      // the channels' TCP connections: sealed records
)

// Capture record types (CaptureRecord.Type).
const (
	CaptureOpen    = "open"    // a connection, the first time the capture sees it
	CaptureData    = "data"    // bytes in one direction
	CaptureEnd     = "end"     // the connection ended: cleanly, or with a reset
	CaptureDropped = "dropped" // the agent dropped records: the reader fell behind
)

// CaptureRecord is one line of GET /v1/capture?kind=K&portal=P&peer=N, a
// stream of newline-delimited JSON that lasts until the client goes away.
// Each connection's "open" comes before its other records.
type CaptureRecord struct {
	Type string    `json:"type"`
	Conn uint64    `json:"conn,omitempty"` // the connection's number in this agent
	Time time.Time `json:"time"`

	// open
	Kind   string `json:"kind,omitempty"`
	Portal string `json:"portal,omitempty"`
	Peer   string `json:"peer,omitempty"`   // the peer agent's node ID
	Client string `json:"client,omitempty"` // IP:port of the side that opened the connection
	Server string `json:"server,omitempty"` // IP:port of the side that accepted it

	// data
	FromClient bool   `json:"from_client,omitempty"`
	Offset     uint64 `json:"offset,omitempty"` // bytes of this direction before these
	Data       []byte `json:"data,omitempty"`

	// end
	Reset bool `json:"reset,omitempty"`

	// dropped: records dropped so far in this capture
	Dropped uint64 `json:"dropped,omitempty"`
}
