// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Socket acceleration for transparent inlets: the agent's plaintext writes
 * to an app go straight into the app socket's receive queue, skipping TCP/IP
 * on both sides of the veth.
 *
 *   sockops (cgroup): an app socket that connected to a service address,
 *       through this agent's steer program (its SYN is in flows), joins
 *       socks, keyed by its own view and its netns cookie.
 *   the agent, at accept, before it writes a byte: its socket joins socks,
 *       and peers maps its key to the app socket's key.
 *   sk_msg (on socks): a send whose key has a peer is redirected into the
 *       peer's receive queue; every other send takes the normal path.
 *
 * Only the agent-to-app direction is redirected: the pairing exists before
 * the agent's first write, so no byte of that direction can overtake another
 * still in flight on the normal path. The app's writes always take the
 * normal path (it may write before the agent has accepted). Spliced sockets
 * (the hub's) never join: a socket in a sockmap loses splice(2).
 *
 * The program sits on the cgroup root, so it sees the sockets of every
 * namespace, those of another agent's containers too (two agents on one
 * kernel, such as tests running side by side). It leaves them alone: a
 * socket in this agent's sockhash could not join the other agent's (the
 * kernel refuses a socket already bound to other sk_msg programs, EBUSY),
 * and that agent could accelerate nothing.
 */
#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "sluice.h"
#include "services.h"
#include "flows.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, MAX_SOCKS);
	__type(key, struct sock_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} socks SEC(".maps");

/* App connections to services -> the app's netns cookie, for the agent to
 * name the app socket. 0 means two namespaces had the same 4-tuple at once:
 * that connection is not accelerated. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_SOCKS);
	__type(key, struct flow_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} apps SEC(".maps");

/* The agent's socket -> the app socket its writes go to. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_SOCKS);
	__type(key, struct sock_key);
	__type(value, struct sock_key);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} peers SEC(".maps");

/* Ports: local_port is in host order in both contexts, remote_port in
 * network order in the upper half on little-endian machines. Both become
 * network order here. */
static __always_inline __u16 lport(__u32 p) { return bpf_htons((__u16)p); }
static __always_inline __u16 rport(__u32 p) { return (__u16)(p >> 16); }

SEC("sockops")
int track(struct bpf_sock_ops *ops)
{
	struct service_key svc = {};
	struct service_value *v;
	struct sock_key k = {};
	struct flow_key f = {};
	__u64 zero = 0, *have;

	if (ops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB || ops->family != AF_INET)
		return 1;
	svc.addr = ops->remote_ip4;
	svc.port = rport(ops->remote_port);
	v = bpf_map_lookup_elem(&services, &svc);
	if (!v || (v->flags & SERVICE_F_EXPLICIT)) /* explicit inlets are not accelerated */
		return 1;
	k.netns = bpf_get_netns_cookie(ops);
	k.local_ip = ops->local_ip4;
	k.remote_ip = ops->remote_ip4;
	k.local_port = lport(ops->local_port);
	k.remote_port = rport(ops->remote_port);
	f.saddr = k.local_ip;
	f.daddr = k.remote_ip;
	f.sport = k.local_port;
	f.dport = k.remote_port;
	/* Not steered by this agent (its SYN reached steer before this
	 * SYN-ACK came back, and the agent takes the record only at accept,
	 * after the app's ACK): someone else's socket. */
	if (!bpf_map_lookup_elem(&flows, &f))
		return 1;
	if (bpf_sock_hash_update(ops, &socks, &k, BPF_ANY))
		return 1;
	have = bpf_map_lookup_elem(&apps, &f);
	if (have && *have != k.netns)
		bpf_map_update_elem(&apps, &f, &zero, BPF_ANY);
	else if (!have)
		bpf_map_update_elem(&apps, &f, &k.netns, BPF_NOEXIST);
	return 1;
}

SEC("sk_msg")
int redirect(struct sk_msg_md *msg)
{
	struct sock_key k = {};
	struct sock_key *peer;

	if (msg->family != AF_INET)
		return SK_PASS;
	k.netns = bpf_get_netns_cookie(msg);
	k.local_ip = msg->local_ip4;
	k.remote_ip = msg->remote_ip4;
	k.local_port = lport(msg->local_port);
	k.remote_port = rport(msg->remote_port);
	peer = bpf_map_lookup_elem(&peers, &k);
	if (!peer)
		return SK_PASS;
	return bpf_msg_redirect_hash(msg, &socks, peer, BPF_F_INGRESS);
}
