package hub

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/agent/wire"
)

// Member changes reach agents this way; the relay checks each statement and
// passes it on, and could forge none:
//
//	authority (in this process, or its link) ──Change: signed word, fresh credential──>
//	    roster (the newest word per node, checked against the authority's key)
//	    ──> the node's own sessions: the fresh credential (opGrant), or, if
//	        revoked, the word and then a closed connection
//	    ──> every member session's outbox: the word (opMember); each
//	        session's writer sends it, so an agent that stops reading delays
//	        no one

// roster is the relay's copy of the authority's signed member state.
type roster struct {
	pub     ed25519.PublicKey
	project string

	mu        sync.Mutex // guards the following
	words     map[string]rosterEntry
	gen       uint64         // the newest generation heard
	heartbeat wire.Statement // the newest heartbeat
}

type rosterEntry struct {
	st wire.Statement
	w  wire.Word
}

func newRoster(p *authority.Project) *roster {
	return &roster{pub: p.Cert.PublicKey.(ed25519.PublicKey), project: p.ID, words: map[string]rosterEntry{}}
}

// apply checks a word and keeps it unless a word as new is known; it reports
// whether it was new.
func (r *roster) apply(st wire.Statement) (wire.Word, bool, error) {
	w, err := wire.OpenWord(r.pub, r.project, st)
	if err != nil {
		return w, false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.words[w.Node]; ok && old.w.Generation >= w.Generation {
		return w, false, nil
	}
	r.words[w.Node] = rosterEntry{st, w}
	r.gen = max(r.gen, w.Generation)
	return w, true, nil
}

// beat checks and keeps a heartbeat if it is the newest.
func (r *roster) beat(st wire.Statement) error {
	hb, err := wire.OpenHeartbeat(r.pub, r.project, st)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.heartbeat.Body) > 0 {
		if cur, err := wire.OpenHeartbeat(r.pub, r.project, r.heartbeat); err == nil && cur.Time.After(hb.Time) {
			return nil
		}
	}
	r.heartbeat = st
	r.gen = max(r.gen, hb.Generation)
	return nil
}

// since returns the newest generation heard, the words after since (all of
// them if since is ahead) and the newest heartbeat.
func (r *roster) since(since uint64) (uint64, []wire.Statement, *wire.Statement) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if since > r.gen {
		since = 0
	}
	var out []wire.Statement
	for _, e := range r.words {
		if e.w.Generation > since {
			out = append(out, e.st)
		}
	}
	var hb *wire.Statement
	if len(r.heartbeat.Body) > 0 {
		h := r.heartbeat
		hb = &h
	}
	return r.gen, out, hb
}

// generation is the newest generation heard.
func (r *roster) generation() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gen
}

// current is the verifier's view: the newest word on node.
func (r *roster) current(node string) (credential.State, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.words[node]
	return credential.State{Generation: e.w.Generation, Attributes: e.w.Attributes, Revoked: e.w.Revoked}, ok
}

// word returns the newest word on node.
func (r *roster) word(node string) (wire.Word, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.words[node]
	return e.w, ok
}

// onChange passes a member change on: a fresh credential to the node's own
// sessions, the word to every member session, and the door to a revoked
// node's sessions once they heard why. Changes come in order, one at a time.
func (h *Hub) onChange(c authority.Change) {
	h.memberMu.Lock()
	defer h.memberMu.Unlock()
	w, fresh, err := h.roster.apply(c.Word)
	if err != nil {
		h.log.Error("dropped a member change not signed by the project's authority", zap.Error(err))
		return
	}
	if !fresh {
		return
	}
	h.log.Info("member changed", zap.String("node", w.Node), zap.Uint64("generation", w.Generation),
		zap.Bool("revoked", w.Revoked), zap.Any("attributes", w.Attributes))
	if c.Grant != nil {
		h.regrant(w.Node, c.Grant)
	}
	h.broadcast(&relay.Message{Op: relay.OpMember, Statement: &c.Word})
	if w.Revoked {
		for _, s := range h.sessionsOf(w.Node) {
			s.closeAfterPushes() // it hears of its revocation first
		}
	}
}

// onHeartbeat passes the authority's heartbeat on to every member session.
func (h *Hub) onHeartbeat(st wire.Statement) {
	h.memberMu.Lock()
	defer h.memberMu.Unlock()
	if err := h.roster.beat(st); err != nil {
		h.log.Error("dropped a heartbeat not signed by the project's authority", zap.Error(err))
		return
	}
	h.broadcast(&relay.Message{Op: relay.OpHeartbeat, Statement: &st})
}

// regrant pushes a fresh credential to the node's member sessions, and
// acts on it for them from now on. One that misses it learns of its new
// generation from the word and renews.
func (h *Hub) regrant(nodeID string, der []byte) {
	cred, err := h.verifier().Verify([][]byte{der})
	if err != nil {
		h.log.Error("dropped a fresh credential the relay cannot verify", zap.String("node", nodeID), zap.Error(err))
		return
	}
	for _, s := range h.sessionsOf(nodeID) {
		if s.isReady() {
			s.cred.Store(cred)
			s.push(&relay.Message{Op: relay.OpGrant, Credential: der})
		}
	}
}

// sessionsOf returns the member sessions of a node.
func (h *Hub) sessionsOf(nodeID string) []*session {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*session
	for s := range h.sessions {
		if s.nodeID == nodeID {
			out = append(out, s)
		}
	}
	return out
}

// broadcast queues m for every member session, admitted or being admitted
// (which send it once their reply is out).
func (h *Hub) broadcast(m *relay.Message) {
	h.mu.Lock()
	all := make([]*session, 0, len(h.sessions))
	for s := range h.sessions {
		all = append(all, s)
	}
	h.mu.Unlock()
	for _, s := range all {
		s.push(m)
	}
}

// verifier checks credentials against the project's authority and the
// relay's copy of the member state.
func (h *Hub) verifier() *credential.Verifier {
	return &credential.Verifier{Root: h.project.Cert, ProjectID: h.project.ID, Current: h.roster.current}
}

// ErrNotLocal means an administrative change was asked of a relay that does
// not run the authority: it belongs to `agent authority`.
var ErrNotLocal = errors.New("this hub runs as a relay only; the authority (agent authority) makes member changes")

// Revoke revokes a member through the authority in this process.
func (h *Hub) Revoke(nodeID string) (*authority.Member, error) {
	if h.local == nil {
		return nil, fmt.Errorf("revoke %s: %w", nodeID, ErrNotLocal)
	}
	return h.local.Revoke(nodeID)
}

// SetAttributes replaces a member's attributes through the authority in
// this process.
func (h *Hub) SetAttributes(nodeID string, attrs map[string]string) (*authority.Member, error) {
	if h.local == nil {
		return nil, fmt.Errorf("set attributes of %s: %w", nodeID, ErrNotLocal)
	}
	return h.local.SetAttributes(nodeID, attrs)
}

// Members lists the members known to the authority in this process.
func (h *Hub) Members() ([]authority.Member, error) {
	if h.local == nil {
		return nil, fmt.Errorf("list members: %w", ErrNotLocal)
	}
	ms, err := h.local.Members()
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	return ms, nil
}
