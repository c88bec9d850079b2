package daemon

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"go.uber.org/zap"

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

// loadEnrollment reads what the agent knows of its project, or takes it from
// the ticket, and returns the ticket to redeem ("" for none).
func (a *Agent) loadEnrollment(ticket string) (string, error) {
	path := filepath.Join(a.dir, enrollmentFile)
	found, err := readJSON(path, &a.enr)
	if err != nil {
		return "", err
	}
	a.enrolled = found
	if ticket == "" {
		if !found {
			return "", fmt.Errorf("start agent: %s holds no enrollment; pass --ticket (from `agentctl ticket create`): %w", a.dir, ErrNotEnrolled)
		}
		return "", nil
	}
	t, err := wire.ParseTicket(ticket)
	if err != nil {
		return "", err
	}
	if !found {
		a.enr = enrollment{Hub: t.Hub, Project: t.Project, AuthorityKey: t.AuthorityKey, Node: a.id.ID()}
		a.ticketID = t.ID
		return ticket, nil
	}
	if t.Project != a.enr.Project {
		return "", fmt.Errorf("start agent: %s is enrolled in project %s, the ticket is for project %s; use another --state-dir", a.dir, a.enr.Project, t.Project)
	}
	if slices.Contains(a.enr.Tickets, t.ID) {
		a.log.Info("this state directory is enrolled and redeemed this ticket before: --ticket ignored",
			zap.String("node", a.id.ID()), zap.String("ticket", t.ID))
		return "", nil
	}
	// A new ticket names the hub to use from now on, as at enrollment.
	a.enr.Hub, a.enr.AuthorityKey = t.Hub, t.AuthorityKey
	a.ticketID = t.ID
	return ticket, nil
}

// ticketSpent reports whether err is the hub refusing, as used up or
// expired, a ticket that an enrolled agent passed: the agent then starts as
// the member it is.
func (a *Agent) ticketSpent(ticket string, err error) bool {
	return a.enrolled && ticket != "" && (errors.Is(err, wire.ErrTicketUsed) || errors.Is(err, wire.ErrTicketExpired))
}

// startAsMember starts a client without the ticket, after ticketSpent.
func (a *Agent) startAsMember(ctx context.Context, cause error, newClient func(ticket string) (*relay.Client, error)) (relay.Grant, error) {
	a.log.Info("this state directory is enrolled and the hub refused its --ticket: starting as the member it is; the ticket's attributes and relay names were not added",
		zap.String("node", a.id.ID()), zap.String("ticket", a.ticketID), zap.String("reason", cause.Error()))
	c, err := newClient("")
	if err != nil {
		return relay.Grant{}, err
	}
	a.client = c
	return c.Start(ctx)
}

// rememberTicket records in the enrollment that this state directory
// redeemed (or was refused) the ticket it was started with.
func (a *Agent) rememberTicket() {
	if a.ticketID != "" && !slices.Contains(a.enr.Tickets, a.ticketID) {
		a.enr.Tickets = append(a.enr.Tickets, a.ticketID)
	}
}
