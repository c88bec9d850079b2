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
	"io"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/internal/alpn"
	"github.com/sluicehq/sluice/agent/wire"
)

// Grant is a fresh credential from the authority and the authority's
// certificate; the client checked both against the pinned key.
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
	// Punch, if valid, is the inlet's public address and port: the hub
	// offers a direct path (client_punch.go, Client.Punch).
	Punch netip.AddrPort
}

// ClientOptions configure a Client. Hub, Identity and AuthorityKey are required.
type ClientOptions struct {
	Hub string // HOST:PORT of the hub
	// Hubs, if set, are every hub of the project (Hub need not be one of
	// them): the client connects to the first and moves to another when
	// its hub fails or goes away; while it wants relay names it keeps a
	// link to every other hub too (client_hubs.go).
	Hubs         []string
	Identity     *identity.Identity // the node key
	AuthorityKey ed25519.PublicKey  // pinned project authority
	Ticket       string             // if set, the first connection redeems it
	Logger       *zap.Logger        // zap.NewNop()
	OnIncoming   func(Incoming)     // called on its own goroutine
	OnGrant      func(Grant)        // called for every fresh credential after the first
	// OnGoingAway, if set, is called (on its own goroutine) with the
	// address of a hub that said it is going away, on any link.
	OnGoingAway func(hub string)
	// OnMember is called, in order, with each word on a member the hub
	// sends: those listed with a credential (on every connection, before
	// the connection is used for anything else) and those it pushes.
	OnMember     func(MemberUpdate)
	PingInterval time.Duration // 15s
	// Direct, if set, tells the hub that this agent takes direct paths
	// (docs/direct-paths.md): it may offer them when the agent's NAT keeps
	// ports. Off: every data session goes through the hub.
	Direct bool
	// MaxStale is how old the authority's newest heartbeat may be before
	// the client reports its member state stale (DefaultMaxStale).
	MaxStale time.Duration
}

// DefaultMaxStale is how long an agent goes without a signed heartbeat of
// the authority before it says its member state is stale: four missed
// heartbeats.
const DefaultMaxStale = 4 * DefaultHeartbeatInterval

// Status describes the control link.
type Status struct {
	Hub string `json:"hub"` // the hub of the control link, or the one it tries next
	// Hubs are the links to every hub of the project, when there are
	// several (client_hubs.go).
	Hubs      []HubStatus `json:"hubs,omitempty"`
	Connected bool        `json:"connected"`
	Since     time.Time   `json:"since"`
	LastError string      `json:"last_error,omitempty"`
	Relays    []string    `json:"relays"`
	// MemberGeneration is the project's member-state generation up to
	// which this agent has heard every word of the authority.
	MemberGeneration uint64 `json:"member_generation"`
	// AuthorityHeard is the time of the authority's newest signed
	// heartbeat, and AuthorityGeneration the generation it gave; the
	// member state is Stale when that heartbeat is older than the client's
	// MaxStale, or this agent has not every word up to its generation.
	AuthorityHeard      time.Time `json:"authority_heard,omitzero"`
	AuthorityGeneration uint64    `json:"authority_generation"`
	Stale               bool      `json:"member_state_stale"`
}

// Client keeps an agent's control connection to the hub: it reconnects,
// renews the credential before it expires, re-claims relay names and hands
// incoming data sessions to OnIncoming.
type Client struct {
	opts    ClientOptions
	log     *zap.Logger
	tlsConf *tls.Config // without ServerName and VerifyConnection: see tlsFor
	dialer  net.Dialer
	hubs    []string // every hub, at least one
	legs    *legs    // links to the other hubs, while relay names are wanted (client_hubs.go)

	mu      sync.Mutex // guards the following
	cur     int        // the hub the control link is on, or tries next: hubs[cur]
	addr    string     // the hub of conn
	cred    []byte     // the newest credential, DER: what links to other hubs present
	conn    *tls.Conn
	enc     *json.Encoder
	waiting map[uint64]chan *Message
	nextID  uint64
	claims  map[string]*claim // relay names wanted (client_claims.go)
	since   time.Time
	lastErr error
	renewAt time.Time
	wake    chan struct{} // kicks maintain when the connection is lost or a renewal is due
	synced  uint64        // the member-state generation up to which OnMember has had every word
	ownGen  uint64        // the generation of this node's current credential
	// What the authority said, once it answered: its certificate, the
	// project, and its newest heartbeat.
	authority *x509.Certificate
	project   string
	beat      wire.Heartbeat
	stale     bool // the member state was last reported stale

	// policies are the outlet policies to publish on every connection;
	// nil: never published (PublishPolicies).
	policies []string

	end ending // set when the client stops for good (client_end.go)

	punches punchWaits // OpPunchAt words by token (client_punch.go)
}

