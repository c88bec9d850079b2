package hub

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/alpn"
	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/agent/wire"
)

// The hub's side of the authority. Agents reach the authority by dialing
// the reserved relay name ".authority": with the authority in this process,
// the hub answers their data connection itself (exchangeLocal); otherwise
// it pairs it with a data connection of the authority's link, which the
// authority process keeps open to the hub (serveAuthority,
// RunAuthorityLink). Either way the exchange is TLS between the agent and
// the authority's own key, and the words and credentials the authority
// hands the hub for agents are signed.

// serveLocalAuthority feeds the roster from the authority in this process
// and passes its changes and heartbeats on until the returned func is
// called.
func (h *Hub) serveLocalAuthority(ctx context.Context) (stop func(), err error) {
	_, words, err := h.local.Words(0)
	if err != nil {
		return nil, fmt.Errorf("read the member state: %w", err)
	}
	for _, st := range words {
		if _, _, err := h.roster.apply(st); err != nil {
			return nil, fmt.Errorf("read the member state: %w", err)
		}
	}
	hb, err := h.local.Heartbeat()
	if err != nil {
		return nil, fmt.Errorf("sign a heartbeat: %w", err)
	}
	h.roster.beat(hb)
	unsubscribe := h.local.Subscribe(h.onChange)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(h.opts.HeartbeatInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				st, err := h.local.Heartbeat()
				if err != nil {
					h.log.Error("signing a heartbeat failed", zap.Error(err))
					continue
				}
				h.onHeartbeat(st)
			}
		}
	}()
	return func() { unsubscribe(); cancel(); <-done }, nil
}

// exchangeLocal acknowledges an agent's data connection to the authority
// and lets the authority in this process answer it.
func (h *Hub) exchangeLocal(ctx context.Context, c *net.TCPConn) {
	if err := sendAcks(c); err != nil {
		c.Close()
		return
	}
	if err := h.local.Exchange(ctx, c); err != nil {
		h.log.Info("exchange with the authority failed", zap.Stringer("remote", c.RemoteAddr()), zap.Error(err))
	}
}

// dialAuthority opens a data session from s to the authority.
func (h *Hub) dialAuthority(s *session, reply *relay.Message) *relay.Message {
	release, err := h.dials.reserve(s.nodeID)
	if err != nil {
		return refuse(reply, fmt.Errorf("dial the authority: %w", err))
	}
	h.mu.Lock()
	link := h.authority
	h.mu.Unlock()
	if h.local == nil && link == nil {
		release()
		return refuse(reply, fmt.Errorf("dial the authority: %w", wire.ErrNoAuthority))
	}
	p, err := h.newPairing(relay.AuthorityRelay, s.nodeID, release)
	if err != nil {
		release()
		return refuse(reply, fmt.Errorf("dial the authority: %w", err))
	}
	if h.local != nil {
		p.local = true
	} else if err := link.send(&relay.Message{Op: relay.OpIncoming, Relay: relay.AuthorityRelay, Token: p.outletTok[:], Node: s.nodeID}); err != nil {
		return refuse(reply, fmt.Errorf("dial the authority: its link is gone: %w", wire.ErrNoAuthority))
	}
	reply.Token = p.inletTok[:]
	return reply
}

// isAuthority reports whether a control connection's key is the project
// authority's.
func (h *Hub) isAuthority(pub ed25519.PublicKey) bool {
	k, ok := h.project.Cert.PublicKey.(ed25519.PublicKey)
	return ok && k.Equal(pub)
}

// serveAuthority serves the link of the authority process: its words,
// heartbeats and fresh credentials come in, agents' data sessions to it go
// out. One link at a time; a new one replaces the old.
func (h *Hub) serveAuthority(ctx context.Context, s *session, dec *relay.FrameReader, ps *pass, log *zap.Logger) {
	if h.local != nil {
		log.Warn("the authority connected to a hub that runs its own authority; refusing")
		s.send(refuse(&relay.Message{Op: relay.OpReply}, fmt.Errorf("this hub runs the authority itself: %w", wire.ErrUnsupported)))
		return
	}
	ps.authenticated()
	h.mu.Lock()
	old := h.authority
	h.authority = s
	h.mu.Unlock()
	if old != nil {
		old.conn.Close()
	}
	defer func() {
		h.mu.Lock()
		if h.authority == s {
			h.authority = nil
		}
		h.mu.Unlock()
	}()
	if err := s.send(&relay.Message{Op: relay.OpReply}); err != nil {
		return
	}
	log.Info("the authority connected")
	stop := context.AfterFunc(ctx, func() { s.conn.Close() })
	defer stop()
	for {
		s.conn.SetReadDeadline(time.Now().Add(time.Minute))
		var m relay.Message
		if err := dec.Decode(&m); err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				log.Warn("the authority's link ended", zap.Error(err))
			} else {
				log.Info("the authority disconnected")
			}
			return
		}
		switch {
		case m.Op == relay.OpMember && m.Statement != nil:
			h.onChange(authority.Change{Word: *m.Statement, Grant: m.Credential})
		case m.Op == relay.OpHeartbeat && m.Statement != nil:
			h.onHeartbeat(*m.Statement)
		case m.Op == relay.OpPing:
		default:
			log.Warn("the authority sent an unknown message", zap.String("op", m.Op))
		}
	}
}

