// Package hub is the hub's server: the relay both sides of a portal dial
// out to. It accepts agents' control connections (TLS 1.3, the control
// protocol of agent/relay), admits them with the authority's credentials,
// keeps the relay names they claim (one owner a name, hub_claims.go), pairs
// the data connections of a session by token and relays them (spliced, or
// in the kernel's sockmap: sockmap_linux.go), bounds what each source and
// node may ask (limits.go, dials.go), passes the authority's signed words
// on members to every agent (members.go), drains on shutdown
// (hub_drain.go), and serves the admin API on hub.sock (admin.go; its
// client is agent/hub/admin). The authority runs in the hub's process
// (HubOptions.Authority) or apart, linked to it as a control session
// (authority.go, RunAuthorityLink).
//
// It is not the authority (agent/hub/authority: the project's keys,
// tickets, credentials and records, which the relay never needs to trust),
// nor the protocol or the agent's side of it (agent/relay, agent/wire).
// Nothing of the agent imports it.
package hub