// NewClient prepares a client; Start connects it.
func NewClient(opts ClientOptions) (*Client, error) {
	if opts.Identity == nil || len(opts.AuthorityKey) != ed25519.PublicKeySize {
		return nil, errors.New("new relay client: identity and authority key are required")
	}
	hubs := opts.Hubs
	if len(hubs) == 0 {
		hubs = []string{opts.Hub}
	}
	for _, h := range hubs {
		if _, _, err := net.SplitHostPort(h); err != nil {
			return nil, fmt.Errorf("new relay client: hub address %q: %w", h, err)
		}
	}
	opts.Hub = hubs[0]
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.PingInterval == 0 {
		opts.PingInterval = 15 * time.Second
	}
	if opts.MaxStale == 0 {
		opts.MaxStale = DefaultMaxStale
	}
	self, err := opts.Identity.SelfSigned()
	if err != nil {
		return nil, err
	}
	c := &Client{opts: opts, log: opts.Logger, hubs: slices.Clone(hubs), waiting: map[uint64]chan *Message{}, claims: map[string]*claim{}, wake: make(chan struct{}, 1)}
	c.legs = newLegs(c)
	c.dialer = net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second}
	c.tlsConf = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{ControlALPN},
		Certificates: []tls.Certificate{self},
		// The hub is verified against the pinned authority key, not the
		// system roots: see verifyHub.
		InsecureSkipVerify: true,
	}
	return c, nil
}

// tlsFor is the TLS configuration of a control connection to the hub at
// addr: its certificate must name addr's host.
func (c *Client) tlsFor(addr string) *tls.Config {
	host, _, _ := net.SplitHostPort(addr)
	conf := c.tlsConf.Clone()
	conf.ServerName = host
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := alpn.Require(cs, ControlALPN); err != nil {
			return err
		}
		return VerifyHub(cs.PeerCertificates, c.opts.AuthorityKey, host)
	}
	return conf
}

// VerifyHub checks that the hub's chain is [hub, authority], that the
// authority's key is the pinned one and that the hub certificate names host.
func VerifyHub(chain []*x509.Certificate, pinned ed25519.PublicKey, host string) error {
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
		return fmt.Errorf("verify hub: %w: %w", err, ErrHubUntrusted)
	}
	return nil
}

// Start makes the first connection (enrolling with the ticket, if any) and
// returns the grant; then it keeps the connection up in the background until
// ctx is done. A refusal on the first connection is returned as is.
func (c *Client) Start(ctx context.Context) (Grant, error) {
	op := wire.OpHello
	if c.opts.Ticket != "" {
		op = wire.OpEnroll
	}
	// A hub that cannot be reached, or cannot serve (hubCannotServe: it
	// is going away, or has no quorum), is skipped for the next; any other
	// refusal is the project's answer, the same on every hub.
	var (
		g   Grant
		err error
	)
	for range c.hubs {
		if g, err = c.connect(ctx, op); err == nil || refusedByHub(err) && !hubCannotServe(err) || ctx.Err() != nil {
			break
		}
		c.mu.Lock()
		c.moveLocked()
		c.mu.Unlock()
	}
	if err != nil {
		return Grant{}, err
	}
	c.scheduleRenew(g)
	go c.maintain(ctx)
	go c.claimLoop(ctx)
	go c.legs.run(ctx)
	return g, nil
}

