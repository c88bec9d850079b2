package portal

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/channel"
	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/pipe"
	"github.com/sluicehq/sluice/agent/policy"
)

// Outlet session pipeline:
//
//	hub "incoming" ──> OpenData (TCP to hub) ──> TLS server handshake,
//	    verifying the inlet's credential and this outlet's policy
//	    ──> channel records: wait for "open" ──> dial target
//	    ──> status (control) ──> pipe.Run(channel, target)

// anyMember lets the handshake finish when the inlet names an outlet that does
// not exist, so that the inlet learns why from a status byte rather than an
// alert it would read as a policy refusal. The channel still requires a valid
// credential of the project, and nothing is forwarded.
var anyMember = policy.MustParse("true")

// HandleIncoming serves one data session the hub announced for a relay this
// agent owns. from is the inlet agent's node ID, as the hub says; the channel
// authenticates it independently. Past the limits on pending sessions
// (incoming.go) it drops the session.
func (m *Manager) HandleIncoming(token []byte, from string) {
	release, err := m.incoming.acquire(from)
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
	defer m.wg.Done()
	log := m.log.With(zap.String("from", from))
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.HandshakeTimeout)
	defer cancel()
	raw, err := m.opts.Hub.OpenData(ctx, token)
	if err != nil {
		log.Warn("outlet session failed", zap.Error(err))
		return
	}
	m.serveChannel(ctx, raw, from, log, release)
}

// ServeDirect serves a channel an inlet opened straight to this agent
// (agent run --direct-listen), without the hub; it returns when the channel
// ends.
func (m *Manager) ServeDirect(raw *net.TCPConn) {
	if !m.enter() {
		raw.Close()
		return
	}
	defer m.wg.Done()
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.HandshakeTimeout)
	defer cancel()
	m.serveChannel(ctx, raw, "", m.log.With(zap.Stringer("from", raw.RemoteAddr())), func() {})
}

// serveChannel runs the server side of a channel on raw: handshake, then
// the outlet the inlet named. from is the inlet agent's node as the hub says
// ("" without hub); the channel authenticates it independently.
// handshaken is called once the handshake succeeded: the session is no
// longer pending.
func (m *Manager) serveChannel(ctx context.Context, raw *net.TCPConn, from string, log *zap.Logger, handshaken func()) {
	var (
		chosen  *outlet
		missing error
	)
	conf := channel.Server(m.opts.Keys, m.opts.Verifier, func(name string) (*policy.Policy, error) {
		o, err := m.outletFor(name)
		if err != nil {
			missing = err
			return anyMember, nil
		}
		chosen = o
		return o.allow, nil
	})
	tc := tls.Server(channel.Boundary(raw), conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		if chosen != nil && errors.Is(err, channel.ErrDenied) {
			chosen.stats.Refused.Add(1)
		}
		log.Warn("outlet refused a connection", zap.Error(err))
		return
	}
	handshaken()
	node := peerNode(tc, from)
	ch, err := channel.NewConn(raw, tc, false)
	if err != nil {
		raw.Close()
		log.Warn("outlet session failed", zap.Error(err))
		return
	}
	if chosen == nil {
		log.Warn("inlet asked for an outlet this agent does not have", zap.Error(missing))
		closeWithStatus(ch, statusNoOutlet)
		return
	}
	o := chosen
	defer m.chans.track(node, o.allow, func() { ch.Abort() })()
	log = log.With(zap.String("outlet", o.spec.Name))
	// The channel carries one connection after another: the inlet keeps it
	// warm between them. The first open comes with the handshake.
	for first := true; ; first = false {
		if !m.awaitOpen(o, ch, first, log) || !m.serveOutlet(o, ch, log) {
			return
		}
	}
}

// awaitOpen waits for the inlet's next open request: at once after the
// handshake, for as long as the inlet keeps the channel warm afterwards.
func (m *Manager) awaitOpen(o *outlet, ch *channel.Conn, first bool, log *zap.Logger) bool {
	if first {
		ch.Raw().SetReadDeadline(time.Now().Add(m.opts.HandshakeTimeout))
	}
	stop := context.AfterFunc(o.ctx, func() { ch.Abort() })
	b, err := ch.ReadControl()
	stop()
	if err == nil && b != ctlOpen {
		err = fmt.Errorf("read open request: control byte %#x: %w", b, channel.ErrBadRecord)
	}
	if err != nil {
		ch.Abort()
		if first {
			o.stats.Failed.Add(1)
			log.Warn("outlet session failed", zap.Error(err))
		} else if !errors.Is(err, channel.ErrTruncated) && o.ctx.Err() == nil {
			log.Info("warm channel ended with an error", zap.Error(err))
		}
		return false
	}
	ch.Raw().SetReadDeadline(time.Time{})
	return true
}

// peerNode is the node the channel authenticated; the hub's word (from) if
// its credential cannot be read, which the handshake made unlikely.
// Both ends use it.
func peerNode(ch *tls.Conn, from string) string {
	certs := ch.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return from
	}
	c, err := credential.Parse(certs[0])
	if err != nil {
		return from
	}
	return c.NodeID
}

// serveOutlet carries one connection of the channel to the target; it
// reports whether the channel ended it cleanly and may carry the next.
func (m *Manager) serveOutlet(o *outlet, ch *channel.Conn, log *zap.Logger) bool {
	o.stats.Accepted.Add(1)
	if !o.lim.acquire() {
		o.stats.Failed.Add(1)
		log.Warn("outlet at its connection limit; refusing")
		ch.Abort()
		return false
	}
	defer o.lim.release()
	o.stats.Active.Add(1)
	defer o.stats.Active.Add(-1)
	target, err := m.dial(o.ctx, o.spec.To)
	if err != nil {
		o.stats.Failed.Add(1)
		log.Warn("outlet cannot reach its target", zap.String("to", o.spec.To), zap.Error(err))
		closeWithStatus(ch, statusUnreachable)
		return false
	}
	if err := ch.WriteControl(statusOK); err != nil {
		o.stats.Failed.Add(1)
		target.Close()
		ch.Close()
		return false
	}
	res := pipe.Run(o.ctx, pipe.Keep(ch), pipe.TCP(target), &o.stats.Bytes)
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
