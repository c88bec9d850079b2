/* The flows map, shared by tc.c and sockops.c through its pin: one
 * definition, so the two objects always agree on it. steer records each
 * allowed SYN in it; sockops tracks only the connections found there. */
#ifndef SLUICE_FLOWS_H
#define SLUICE_FLOWS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "sluice.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flows SEC(".maps");

#endif