// StartOffline keeps trying to connect in the background (as a hello from an
// enrolled node) without waiting for the first connection.
func (c *Client) StartOffline(ctx context.Context) {
	go c.maintain(ctx)
	go c.claimLoop(ctx)
	go c.legs.run(ctx)
}

// connectTimeout bounds a connection's setup: handshake, exchange with the
// authority, credential presented.
const connectTimeout = 20 * time.Second

// connect dials the hub and, on the session (limited until it presents a
// credential), gets a fresh credential from the authority end to end (op:
// enroll or hello), presents it, and installs the connection. The member
// state comes first: nothing may use the connection (open a channel, accept
// one) with older news about the members.
func (c *Client) connect(ctx context.Context, op string) (Grant, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	addr := c.hub()
	raw, err := c.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return Grant{}, fmt.Errorf("connect to hub %s: %w", addr, err)
	}
	conn := tls.Client(raw, c.tlsFor(addr))
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return Grant{}, fmt.Errorf("connect to hub %s: %w", addr, err)
	}
	dl, _ := ctx.Deadline()
	conn.SetDeadline(dl)
	enc, dec := json.NewEncoder(conn), NewFrameReader(conn, MaxHubMessage)
	call := func(m *Message) (*Message, error) {
		var r Message
		err := enc.Encode(m)
		if err == nil {
			err = dec.Decode(&r)
		}
		if err == nil && r.Error != "" {
			err = errorOf(&r)
		}
		return &r, err
	}
	g, err := func() (Grant, error) {
		r, err := call(&Message{ID: 1, Op: OpDial, Relay: AuthorityRelay})
		if err != nil {
			return Grant{}, wrap(err, "reach the authority")
		}
		g, err := c.exchange(ctx, addr, r.Token, op)
		if err != nil {
			return Grant{}, err
		}
		r, err = call(&Message{ID: 2, Op: OpPresent, Credential: g.Credential, Generation: c.Synced(),
			Local: raw.LocalAddr().String(), Direct: c.opts.Direct})
		if err != nil {
			return Grant{}, wrap(err, "present the credential")
		}
		c.memberState(r.Generation, r.Words, r.Heartbeat)
		return g, nil
	}()
	if err != nil {
		conn.Close()
		return Grant{}, fmt.Errorf("%s with hub %s: %w", op, addr, err)
	}
	conn.SetDeadline(time.Time{})
	c.opts.Ticket = "" // redeemed: every later connection is a hello
	c.mu.Lock()
	c.conn, c.enc, c.since, c.lastErr, c.addr = conn, enc, time.Now(), nil, addr
	c.nextID = 2
	c.mu.Unlock()
	go c.read(conn, dec, addr)
	return g, nil
}

// exchangeConfig is the TLS configuration of an exchange with the
// authority: the agent presents certs (its node key); the authority
// presents its own certificate, whose key must be pinned, and must
// negotiate the exchange's ALPN.
func exchangeConfig(certs []tls.Certificate, pinned ed25519.PublicKey) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		ServerName:         "sluice-authority",
		NextProtos:         []string{wire.ExchangeALPN},
		Certificates:       certs,
		InsecureSkipVerify: true, // VerifyConnection instead
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := alpn.Require(cs, wire.ExchangeALPN); err != nil {
				return err
			}
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("verify authority: no certificate: %w", ErrHubUntrusted)
			}
			a := cs.PeerCertificates[0]
			if k, ok := a.PublicKey.(ed25519.PublicKey); !ok || !k.Equal(pinned) || a.CheckSignatureFrom(a) != nil {
				return fmt.Errorf("verify authority: not the project's authority: %w", ErrHubUntrusted)
			}
			return nil
		},
	}
}

