package relay

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/identity"
)

// Grant is what the hub hands an admitted agent: its fresh credential and the
// authority that signed it.
type Grant struct {
	Credential []byte // DER
	Authority  []byte // DER of the project authority's certificate
	Project    string
	Node       string
	Attributes map[string]string
}

// Incoming is a data session that an inlet opened to a relay this agent owns.
type Incoming struct {
	Relay string
	Token []byte
	From  string // node ID of the inlet's agent
}

// ClientOptions configure a Client. Hub, Identity and AuthorityKey are required.
type ClientOptions struct {
	Hub          string             // HOST:PORT of the hub
	Identity     *identity.Identity // the node key
	AuthorityKey ed25519.PublicKey  // pinned project authority
	Ticket       string             // if set, the first connection redeems it
	Logger       *zap.Logger        // zap.NewNop()
	OnIncoming   func(Incoming)     // called on its own goroutine
	OnGrant      func(Grant)        // called for every fresh credential after the first
	// OnMember is called, in order, with each word on a member the hub
	// sends: those listed with a credential (on every connection, before
	// the connection is used for anything else) and those it pushes.
	OnMember     func(MemberUpdate)
	PingInterval time.Duration // 15s
}

// Status describes the control link.
type Status struct {
	Hub       string    `json:"hub"`
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error,omitempty"`
	Relays    []string  `json:"relays"`
	// MemberGeneration is the project's member-state generation up to
	// which this agent has heard every word of the authority.
	MemberGeneration uint64 `json:"member_generation"`
}

// Client keeps an agent's control connection to the hub: it reconnects,
// renews the credential before it expires, re-claims relay names and hands
// incoming data sessions to OnIncoming.
type Client struct {
	opts    ClientOptions
	log     *zap.Logger
	tlsConf *tls.Config
	dialer  net.Dialer

	mu      sync.Mutex // guards the following
	conn    *tls.Conn
	enc     *json.Encoder
	waiting map[uint64]chan *message
	nextID  uint64
	claims  map[string]*claim // relay names wanted (client_claims.go)
	since   time.Time
	lastErr error
	renewAt time.Time
	wake    chan struct{} // kicks maintain when the connection is lost or a renewal is due
	synced  uint64        // the member-state generation up to which OnMember has had every word
	ownGen  uint64        // the generation of this node's current credential

	// policies are the outlet policies to publish on every connection;
	// nil: never published (PublishPolicies).
	policies []string
}

// NewClient prepares a client; Start connects it.
func NewClient(opts ClientOptions) (*Client, error) {
	if opts.Identity == nil || len(opts.AuthorityKey) != ed25519.PublicKeySize {
		return nil, errors.New("new relay client: identity and authority key are required")
	}
	host, _, err := net.SplitHostPort(opts.Hub)
	if err != nil {
		return nil, fmt.Errorf("new relay client: hub address %q: %w", opts.Hub, err)
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.PingInterval == 0 {
		opts.PingInterval = 15 * time.Second
	}
	self, err := opts.Identity.SelfSigned()
	if err != nil {
		return nil, err
	}
	c := &Client{opts: opts, log: opts.Logger, waiting: map[uint64]chan *message{}, claims: map[string]*claim{}, wake: make(chan struct{}, 1)}
	c.dialer = net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second}
	c.tlsConf = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		ServerName:   host,
		NextProtos:   []string{controlALPN},
		Certificates: []tls.Certificate{self},
		// The hub is verified against the pinned authority key, not the
		// system roots: see verifyHub.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyHub(cs.PeerCertificates, opts.AuthorityKey, host)
		},
	}
	return c, nil
}

// verifyHub checks that the hub's chain is [hub, authority], that the
// authority's key is the pinned one and that the hub certificate names host.
func verifyHub(chain []*x509.Certificate, pinned ed25519.PublicKey, host string) error {
	if len(chain) < 2 {
		return fmt.Errorf("verify hub: it sent %d certificates, want its own and the authority's: %w", len(chain), ErrHubUntrusted)
	}
	ca := chain[len(chain)-1]
	if k, ok := ca.PublicKey.(ed25519.PublicKey); !ok || !k.Equal(pinned) {
		return fmt.Errorf("verify hub: the hub belongs to another project than the ticket's: %w", ErrHubUntrusted)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err := chain[0].Verify(x509.VerifyOptions{DNSName: host, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return fmt.Errorf("verify hub: %v: %w", err, ErrHubUntrusted)
	}
	return nil
}

// Start makes the first connection (enrolling with the ticket, if any) and
// returns the grant; then it keeps the connection up in the background until
// ctx is done. A refusal on the first connection is returned as is.
func (c *Client) Start(ctx context.Context) (Grant, error) {
	op := opHello
	if c.opts.Ticket != "" {
		op = opEnroll
	}
	g, err := c.connect(ctx, op)
	if err != nil {
		return Grant{}, err
	}
	c.scheduleRenew(g)
	go c.maintain(ctx)
	go c.claimLoop(ctx)
	return g, nil
}

// StartOffline keeps trying to connect in the background (as a hello from an
// enrolled node) without waiting for the first connection.
func (c *Client) StartOffline(ctx context.Context) {
	go c.maintain(ctx)
	go c.claimLoop(ctx)
}

// connect dials the hub, says hello (or enrolls) and installs the connection.
func (c *Client) connect(ctx context.Context, op string) (Grant, error) {
	raw, err := c.dialer.DialContext(ctx, "tcp", c.opts.Hub)
	if err != nil {
		return Grant{}, fmt.Errorf("connect to hub %s: %w", c.opts.Hub, err)
	}
	conn := tls.Client(raw, c.tlsConf)
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		raw.Close()
		return Grant{}, fmt.Errorf("connect to hub %s: %w", c.opts.Hub, err)
	}
	enc, dec := json.NewEncoder(conn), newFrameReader(conn, maxHubMessage)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var reply message
	if err := enc.Encode(&message{ID: 1, Op: op, Ticket: c.opts.Ticket, Generation: c.Synced()}); err == nil {
		err = dec.Decode(&reply)
	}
	if err != nil {
		conn.Close()
		return Grant{}, fmt.Errorf("%s with hub %s: %w", op, c.opts.Hub, err)
	}
	if reply.Error != "" {
		conn.Close()
		return Grant{}, fmt.Errorf("%s with hub %s: %w", op, c.opts.Hub, errorOf(&reply))
	}
	conn.SetDeadline(time.Time{})
	// The member state first: nothing may use the connection (open a
	// channel, accept one) with older news about the members.
	c.memberState(&reply)
	c.mu.Lock()
	c.conn, c.enc, c.since, c.lastErr = conn, enc, time.Now(), nil
	c.nextID = 1
	c.mu.Unlock()
	go c.read(conn, dec)
	return grantOf(&reply), nil
}

// Synced is the member-state generation up to which the client has handed
// every word of the authority to OnMember.
func (c *Client) Synced() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced
}

