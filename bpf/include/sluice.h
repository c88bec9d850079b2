/* Types shared by the BPF programs and the Go loader. Go gets them through
 * bpf2go -type (loader/gen.go); never copy them by hand. */
#ifndef SLUICE_H
#define SLUICE_H

#include <linux/types.h>

/* A service address: a transparent inlet's virtual address and port an app
 * connects to, or an explicit inlet's listen address on this host (one entry
 * per host address when it listens on 0.0.0.0). Both fields in network byte
 * order. */
struct service_key {
	__u32 addr;
	__u16 port;
	__u16 pad;
};

/* What the agent decided about a service. */
struct service_value {
	__u32 portal; /* index into the counters map, < MAX_PORTALS */
	__u32 flags;  /* SERVICE_F_* */
};

/* The inlet may not be used by anyone now: its peer lost its permission,
 * or the inlet is being removed. Every packet to it is refused. */
#define SERVICE_F_DENY 1

/* An explicit inlet with --allow-local: steer checks the sender (spoofing,
 * verdict) and records the flow as for a transparent inlet, but passes what
 * it allows unmarked to the host stack, where the inlet's own listener
 * takes it; assign and the sockops program leave it alone. */
#define SERVICE_F_EXPLICIT 2

/* A local workload, seen by the interface its packets come in on and their
 * source address (network byte order). The agent writes {ifindex, addr} (a
 * workload named by its address, bound to the host-side interface it lives
 * behind) or {ifindex, 0} (anything behind a veth). Never {0, addr}: an
 * address alone names nobody, since any container can claim it. */
struct endpoint_key {
	__u32 ifindex;
	__u32 addr;
};

/* A verdict: may this workload use this portal? Present means allowed;
 * policies deny by default. Workload 0 is "not a known workload". */
struct verdict_key {
	__u32 workload;
	__u32 portal;
};

/* Per-portal, per-CPU counters. */
struct portal_counters {
	__u64 steered;     /* connections (SYNs) handed to the agent's listener */
	__u64 refused;     /* resets sent: not allowed, denied or no listener */
	__u64 no_listener; /* of those, refused because no agent listened */
	__u64 packets;     /* packets from allowed workloads to the service */
	__u64 bytes;       /* bytes of those packets */
	__u64 spoofed;     /* of the refused, because the source address is bound
			    * to another interface than the one it came in on */
};

/* Where the agent's transparent listener is bound (network byte order). */
struct listener_addr {
	__u32 addr;
	__u16 port;
	__u16 pad;
};

/* A connection's 4-tuple as the container sent it (network byte order). */
struct flow_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
};

/* Who opened a connection, recorded by steer on each allowed SYN, so that
 * the agent can close the connections of a workload that loses its
 * permission. */
struct flow_value {
	__u32 workload;
	__u32 ifindex;
};

/* A socket as it sees itself: its network namespace's cookie, then its
 * local and remote address and port (network byte order). The netns cookie
 * is what keeps two namespaces with the same addresses apart. */
struct sock_key {
	__u64 netns;
	__u32 local_ip;
	__u32 remote_ip;
	__u16 local_port;
	__u16 remote_port;
	__u32 pad;
};

/* The hub's sockmap relay (bpf/relay.c), per receiving socket, keyed by its
 * cookie. pair_flow is the program's: what it did with the bytes the socket
 * received. pair_hub is the hub's: what it wrote itself on the peer socket. */
struct pair_flow {
	__u64 redirected; /* bytes sent out through the peer socket */
	__u64 passed;     /* bytes left to the hub: the peer was gone */
	__u32 overflow;   /* 1: reported to the hub, the peer's backlog passed backlog_max */
	__u32 pad;
};

struct pair_hub {
	__u64 sent; /* bytes the hub wrote on the peer socket: its ack, then what it relayed */
};

/* Why the kernel refused a connection (refusal_event.reason). Go gets the
 * names through bpf2go -type refusal_reason. */
enum refusal_reason {
	REFUSED_SPOOFED = 1,     /* source address bound to another interface */
	REFUSED_DENIED = 2,      /* the service is denied to everyone (SERVICE_F_DENY) */
	REFUSED_NOT_ALLOWED = 3, /* no verdict lets this workload use the portal */
	REFUSED_NOT_STEERED = 4, /* on the bridge, unmarked: no steer program saw it */
	REFUSED_NO_LISTENER = 5, /* no agent listening (fail closed) */
};

/* A connection the kernel refused (bpf/include/refusals.h): one per refused
 * SYN, written into the refusals ring buffer. Addresses and ports in network
 * byte order, as the container sent them. */
struct refusal_event {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u32 portal;               /* the service's portal number */
	__u32 workload;             /* the sender's workload number; 0: unknown or not looked up */
	__u32 ifindex;              /* the interface the SYN came in on (0 on the bridge) */
	enum refusal_reason reason; /* 4 bytes */
};

#define MAX_PORTALS 1024
#define MAX_SERVICES 1024
#define MAX_ENDPOINTS 65536
#define MAX_BINDINGS 65536
#define MAX_VERDICTS 65536
#define MAX_FLOWS 65536
#define MAX_SOCKS 65536
#define MAX_RELAY_SOCKS 65536 /* two per data session */
#define REFUSALS_RING_BYTES 262144 /* 256 KiB, about 6500 events of 40 bytes with the header: a power of two and a multiple of the page size */

#endif
