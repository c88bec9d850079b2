package portal

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/channel"
	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/flowlog"
	"github.com/sluicehq/sluice/agent/pipe"
	"github.com/sluicehq/sluice/agent/relay"
)

// Outlet session pipeline:
//
//	hub "incoming" ──> OpenData (TCP to hub) ──> TLS server handshake,
//	    verifying the inlet's credential and this outlet's policy
//	    ──> channel records: wait for "open" ──> dial target
//	    ──> status (control) ──> pipe.Run(channel, target)

// HandleIncoming serves one data session the hub announced for a relay this
// agent owns, through the hub. from is the inlet agent's node ID, as the hub
// says; the channel authenticates it independently. Past the limits on
// pending sessions (incoming.go) it waits for room, then drops the session.
func (m *Manager) HandleIncoming(token []byte, from string) {
	m.handleIncoming(relay.Incoming{Token: token, From: from})
}

func (m *Manager) handleIncoming(in relay.Incoming) {
	from := in.From
	wctx, cancel := context.WithTimeout(m.ctx, incomingWait)
	release, err := m.incoming.acquire(wctx, from)
	cancel()
	if err != nil {
		if ok, n := m.incoming.warn.Allow(time.Now()); ok {
			m.log.Warn("incoming data session dropped", zap.String("from", from), zap.Error(err), zap.Int64("more_not_logged", n))
		}
		return
	}
	defer release()
	if !m.enter() {
		return
	}
	defer m.leave()
	log := m.log.With(zap.String("from", from))
	if in.Punch.IsValid() {
		if raw := m.punchOutlet(m.ctx, in, log); raw != nil {
			dctx, cancel := context.WithTimeout(m.ctx, min(m.opts.HandshakeTimeout, directHandshakeTimeout))
			defer m.paths.trackRaw(raw)()
			ok := m.serveChannel(dctx, raw, true, log.With(zap.String("path", "direct")), release, cancel)
			cancel()
			if ok {
				return
			}
			log.Info("direct path failed at its handshake; through the hub")
		}
	}
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.HandshakeTimeout)
	defer cancel()
	raw, err := m.opts.Hub.OpenData(ctx, in.Token)
	if err != nil {
		log.Warn("outlet session failed", zap.Error(err))
		return
	}
	m.serveChannel(ctx, raw, true, log, release, nil)
}

// ServeDirect serves a channel an inlet opened straight to this agent
// (agent run --direct-listen), without the hub; it returns when the channel
// ends.
func (m *Manager) ServeDirect(raw *net.TCPConn) {
	if !m.enter() {
		raw.Close()
		return
	}
	defer m.leave()
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.HandshakeTimeout)
	defer cancel()
	m.serveChannel(ctx, raw, false, m.log.With(zap.Stringer("from", raw.RemoteAddr())), func() {}, nil)
}

// serveChannel runs the server side of a channel on raw: handshake, then
// the outlet the inlet named, authorized once the inlet's agent proved who
// it is. handshaken is called once the handshake succeeded: the session is
// no longer pending. On a direct path (direct set) a failed handshake
// resets raw and reports false, so the caller goes through the hub;
// direct, called once the handshake is over, ends the handshake's context.
// It reports true otherwise, once the channel ended.
func (m *Manager) serveChannel(ctx context.Context, raw *net.TCPConn, dialed bool, log *zap.Logger, handshaken func(), direct func()) bool {
	own := m.opts.Keys.Get() // the credential the handshake presents, or a newer one
	tc := tls.Server(channel.Boundary(raw), channel.Server(m.opts.Keys, m.opts.Verifier))
	if err := tc.HandshakeContext(ctx); err != nil {
		if direct != nil {
			pipe.TCP(raw).Abort()
			log.Debug("outlet handshake on a direct path failed", zap.Error(err))
			return false
		}
		raw.Close()
		log.Warn("outlet refused a channel", zap.Error(err))
		return true
	}
	if direct != nil {
		direct()
	}
	handshaken()
	peer, err := peerCredential(tc)
	if err != nil {
		raw.Close()
		log.Warn("outlet session failed", zap.Error(err))
		return true
	}
	log = log.With(zap.String("node", peer.NodeID))
	ch, err := channel.NewConn(raw, tc, false)
	if err != nil {
		raw.Close()
		log.Warn("outlet session failed", zap.Error(err))
		return true
	}
	// Every way out ends the channel: one left open would look warm to the
	// inlet, which would send it a connection no one answers.
	defer ch.Close()
	o, err := m.outletFor(tc.ConnectionState().ServerName)
	if err != nil {
		log.Warn("inlet asked for an outlet this agent does not have", zap.Error(err))
		closeWithStatus(ch, statusNoOutlet)
		return true
	}
	m.tapWire(ch, o.spec.Name, peer.NodeID, dialed) // before anyone else may Abort ch
	defer m.chans.track(peer.NodeID, o.allow, func() { ch.Abort() })()
	log = log.With(zap.String("outlet", o.spec.Name))
	expires := channelExpiry(own, peer)
	var busy atomic.Bool
	defer m.watchExpiry(expires, log, busy.Load, func() { ch.Abort() })()
	// The channel carries one connection after another: the inlet keeps it
	// warm between them. The first open comes with the handshake. Each is
	// authorized anew, with the project's current word on the peer; the
	// first also requires the credential to be the node's current one.
	for first := true; ; first = false {
		if !m.awaitOpen(o, ch, first, expires, log) {
			return true
		}
		authorize := channel.Authorize
		if first {
			authorize = channel.Admit
		}
		if err := authorize(m.opts.Verifier, o.allow, peer); err != nil {
			o.stats.Refused.Add(1)
			m.outletFlow(o, peer).refused(flowlog.ByPolicy, err)
			log.Warn("outlet refused a connection", zap.Error(err))
			closeWithStatus(ch, statusDenied)
			return true
		}
		busy.Store(true)
		ok := m.serveOutlet(o, ch, m.outletFlow(o, peer), peer.NodeID, log)
		busy.Store(false)
		if !ok {
			return true
		}
	}
}

