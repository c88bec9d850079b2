// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* TC ingress programs that steer connections to transparent inlets into
 * the agent and refuse the rest in the kernel. Two hooks, because a bridge
 * drops a socket assigned on one of its ports when it passes the frame up
 * (seen on 6.18), so bpf_sk_assign must run on the bridge itself:
 *
 *   steer, on a container's host-side veth (a bridge port):
 *     not IPv4 TCP to a service address      -> TC_ACT_UNSPEC (next program)
 *     source address bound to another veth   -> reset to the container (spoofed)
 *     service DENY, or workload not allowed  -> reset to the container
 *     allowed, explicit inlet                -> TC_ACT_OK, unmarked: the host
 *                                               stack delivers it to the
 *                                               inlet's own listener
 *     allowed                                -> mark steer_mark, TC_ACT_OK
 *
 *   assign, on the bridge (frames it passes up to the host):
 *     not IPv4 TCP to a service address      -> TC_ACT_UNSPEC
 *     an explicit inlet's address            -> TC_ACT_UNSPEC (the host stack)
 *     not marked (no steer program on its veth, or the agent never saw it)
 *                                            -> reset (fail closed)
 *     SYN                                    -> the agent's listener (bpf_sk_assign)
 *     other                                  -> its own socket if one exists,
 *                                               else the listener, which
 *                                               answers stray segments itself
 *     no agent listening                     -> reset (fail closed)
 *
 *   routed, on a pod's routed veth (no bridge: the host routes the pod's /32
 *   to the veth, so packets go from its ingress straight to local delivery,
 *   where an assigned socket survives, seen on 6.18):
 *     steer's checks, then, for a steered packet, assign's socket assignment
 *     in the same pass (one program: TC_ACT_OK from steer would end a TCX
 *     chain before a second program on the same hook ran)
 *
 * Every reset to a SYN, in any program, also writes one event into the
 * refusals ring buffer (bpf/include/refusals.h): who, to which portal, why.
 *
 * The mark makes the agent's policy route deliver the packet locally,
 * though no host owns the service address; the accepted socket's local
 * address is the service address, so the agent knows the portal.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "sluice.h"
#include "services.h"
#include "flows.h"
#include "refusals.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The mark that the agent's policy route delivers locally. Set by the
 * loader before the program is loaded. */