// AuthorityLinkOptions configure RunAuthorityLink. Hub and Service are
// required.
type AuthorityLinkOptions struct {
	Hub               string // HOST:PORT of the relay
	Service           *authority.Service
	Logger            *zap.Logger   // zap.NewNop()
	HeartbeatInterval time.Duration // DefaultHeartbeatInterval
}

// RunAuthorityLink keeps the authority connected to a relay that runs
// without it (agent authority): it hands the relay the signed member state,
// every change and a heartbeat every interval, and answers the agents'
// exchanges the relay pairs with it. It reconnects with backoff until ctx is
// done.
func RunAuthorityLink(ctx context.Context, opts AuthorityLinkOptions) error {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = relay.DefaultHeartbeatInterval
	}
	host, _, err := net.SplitHostPort(opts.Hub)
	if err != nil {
		return fmt.Errorf("link to relay: address %q: %w", opts.Hub, err)
	}
	p := opts.Service.Project()
	pinned := p.AuthorityPublicKey()
	conf := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		ServerName:         host,
		NextProtos:         []string{relay.ControlALPN},
		Certificates:       []tls.Certificate{{Certificate: [][]byte{p.Cert.Raw}, PrivateKey: p.Key, Leaf: p.Cert}},
		InsecureSkipVerify: true, // relay.VerifyHub instead
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := alpn.Require(cs, relay.ControlALPN); err != nil {
				return err
			}
			return relay.VerifyHub(cs.PeerCertificates, pinned, host)
		},
	}
	l := &authorityLink{opts: opts, conf: conf, log: opts.Logger}
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		err := l.run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > time.Minute {
			backoff = 100 * time.Millisecond
		}
		wait := relay.Jitter(backoff)
		l.log.Warn("link to the relay lost; reconnecting", zap.String("relay", opts.Hub), zap.Error(err), zap.Duration("retry_in", wait))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

type authorityLink struct {
	opts AuthorityLinkOptions
	conf *tls.Config
	log  *zap.Logger
}

// run keeps one connection to the relay until it fails or ctx is done.
func (l *authorityLink) run(ctx context.Context) error {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", l.opts.Hub)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	conn := tls.Client(raw, l.conf)
	defer conn.Close()
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = conn.HandshakeContext(hctx)
	cancel()
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	s := &session{conn: conn, enc: json.NewEncoder(conn)}
	dec := relay.NewFrameReader(conn, relay.MaxHubMessage)
	if err := s.send(&relay.Message{Op: relay.OpAuthority}); err != nil {
		return err
	}
	var reply relay.Message
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := dec.Decode(&reply); err != nil {
		return fmt.Errorf("relay's answer: %w", err)
	}
	if reply.Error != "" {
		return fmt.Errorf("relay refused the authority: %w", wire.ErrorOf(reply.Code, reply.Error))
	}
	s.admitted()
	// Subscribed before the snapshot: a change in between is sent twice,
	// and the relay keeps the newest.
	unsubscribe := l.opts.Service.Subscribe(func(c authority.Change) {
		s.push(&relay.Message{Op: relay.OpMember, Statement: &c.Word, Credential: c.Grant})
	})
	defer unsubscribe()
	_, words, err := l.opts.Service.Words(0)
	if err != nil {
		return fmt.Errorf("read the member state: %w", err)
	}
	for i := range words {
		s.push(&relay.Message{Op: relay.OpMember, Statement: &words[i]})
	}
	l.log.Info("linked to the relay", zap.String("relay", l.opts.Hub), zap.Int("members", len(words)))
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go l.beat(ctx, s)
	context.AfterFunc(ctx, func() { conn.Close() })
	data := relay.NewDataClient(l.opts.Hub, d)
	for {
		var m relay.Message
		conn.SetReadDeadline(time.Time{})
		if err := dec.Decode(&m); err != nil {
			return fmt.Errorf("read from the relay: %w", err)
		}
		if m.Op != relay.OpIncoming || m.Relay != relay.AuthorityRelay {
			continue
		}
		go func() {
			octx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			c, err := data.OpenData(octx, m.Token)
			if err != nil {
				l.log.Info("exchange not opened", zap.Error(err))
				return
			}
			if err := l.opts.Service.Exchange(ctx, c); err != nil {
				l.log.Info("exchange with an agent failed", zap.String("node", m.Node), zap.Error(err))
			}
		}()
	}
}

// beat sends a signed heartbeat now and every interval.
func (l *authorityLink) beat(ctx context.Context, s *session) {
	t := time.NewTicker(l.opts.HeartbeatInterval)
	defer t.Stop()
	for {
		st, err := l.opts.Service.Heartbeat()
		if err != nil {
			l.log.Error("signing a heartbeat failed", zap.Error(err))
		} else {
			s.push(&relay.Message{Op: relay.OpHeartbeat, Statement: &st})
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