// warmWait is how long the outlet waits for the next open request on a
// channel between connections: a little longer than an inlet keeps a
// channel warm (DefaultWarmIdle at most), after which the inlet no longer
// uses it. A variable for tests only.
var warmWait = DefaultWarmIdle + 5*time.Second

// awaitOpen waits for the inlet's next open request: at once after the
// handshake, and between connections for as long as the inlet may keep the
// channel warm (warmWait), but never past expires, when a credential of
// the channel expires and no open request could be granted.
func (m *Manager) awaitOpen(o *outlet, ch *channel.Conn, first bool, expires time.Time, log *zap.Logger) bool {
	deadline := time.Now().Add(warmWait)
	if first {
		deadline = time.Now().Add(m.opts.HandshakeTimeout)
	}
	if !first && expires.Before(deadline) {
		deadline = expires
	}
	ch.Raw().SetReadDeadline(deadline)
	stop := context.AfterFunc(o.ctx, func() { ch.Abort() })
	idle := func() bool { return true }
	if !first { // a warm channel, not a live connection: it ends with Drain
		idle = context.AfterFunc(m.drainCtx, func() { ch.Abort() })
	}
	b, err := ch.ReadControl()
	stop()
	idle()
	if err == nil && o.ctx.Err() != nil {
		// Removed while the request came: no status, so that the inlet
		// takes its connection elsewhere.
		err = errors.New("read open request: the outlet was removed")
	}
	if err == nil && b == ctlWarm && first {
		// A background direct attempt's channel: no connection yet; it
		// waits as a warm one, and its first connection is still admitted
		// as the first (channel.Admit).
		return m.awaitOpen(o, ch, false, expires, log)
	}
	if err == nil && b != ctlOpen {
		err = fmt.Errorf("read open request: control byte %#x: %w", b, channel.ErrBadRecord)
	}
	switch {
	case err == nil:
		ch.Raw().SetReadDeadline(time.Time{})
		return true
	case first:
		ch.Abort()
		o.stats.Failed.Add(1)
		log.Warn("outlet session failed", zap.Error(err))
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The inlet no longer uses the channel: end it cleanly (deferred Close).
		log.Debug("warm channel closed: no open request in time", zap.Time("deadline", deadline))
	default:
		ch.Abort()
		if !errors.Is(err, channel.ErrTruncated) && o.ctx.Err() == nil && m.drainCtx.Err() == nil {
			log.Info("warm channel ended with an error", zap.Error(err))
		}
	}
	return false
}

// peerCredential is the credential the channel's handshake verified. Both
// ends keep it to authorize every connection the channel carries.
func peerCredential(ch *tls.Conn) (*credential.Credential, error) {
	certs := ch.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, errors.New("read peer credential: the peer presented none")
	}
	return credential.Parse(certs[0])
}

// serveOutlet carries one connection of the channel to the target; it
// reports whether the channel ended it cleanly and may carry the next.
func (m *Manager) serveOutlet(o *outlet, ch *channel.Conn, flow *flow, peer string, log *zap.Logger) bool {
	o.stats.Accepted.Add(1)
	if !o.lim.acquire() {
		o.stats.Failed.Add(1)
		flow.refused(flowlog.ByLimit, fmt.Errorf("the outlet has %d connections open, its limit", m.opts.MaxConns))
		log.Warn("outlet at its connection limit; refusing")
		ch.Abort()
		return false
	}
	defer o.lim.release()
	o.stats.Active.Add(1)
	defer o.stats.Active.Add(-1)
	target, err := m.dialTarget(o.ctx, o.spec.To)
	if err != nil && o.ctx.Err() != nil {
		ch.Abort() // the outlet was removed: no status, nothing reached the target
		return false
	}
	if err != nil {
		o.stats.Failed.Add(1)
		flow.closed(pipe.Result{Err: fmt.Errorf("connect to target %s: %w", o.spec.To, err)})
		log.Warn("outlet cannot reach its target", zap.String("to", o.spec.To), zap.Error(err))
		closeWithStatus(ch, statusUnreachable)
		return false
	}
	if err := ch.WriteControl(statusOK); err != nil {
		o.stats.Failed.Add(1)
		flow.closed(pipe.Result{Err: fmt.Errorf("send status: %w", err)})
		target.Close()
		ch.Close()
		return false
	}
	flow.client = addrPort(target.LocalAddr()).String() // what the target sees
	flow.opened()
	untap := m.tapStream(ch, target, o.spec.Name, peer, false)
	res := pipe.Run(o.ctx, pipe.Keep(ch), pipe.TCP(target), &o.stats.Bytes)
	untap(res.Err)
	flow.ended(res)
	if res.Err != nil && o.ctx.Err() == nil {
		log.Info("outlet connection ended with an error", zap.Error(res.Err))
	}
	return res.Err == nil && o.ctx.Err() == nil
}

// closeWithStatus sends a failure status and ends the channel gracefully: it
// drains what the inlet already sent, so that closing does not reset the
// connection before the inlet has read the status.
func closeWithStatus(ch *channel.Conn, status byte) {
	defer ch.Close()
	if err := ch.WriteControl(status); err != nil {
		return
	}
	if err := ch.CloseWrite(); err != nil {
		return
	}
	ch.Raw().SetReadDeadline(time.Now().Add(2 * time.Second))
	io.Copy(io.Discard, ch.Raw())
}
