package relay

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/wire"
)

// Several hubs (docs/hub-cluster.md, "Agents and hubs"). A client knows
// every hub of its project (ClientOptions.Hubs) and keeps:
//
//   - one control link, to one hub at a time: requests (dial, claim,
//     renew), the authority's words. When that hub fails (the connection
//     is lost, or the hub says it is going away) the link moves to another
//     hub, drawn at random, after a jittered backoff (client_end.go);
//   - while it wants relay names (it has outlets), a link to every other
//     hub too (a leg): it presents the credential the control link got,
//     claims the same names and takes the sessions that hub announces, so
//     that an inlet on any hub reaches this agent's outlets with no
//     forwarding between hubs. A leg claims only names no other connection
//     of this node holds on its hub ("if_free"): it never takes a name from
//     the control link.
//
// A data session belongs to the hub that paired it: the tokens Dial and
// Incoming hand out carry that hub's address after the hub's 32 bytes
// (Client.withHub), and OpenData dials it.

// withHub is token followed by the address of the hub that issued it, for
// a client of several hubs; a client of one hands the hub's token out as
// it is.
func (c *Client) withHub(token []byte, addr string) []byte {
	if len(c.hubs) < 2 {
		return token
	}
	return append(slices.Clip(token), addr...)
}

// goingAway hands the word that the hub at addr is going away on.
func (c *Client) goingAway(addr string) {
	if c.opts.OnGoingAway != nil {
		go c.opts.OnGoingAway(addr)
	}
}

// elsewhere reports whether a request that failed with err may succeed
// on another hub: the control link was lost before the hub answered, or
// the hub refused it for a reason of its own (hubCannotServe). The link to
// such a hub is dropped, so that the client moves at once; a client of one
// hub keeps its link to a hub without quorum (there is nowhere to move,
// and the link still serves the sessions and claims it has).
func (c *Client) elsewhere(err error) bool {
	if c.moveFrom(err) {
		c.dropConn(err)
		return true
	}
	return errors.Is(err, ErrNotConnected)
}

// moveFrom reports whether the control link should leave its hub for
// another because of err: the hub is going away, or it has no quorum and
// there is another hub to ask.
func (c *Client) moveFrom(err error) bool {
	return hubCannotServe(err) && (len(c.hubs) > 1 || errors.Is(err, ErrHubGoingAway))
}

// hubCannotServe reports whether err is a refusal of the hub's own, which
// another hub of the cluster need not share: it is going away, or it
// cannot reach a quorum of the project's shared state (wire.ErrNoQuorum:
// its etcd member is cut off from the majority). Every other refusal is
// the project's answer, the same on every hub.
func hubCannotServe(err error) bool {
	var h *HubError
	return errors.As(err, &h) && (errors.Is(err, ErrHubGoingAway) || errors.Is(err, wire.ErrNoQuorum))
}

// hubRefused drops the control link if it is on addr, whose port refused
// a data connection: a hub that stopped listening is going away or broken,
// and the next request should wait for a link to another hub rather than
// be sent there (a hub closes its listener before it says it is going
// away). A client of one hub keeps its link, as it always did.
func (c *Client) hubRefused(addr string, err error) {
	if len(c.hubs) < 2 {
		return
	}
	c.mu.Lock()
	conn := c.conn
	if c.addr != addr {
		conn = nil
	}
	c.mu.Unlock()
	if conn != nil {
		c.lost(conn, err)
	}
}

// TokenHub is the hub a token from Dial or Incoming leads to, or "" for
// the token of a client of one hub.
func TokenHub(token []byte) string {
	if len(token) <= TokenSize {
		return ""
	}
	return string(token[TokenSize:])
}

// refusedByHub reports whether err is a hub's refusal (or a hub the client
// does not trust): another hub of the project would say the same.
func refusedByHub(err error) bool {
	var h *HubError
	return errors.As(err, &h) || errors.Is(err, ErrHubUntrusted)
}

// ErrSessionLost means a data connection failed before its session
// started, for a reason of the hub's: it refused or reset the connection,
// or closed it before its ack (a hub going away, or dead). Nothing was
// sent: a new Dial (on the hub the client moved to) may succeed.
var ErrSessionLost = errors.New("the hub lost the session before it started")

