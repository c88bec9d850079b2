// Package relay is the protocol agents and the hub speak on the hub's port,
// and the agent's client for it (client*.go). The hub's server is
// agent/hub, which uses the protocol's messages and framing from here;
// what the protocol carries that is not framing (tickets, the authority's
// statements, refusal codes) is agent/wire's. Nothing here opens a
// database or serves a port.
//
// One TCP port carries two kinds of connection, told apart by their first bytes:
//
//   - control (TLS 1.3, the hub authenticated by the project authority, the
//     agent by its node key): newline-delimited JSON messages, each at most
//     64 KiB from an agent (framing.go). A session starts limited: it may
//     only open data sessions to the authority (the reserved relay name
//     ".authority"), through which the agent enrolls or gets a fresh
//     credential end to end (agent/hub/authority's Service.Exchange), and present that
//     credential; then it may claim relay names, ask for data sessions, and
//     receives the authority's signed words on members. The authority itself
//     connects as a control session with its own key ("authority"), unless it
//     runs in the hub's process (docs/threat-model.md);
//   - data ("SLD2" + a 32-byte single-use token): the hub pairs the inlet's
//     and the outlet's data connections by token. Once both are there and
//     joined (spliced, or paired in the kernel's sockmap), it writes one ack
//     byte (0x06) to each; an agent sends nothing after the token until it
//     has read the ack, so no payload is ever queued in a socket before it
//     joins a sockmap (where later, redirected bytes would overtake it).
//     What flows after the ack is the agents' own end-to-end TLS session,
//     which the hub cannot read. The hub reads exactly the 36 header bytes.
//     "SLD1" was the same without the ack: a hub refuses it, and an older
//     hub closes an "SLD2" connection, which the agent reports.
package relay

import (
	"errors"
	"time"

	"github.com/sluicehq/sluice/agent/wire"
)

// dataMagic opens every data connection.
const DataMagic = "SLD2"

// dataMagicV1 is the data protocol before the ack, refused.
const DataMagicV1 = "SLD1"

// dataAck is the byte the hub writes to both data connections of a session
// once it relays them.
const DataAck = 0x06

// tokenSize is the length of a data session token.
const TokenSize = 32

// controlALPN is the ALPN protocol of control connections.
const ControlALPN = "sluice-control/1"

// Operations of the control protocol.
const (
	OpPresent   = "present"   // agent → hub: the credential this session acts with
	OpMembers   = "members"   // agent → hub: the words after a generation
	OpClaim     = "claim"     // agent → hub: own a relay name
	OpRelease   = "release"   // agent → hub: give a relay name up
	OpDial      = "dial"      // agent → hub: open a data session to a relay (or to the authority)
	OpPing      = "ping"      // agent → hub: liveness
	OpPolicies  = "policies"  // agent → hub: the --allow expressions of its outlets (docs/hub.md)
	OpReply     = "reply"     // hub → agent: answer to a request with the same ID
	OpIncoming  = "incoming"  // hub → agent: a data session for a relay it owns
	OpMember    = "member"    // hub → agent, authority → hub: the authority's signed word on a member
	OpHeartbeat = "heartbeat" // hub → agent, authority → hub: the authority's signed heartbeat
	OpGrant     = "grant"     // hub → agent, authority → hub: a fresh credential, unasked: its member record changed
	OpAuthority = "authority" // authority → hub: this session is the project's authority
)

// authorityRelay is the relay name an agent dials to reach the authority:
// never one an agent can claim (wire.CheckRelayName refuses it).
const AuthorityRelay = ".authority"

// Relay names held by one node (agent/hub/hub_claims.go, client_claims.go).
const (
	// opReleased, hub → agent: the hub gave Relay to another connection
	// of the same node (Error says which); the agent no longer holds it.
	OpReleased = "released"
)

// Shutdown of the hub (agent/hub/hub_drain.go).
const (
	// opGoAway (hub → agent): the hub is shutting down; the agent drops the
	// connection and reconnects at once, after a random wait (client_end.go),
	// to another hub of its project (client_hubs.go), or to the hub that
	// takes this one's place. Its data sessions go on meanwhile. A dial
	// during the drain is refused with code "going_away" (wire.ErrGoingAway).
	// An agent that knows neither ignores the push (unknown ops are
	// skipped) and sees the refusal as "refused".
	OpGoAway = "goaway"
)

// Direct paths (docs/direct-paths.md; agent/hub/hub_punch.go,
// client_punch.go). The hub coordinates a TCP simultaneous open between an
// inlet and the owner of a relay, when both keep their ports across their
// NATs (the hub sees the control connection come from the port the agent
// says it bound) and both asked for direct paths.
const (
	// OpPunch, outlet → hub: the owner bound Port for the session of Token
	// (its own token) and connects from it to the inlet's address; the hub
	// tells the inlet (OpPunchAt).
	OpPunch = "punch"
	// OpPunchAt, hub → inlet: connect from the port of the dial of Token
	// (the inlet's token) to Addr, the owner's public address and port.
	OpPunchAt = "punch_at"
	// OpDirect, inlet → hub: the session of Token went direct; the hub
	// forgets its pairing (the tokens were the fallback).
	OpDirect = "direct"
)

