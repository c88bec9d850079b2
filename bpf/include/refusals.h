/* The refusals ring buffer: steer and assign write one event into it for
 * every SYN they refuse, so that the agent's flow log (agentctl observe)
 * learns of kernel refusals as they happen instead of polling counters.
 * One event per refused connection, not per packet: a refused data segment
 * or a retransmitted reset writes nothing. When the agent is not reading
 * (it stopped, or it falls behind) the ring fills and the program drops
 * events; the refusal itself never depends on it. Not pinned: a restarted
 * agent loads a new ring with its new programs. */
#ifndef REFUSALS_H
#define REFUSALS_H

#include <bpf/bpf_helpers.h>
#include "sluice.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, REFUSALS_RING_BYTES);
} refusals SEC(".maps");

/* A ring buffer has no value type: this puts struct refusal_event into the
 * object's BTF, for bpf2go -type. */
const struct refusal_event *refusal_event_type __attribute__((unused));

/* refusal_note writes the event of a refused SYN; other segments and full
 * rings write nothing. */
static __always_inline void refusal_note(struct iphdr *ip, struct tcphdr *tcp, __u32 portal,
					 __u32 workload, __u32 ifindex, __u32 reason)
{
	struct refusal_event ev = {};

	if (!tcp->syn || tcp->ack)
		return;
	ev.saddr = ip->saddr;
	ev.daddr = ip->daddr;
	ev.sport = tcp->source;
	ev.dport = tcp->dest;
	ev.portal = portal;
	ev.workload = workload;
	ev.ifindex = ifindex;
	ev.reason = reason;
	bpf_ringbuf_output(&refusals, &ev, sizeof(ev), 0);
}

#endif
