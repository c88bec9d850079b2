package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/agent/hub/authority/store"
)

// Hub is what the hub's collector reads at each scrape (*hub.Hub).
type Hub interface {
	Stats() hub.Stats
}

// Members lists the project's members (authority.Service's Members), for a
// hub that runs the authority.
type Members func() ([]store.Member, error)

var (
	hubSessions = desc("hub_sessions",
		"Authenticated control sessions the hub holds now (connected agents, and the authority's link).")
	hubPending = desc("hub_pending_pairings",
		"Data sessions waiting for their second side.")
	hubRelays = desc("hub_relays",
		"Relay names claimed at the hub now.")
	hubRelayed = desc("hub_relayed_bytes_total",
		"Bytes relayed in both directions by data sessions that have ended.")
	hubRedirected = desc("hub_redirected_bytes_total",
		"Of the relayed bytes, those the kernel redirected socket to socket (--relay sockmap).")
	hubUnauth = desc("hub_unauthenticated_connections",
		"Connections that have not authenticated yet.")
	hubRefusals = desc("hub_refusals_total",
		"What the hub's limits refused, by reason; dial_rate counts the hits of the per-node rate limit on dial requests.", "reason")
	hubAuthority = desc("hub_authority",
		"Where the project's authority is, as a 1 on the label that holds: local (in the hub's process), linked (agent authority connected) or absent.", "state")
	hubGeneration = desc("hub_member_state_generation",
		"The newest member-state generation the hub has heard from the authority.")
	hubMembers = desc("hub_members",
		"The project's members in the authority's database, by state: active or revoked (with the authority in the hub's process).", "state")
)

// HubCollector reads a hub's counters at each scrape.
type HubCollector struct {
	h       Hub
	members Members // nil: a relay only
}

// NewHubCollector returns the collector of h's metrics; members, if not
// nil, lists the project's members (where the authority runs in the hub).
func NewHubCollector(h Hub, members Members) *HubCollector {
	return &HubCollector{h: h, members: members}
}

// Describe sends every metric's description.
func (c *HubCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{hubSessions, hubPending, hubRelays, hubRelayed, hubRedirected, hubUnauth,
		hubRefusals, hubAuthority, hubGeneration, hubMembers} {
		ch <- d
	}
	for _, d := range hubDirectDescs {
		ch <- d
	}
}

// Collect reads the hub's state and sends its metrics.
func (c *HubCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.h.Stats()
	gauge(ch, hubSessions, float64(st.Sessions))
	gauge(ch, hubPending, float64(st.Pending))
	gauge(ch, hubRelays, float64(len(st.Relays)))
	counter(ch, hubRelayed, st.Spliced)
	counter(ch, hubRedirected, st.Redirected)
	collectHubDirect(ch, st)
	gauge(ch, hubUnauth, float64(st.Unauthenticated))
	r := st.Refused
	for _, v := range []struct {
		reason string
		n      int64
	}{
		{"unauthenticated", r.Unauthenticated}, {"unauthenticated_per_source", r.PerSource},
		{"message_too_large", r.TooLarge}, {"message_malformed", r.Malformed},
		{"dial_rate", r.DialRate}, {"dial_pending_node", r.DialPendingNode},
		{"dial_pending", r.DialPending}, {"dial_policy", r.DialPolicy},
	} {
		counter(ch, hubRefusals, v.n, v.reason)
	}
	for _, s := range []string{"local", "linked", "absent"} {
		gauge(ch, hubAuthority, boolValue(st.Authority == s), s)
	}
	gauge(ch, hubGeneration, float64(st.MemberGeneration))
	if c.members == nil {
		return
	}
	ms, err := c.members()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(hubMembers, fmt.Errorf("list members: %w", err))
		return
	}
	var active, revoked int
	for _, m := range ms {
		if m.Revoked {
			revoked++
		} else {
			active++
		}
	}
	gauge(ch, hubMembers, float64(active), "active")
	gauge(ch, hubMembers, float64(revoked), "revoked")
}

// HubReady says why a hub is not ready, or nil: its authority must be
// usable, a read of its database where it runs in the hub (members), its
// link where it runs elsewhere.
func HubReady(st hub.Stats, members Members) error {
	if members != nil {
		if _, err := members(); err != nil {
			return fmt.Errorf("%w: %w", ErrDatabaseError, err)
		}
		return nil
	}
	if st.Authority != "linked" && st.Authority != "local" {
		return fmt.Errorf("%w: agent authority is not connected to this relay", ErrNoAuthority)
	}
	return nil
}