// memberState hands the words a credential reply listed to OnMember; the
// client then has every word up to the reply's generation.
func (c *Client) memberState(reply *message) {
	for _, u := range reply.Members {
		c.member(u)
	}
	c.mu.Lock()
	c.synced = reply.Generation
	c.mu.Unlock()
}

// member hands one word to OnMember. A newer word on this node than its
// credential means the credential is stale: if the hub's fresh one does not
// come with it, the client renews at once.
func (c *Client) member(u MemberUpdate) {
	if c.opts.OnMember != nil {
		c.opts.OnMember(u)
	}
	if u.Node != c.opts.Identity.ID() || u.Revoked {
		return
	}
	c.mu.Lock()
	stale := u.Generation > c.ownGen && c.conn != nil
	if stale {
		c.renewAt = time.Now()
	}
	c.mu.Unlock()
	if stale {
		c.kick()
	}
}

// kick wakes maintain.
func (c *Client) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func grantOf(m *message) Grant {
	return Grant{Credential: m.Credential, Authority: m.Authority, Project: m.Project, Node: m.Node, Attributes: m.Attributes}
}

// read delivers replies and incoming sessions until the connection fails.
func (c *Client) read(conn *tls.Conn, dec *frameReader) {
	var refusal error // the hub's last word before it closes, if any
	for {
		var m message
		if err := dec.Decode(&m); err != nil {
			c.lost(conn, cmp.Or(refusal, err))
			return
		}
		switch m.Op {
		case opMember:
			c.member(MemberUpdate{Node: m.Node, Generation: m.Generation, Attributes: m.Attributes, Revoked: m.Revoked})
			c.mu.Lock()
			c.synced = max(c.synced, m.Generation) // the hub sends words in generation order
			c.mu.Unlock()
		case opGrant:
			g := grantOf(&m)
			c.scheduleRenew(g)
			c.grant(g)
		case opReleased:
			c.released(m.Relay, m.Error)
		case opIncoming:
			if c.opts.OnIncoming != nil {
				go c.opts.OnIncoming(Incoming{Relay: m.Relay, Token: m.Token, From: m.Node})
			}
		case opReply:
			if m.ID == 0 && m.Error != "" { // answers no request: the hub closes the link
				refusal = errorOf(&m)
				continue
			}
			c.mu.Lock()
			ch := c.waiting[m.ID]
			delete(c.waiting, m.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- &m
			}
		}
	}
}

// lost forgets a failed connection and fails the requests waiting on it.
func (c *Client) lost(conn *tls.Conn, err error) {
	conn.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != conn {
		return
	}
	c.conn, c.enc, c.lastErr = nil, nil, err
	c.unheldLocked(err)
	for id, ch := range c.waiting {
		close(ch)
		delete(c.waiting, id)
	}
	c.kick()
}

// Status reports the state of the control link.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Status{Hub: c.opts.Hub, Connected: c.conn != nil, Since: c.since, MemberGeneration: c.synced}
	if c.lastErr != nil {
		st.LastError = c.lastErr.Error()
	}
	for name := range c.claims {
		st.Relays = append(st.Relays, name)
	}
	sort.Strings(st.Relays)
	return st
}

// request sends m and waits for the hub's reply.
func (c *Client) request(ctx context.Context, m *message) (*message, error) {
	ch := make(chan *message, 1)
	c.mu.Lock()
	if c.conn == nil {
		err := c.lastErr
		c.mu.Unlock()
		return nil, fmt.Errorf("%s: %w (last error: %v)", m.Op, ErrNotConnected, err)
	}
	c.nextID++
	m.ID = c.nextID
	frame, err := encodeFrame(m, maxAgentMessage)
	if err != nil {
		c.mu.Unlock()
		return nil, err
	}
	c.waiting[m.ID] = ch
	conn := c.conn
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err = conn.Write(frame)
	c.mu.Unlock()
	if err != nil {
		c.lost(conn, err)
		return nil, fmt.Errorf("%s: %w", m.Op, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("%s: %w", m.Op, ErrNotConnected)
		}
		if r.Error != "" {
			return nil, errorOf(r)
		}
		return r, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiting, m.ID)
		c.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", m.Op, ctx.Err())
	}
}
