// Package chaos is Sluice's fault-injection suite and its soak. Both play
// the seed story (testenv/scenario, transparent inlet) with the real
// binaries, while pgbench runs through the portal, and break it: processes
// killed (SIGKILL) and restarted, links down, the hub unreachable for
// longer than a credential lives, packets lost, connection tracking
// flushed on a NAT router. For each fault they report what pgbench saw and
// how long until new connections worked again, and check that no
// plaintext crossed a link outside the companies' networks and that the
// surviving processes leaked no descriptor, goroutine or BPF pin.
//
// They need root and take minutes, so they run only when asked:
//
//	make chaos              SLUICE_CHAOS=long: every fault, measured one by one,
//	                        and 20 trials of each truncation case
//	make chaos CHAOS=short  what CI runs: every fault once, shorter
//	make soak               SLUICE_SOAK=10m: pgbench with 100 clients,
//	                        RSS, descriptors and goroutines every 10 s
//
// docs/chaos.md describes each fault, what is measured and the results.
package chaos
