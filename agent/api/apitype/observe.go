package apitype

import "time"

// FlowEvent is one event of the agent's flow log, a line of GET
// /v1/observe (flowlog.Event). docs/observe.md describes the fields.
type FlowEvent struct {
	Time           time.Time         `json:"time"`
	Type           string            `json:"type"` // "open", "close", "refused" or "lost"
	Portal         string            `json:"portal,omitempty"`
	Direction      string            `json:"direction,omitempty"` // "inlet" or "outlet"
	Verdict        string            `json:"verdict,omitempty"`   // "allowed" or "refused"
	Reason         string            `json:"reason,omitempty"`
	By             string            `json:"by,omitempty"` // "kernel", "local policy", "policy" or "limit"
	Peer           string            `json:"peer,omitempty"`
	PeerAttributes map[string]string `json:"peer_attributes,omitempty"`
	Workload       string            `json:"workload,omitempty"`
	Client         string            `json:"client,omitempty"`
	Target         string            `json:"target,omitempty"`
	BytesSent      int64             `json:"bytes_sent,omitempty"`
	BytesReceived  int64             `json:"bytes_received,omitempty"`
	Duration       float64           `json:"duration_seconds,omitempty"`
	Error          string            `json:"error,omitempty"`
	Lost           uint64            `json:"lost,omitempty"`
}

// ObserveQuery selects the events of GET /v1/observe (its query
// parameters); empty filters match everything.
type ObserveQuery struct {
	Portal   string // portal=
	Verdict  string // verdict=allowed|refused
	Workload string // workload=
	Peer     string // peer= (a node ID)
	Last     int    // last=N: first the newest N recorded events that pass
	Follow   bool   // follow=true: then stream new ones until the client goes
}
