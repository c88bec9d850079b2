package hub

import (
	"errors"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/limit"
	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/agent/wire"
)

// What the hub sends when it refuses: the wire code of the sentinel the
// error wraps (the codes table) and the error's text, which the hub wrote
// for the peer. An error that wraps no sentinel of the table is the hub's own
// failure (a full disk, a broken database): the peer gets code "internal"
// and internalText, the hub's log gets the error. As a last guard, a text
// that names the hub's project directory or database is never sent.

// internalText is all a peer learns of the hub's own failures.
const internalText = "the hub failed to serve this request; its operator can find why in the hub's log"

// codeInternal is the wire code of the hub's own failures.
const codeInternal = wire.CodeInternal

// privateTexts are strings no refusal may carry: the project directory and
// the database path, as given and absolute.
func privateTexts(p *authority.Project) []string {
	var out []string
	for _, dir := range []string{p.Dir, abs(p.Dir)} {
		if clean := filepath.Clean(dir); len(clean) > 1 {
			out = append(out, clean)
		}
		out = append(out, filepath.Join(dir, authority.DatabaseFile))
	}
	return out
}

func abs(dir string) string {
	a, err := filepath.Abs(dir)
	if err != nil {
		return dir
	}
	return a
}

// scrub replaces the text of a refusal that names a private path; it
// returns the reply.
func (h *Hub) scrub(m *relay.Message) *relay.Message {
	if m.Error == "" {
		return m
	}
	for _, p := range h.private {
		if strings.Contains(m.Error, p) {
			if m.Cause == nil {
				m.Cause = errors.New(m.Error)
			}
			m.Error, m.Code = internalText, codeInternal
			break
		}
	}
	return m
}

// logRefusal logs a refused request: the ones a member can repeat at will
// (rate limits, policy filter, malformed) at debug, at most once a second
// per kind; the hub's own failures at error with their cause; the rest at
// info.
func (h *Hub) logRefusal(log *zap.Logger, op, relay string, r *relay.Message) {
	fields := []zap.Field{zap.String("op", op), zap.String("code", r.Code), zap.String("reason", r.Error)}
	if relay != "" {
		fields = append(fields, zap.String("relay", relay))
	}
	var every *limit.Every
	switch r.Code {
	case codeInternal:
		log.Error("request failed at the hub", append(fields, zap.Error(r.Cause))...)
		return
	case "rate_limited":
		every = &h.logs.rate
	case "dial_denied":
		every = &h.logs.policy
	case "too_large", "malformed", "unsupported":
		every = &h.logs.protocol
	default:
		log.Info("request refused", fields...)
		return
	}
	if ok, n := every.Allow(time.Now()); ok {
		log.Debug("request refused", append(fields, zap.Int64("more_not_logged", n))...)
	}
}

// limitedLogs sample the log lines a peer can cause at will, one a second
// each.
type limitedLogs struct {
	rate, policy, protocol, timeout, unknownToken, noHello limit.Every
}
