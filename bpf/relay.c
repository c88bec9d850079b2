// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The hub's sockmap relay: the bytes a data connection receives leave, in
 * the kernel, through the connection it is paired with, without waking the
 * hub process.
 *
 *   the hub, once both connections of a session are there, before it acks
 *       them: relay_flows and relay_hubs entries for both, then
 *       relay_peers[cookie(A)] = B and relay_peers[cookie(B)] = A. A socket
 *       gets relay_verdict as stream verdict when it joins relay_peers.
 *   relay_verdict: each skb A receives is redirected to B's egress: B's
 *       psock queues it and a kernel worker sends it with B's TCP.
 *
 * The kernel relays bytes only: a FIN or a reset on A is seen by the hub
 * (EOF or ECONNRESET on A), which passes it on to B once B's psock queue
 * has drained. A bare FIN skb is dropped here: TCP has already marked A
 * shut for reading, and in a psock queue the empty skb counts as a failed
 * send (EPIPE on that socket, whose redirects then stop; Linux 6.18).
 *
 * No peer (B closed, or the pair taken apart): the skb is passed up to A
 * rather than dropped. bpf_sk_redirect_hash returns SK_DROP then; SK_PASS
 * without a redirect delivers to A itself.
 *
 * No backpressure. A's skbs leave its receive queue at once, so A's window
 * stays open however long B's psock queue grows (1 GiB queued in the hub
 * for a peer that did not read; 577 MiB at peak for one that did, as the
 * worker sends more slowly than loopback delivers; cilium/cilium#6431).
 * Nothing safe closes it on 6.18: bytes passed up to A and read by the hub
 * came back twice, and taking A out of the map to pause it dropped the
 * skbs being verdicted. So the program only bounds the damage: once B's
 * backlog passes backlog_max it reports A's cookie on relay_overflows,
 * once, and the hub resets the session.
 *
 * Sockets in this map lose splice(2).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "sluice.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* How many bytes may wait in a peer socket's psock queue before the hub is
 * told; the loader may set it. */
volatile const __u64 backlog_max = 64 << 20;

/* Just the fields we read, relocated against the kernel's BTF (CO-RE). */
struct tcp_sock {
	__u64 bytes_acked;
	__u32 snd_una;
	__u32 write_seq;
} __attribute__((preserve_access_index));

/* A receiving socket's cookie -> the socket its bytes leave through. None
 * of these maps is pinned: they live and die with the hub process. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, MAX_RELAY_SOCKS);
	__type(key, __u64);
	__type(value, __u64);
} relay_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_RELAY_SOCKS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct pair_flow);
} relay_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_RELAY_SOCKS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct pair_hub);
} relay_hubs SEC(".maps");

/* Cookies of receiving sockets whose peer's backlog passed backlog_max. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 10);
} relay_overflows SEC(".maps");

/* backlog returns how many bytes of this direction wait in B's psock queue:
 * what was redirected or written by the hub, minus what B's TCP has taken
 * (acknowledged, or still in its send queue, which B's own buffer limit
 * bounds). */
static __always_inline __u64 backlog(__u64 *key, struct pair_flow *f, struct pair_hub *h)
{
	struct bpf_sock *peer = bpf_map_lookup_elem(&relay_peers, key);
	struct tcp_sock *tp;
	__u64 out = f->redirected + h->sent, taken = out;

	if (!peer)
		return 0;
	tp = bpf_skc_to_tcp_sock(peer);
	if (tp)
		taken = tp->bytes_acked + (__u32)(tp->write_seq - tp->snd_una);
	bpf_sk_release(peer);
	return taken < out ? out - taken : 0;
}

SEC("sk_skb/stream_verdict")
int relay_verdict(struct __sk_buff *skb)
{
	__u64 key = bpf_get_socket_cookie(skb);
	struct pair_flow *f = bpf_map_lookup_elem(&relay_flows, &key);
	struct pair_hub *h = bpf_map_lookup_elem(&relay_hubs, &key);

	if (!f || !h)
		return SK_PASS; /* not paired by the hub: its owner reads it */
	if (!skb->len)
		return SK_DROP; /* a bare FIN, see above */
	if (bpf_sk_redirect_hash(skb, &relay_peers, &key, 0) != SK_PASS) {
		f->passed += skb->len;
		return SK_PASS;
	}
	f->redirected += skb->len;
	if (!f->overflow && backlog(&key, f, h) > backlog_max &&
	    !bpf_ringbuf_output(&relay_overflows, &key, sizeof(key), 0))
		f->overflow = 1;
	return SK_PASS;
}
