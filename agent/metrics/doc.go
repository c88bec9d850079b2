// Package metrics turns the agent's and the hub's counters into Prometheus
// metrics, and serves them with the health endpoints (GET /metrics,
// /healthz, /readyz) on the listener of `agent run --metrics` and
// `agent hub --metrics`.
//
// Its collectors read the counters the parts already keep (the portals'
// atomics, the kernel's per-portal map entries, the hub's Stats) at scrape
// time: nothing is counted twice, and nothing on the data path knows of
// Prometheus. The only values recorded as they happen are the connection
// setup and channel handshake times (Timings), once per connection. Each
// agent or hub has its own registry, never the global one. docs/operations.md
// lists every metric.
package metrics

// namespace prefixes every metric of Sluice's own.
const namespace = "sluice"
