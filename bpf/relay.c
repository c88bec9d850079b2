// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The hub's sockmap relay: the bytes a data connection receives leave, in
 * the kernel, through the connection it is paired with, without waking the
 * hub process.
 *
 *   the hub, once both connections of a session are there: relay_flows and
 *       relay_hubs entries for both, then relay_peers[cookie(A)] = B and
 *       relay_peers[cookie(B)] = A (a socket gets relay_verdict as stream
 *       verdict when it joins relay_peers); then it writes its ack on both
 *       and records it in relay_hubs.
 *   relay_verdict: each skb A receives is redirected to B's egress: B's
 *       psock queues it and a kernel worker sends it with B's TCP. Until
 *       the hub has recorded its ack on B, A's bytes are passed up instead
 *       (see below): A's agent may send as soon as it has its own ack, and
 *       a redirected byte would overtake the ack on B.
 *
 * Flow control. The kernel gives these redirects no backpressure: A's skbs
 * leave its receive queue at once, so A's window stays open while B's
 * psock queue grows (observed on Linux 6.18: 1 GiB queued in the hub for a
 * peer that did not read, and hundreds of MiB for one that did, since the
 * worker sends more slowly than loopback delivers; cilium/cilium#6431).
 * So the program counts what waits in B's psock queue (redirected or
 * written by the hub, minus what B's TCP has taken) and, past
 * RELAY_BACKLOG_MAX, passes the skb up to A instead. A's own queue is
 * charged to A's receive buffer, so A's window closes; the hub reads those
 * bytes and writes them to B (after B's psock queue has drained) with
 * blocking writes. Once a byte is passed, every later byte is passed too
 * ("held") until the hub has relayed all of them and B's psock queue is
 * half empty, so that no redirected byte overtakes one the hub still has.
 * (Taking A out of the map to pause it instead drops the skbs its verdict
 * is handling at that moment: observed on 6.18.)
 *
 * No peer (B closed, or the pair was taken apart): the skb is passed up to
 * A as well, rather than dropped. bpf_sk_redirect_hash returns SK_DROP
 * then; SK_PASS without a redirect delivers to A itself.
 *
 * The kernel relays bytes only: a FIN or a reset on A is seen by the hub
 * (EOF or ECONNRESET on A), which passes it on to B once B's psock queue
 * has drained and it has read every byte passed to it. (EOF shows as
 * soon as A's own psock has nothing ready, even while bytes passed to A
 * still wait in its queue behind redirects to A.) Sockets in this map lose
 * splice(2).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "sluice.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* How many bytes may wait in a peer socket's psock queue before the
 * program passes new bytes to the hub. */
#define RELAY_BACKLOG_MAX (1 << 20)

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
	__u64 queued;

	if (!f || !h)
		return SK_PASS; /* not paired by the hub: its owner reads it */
	/* A bare FIN: TCP has already marked A shut for reading, which is what
	 * the hub sees. The empty skb itself must not reach a psock queue: a
	 * worker takes its 0-byte send (redirected) or delivery (passed behind
	 * queued redirects) for a hard error, EPIPE on that socket, whose
	 * redirects then stop (observed on 6.18). */
	if (!skb->len)
		return SK_DROP;
	if (!h->sent)
		goto pass; /* B not acked yet */
	queued = backlog(&key, f, h);
	if (f->held) {
		if (f->passed != h->relayed || queued > RELAY_BACKLOG_MAX / 2)
			goto pass;
		f->held = 0;
	} else if (queued + skb->len > RELAY_BACKLOG_MAX) {
		goto pass;
	}
	if (bpf_sk_redirect_hash(skb, &relay_peers, &key, 0) != SK_PASS)
		goto pass;
	f->redirected += skb->len;
	return SK_PASS;
pass:
	f->held = 1;
	f->passed += skb->len;
	return SK_PASS;
}
