// Package apitype holds the requests and answers of the agent's local API
// (package api's client, package api/server's handler), as the JSON on the
// wire has them. It imports only the standard library, so that agentctl
// links none of the agent: no daemon, no BPF, no netlink, no database.
//
// The agent builds its answers from its own types (daemon.Status,
// portal.InletSpec, loader.Attachment, ...) and the server encodes those;
// each type here has the same JSON, field for field, and
// api/server's TestWireTypesMatch fails if the two ever differ.
package apitype

import "time"

// ErrorBody is the body of every error response.
type ErrorBody struct {
	Error string `json:"error"`
}

// RelayRequest creates a relay (POST /v1/relays).
type RelayRequest struct {
	Name string `json:"name"`
}

// Item states, as the API shows them (InletInfo.State, OutletInfo.State).
const (
	StateRunning = "running" // an inlet or outlet that works
	StateFailed  = "failed"  // configured, not running: see Error and NextRetry
)

// Status is what `agentctl status` shows (GET /v1/status; daemon.Status).
type Status struct {
	Node       string            `json:"node"`
	Project    string            `json:"project"`
	Attributes map[string]string `json:"attributes"`
	Credential CredentialStatus  `json:"credential"`
	Hub        HubStatus         `json:"hub"`
	Relays     []RelayInfo       `json:"relays"`
	Inlets     []InletInfo       `json:"inlets"`
	Outlets    []OutletInfo      `json:"outlets"`
	// Pending lists what keeps the agent from being ready besides its
	// credential, hub link and data path ("name: why"): its configuration
	// file not applied yet, say.
	Pending []string `json:"pending,omitempty"`
	// Peers are the paths of the inlets' channels, by outlet node, and
	// DirectPaths the counts of channels by path and of direct attempts
	// (docs/direct-paths.md).
	Peers       []PeerPath     `json:"peers"`
	DirectPaths DirectCounters `json:"direct_paths"`
}

// PeerPath is the path of the channels to one peer (portal.PeerPath).
type PeerPath struct {
	Node  string    `json:"node"`
	Path  string    `json:"path"` // "direct" or "relayed"
	Since time.Time `json:"since"`
	// RTT is the kernel's smoothed round trip time of the newest channel's
	// connection: to the peer when direct, to the hub when relayed.
	RTT             time.Duration `json:"rtt_ns"`
	DirectChannels  int64         `json:"direct_channels"`
	RelayedChannels int64         `json:"relayed_channels"`
	// NextAttempt is when a relayed peer gets its next background attempt
	// at a direct path, if one is planned.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
}

// DirectCounters count channels by path and direct attempts by outcome
// (portal.DirectCounters).
type DirectCounters struct {
	ChannelsDirect  int64 `json:"channels_direct"`
	ChannelsRelayed int64 `json:"channels_relayed"`
	AttemptsOK      int64 `json:"attempts_ok"`
	AttemptsFailed  int64 `json:"attempts_failed"`
	NotOffered      int64 `json:"attempts_not_offered"`
	Breaks          int64 `json:"breaks"`
}

// CredentialStatus describes the current credential.
type CredentialStatus struct {
	Expires   time.Time `json:"expires"`
	ExpiresIn string    `json:"expires_in"`
	Serial    string    `json:"serial"`
	// Generation is the member-state generation the credential was issued
	// at: peers refuse it once they have heard of a newer one.
	Generation uint64 `json:"generation"`
}

// HubStatus is the agent's link to the hub (relay.Status).
type HubStatus struct {
	Hub string `json:"hub"`
	// Hubs are the links to every hub of the project, when there are
	// several (relay.HubStatus).
	Hubs      []HubLink `json:"hubs,omitempty"`
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error,omitempty"`
	Relays    []string  `json:"relays"`
	// MemberGeneration is the project's member-state generation up to
	// which this agent has heard every word of the authority.
	MemberGeneration uint64 `json:"member_generation"`
	// AuthorityHeard is the time of the authority's newest signed
	// heartbeat, and AuthorityGeneration the generation it gave; the
	// member state is Stale when that heartbeat is too old, or this agent
	// has not every word up to its generation.
	AuthorityHeard      time.Time `json:"authority_heard,omitzero"`
	AuthorityGeneration uint64    `json:"authority_generation"`
	Stale               bool      `json:"member_state_stale"`
}

// HubLink is one link to a hub of a project of several (relay.HubStatus).
type HubLink struct {
	Addr string `json:"addr"`
	// Role is "control" (the link requests go on), "outlet" (a link that
	// only takes sessions for this agent's relay names) or "standby" (no
	// link: the hub is there to fail over to).
	Role      string    `json:"role"`
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	// Relays are the names an outlet link holds on its hub.
	Relays []string `json:"relays,omitempty"`
}

// RelayInfo describes a relay name this agent claims (GET and POST
// /v1/relays; daemon.RelayInfo).
type RelayInfo struct {
	Name    string `json:"name"`
	Claimed bool   `json:"claimed"` // held at the hub right now
	// Error says why it is not held; NextRetry is when the agent tries
	// again (zero while the hub is unreachable: it claims on reconnection).
	Error     string    `json:"error,omitempty"`
	NextRetry time.Time `json:"next_retry,omitzero"`
}
