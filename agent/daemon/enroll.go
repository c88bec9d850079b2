package daemon

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/channel"
	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/agent/wire"
)

// A systemd unit or a DaemonSet starts the agent with the same command line
// every time, --ticket included. So an enrolled state directory remembers
// the tickets it redeemed (enrollment.json) and ignores them afterwards:
//
//	no enrollment              the ticket is required; the agent enrolls
//	enrolled, ticket of another project
//	                           refused: use another --state-dir
//	enrolled, a ticket it redeemed before
//	                           ignored (said at info level); hello as a member
//	enrolled, another ticket of its project
//	                           redeemed: it adds the ticket's attributes and
//	                           relay names to the membership; if the hub says
//	                           it is used up or expired (a state directory
//	                           from before tickets were remembered, whose
//	                           unit still passes its first ticket), the agent
//	                           starts as the member it is and remembers it

// credentials is enrollment and credentials. It owns the node identity,
// what the agent knows of its project (enrollment.json, with the tickets
// this state directory redeemed), the current credential (credential.pem,
// and authority.pem at enrollment) and the TLS keys made from it, which
// the portals present.
//
// It has no mutex of its own: id, enr, enrolled and ticketID are set while
// Start runs, before any other goroutine sees them, and only read after;
// cred is atomic and keys locks itself, so install may run on the relay
// client's goroutine (a renewed grant) while others read.
type credentials struct {
	dir string // the state directory
	log *zap.Logger
	id  *identity.Identity
	enr enrollment
	// enrolled: the state directory held an enrollment at start;
	// ticketID: the ticket this start redeems (or found spent), if any.
	enrolled bool
	ticketID string
	keys     channel.Keys
	cred     atomic.Pointer[credential.Credential]
}

// loadEnrollment reads what the agent knows of its project, or takes it from
// the ticket, and returns the ticket to redeem ("" for none).
func (c *credentials) loadEnrollment(ticket string) (string, error) {
	path := filepath.Join(c.dir, enrollmentFile)
	found, err := readJSON(path, &c.enr)
	if err != nil {
		return "", err
	}
	c.enrolled = found
	if ticket == "" {
		if !found {
			return "", fmt.Errorf("start agent: %s holds no enrollment; pass --ticket (from `agentctl ticket create`): %w", c.dir, ErrNotEnrolled)
		}
		return "", nil
	}
	t, err := wire.ParseTicket(ticket)
	if err != nil {
		return "", err
	}
	if !found {
		c.enr = enrollment{Hub: t.Hub, Hubs: t.Hubs, Project: t.Project, AuthorityKey: t.AuthorityKey, Node: c.id.ID()}
		c.ticketID = t.ID
		return ticket, nil
	}
	if t.Project != c.enr.Project {
		return "", fmt.Errorf("start agent: %s is enrolled in project %s, the ticket is for project %s; use another --state-dir", c.dir, c.enr.Project, t.Project)
	}
	if slices.Contains(c.enr.Tickets, t.ID) {
		c.log.Info("this state directory is enrolled and redeemed this ticket before: --ticket ignored",
			zap.String("node", c.id.ID()), zap.String("ticket", t.ID))
		return "", nil
	}
	// A new ticket names the hub to use from now on, as at enrollment.
	c.enr.Hub, c.enr.Hubs, c.enr.AuthorityKey = t.Hub, t.Hubs, t.AuthorityKey
	c.ticketID = t.ID
	return ticket, nil
}

// ticketSpent reports whether err is the hub refusing, as used up or
// expired, a ticket that an enrolled agent passed: the agent then starts as
// the member it is.
func (c *credentials) ticketSpent(ticket string, err error) bool {
	return c.enrolled && ticket != "" && (errors.Is(err, wire.ErrTicketUsed) || errors.Is(err, wire.ErrTicketExpired))
}