// linkWait bounds how long Dial waits for a client of several hubs to
// move its control link to another hub.
const linkWait = 3 * time.Second

// awaitLink waits, for a client of several hubs, until the control link is
// up again, for at most linkWait or until ctx is done; it reports whether
// the link is up. A client of one hub does not wait: its requests fail at
// once while its hub is away, as they always did.
func (c *Client) awaitLink(ctx context.Context) bool {
	if len(c.hubs) < 2 {
		return false
	}
	deadline := time.Now().Add(linkWait)
	for {
		c.mu.Lock()
		up := c.conn != nil
		c.mu.Unlock()
		if up {
			return true
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// hub is the address the control link is on, or tries next.
func (c *Client) hub() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hubs[c.cur]
}

// linkHub is the hub of the live control link, or the one it tries next.
func (c *Client) linkHub() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		return c.addr
	}
	return c.hubs[c.cur]
}

// moveLocked points the control link at another hub, drawn at random, so
// that the agents of a hub that failed spread over the others.
func (c *Client) moveLocked() {
	if n := len(c.hubs); n > 1 {
		c.cur = (c.cur + 1 + rand.N(n-1)) % n
	}
}

// HubStatus is one link to a hub.
type HubStatus struct {
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

// legs are the links to the hubs other than the control link's.
type legs struct {
	c    *Client
	wake chan struct{}

	mu    sync.Mutex // guards the following
	links map[string]*leg
}

// leg is a link to one more hub.
type leg struct {
	addr string
	stop context.CancelFunc
	wake chan struct{}

	mu      sync.Mutex // guards the following
	conn    *tls.Conn
	since   time.Time
	lastErr error
	claimed map[string]bool
}

func newLegs(c *Client) *legs {
	return &legs{c: c, wake: make(chan struct{}, 1), links: map[string]*leg{}}
}

// kick makes run look again at which legs are wanted, and each leg at the
// names it claims.
func (ls *legs) kick() {
	if ls == nil { // a data client (NewDataClient)
		return
	}
	wake(ls.wake)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for _, l := range ls.links {
		wake(l.wake)
	}
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// legSync is how often a leg compares the names it holds with those
// wanted, and legs are started or stopped, without a kick.
const legSync = time.Second

// run starts and stops legs until ctx is done or the client ends.
func (ls *legs) run(ctx context.Context) {
	if len(ls.c.hubs) < 2 {
		return
	}
	t := time.NewTicker(legSync)
	defer t.Stop()
	for {
		ls.adjust(ctx)
		select {
		case <-ctx.Done():
			ls.adjustTo(ctx, nil)
			return
		case <-ls.c.end.done():
			ls.adjustTo(ctx, nil)
			return
		case <-ls.wake:
		case <-t.C:
		}
	}
}

// adjust keeps a leg to every hub but the control link's while the client
// wants relay names.
func (ls *legs) adjust(ctx context.Context) {
	c := ls.c
	c.mu.Lock()
	var want []string
	// The control link's hub needs no leg once the control link holds
	// every name there: until then the leg serves it.
	held := c.conn != nil
	for _, cl := range c.claims {
		held = held && cl.held
	}
	if len(c.claims) > 0 {
		for _, h := range c.hubs {
			if !held || h != c.addr {
				want = append(want, h)
			}
		}
	}
	c.mu.Unlock()
	ls.adjustTo(ctx, want)
}

func (ls *legs) adjustTo(ctx context.Context, want []string) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for addr, l := range ls.links {
		if !slices.Contains(want, addr) {
			l.stop()
			delete(ls.links, addr)
		}
	}
	for _, addr := range want {
		if ls.links[addr] == nil {
			lctx, cancel := context.WithCancel(ctx)
			l := &leg{addr: addr, stop: cancel, wake: make(chan struct{}, 1), claimed: map[string]bool{}}
			ls.links[addr] = l
			go l.run(lctx, ls.c)
		}
	}
}

// status lists the control link (conn on addr, since, lastErr) and the
// legs, in the order of the client's hubs; nil with one hub. c.mu is held.
func (ls *legs) status(conn *tls.Conn, addr string, since time.Time, lastErr error) []HubStatus {
	c := ls.c
	if len(c.hubs) < 2 {
		return nil
	}
	if conn == nil {
		addr = c.hubs[c.cur]
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	var out []HubStatus
	for _, h := range c.hubs {
		switch l := ls.links[h]; {
		case h == addr:
			st := HubStatus{Addr: h, Role: "control", Connected: conn != nil, Since: since}
			if lastErr != nil {
				st.LastError = lastErr.Error()
			}
			out = append(out, st)
		case l != nil:
			out = append(out, l.status())
		default:
			out = append(out, HubStatus{Addr: h, Role: "standby"})
		}
	}
	return out
}

func (l *leg) status() HubStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := HubStatus{Addr: l.addr, Role: "outlet", Connected: l.conn != nil, Since: l.since}
	if l.lastErr != nil {
		st.LastError = l.lastErr.Error()
	}
	for n, ok := range l.claimed {
		if ok {
			st.Relays = append(st.Relays, n)
		}
	}
	slices.Sort(st.Relays)
	return st
}

// run keeps the leg connected, with the client's jittered backoff between
// attempts, until ctx is done.
func (l *leg) run(ctx context.Context, c *Client) {
	var retries retry
	for {
		up, err := l.session(ctx, c)
		if ctx.Err() != nil {
			return
		}
		if up {
			retries.reset()
		}
		l.mu.Lock()
		l.conn, l.lastErr = nil, err
		clear(l.claimed)
		l.mu.Unlock()
		wait := retries.next()
		c.log.Debug("outlet link to hub lost", zap.String("hub", l.addr), zap.Error(err), zap.Duration("retry_in", wait))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// legConn is a leg's connection: one request at a time.
type legConn struct {
	conn    *tls.Conn
	enc     *json.Encoder
	replies chan *Message
	ended   chan error // the reader's end
	nextID  uint64
}

// call sends m and waits for its reply.
func (lc *legConn) call(ctx context.Context, m *Message) (*Message, error) {
	lc.nextID++
	m.ID = lc.nextID
	lc.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := lc.enc.Encode(m); err != nil {
		return nil, fmt.Errorf("%s: %w", m.Op, err)
	}
	for {
		select {
		case r := <-lc.replies:
			if r.ID != m.ID {
				continue // the answer to a request given up on
			}
			if r.Error != "" {
				return nil, errorOf(r)
			}
			return r, nil
		case err := <-lc.ended:
			lc.ended <- err
			return nil, fmt.Errorf("%s: %w", m.Op, err)
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: %w", m.Op, ctx.Err())
		}
	}
}

// session connects the leg, presents the credential, and serves the link
// until it fails or ctx is done; up reports whether it got that far.
func (l *leg) session(ctx context.Context, c *Client) (up bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	raw, err := c.dialer.DialContext(cctx, "tcp", l.addr)
	if err != nil {
		return false, fmt.Errorf("connect to hub %s: %w", l.addr, err)
	}
	conn := tls.Client(raw, c.tlsFor(l.addr))
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := conn.HandshakeContext(cctx); err != nil {
		return false, fmt.Errorf("connect to hub %s: %w", l.addr, err)
	}
	lc := &legConn{conn: conn, enc: json.NewEncoder(conn), replies: make(chan *Message, 16), ended: make(chan error, 1)}
	go l.read(conn, lc, c)
	told, err := l.present(cctx, lc, c, presented{})
	if err != nil {
		return false, err
	}
	l.mu.Lock()
	l.conn, l.since, l.lastErr = conn, time.Now(), nil
	l.mu.Unlock()
	nextPing := time.Now().Add(c.opts.PingInterval)
	t := time.NewTicker(legSync)
	defer t.Stop()
	for {
		if told, err = l.present(ctx, lc, c, told); err != nil {
			return true, err
		}
		l.sync(ctx, lc, c)
		if time.Now().After(nextPing) {
			pctx, cancel := context.WithTimeout(ctx, c.opts.PingInterval)
			_, err := lc.call(pctx, &Message{Op: OpPing})
			cancel()
			if err != nil {
				return true, err
			}
			nextPing = time.Now().Add(c.opts.PingInterval)
		}
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case err := <-lc.ended:
			return true, err
		case <-l.wake:
		case <-t.C:
		}
	}
}

// presented is what a leg told its hub: the credential, and the outlet
// policies (sent: some were published).
type presented struct {
	cred     []byte
	policies []string
	sent     bool
}

// present presents the client's newest credential if it is not the one
// presented already, and the published policies if they are not those
// sent already (PublishPolicies kicks the legs when they change); it
// returns what the hub now has.
func (l *leg) present(ctx context.Context, lc *legConn, c *Client, was presented) (presented, error) {
	c.mu.Lock()
	cred, policies := c.cred, c.policies
	c.mu.Unlock()
	if cred == nil {
		return was, fmt.Errorf("link to hub %s: no credential yet: %w", l.addr, ErrNotConnected)
	}
	now := was
	if !slices.Equal(cred, was.cred) {
		if _, err := lc.call(ctx, &Message{Op: OpPresent, Credential: cred, Generation: c.Synced()}); err != nil {
			return was, wrap(err, "link to hub %s: present the credential", l.addr)
		}
		now = presented{cred: cred}
	}
	if policies != nil && (!now.sent || !slices.Equal(policies, now.policies)) {
		if _, err := lc.call(ctx, &Message{Op: OpPolicies, Policies: policies}); err != nil && !errors.Is(err, ErrRefused) {
			return now, wrap(err, "link to hub %s: publish outlet policies", l.addr)
		}
		now.policies, now.sent = policies, true
	}
	return now, nil
}

// sync claims the names the client wants that the leg does not hold
// (only if free), and releases those it no longer wants.
func (l *leg) sync(ctx context.Context, lc *legConn, c *Client) {
	c.mu.Lock()
	want := make(map[string]bool, len(c.claims))
	for n := range c.claims {
		want[n] = true
	}
	c.mu.Unlock()
	l.mu.Lock()
	var claim, release []string
	for n := range want {
		if !l.claimed[n] {
			claim = append(claim, n)
		}
	}
	for n := range l.claimed {
		if !want[n] {
			release = append(release, n)
		}
	}
	l.mu.Unlock()
	for _, n := range claim {
		_, err := lc.call(ctx, &Message{Op: OpClaim, Relay: n, IfFree: true})
		if err != nil {
			c.log.Debug("outlet link: claim refused", zap.String("hub", l.addr), zap.String("relay", n), zap.Error(err))
			continue
		}
		l.mu.Lock()
		l.claimed[n] = true
		l.mu.Unlock()
	}
	for _, n := range release {
		lc.call(ctx, &Message{Op: OpRelease, Relay: n})
		l.mu.Lock()
		delete(l.claimed, n)
		l.mu.Unlock()
	}
}

// read hands the leg's replies to call and its incoming sessions to
// OnIncoming until the link fails or the hub says it is going away.
func (l *leg) read(conn *tls.Conn, lc *legConn, c *Client) {
	dec := NewFrameReader(conn, MaxHubMessage)
	var refusal error
	for {
		var m Message
		if err := dec.Decode(&m); err != nil {
			if refusal != nil {
				err = refusal
			}
			lc.ended <- err
			return
		}
		switch m.Op {
		case OpIncoming:
			if len(m.Token) != TokenSize {
				c.log.Warn("dropped an incoming session with a malformed token", zap.String("hub", l.addr), zap.Int("bytes", len(m.Token)))
				continue
			}
			if c.opts.OnIncoming != nil {
				go c.opts.OnIncoming(Incoming{Relay: m.Relay, Token: c.withHub(m.Token, l.addr), From: m.Node})
			}
		case OpReleased:
			l.mu.Lock()
			delete(l.claimed, m.Relay)
			l.mu.Unlock()
		case OpGoAway:
			c.goingAway(l.addr)
			conn.Close()
			lc.ended <- ErrHubGoingAway
			return
		case OpReply:
			if m.ID == 0 && m.Error != "" {
				refusal = errorOf(&m)
				continue
			}
			select {
			case lc.replies <- &m:
			default: // nobody waits for it
			}
		}
	}
}