volatile const __u32 steer_mark = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENDPOINTS);
	__type(key, struct endpoint_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoints SEC(".maps");

/* Anti-spoofing: a workload's address -> the ifindex of the host-side
 * interface it is bound to (both as the agent learned them from the
 * container's own configuration, never from ARP). A packet to a service
 * whose source address is here with another ifindex is refused. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_BINDINGS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bindings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VERDICTS);
	__type(key, struct verdict_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} verdicts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_PORTALS);
	__type(key, __u32);
	__type(value, struct portal_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} counters SEC(".maps");

/* Slot 0: where the agent's transparent listener is bound. When the agent
 * dies its socket goes, the lookup fails, and connections are refused:
 * that is what makes the path fail closed. (A listening socket cannot go
 * into a sockmap on current kernels: the update fails with EOPNOTSUPP.) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct listener_addr);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} listener SEC(".maps");

#define RESET_LEN (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct tcphdr))

struct pseudo_hdr {
	__u32 saddr;
	__u32 daddr;
	__u8 zero;
	__u8 proto;
	__u16 len;
};

static __always_inline __u16 csum_fold(__s64 sum)
{
	__u64 s = (__u64)sum;
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* Who was refused, and why: what refuse writes into the refusals ring. */
struct why {
	__u32 portal;
	__u32 workload;
	__u32 ifindex;
	enum refusal_reason reason;
};

/* refuse turns the packet into the reset RFC 9293 3.10.7.1 prescribes and
 * sends it back out of the veth it came in on, to the container; a refused
 * SYN also writes its event into the refusals ring. */
static __always_inline int refuse(struct __sk_buff *skb, struct ethhdr *eth, struct iphdr *ip,
				  struct tcphdr *tcp, struct portal_counters *c, struct why w)
{
	/* The reset: fixed 20-byte headers, no options. Kept apart, not in one
	 * packed struct, so that bpf_csum_diff reads aligned words. */
	struct {
		struct ethhdr eth;
		struct iphdr ip;
		struct tcphdr tcp;
	} r = {};
	struct pseudo_hdr ph = {};
	__u32 len;
	__s64 sum;

	if (tcp->rst)
		return TC_ACT_SHOT; /* never answer a reset */
	if (c)
		__sync_fetch_and_add(&c->refused, 1);
	if (c && w.reason == REFUSED_SPOOFED)
		__sync_fetch_and_add(&c->spoofed, 1);
	refusal_note(ip, tcp, w.portal, w.workload, w.ifindex, w.reason);

	__builtin_memcpy(r.eth.h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(r.eth.h_source, eth->h_dest, ETH_ALEN);
	r.eth.h_proto = bpf_htons(ETH_P_IP);
	r.ip.version = 4;
	r.ip.ihl = 5;
	r.ip.tot_len = bpf_htons(sizeof(r.ip) + sizeof(r.tcp));
	r.ip.frag_off = bpf_htons(0x4000); /* DF */
	r.ip.ttl = 64;
	r.ip.protocol = IPPROTO_TCP;
	r.ip.saddr = ip->daddr;
	r.ip.daddr = ip->saddr;
	r.tcp.source = tcp->dest;
	r.tcp.dest = tcp->source;
	r.tcp.doff = 5;
	r.tcp.rst = 1;
	if (tcp->ack) {
		r.tcp.seq = tcp->ack_seq;
	} else {
		len = bpf_ntohs(ip->tot_len) - ip->ihl * 4 - tcp->doff * 4;
		len += tcp->syn + tcp->fin;
		r.tcp.ack_seq = bpf_htonl(bpf_ntohl(tcp->seq) + len);
		r.tcp.ack = 1;
	}

	r.ip.check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)&r.ip, sizeof(r.ip), 0));
	ph.saddr = r.ip.saddr;
	ph.daddr = r.ip.daddr;
	ph.proto = IPPROTO_TCP;
	ph.len = bpf_htons(sizeof(r.tcp));
	sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);
	sum = bpf_csum_diff(0, 0, (__be32 *)&r.tcp, sizeof(r.tcp), sum);
	r.tcp.check = csum_fold(sum);

	/* eth, ip and tcp are invalid from here on. */
	if (bpf_skb_change_tail(skb, RESET_LEN, 0) ||
	    bpf_skb_store_bytes(skb, 0, &r.eth, sizeof(r.eth), 0) ||
	    bpf_skb_store_bytes(skb, sizeof(r.eth), &r.ip, sizeof(r.ip), 0) ||
	    bpf_skb_store_bytes(skb, sizeof(r.eth) + sizeof(r.ip), &r.tcp, sizeof(r.tcp), 0))
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

/* workload finds who sent the packet, from the most specific entry to the
 * least; 0 is the unknown workload. */
static __always_inline __u32 workload(__u32 ifindex, __u32 saddr)
{
	struct endpoint_key k = {.ifindex = ifindex, .addr = saddr};
	__u32 *w;

	w = bpf_map_lookup_elem(&endpoints, &k);
	if (w)
		return *w;
	k.addr = 0;
	w = bpf_map_lookup_elem(&endpoints, &k);
	if (w)
		return *w;
	return 0;
}

/* spoofed reports whether saddr is a workload's address bound to another
 * interface than ifindex. */
static __always_inline int spoofed(__u32 ifindex, __u32 saddr)
{
	__u32 *home = bpf_map_lookup_elem(&bindings, &saddr);

	return home && *home != ifindex;
}

/* allowed decides whether workload w may use the service (0), or why not
 * (a REFUSED_* reason), and records who opened the connection on a SYN. */
