package relay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/wire"
)

// wrap adds context to local errors; a hub refusal already says what failed.
func wrap(err error, format string, args ...any) error {
	var h *HubError
	if errors.As(err, &h) {
		return err
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}

// Dial asks the hub for a data session to the owner of relay. It returns the
// token to present on a data connection and the owner's node ID.
func (c *Client) Dial(ctx context.Context, relay string) (token []byte, owner string, err error) {
	d, err := c.DialPort(ctx, relay, 0)
	return d.Token, d.Owner, err
}

// Dialed is the hub's answer to a dial.
type Dialed struct {
	Token []byte // to present on a data connection (OpenData)
	Owner string // the node ID of the relay's owner the hub picked
	// Punch: the hub offered a direct path from the port dialed with; its
	// word on where to connect comes later (AwaitPunch).
	Punch bool
}

// DialPort asks the hub for a data session to the owner of relay, like
// Dial, and for a direct path from port, a local port of the control
// link's address this agent bound (0: none wanted; client_punch.go).
func (c *Client) DialPort(ctx context.Context, relay string, port int) (Dialed, error) {
	dial := func() (*Message, error) { return c.request(ctx, &Message{Op: OpDial, Relay: relay, Port: port}) }
	r, err := dial()
	for try := 0; try < 2 && c.elsewhere(err) && c.awaitLink(ctx); try++ {
		r, err = dial()
	}
	if err != nil {
		return Dialed{}, wrap(err, "dial relay %q", relay)
	}
	if len(r.Token) != TokenSize {
		return Dialed{}, fmt.Errorf("dial relay %q: hub sent a %d-byte token", relay, len(r.Token))
	}
	return Dialed{Token: c.withHub(r.Token, c.linkHub()), Owner: r.Node, Punch: r.Direct && port != 0}, nil
}

// OpenData opens a data connection to the hub, presents token and waits,
// until ctx is done, for the hub's ack: the session's other side has come
// and the hub relays the two. The bytes that follow go to the other side.
// A token from Dial or Incoming names the hub that issued it (withHub);
// a bare one goes to the hub of the control link.
func (c *Client) OpenData(ctx context.Context, token []byte) (*net.TCPConn, error) {
	addr := c.linkHub()
	if len(c.hubs) > 1 && len(token) > TokenSize {
		token, addr = token[:TokenSize], string(token[TokenSize:])
	}
	return c.openData(ctx, addr, token)
}

// openData opens a data connection to the hub at addr for token.
func (c *Client) openData(ctx context.Context, addr string, token []byte) (*net.TCPConn, error) {
	conn, err := c.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() == nil {
			err = fmt.Errorf("%w: %w", ErrSessionLost, err)
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			c.hubRefused(addr, err)
		}
		return nil, fmt.Errorf("open data connection to hub %s: %w", addr, err)
	}
	tc := conn.(*net.TCPConn)
	head := make([]byte, 0, len(DataMagic)+TokenSize)
	head = append(append(head, DataMagic...), token...)
	if _, err := tc.Write(head); err != nil {
		tc.Close()
		return nil, fmt.Errorf("open data connection to hub %s: %w: %w", addr, ErrSessionLost, err)
	}
	if err := awaitAck(ctx, tc); err != nil {
		tc.Close()
		if errors.Is(err, ErrNoSession) || errors.Is(err, syscall.ECONNRESET) {
			err = fmt.Errorf("%w: %w", ErrSessionLost, err)
		}
		return nil, fmt.Errorf("open data connection to hub %s: %w", addr, err)
	}
	return tc, nil
}