// exchange asks the authority, end to end through the data session of
// token, for a credential (op: enroll, hello or renew), and takes the member
// state that comes with it.
func (c *Client) exchange(ctx context.Context, addr string, token []byte, op string) (Grant, error) {
	raw, err := c.openData(ctx, addr, token)
	if err != nil {
		return Grant{}, fmt.Errorf("reach the authority: %w", err)
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	tc := tls.Client(raw, exchangeConfig(c.tlsConf.Certificates, c.opts.AuthorityKey))
	if err := tc.HandshakeContext(ctx); err != nil {
		return Grant{}, fmt.Errorf("reach the authority: %w", err)
	}
	req := wire.ExchangeRequest{Op: op, Ticket: c.opts.Ticket, Generation: c.Synced()}
	if err := json.NewEncoder(tc).Encode(&req); err != nil {
		return Grant{}, fmt.Errorf("ask the authority: %w", err)
	}
	var reply wire.ExchangeReply
	if err := json.NewDecoder(io.LimitReader(tc, MaxHubMessage)).Decode(&reply); err != nil {
		return Grant{}, fmt.Errorf("read the authority's answer: %w", err)
	}
	if reply.Error != "" {
		return Grant{}, errorOf(&Message{Error: reply.Error, Code: reply.Code})
	}
	ca := tc.ConnectionState().PeerCertificates[0]
	g := Grant{Credential: reply.Credential, Authority: ca.Raw, Project: reply.Project, Node: reply.Node, Attributes: reply.Attributes}
	if err := c.checkGrant(ca, &g); err != nil {
		return Grant{}, err
	}
	c.mu.Lock()
	c.authority, c.project = ca, g.Project
	c.mu.Unlock()
	c.memberState(reply.Generation, reply.Words, &reply.Heartbeat)
	return g, nil
}

// checkGrant checks that a credential is this node's, signed by the
// authority ca, and fills in what the credential says.
func (c *Client) checkGrant(ca *x509.Certificate, g *Grant) error {
	cred, err := credential.ParseDER(g.Credential)
	if err != nil {
		return fmt.Errorf("check credential: %w", err)
	}
	if err := cred.Cert.CheckSignatureFrom(ca); err != nil {
		return fmt.Errorf("check credential: not signed by the authority: %w", ErrHubUntrusted)
	}
	if cred.NodeID != c.opts.Identity.ID() {
		return fmt.Errorf("check credential: it names node %s, this is %s: %w", cred.NodeID, c.opts.Identity.ID(), ErrHubUntrusted)
	}
	g.Node, g.Project, g.Attributes, g.Authority = cred.NodeID, cred.ProjectID, cred.Attributes, ca.Raw
	c.mu.Lock()
	c.cred = g.Credential
	c.mu.Unlock()
	return nil
}

// Synced is the member-state generation up to which the client has handed
// every word of the authority to OnMember.
func (c *Client) Synced() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced
}

// memberState checks and hands on the words and heartbeat of a reply: then
// the client has every word up to gen, unless a word failed its check.
func (c *Client) memberState(gen uint64, words []wire.Statement, hb *wire.Statement) {
	complete := true
	for _, st := range words {
		if !c.word(st) {
			complete = false
		}
	}
	if hb != nil {
		c.heartbeat(*hb)
	}
	if complete {
		c.mu.Lock()
		c.synced = max(c.synced, gen)
		c.mu.Unlock()
	}
}

// word checks a word against the pinned authority key and hands it on; it
// reports whether it was the authority's.
func (c *Client) word(st wire.Statement) bool {
	c.mu.Lock()
	project := c.project
	c.mu.Unlock()
	w, err := wire.OpenWord(c.opts.AuthorityKey, project, st)
	if err != nil {
		c.log.Warn("dropped a member word not signed by the project's authority", zap.Error(err))
		return false
	}
	c.member(updateOf(w))
	return true
}

// heartbeat checks and keeps the authority's newest heartbeat.
func (c *Client) heartbeat(st wire.Statement) {
	c.mu.Lock()
	defer c.mu.Unlock()
	hb, err := wire.OpenHeartbeat(c.opts.AuthorityKey, c.project, st)
	if err != nil {
		c.log.Warn("dropped a heartbeat not signed by the project's authority", zap.Error(err))
		return
	}
	if hb.Time.After(c.beat.Time) {
		c.beat = hb
	}
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

// advance notes that the word pushed in st arrived: the hub sends words in
// generation order, so the client has every word up to its generation.
func (c *Client) advance(st wire.Statement) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w, err := wire.OpenWord(c.opts.AuthorityKey, c.project, st); err == nil {
		c.synced = max(c.synced, w.Generation)
	}
}