static __always_inline __u32 allowed(__u32 ifindex, __u32 w, struct iphdr *ip, struct tcphdr *tcp,
				     struct service_value *svc)
{
	struct verdict_key k = {.workload = w, .portal = svc->portal};
	struct flow_key fk = {};
	struct flow_value fv = {.workload = w, .ifindex = ifindex};

	if (svc->flags & SERVICE_F_DENY)
		return REFUSED_DENIED;
	if (!bpf_map_lookup_elem(&verdicts, &k))
		return REFUSED_NOT_ALLOWED;
	if (tcp->syn && !tcp->ack) {
		fk.saddr = ip->saddr;
		fk.daddr = ip->daddr;
		fk.sport = tcp->source;
		fk.dport = tcp->dest;
		bpf_map_update_elem(&flows, &fk, &fv, BPF_ANY);
	}
	return 0;
}

/* existing reports whether the packet belongs to a socket the agent already
 * has (an established connection or one in its handshake). */
static __always_inline int existing(struct __sk_buff *skb, struct iphdr *ip, struct tcphdr *tcp)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;

	t.ipv4.saddr = ip->saddr;
	t.ipv4.daddr = ip->daddr;
	t.ipv4.sport = tcp->source;
	t.ipv4.dport = tcp->dest;
	sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	if (sk->state == BPF_TCP_LISTEN) {
		bpf_sk_release(sk);
		return 0;
	}
	bpf_sk_release(sk);
	return 1;
}

/* agent_listener finds the agent's listening socket; the caller releases it. */
static __always_inline struct bpf_sock *agent_listener(struct __sk_buff *skb, struct iphdr *ip,
							struct tcphdr *tcp)
{
	struct bpf_sock_tuple t = {};
	struct listener_addr *l;
	struct bpf_sock *sk;
	__u32 zero = 0;

	l = bpf_map_lookup_elem(&listener, &zero);
	if (!l || !l->port)
		return 0;
	t.ipv4.saddr = ip->saddr;
	t.ipv4.sport = tcp->source;
	t.ipv4.daddr = l->addr;
	t.ipv4.dport = l->port;
	sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (sk && sk->state != BPF_TCP_LISTEN) {
		bpf_sk_release(sk);
		return 0;
	}
	return sk;
}

/* parse finds an IPv4 TCP packet's headers and its service; NULL if the
 * packet is not to a service. */
static __always_inline struct service_value *parse(struct __sk_buff *skb, struct ethhdr **ethp,
						   struct iphdr **ipp, struct tcphdr **tcpp)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct service_key key = {};
	struct iphdr *ip;
	struct tcphdr *tcp;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP || ip->ihl != 5)
		return 0;
	if (ip->frag_off & bpf_htons(0x3fff)) /* a fragment: no TCP header here */
		return 0;
	tcp = (void *)(ip + 1);
	if ((void *)(tcp + 1) > end)
		return 0;
	key.addr = ip->daddr;
	key.port = tcp->dest;
	*ethp = eth;
	*ipp = ip;
	*tcpp = tcp;
	return bpf_map_lookup_elem(&services, &key);
}

/* check runs steer's checks on a parsed packet to a service. It returns 1
 * if the packet may pass (marked as steered, unless to an explicit inlet),
 * 0 if it was refused; *verdict is the program's verdict either way. (Not
 * the verdict alone: the verifier cannot tell a redirect's from
 * TC_ACT_OK, and after a refusal the packet pointers are invalid.) */
static __always_inline int check(struct __sk_buff *skb, struct ethhdr *eth, struct iphdr *ip,
				 struct tcphdr *tcp, struct service_value *svc,
				 struct portal_counters *c, int *verdict)
{
	struct why w = {};

