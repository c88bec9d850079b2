package wire

import (
	"errors"
	"fmt"

	"github.com/sluicehq/sluice/agent/channel"
)

// Errors a hub reports, as sentinels on both sides: the hub's errors wrap
// them, CodeOf names them on the wire, and the agent gets them back from
// ErrorOf. agent/relay re-exports them under the same names.
var (
	// ErrNoRelay means no connected agent owns the relay name.
	ErrNoRelay = errors.New("no agent has claimed this relay")
	// ErrRelayTaken means another node owns the relay name.
	ErrRelayTaken = errors.New("relay name is claimed by another node")
	// ErrNoCredential means the session has not presented a valid
	// credential yet, and asked for what only members may do.
	ErrNoCredential = errors.New("present a valid credential first")
	// ErrNoAuthority means the relay has no link to the project's
	// authority now (agent authority is not connected to it).
	ErrNoAuthority = errors.New("the project's authority is not connected to this relay")
	// ErrCredentialRefused means the relay refused a presented credential:
	// not the project's, expired, stale or not the session's key.
	ErrCredentialRefused = errors.New("credential refused")
	// ErrRefused is a hub refusal without a more specific sentinel.
	ErrRefused = errors.New("hub refused the request")

	// ErrMessageTooLarge means a control message is longer than the
	// receiver's limit.
	ErrMessageTooLarge = errors.New("control message too large")
	// ErrMalformed means a control message is not one JSON object.
	ErrMalformed = errors.New("malformed control message")

	// ErrRateLimited means the hub refused a request because the node
	// asks for more, or has more waiting, than the hub allows it.
	ErrRateLimited = errors.New("too many requests from this node; slow down")
	// ErrDialDenied means the relay's owner published its outlets'
	// policies and none allows this node's attributes. It is a policy
	// refusal: it matches channel.ErrDenied too.
	ErrDialDenied = fmt.Errorf("no outlet of the relay's owner allows this node: %w", channel.ErrDenied)

	// ErrHubInternal means the hub failed to serve a request for a reason
	// of its own, which its operator finds in its log.
	ErrHubInternal = errors.New("the hub failed to serve the request")
	// ErrUnsupported means the hub does not know the request.
	ErrUnsupported = errors.New("the hub does not support this request")
	// ErrNoQuorum means the hub cannot commit to, or read the committed
	// state of, the project's shared store now (its etcd member is cut
	// off from the majority, or the external etcd is unreachable): it
	// refuses what it could not record. Another hub of the cluster may
	// serve the request.
	ErrNoQuorum = errors.New("the hub cannot reach a quorum of the project's shared state; try another hub")
	// ErrGoingAway means the hub is shutting down: it serves no new
	// session, and the agent asks another hub (docs/hub-cluster.md). An
	// agent that does not know the code takes it for ErrRefused.
	ErrGoingAway = errors.New("the hub is going away; ask another hub")
)

// CodeInternal is the wire code of the hub's own failures.
const CodeInternal = "internal"

var codes = []struct {
	code string
	err  error
}{
	{"ticket_malformed", ErrTicketMalformed},
	{"ticket_foreign", ErrTicketForeign},
	{"ticket_expired", ErrTicketExpired},
	{"ticket_used", ErrTicketUsed},
	{"relay_not_allowed", ErrRelayNotAllowed},
	{"not_member", ErrNotMember},
	{"revoked", ErrMemberRevoked},
	{"no_relay", ErrNoRelay},
	{"no_credential", ErrNoCredential},
	{"no_authority", ErrNoAuthority},
	{"credential_refused", ErrCredentialRefused},
	{"relay_taken", ErrRelayTaken},
	// Limits and framing (docs/hub.md).
	{"too_large", ErrMessageTooLarge},
	{"malformed", ErrMalformed},
	{"rate_limited", ErrRateLimited},
	{"dial_denied", ErrDialDenied},
	{"unsupported", ErrUnsupported},
	{"going_away", ErrGoingAway},
	{"refused", ErrRefused},
	{"no_quorum", ErrNoQuorum},
	{CodeInternal, ErrHubInternal},
}

// CodeOf is the wire code of err; an error the table does not know is the
// hub's own failure (CodeInternal).
func CodeOf(err error) string {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return CodeInternal
}

// HubError is a refusal reported by the hub. Its text is the hub's; errors.Is
// matches the sentinel named by the hub's code.
type HubError struct {
	Msg      string
	sentinel error
}

func (e *HubError) Error() string { return "hub refused: " + e.Msg }
func (e *HubError) Unwrap() error { return e.sentinel }

// ErrorOf is the error of a refusal the hub sent with code and text msg: a
// *HubError that matches the code's sentinel (ErrRefused for a code this
// agent does not know).
func ErrorOf(code, msg string) error {
	for _, c := range codes {
		if c.code == code {
			return &HubError{Msg: msg, sentinel: c.err}
		}
	}
	return &HubError{Msg: msg, sentinel: ErrRefused}
}
