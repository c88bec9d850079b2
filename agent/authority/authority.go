package authority

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/wire"
)

// DefaultCredentialLifetime is how long an issued credential is valid.
const DefaultCredentialLifetime = time.Hour

var (
	bucketTickets = []byte("tickets")
	bucketMembers = []byte("members")
	bucketMeta    = []byte("meta")
	keyGeneration = []byte("generation")
)

// Member is a node that redeemed a ticket.
type Member struct {
	NodeID     string            `json:"node_id"`
	PublicKey  []byte            `json:"public_key"`
	Attributes map[string]string `json:"attributes"`
	Relays     []string          `json:"relays"`
	Enrolled   time.Time         `json:"enrolled"`
	Revoked    bool              `json:"revoked,omitempty"`
	// Generation is the project's member-state generation at this
	// record's last change (see Authority.Generation). Credentials carry
	// it: a credential older than the member's generation is stale.
	Generation uint64 `json:"generation,omitempty"`
}

// MayClaim reports whether the member's tickets permitted relay name.
func (m *Member) MayClaim(name string) bool { return slices.Contains(m.Relays, name) }

type ticketRecord struct {
	Used  int      `json:"used"`
	Nodes []string `json:"nodes"`
}

// Options tune an Authority. Zero values mean the defaults.
type Options struct {
	CredentialLifetime time.Duration    // DefaultCredentialLifetime
	Now                func() time.Time // time.Now
}

// Authority redeems tickets and issues credentials, with its records in bbolt.
type Authority struct {
	project  *Project
	db       *bolt.DB
	lifetime time.Duration
	now      func() time.Time
}

// Open opens the project's authority database, which must exist (made by
// Init or CreateDatabase) and pass the checks of CheckDatabase; otherwise
// it returns a *DatabaseError that says what to do.
func Open(p *Project, opts Options) (*Authority, error) {
	db, err := openDatabase(p)
	if err != nil {
		return nil, err
	}
	a := &Authority{project: p, db: db, lifetime: opts.CredentialLifetime, now: opts.Now}
	if a.lifetime <= 0 {
		a.lifetime = DefaultCredentialLifetime
	}
	if a.now == nil {
		a.now = time.Now
	}
	return a, nil
}

// Close closes the database.
func (a *Authority) Close() error { return a.db.Close() }

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
	var m Member
	err = a.db.Update(func(tx *bolt.Tx) error {
		tickets, members := tx.Bucket(bucketTickets), tx.Bucket(bucketMembers)
		var rec ticketRecord
		if err := getJSON(tickets, t.ID, &rec); err != nil {
			return err
		}
		if rec.Used >= t.Usage {
			return fmt.Errorf("redeem ticket %s: used %d of %d times: %w", t.ID, rec.Used, t.Usage, wire.ErrTicketUsed)
		}
		rec.Used++
		rec.Nodes = append(rec.Nodes, nodeID)
		found, err := getJSONFound(members, nodeID, &m)
		if err != nil {
			return err
		}
		if found && m.Revoked {
			return fmt.Errorf("redeem ticket %s for %s: %w", t.ID, nodeID, wire.ErrMemberRevoked)
		}
		if !found {
			m = Member{NodeID: nodeID, PublicKey: pub, Attributes: map[string]string{}, Enrolled: a.now().UTC()}
		}
		for k, v := range t.Attributes {
			m.Attributes[k] = v
		}
		for _, r := range t.Relays {
			if !slices.Contains(m.Relays, r) {
				m.Relays = append(m.Relays, r)
			}
		}
		gen, err := bumpGeneration(tx)
		if err != nil {
			return err
		}
		m.Generation = gen
		return errors.Join(putJSON(tickets, t.ID, rec), putJSON(members, nodeID, m))
	})
	if err != nil {
		return nil, err
	}
	return &m, nil
}

// Member returns the record of a node.
func (a *Authority) Member(nodeID string) (*Member, error) {
	var m Member
	err := a.db.View(func(tx *bolt.Tx) error {
		found, err := getJSONFound(tx.Bucket(bucketMembers), nodeID, &m)
		if err == nil && !found {
			err = fmt.Errorf("look up member %s: %w", nodeID, wire.ErrNotMember)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &m, nil
}

// Members lists every member, in node ID order.
func (a *Authority) Members() ([]Member, error) {
	_, ms, err := a.Snapshot()
	return ms, err
}

// Snapshot returns the project's member-state generation and every member
// (in node ID order) as one consistent view.
func (a *Authority) Snapshot() (gen uint64, members []Member, err error) {
	err = a.db.View(func(tx *bolt.Tx) error {
		gen = generation(tx)
		return tx.Bucket(bucketMembers).ForEach(func(_, v []byte) error {
			var m Member
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("decode member: %w", err)
			}
			members = append(members, m)
			return nil
		})
	})
	if err != nil {
		return 0, nil, fmt.Errorf("read members: %w", err)
	}
	return gen, members, nil
}

// Generation is the project's member-state generation: it grows by one with
// every change to a member (enrollment, attributes, revocation), so that an
// agent can tell the newer of two words about a node.
func (a *Authority) Generation() (uint64, error) {
	var gen uint64
	err := a.db.View(func(tx *bolt.Tx) error {
		gen = generation(tx)
		return nil
	})
	return gen, err
}

func generation(tx *bolt.Tx) uint64 {
	v := tx.Bucket(bucketMeta).Get(keyGeneration)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// bumpGeneration moves the project to its next generation and returns it.
func bumpGeneration(tx *bolt.Tx) (uint64, error) {
	gen := generation(tx) + 1
	if err := tx.Bucket(bucketMeta).Put(keyGeneration, binary.BigEndian.AppendUint64(nil, gen)); err != nil {
		return 0, fmt.Errorf("record generation: %w", err)
	}
	return gen, nil
}

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
	return der, m, err
}

// AuthorityCert returns the project's CA certificate.
func (a *Authority) AuthorityCert() *x509.Certificate { return a.project.Cert }

func getJSON(b *bolt.Bucket, key string, v any) error {
	_, err := getJSONFound(b, key, v)
	return err
}

func getJSONFound(b *bolt.Bucket, key string, v any) (bool, error) {
	data := b.Get([]byte(key))
	if data == nil {
		return false, nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return true, fmt.Errorf("decode record %s: %w", key, err)
	}
	return true, nil
}

func putJSON(b *bolt.Bucket, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode record %s: %w", key, err)
	}
	return b.Put([]byte(key), data)
}