	w.portal = svc->portal;
	w.ifindex = skb->ingress_ifindex ? skb->ingress_ifindex : skb->ifindex;
	if (spoofed(w.ifindex, ip->saddr)) {
		w.reason = REFUSED_SPOOFED;
		*verdict = refuse(skb, eth, ip, tcp, c, w);
		return 0;
	}
	w.workload = workload(w.ifindex, ip->saddr);
	w.reason = allowed(w.ifindex, w.workload, ip, tcp, svc);
	if (w.reason) {
		*verdict = refuse(skb, eth, ip, tcp, c, w);
		return 0;
	}
	if (c) {
		__sync_fetch_and_add(&c->packets, 1);
		__sync_fetch_and_add(&c->bytes, skb->len);
	}
	*verdict = TC_ACT_OK;
	if (!(svc->flags & SERVICE_F_EXPLICIT)) /* explicit: unmarked, the host stack */
		skb->mark = steer_mark;
	return 1;
}

/* to_agent hands a steered packet to the agent: its own socket, or the
 * agent's listener (bpf_sk_assign); no listener: reset. */
static __always_inline int to_agent(struct __sk_buff *skb, struct ethhdr *eth, struct iphdr *ip,
				    struct tcphdr *tcp, struct service_value *svc,
				    struct portal_counters *c)
{
	struct bpf_sock *sk;
	struct why w = {.portal = svc->portal, .reason = REFUSED_NO_LISTENER};
	long err;

	if (!(tcp->syn && !tcp->ack) && existing(skb, ip, tcp))
		return TC_ACT_OK;

	sk = agent_listener(skb, ip, tcp);
	if (!sk) {
		if (c)
			__sync_fetch_and_add(&c->no_listener, 1);
		return refuse(skb, eth, ip, tcp, c, w);
	}
	err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		if (c)
			__sync_fetch_and_add(&c->no_listener, 1);
		return refuse(skb, eth, ip, tcp, c, w);
	}
	if (c && tcp->syn)
		__sync_fetch_and_add(&c->steered, 1);
	return TC_ACT_OK;
}

SEC("tc")
int steer(struct __sk_buff *skb)
{
	struct ethhdr *eth;
	struct iphdr *ip;
	struct tcphdr *tcp;
	struct service_value *svc;

	int verdict;

	svc = parse(skb, &eth, &ip, &tcp);
	if (!svc)
		return TC_ACT_UNSPEC;
	check(skb, eth, ip, tcp, svc, bpf_map_lookup_elem(&counters, &svc->portal), &verdict);
	return verdict;
}

SEC("tc")
int assign(struct __sk_buff *skb)
{
	struct ethhdr *eth;
	struct iphdr *ip;
	struct tcphdr *tcp;
	struct service_value *svc;
	struct portal_counters *c;
	struct why w = {};

	svc = parse(skb, &eth, &ip, &tcp);
	if (!svc || (svc->flags & SERVICE_F_EXPLICIT))
		return TC_ACT_UNSPEC;
	c = bpf_map_lookup_elem(&counters, &svc->portal);
	w.portal = svc->portal;
	if (skb->mark != steer_mark) {
		w.reason = REFUSED_NOT_STEERED;
		return refuse(skb, eth, ip, tcp, c, w);
	}
	if (svc->flags & SERVICE_F_DENY) {
		w.reason = REFUSED_DENIED;
		return refuse(skb, eth, ip, tcp, c, w);
	}
	return to_agent(skb, eth, ip, tcp, svc, c);
}

/* routed is steer and assign in one pass, for a routed veth (no bridge):
 * the packet goes from the veth's ingress straight to local delivery, and
 * the socket bpf_sk_assign gives it there survives (measured on 6.18,
 * docs/datapath.md). */
SEC("tc")
int routed(struct __sk_buff *skb)
{
	struct ethhdr *eth;
	struct iphdr *ip;
	struct tcphdr *tcp;
	struct service_value *svc;
	struct portal_counters *c;
	int verdict;

	svc = parse(skb, &eth, &ip, &tcp);
	if (!svc)
		return TC_ACT_UNSPEC;
	c = bpf_map_lookup_elem(&counters, &svc->portal);
	if (!check(skb, eth, ip, tcp, svc, c, &verdict) || (svc->flags & SERVICE_F_EXPLICIT))
		return verdict;
	return to_agent(skb, eth, ip, tcp, svc, c);
}