// pushedGrant takes a fresh credential the hub passed on from the
// authority, once it checked it is this node's and the authority's.
func (c *Client) pushedGrant(der []byte) {
	c.mu.Lock()
	ca := c.authority
	c.mu.Unlock()
	if ca == nil {
		return
	}
	g := Grant{Credential: der}
	if err := c.checkGrant(ca, &g); err != nil {
		c.log.Warn("dropped a pushed credential", zap.Error(err))
		return
	}
	c.scheduleRenew(g)
	c.grant(g)
}

// staleLocked reports whether the member state is stale at now: the
// authority's newest heartbeat is older than MaxStale, or the agent lacks
// words up to the generation it gave.
func (c *Client) staleLocked(now time.Time) bool {
	if c.beat.Time.IsZero() {
		return c.authority != nil
	}
	return now.Sub(c.beat.Time) > c.opts.MaxStale || c.synced < c.beat.Generation
}

// kick wakes maintain.
func (c *Client) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// read delivers replies and incoming sessions until the connection fails.
func (c *Client) read(conn *tls.Conn, dec *FrameReader, addr string) {
	var refusal error // the hub's last word before it closes, if any
	for {
		var m Message
		if err := dec.Decode(&m); err != nil {
			c.lost(conn, cmp.Or(refusal, err))
			return
		}
		switch m.Op {
		case OpMember:
			if m.Statement != nil && c.word(*m.Statement) {
				c.advance(*m.Statement)
			}
		case OpHeartbeat:
			if m.Statement != nil {
				c.heartbeat(*m.Statement)
			}
		case OpGrant:
			c.pushedGrant(m.Credential)
		case OpReleased:
			c.released(m.Relay, m.Error)
		case OpGoAway:
			c.log.Info("the hub is shutting down; reconnecting", zap.String("hub", addr))
			c.goingAway(addr)
			c.lost(conn, ErrHubGoingAway)
			return
		case OpIncoming:
			if len(m.Token) != TokenSize {
				c.log.Warn("dropped an incoming session with a malformed token", zap.String("hub", addr), zap.Int("bytes", len(m.Token)))
				continue
			}
			if c.opts.OnIncoming != nil {
				go c.opts.OnIncoming(Incoming{Relay: m.Relay, Token: c.withHub(m.Token, addr), From: m.Node, Punch: punchAddr(m.Addr)})
			}
		case OpPunchAt:
			c.punchAt(&m, addr)
		case OpReply:
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
	c.moveLocked() // the next attempt goes to another hub
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
	st := Status{Hub: c.hubs[c.cur], Hubs: c.legs.status(c.conn, c.addr, c.since, c.lastErr), Connected: c.conn != nil, Since: c.since, MemberGeneration: c.synced,
		AuthorityHeard: c.beat.Time, AuthorityGeneration: c.beat.Generation, Stale: c.staleLocked(time.Now())}
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
func (c *Client) request(ctx context.Context, m *Message) (*Message, error) {
	ch := make(chan *Message, 1)
	c.mu.Lock()
	if c.conn == nil {
		err := c.lastErr
		c.mu.Unlock()
		return nil, fmt.Errorf("%s: %w (last error: %v)", m.Op, ErrNotConnected, err)
	}
	c.nextID++
	m.ID = c.nextID
	frame, err := EncodeFrame(m, MaxAgentMessage)
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
		return nil, fmt.Errorf("%s: %w: %w", m.Op, ErrNotConnected, err)
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

// NewDataClient is a Client that only opens data connections to hub
// (OpenData), with dialer d: the authority's link to a relay
// (hub.RunAuthorityLink) takes the sessions agents open to it with one.
func NewDataClient(hub string, d net.Dialer) *Client {
	return &Client{opts: ClientOptions{Hub: hub}, hubs: []string{hub}, dialer: d}
}