// awaitAck reads the hub's ack byte, giving up when ctx is done.
func awaitAck(ctx context.Context, c *net.TCPConn) error {
	if d, ok := ctx.Deadline(); ok {
		c.SetReadDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	var ack [1]byte
	_, err := io.ReadFull(c, ack[:])
	if !stop() || errors.Is(err, os.ErrDeadlineExceeded) {
		// The read deadline is ctx's: past it, say so even if ctx's own
		// timer has not fired yet.
		return fmt.Errorf("wait for the session's other side: %w", cmp.Or(ctx.Err(), context.DeadlineExceeded))
	}
	switch {
	case errors.Is(err, io.EOF):
		return ErrNoSession
	case err != nil:
		return fmt.Errorf("wait for the hub's ack: %w", err)
	case ack[0] != DataAck:
		return fmt.Errorf("hub sent %#x instead of its ack", ack[0])
	}
	return c.SetReadDeadline(time.Time{})
}

// Renew asks the hub for a fresh credential now.
func (c *Client) Renew(ctx context.Context) (Grant, error) {
	r, err := c.request(ctx, &Message{Op: OpDial, Relay: AuthorityRelay})
	if err != nil {
		return Grant{}, wrap(err, "renew credential: reach the authority")
	}
	g, err := c.exchange(ctx, c.linkHub(), r.Token, wire.OpRenew)
	if err != nil {
		return Grant{}, wrap(err, "renew credential")
	}
	if r, err = c.request(ctx, &Message{Op: OpPresent, Credential: g.Credential, Generation: c.Synced()}); err != nil {
		return Grant{}, wrap(err, "renew credential: present it")
	}
	c.memberState(r.Generation, r.Words, r.Heartbeat)
	c.scheduleRenew(g)
	return g, nil
}

// catchUp asks the hub for the words after the client's generation when the
// authority's heartbeat says there are some, and reports a change of the
// member state's freshness.
func (c *Client) catchUp(ctx context.Context) {
	c.mu.Lock()
	behind := c.conn != nil && c.synced < c.beat.Generation
	since := c.synced
	c.mu.Unlock()
	if behind {
		if r, err := c.request(ctx, &Message{Op: OpMembers, Generation: since}); err == nil {
			c.memberState(r.Generation, r.Words, r.Heartbeat)
		}
	}
	c.mu.Lock()
	now := c.staleLocked(time.Now())
	changed := now != c.stale
	c.stale = now
	beat, synced := c.beat, c.synced
	c.mu.Unlock()
	switch {
	case changed && now:
		c.log.Warn("member state is stale: revocations and attribute changes made since may not be known here",
			zap.Time("authority_heard", beat.Time), zap.Uint64("authority_generation", beat.Generation),
			zap.Uint64("member_generation", synced))
	case changed:
		c.log.Info("member state is current again", zap.Time("authority_heard", beat.Time), zap.Uint64("member_generation", synced))
	}
}

// Jitter spreads retries: a random wait in [d/2, d), so that agents that
// lost the same hub do not all come back at once.
func Jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// scheduleRenew plans the next renewal at two thirds of the credential's
// remaining lifetime.
func (c *Client) scheduleRenew(g Grant) {
	cred, err := credential.ParseDER(g.Credential)
	if err != nil {
		return
	}
	now := time.Now()
	c.mu.Lock()
	c.renewAt = now.Add(cred.Expires().Sub(now) * 2 / 3)
	c.ownGen = max(c.ownGen, cred.Generation)
	c.mu.Unlock()
}

// maintain keeps the link: it pings, renews and reconnects until ctx is
// done, or until the hub says this node is no longer a member (Done).
func (c *Client) maintain(ctx context.Context) {
	var (
		retries retry
		delay   = time.Duration(-1) // before the next attempt; < 0: not drawn yet
	)
	nextPing := time.Now().Add(c.opts.PingInterval)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		c.mu.Lock()
		connected, renewAt := c.conn != nil, c.renewAt
		c.mu.Unlock()
		wait := time.Until(nextPing)
		if !connected {
			if delay < 0 {
				delay = retries.next()
			}
			wait = delay
		} else if d := time.Until(renewAt); d < wait {
			wait = d
		}
		timer.Reset(max(wait, 0))
		start := time.Now()
		select {
		case <-ctx.Done():
			c.closeConn()
			return
		case <-c.wake:
			if !connected {
				delay = max(delay-time.Since(start), 0) // a wake does not postpone the attempt
			}
			continue
		case <-timer.C:
		}
		switch {
		case !connected:
			c.log.Debug("connecting to hub", zap.String("hub", c.hub()))
			err := c.reconnect(ctx)
			if noLongerMember(err) {
				c.log.Error("the hub says this node is no longer a member; not reconnecting", zap.String("hub", c.hub()), zap.Error(err))
				c.end.finish(err)
				return
			}
			if err != nil {
				delay = retries.next()
				c.mu.Lock()
				failed := c.hubs[c.cur]
				c.moveLocked()
				c.mu.Unlock()
				c.log.Warn("hub unreachable", zap.String("hub", failed), zap.Error(err), zap.String("next_hub", c.hub()), zap.Duration("retry_in", delay))
				continue
			}
			retries.reset()
			delay = -1
		case !time.Now().Before(renewAt):
			g, err := c.Renew(ctx)
			if err != nil && len(c.hubs) > 1 && hubCannotServe(err) {
				// Another hub may renew it: move there now.
				c.log.Warn("credential renewal refused by the hub; moving to another hub", zap.String("hub", c.linkHub()), zap.Error(err))
				c.dropConn(err)
				continue
			}
			if err != nil {
				c.log.Warn("credential renewal failed", zap.Error(err))
				c.mu.Lock()
				c.renewAt = time.Now().Add(5 * time.Second)
				c.mu.Unlock()
				continue
			}
			c.log.Info("credential renewed")
			c.grant(g)
		default:
			pctx, cancel := context.WithTimeout(ctx, c.opts.PingInterval)
			_, err := c.request(pctx, &Message{Op: OpPing})
			if err != nil {
				c.dropConn(err)
			} else {
				c.catchUp(pctx)
			}
			cancel()
			nextPing = time.Now().Add(c.opts.PingInterval)
		}
	}
}

func (c *Client) reconnect(ctx context.Context) error {
	g, err := c.connect(ctx, wire.OpHello)
	if err != nil {
		c.mu.Lock()
		c.lastErr = err
		c.mu.Unlock()
		return err
	}
	c.log.Info("connected to hub", zap.String("hub", c.linkHub()))
	c.scheduleRenew(g)
	c.grant(g)
	// The policies go before the claims, so that no dial reaches this
	// agent's relays unfiltered.
	if err := c.republish(ctx); err != nil {
		c.log.Warn("publishing outlet policies failed", zap.Error(err))
	}
	c.reclaimAll(ctx)
	c.legs.kick() // a leg to this hub is no longer needed once the names are held here
	return nil
}

func (c *Client) grant(g Grant) {
	if c.opts.OnGrant != nil {
		c.opts.OnGrant(g)
	}
}

func (c *Client) dropConn(err error) {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		c.lost(conn, err)
	}
}

func (c *Client) closeConn() {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}