// DefaultHeartbeatInterval is how often the authority signs a heartbeat.
const DefaultHeartbeatInterval = 15 * time.Second

// MaxPublishedPolicies bounds the distinct outlet policies an agent
// publishes; an agent with more publishes "true" (no filter).
const MaxPublishedPolicies = 64

// message is one frame of the control protocol.
type Message struct {
	ID    uint64 `json:"id,omitempty"`
	Op    string `json:"op"`
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`

	Relay      string `json:"relay,omitempty"`
	Token      []byte `json:"token,omitempty"`
	Node       string `json:"node,omitempty"`
	Credential []byte `json:"credential,omitempty"` // DER, in opPresent and opGrant

	// Member state. Generation: in opPresent and opMembers, the newest
	// generation the agent has every word up to; in their replies, the
	// newest the hub has, with Words holding its words after the one asked
	// from (all of them if the agent is ahead). Statement: in opMember and
	// opHeartbeat, the authority's signed statement.
	Generation uint64           `json:"generation,omitempty"`
	Words      []wire.Statement `json:"words,omitempty"`
	Heartbeat  *wire.Statement  `json:"heartbeat,omitempty"`
	Statement  *wire.Statement  `json:"statement,omitempty"`

	// Outlet policies, in opPolicies: the agent's outlets' --allow
	// expressions, which replace what it published before. The hub refuses
	// a dial to the agent's relays that none of them allows (docs/hub.md).
	Policies []string `json:"policies,omitempty"`
	// IfFree, in opClaim: claim Relay only if no other connection of this
	// node holds it (a name the agent yielded). Older hubs ignore it.
	IfFree bool `json:"if_free,omitempty"`

	// Direct paths. Local, in opPresent: the control connection's local
	// address as the agent bound it. Direct: in opPresent, the agent takes
	// direct paths; in a dial's reply, the hub offered one (OpPunchAt
	// follows). Port: in opDial the inlet's bound port (0: no direct path
	// wanted), in opPunch the owner's. Addr: in opIncoming the inlet's
	// public address and port to connect to ("" when no direct path is
	// offered), in opPunchAt the owner's.
	Local  string `json:"local,omitempty"`
	Direct bool   `json:"direct,omitempty"`
	Port   int    `json:"port,omitempty"`
	Addr   string `json:"addr,omitempty"`

	// Cause, hub-side only and never sent, is the error behind a refusal
	// with code "internal", for the hub's log.
	Cause error `json:"-"`
}

// Errors a hub reports, as sentinels on the agent's side. The ones a hub
// sends as wire codes are agent/wire's (wire.CodeOf, wire.ErrorOf), under
// the same names here.
var (
	// ErrNoRelay means no connected agent owns the relay name.
	ErrNoRelay = wire.ErrNoRelay
	// ErrRelayTaken means another node owns the relay name.
	ErrRelayTaken = wire.ErrRelayTaken
	// ErrNoCredential means the session has not presented a valid
	// credential yet, and asked for what only members may do.
	ErrNoCredential = wire.ErrNoCredential
	// ErrNoAuthority means the relay has no link to the project's
	// authority now (agent authority is not connected to it).
	ErrNoAuthority = wire.ErrNoAuthority
	// ErrCredentialRefused means the relay refused a presented credential:
	// not the project's, expired, stale or not the session's key.
	ErrCredentialRefused = wire.ErrCredentialRefused
	// ErrRefused is a hub refusal without a more specific sentinel.
	ErrRefused = wire.ErrRefused
	// ErrMessageTooLarge means a control message is longer than the
	// receiver's limit.
	ErrMessageTooLarge = wire.ErrMessageTooLarge
	// ErrMalformed means a control message is not one JSON object.
	ErrMalformed = wire.ErrMalformed
	// ErrRateLimited means the hub refused a request because the node
	// asks for more, or has more waiting, than the hub allows it.
	ErrRateLimited = wire.ErrRateLimited
	// ErrDialDenied means the relay's owner published its outlets'
	// policies and none allows this node's attributes. It is a policy
	// refusal: it matches channel.ErrDenied too.
	ErrDialDenied = wire.ErrDialDenied
	// ErrHubInternal means the hub failed to serve a request for a reason
	// of its own, which its operator finds in its log.
	ErrHubInternal = wire.ErrHubInternal
	// ErrUnsupported means the hub does not know the request.
	ErrUnsupported = wire.ErrUnsupported
)

// Errors of the agent's client, never sent by a hub.
var (
	// ErrHubUntrusted means the hub's certificate does not chain to the pinned authority.
	ErrHubUntrusted = errors.New("hub certificate is not signed by the project authority")
	// ErrNotConnected means the agent has no live control connection.
	ErrNotConnected = errors.New("not connected to the hub")
	// ErrNoSession means the hub closed a data connection instead of
	// acknowledging it.
	ErrNoSession = errors.New("hub closed the data connection before the session started " +
		"(its peer never came, the token was unknown or used, or the hub is older than this agent)")
)

// HubError is a refusal reported by the hub (wire.HubError): its text is
// the hub's; errors.Is matches the sentinel named by the hub's code.
type HubError = wire.HubError

// errorOf is the error of a refusal m.
func errorOf(m *Message) error { return wire.ErrorOf(m.Code, m.Error) }
