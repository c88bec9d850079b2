/* The services map, shared by tc.c and sockops.c through its pin: one
 * definition, so the two objects always agree on it. */
#ifndef SLUICE_SERVICES_H
#define SLUICE_SERVICES_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "sluice.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__type(key, struct service_key);
	__type(value, struct service_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} services SEC(".maps");

#endif
