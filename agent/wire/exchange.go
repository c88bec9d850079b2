package wire

// The enrollment exchange: an agent's request to the project's authority,
// end to end through a relay data session (agent/hub/authority serves it,
// agent/relay's client asks).

// ExchangeALPN is the application protocol of the exchange.
const ExchangeALPN = "sluice-authority/1"

// Operations of the exchange.
const (
	OpEnroll = "enroll" // redeem a ticket, get a credential
	OpHello  = "hello"  // an existing member: get a credential
	OpRenew  = "renew"  // a fresh credential
)

// ExchangeRequest is what an agent asks the authority.
type ExchangeRequest struct {
	Op     string `json:"op"`
	Ticket string `json:"ticket,omitempty"`
	// Generation is the newest generation the agent has every word up to:
	// the reply holds the words after it.
	Generation uint64 `json:"generation,omitempty"`
}

// ExchangeReply is the authority's answer: a credential and the member
// state, or a refusal (Error, with Code one of the authority's wire codes).
type ExchangeReply struct {
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`

	Credential []byte            `json:"credential,omitempty"` // DER
	Authority  []byte            `json:"authority,omitempty"`  // DER of the authority's certificate
	Project    string            `json:"project,omitempty"`
	Node       string            `json:"node,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
	Generation uint64            `json:"generation,omitempty"` // the project's
	Words      []Statement       `json:"words,omitempty"`
	Heartbeat  Statement         `json:"heartbeat"`
}
