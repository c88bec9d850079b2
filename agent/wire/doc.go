// Package wire is what an agent must understand of what the hub and the
// project's authority say, beyond the relay's framing: enrollment tickets
// (parsing and checking their signature), the rules for relay names and
// attributes, the authority's signed statements (its word on a member, its
// heartbeat), the messages of the enrollment exchange, and the wire codes
// of refusals with the sentinel errors they stand for.
//
// It is a leaf that both sides share: the agent (agent/relay's client,
// agent/daemon, agent/portal) reads with it, the hub (agent/hub) and the
// authority (agent/hub/authority) write with it. It holds no keys of its
// own, opens no database and serves nothing: issuing tickets and
// credentials, redeeming tickets and keeping member records are the
// authority's (agent/hub/authority); framing control messages and the
// agent's client of the hub are agent/relay's.
package wire
