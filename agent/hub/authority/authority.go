package authority

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/hub/authority/store"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/wire"
)

// DefaultCredentialLifetime is how long an issued credential is valid.
const DefaultCredentialLifetime = time.Hour

// Member is a node that redeemed a ticket (the store's record).
type Member = store.Member

// ticketRecord is the record of a ticket's redemptions.
type ticketRecord = store.TicketUse

// Options tune an Authority. Zero values mean the defaults.
type Options struct {
	CredentialLifetime time.Duration    // DefaultCredentialLifetime
	Now                func() time.Time // time.Now
	// Store keeps the authority's records (default: the project's hub.db,
	// opened as Open describes). The Authority closes it.
	Store store.Store
	// Audit gets one line for every enrollment, credential issued and
	// member change (audit.go); nil: none. cmd passes the logger named
	// "audit".
	Audit *zap.Logger
}

// Authority redeems tickets and issues credentials, with its records in a
// store.Store (the project's hub.db unless Options.Store says otherwise).
type Authority struct {
	project  *Project
	store    store.Store
	lifetime time.Duration
	now      func() time.Time
	audit    *zap.Logger
}

// Open opens the project's authority database, which must exist (made by
// Init or CreateDatabase) and pass the checks of CheckDatabase; otherwise
// it returns a *DatabaseError that says what to do.
func Open(p *Project, opts Options) (*Authority, error) {
	st := opts.Store
	if st == nil {
		db, err := openDatabase(p)
		if err != nil {
			return nil, err
		}
		st = &boltStore{db: db}
	}
	a := &Authority{project: p, store: st, lifetime: opts.CredentialLifetime, now: opts.Now, audit: opts.Audit}
	if a.audit == nil {
		a.audit = zap.NewNop()
	}
	if a.lifetime <= 0 {
		a.lifetime = DefaultCredentialLifetime
	}
	if a.now == nil {
		a.now = time.Now
	}
	return a, nil
}

// Close closes the store.
func (a *Authority) Close() error { return a.store.Close() }

// Project returns the project the authority serves.
func (a *Authority) Project() *Project { return a.project }

// CredentialLifetime is the validity of issued credentials.
func (a *Authority) CredentialLifetime() time.Duration { return a.lifetime }

// Redeem checks an encoded ticket and, in one transaction, counts its use and
// records (or extends) the membership of the node holding pub. The caller must
// have verified that the node possesses the private key of pub.
func (a *Authority) Redeem(encoded string, pub ed25519.PublicKey) (*Member, error) {
	t, err := wire.ParseTicket(encoded)
	if err != nil {
		return nil, fmt.Errorf("redeem ticket: %w", err)
	}
	if !bytes.Equal(t.AuthorityKey, a.project.AuthorityPublicKey()) || t.Project != a.project.ID {
		return nil, fmt.Errorf("redeem ticket %s: %w", t.ID, wire.ErrTicketForeign)
	}
	if now := a.now(); now.After(t.Expires) {
		return nil, fmt.Errorf("redeem ticket %s: expired %s ago at %s; create a new one with `agentctl ticket create`: %w",
			t.ID, now.Sub(t.Expires).Round(time.Second), t.Expires.Format(time.RFC3339), wire.ErrTicketExpired)
	}
	nodeID := identity.NodeID(pub)
	var existed bool
	m, err := a.store.Redeem(t.ID, t.Usage, nodeID, func(m *Member, found bool) error {
		existed = found
		if found && m.Revoked {
			return fmt.Errorf("redeem ticket %s for %s: %w", t.ID, nodeID, wire.ErrMemberRevoked)
		}
		if !found {
			*m = Member{NodeID: nodeID, PublicKey: pub, Attributes: map[string]string{}, Enrolled: a.now().UTC()}
		}
		for k, v := range t.Attributes {
			m.Attributes[k] = v
		}
		for _, r := range t.Relays {
			if !slices.Contains(m.Relays, r) {
				m.Relays = append(m.Relays, r)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	a.audit.Info("enrolled", zap.String("node", m.NodeID), zap.String("ticket", t.ID), zap.Bool("member_before", existed),
		zap.Any("attributes", m.Attributes), zap.Strings("relays", m.Relays), zap.Uint64("generation", m.Generation))
	return m, nil
}

// Member returns the record of a node.
func (a *Authority) Member(nodeID string) (*Member, error) { return a.store.Member(nodeID) }

// Members lists every member, in node ID order.
func (a *Authority) Members() ([]Member, error) {
	_, ms, err := a.Snapshot()
	return ms, err
}

// Snapshot returns the project's member-state generation and every member
// (in node ID order) as one consistent view.
func (a *Authority) Snapshot() (gen uint64, members []Member, err error) { return a.store.Snapshot() }

// Generation is the project's member-state generation: it grows by one with
// every change to a member (enrollment, attributes, revocation), so that an
// agent can tell the newer of two words about a node.
func (a *Authority) Generation() (uint64, error) { return a.store.Generation() }

// Issue signs a fresh credential for a current member.
func (a *Authority) Issue(nodeID string) (der []byte, m *Member, err error) {
	m, err = a.Member(nodeID)
	if err != nil {
		return nil, nil, err
	}
	if m.Revoked {
		return nil, nil, fmt.Errorf("issue credential for %s: %w", nodeID, wire.ErrMemberRevoked)
	}
	der, err = credential.Issue(a.project.Cert, a.project.Key, credential.Request{
		PublicKey:  m.PublicKey,
		ProjectID:  a.project.ID,
		Attributes: m.Attributes,
		Generation: m.Generation,
		Relays:     m.Relays,
		Lifetime:   a.lifetime,
		Now:        a.now(),
	})
	if err != nil {
		return nil, nil, err
	}
	a.audit.Info("credential issued", zap.String("node", m.NodeID), zap.Any("attributes", m.Attributes),
		zap.Uint64("generation", m.Generation), zap.Time("expires", a.now().Add(a.lifetime).UTC()))
	return der, m, nil
}

// AuthorityCert returns the project's CA certificate.
func (a *Authority) AuthorityCert() *x509.Certificate { return a.project.Cert }