// startAsMember starts a client without the ticket, after ticketSpent.
func (c *credentials) startAsMember(ctx context.Context, cause error, newClient func(ticket string) (*relay.Client, error)) (*relay.Client, relay.Grant, error) {
	c.log.Info("this state directory is enrolled and the hub refused its --ticket: starting as the member it is; the ticket's attributes and relay names were not added",
		zap.String("node", c.id.ID()), zap.String("ticket", c.ticketID), zap.String("reason", cause.Error()))
	client, err := newClient("")
	if err != nil {
		return nil, relay.Grant{}, err
	}
	g, err := client.Start(ctx)
	return client, g, err
}

// rememberTicket records in the enrollment that this state directory
// redeemed (or was refused) the ticket it was started with.
func (c *credentials) rememberTicket() {
	if c.ticketID != "" && !slices.Contains(c.enr.Tickets, c.ticketID) {
		c.enr.Tickets = append(c.enr.Tickets, c.ticketID)
	}
}

// mayStartOffline reports whether an enrolled agent that could not reach the
// hub should start anyway: not when enrolling, not when the hub refused it.
// A ticket an enrolled agent meant to redeem waits for its next start.
func (c *credentials) mayStartOffline(ctx context.Context, ticket string, err error) bool {
	var refused *relay.HubError
	ok := c.enrolled && ctx.Err() == nil && !errors.As(err, &refused) && !errors.Is(err, relay.ErrHubUntrusted)
	if ok && ticket != "" {
		c.log.Warn("hub unreachable: --ticket not redeemed; it will be at the next start with the hub reachable", zap.String("ticket", c.ticketID))
		c.ticketID = ""
	}
	return ok
}

// savedGrant rebuilds the last grant from the state directory, so that an
// agent can start while the hub is unreachable.
func (c *credentials) savedGrant(cause error) (relay.Grant, error) {
	creds, err1 := credential.ReadPEMFile(filepath.Join(c.dir, credentialFile))
	roots, err2 := credential.ReadPEMFile(filepath.Join(c.dir, authorityFile))
	if err := errors.Join(err1, err2); err != nil {
		return relay.Grant{}, fmt.Errorf("%w (and no saved credential to start with: %w)", cause, err)
	}
	g := relay.Grant{Credential: creds[0].Raw, Authority: roots[0].Raw, Project: c.enr.Project, Node: c.id.ID()}
	if err := c.install(g); err != nil {
		return relay.Grant{}, fmt.Errorf("%w (and the saved credential is unusable: %w)", cause, err)
	}
	c.log.Warn("hub unreachable; starting with the saved credential and retrying in the background",
		zap.Error(cause), zap.Time("credential_expires", creds[0].NotAfter))
	return g, nil
}

// firstGrant records the enrollment and installs the first credential.
func (c *credentials) firstGrant(g relay.Grant) error {
	if g.Project != c.enr.Project {
		return fmt.Errorf("start agent: hub serves project %s, want %s", g.Project, c.enr.Project)
	}
	c.rememberTicket()
	if err := writeJSON(filepath.Join(c.dir, enrollmentFile), c.enr); err != nil {
		return err
	}
	if err := identity.WriteFileAtomic(filepath.Join(c.dir, authorityFile), credential.EncodePEM(g.Authority), 0o644); err != nil {
		return err
	}
	return c.install(g)
}

// install makes a granted credential current and saves it.
func (c *credentials) install(g relay.Grant) error {
	cert, cred, err := tlsCertificate(g.Credential, c.id.PrivateKey())
	if err != nil {
		return err
	}
	if cred.NodeID != c.id.ID() {
		return fmt.Errorf("install credential: it names node %s, this is %s", cred.NodeID, c.id.ID())
	}
	c.keys.Set(cert)
	c.cred.Store(cred)
	c.log.Info("credential installed", zap.Time("expires", cred.Expires()), zap.Any("attributes", cred.Attributes))
	return identity.WriteFileAtomic(filepath.Join(c.dir, credentialFile), credential.EncodePEM(g.Credential), 0o600)
}
