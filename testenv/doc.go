// Package testenv builds throwaway networks of "hosts" and "containers" out
// of Linux network namespaces, for tests, the demo and benchmarks. It is the
// only package of Sluice that creates namespaces.
//
// An Env owns everything it makes: namespaces (and with them every link,
// address, route and nftables rule inside them), /etc/netns hosts files,
// cgroup v2 directories, processes and packet captures. Close tears all of it
// down. Nothing is ever made in the caller's own network namespace, so
// traffic stays inside namespaces this package created.
//
// Interrupted runs cannot leak for long: New writes an owner file
// /run/sluice-testenv/<runid> holding the owner's pid, and every New (and
// Reap) first removes what runs with a dead owner left behind. Processes are
// born inside cgroups of the env (clone3 with CLONE_INTO_CGROUP), so killing
// the cgroup kills every process they spawned too.
//
// Everything here needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN), a cgroup2
// mount (unified or hybrid hierarchy), the ip and nft binaries, and kernel
// 5.14+ for cgroup.kill (older kernels fall back to signalling every pid).
package testenv
