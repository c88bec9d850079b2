package portal

import (
	"crypto/tls"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/credential"
)

// Credential expiry on an open channel. A channel authenticated both ends
// with the credentials they held at its handshake; it carries no new
// connection once either has expired (reuseUntil, awaitOpen, and the
// outlet's check of every open request). A connection already flowing at
// that moment goes on while this agent's member state is current: the
// authority's signed word on the peer, heard within the last minute, is
// newer than any credential, and it still allows the peer (a word that does
// not resets the connection at once, see ReviewPeer). If the member state
// is stale at the expiry, or turns stale later, the connection is reset:
// nothing current vouches for the peer any more.
//
//	handshake ──> expiry watch armed at the first NotAfter of both credentials
//	NotAfter: member state current ──> log once, check again every expiryRecheck
//	          member state stale   ──> reset the channel and its connection

// expiryRecheck is how often a connection past its channel's credential
// expiry checks that the member state is still current.
const expiryRecheck = time.Second

// channelExpiry is when the first of a channel's credentials expires: own,
// the one this agent presented (or a newer one: it expires later), and the
// peer's.
func channelExpiry(own *tls.Certificate, peer *credential.Credential) time.Time {
	t := peer.Cert.NotAfter
	if own != nil && own.Leaf != nil && own.Leaf.NotAfter.Before(t) {
		t = own.Leaf.NotAfter
	}
	return t
}

// memberStateCurrent reports whether this agent's member state is current
// (Options.MemberStateCurrent).
func (m *Manager) memberStateCurrent() bool {
	return m.opts.MemberStateCurrent != nil && m.opts.MemberStateCurrent()
}

// expiryWatch resets a channel whose credential expired while the member
// state is not current.
type expiryWatch struct {
	mu      sync.Mutex // guards the following
	timer   *time.Timer
	stopped bool
	told    bool // the connection outliving the credential was logged
}

// watchExpiry arms the expiry watch of a channel: from expires on, abort is
// called as soon as the member state is not current. busy reports whether
// the channel carries a connection now (for the log). stop disarms it; call
// it when the channel ends.
func (m *Manager) watchExpiry(expires time.Time, log *zap.Logger, busy func() bool, abort func()) (stop func()) {
	w := &expiryWatch{}
	log = log.With(zap.Time("credential_expired", expires))
	var check func()
	check = func() {
		w.mu.Lock()
		if w.stopped {
			w.mu.Unlock()
			return
		}
		if !m.memberStateCurrent() {
			w.stopped = true
			w.mu.Unlock()
			log.Warn("channel reset: a credential it was opened with has expired, and this agent's member state is not current")
			abort()
			return
		}
		if !w.told && busy() {
			w.told = true
			log.Info("a connection outlives its channel's credential; the member state is current, so it goes on, and the channel carries no new connection")
		}
		w.timer = time.AfterFunc(expiryRecheck, check)
		w.mu.Unlock()
	}
	w.mu.Lock()
	w.timer = time.AfterFunc(time.Until(expires), check)
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		w.stopped = true
		w.timer.Stop()
		w.mu.Unlock()
	}
}
