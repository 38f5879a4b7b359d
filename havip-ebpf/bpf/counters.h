/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * counters.h: the global and per-VIP counters, and the verdicts that always
 * go with a global counter (a frame that is not ours, or a malformed one), so
 * those exits cannot forget to count.
 */
#ifndef HAVIP_COUNTERS_H
#define HAVIP_COUNTERS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "havip_abi.h"
#include "maps.h"

static __always_inline void count_global(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&global_stats, &idx);

	if (c)
		*c += 1;
}

static __always_inline void count_vip(__u32 slot, __u32 idx, __u64 n)
{
	struct vip_counters *c = bpf_map_lookup_elem(&vip_stats, &slot);

	if (c && idx < VIP_CTR__MAX)
		c->c[idx] += n;
}

/* n frames of a broadcast-domain subnet's counter `idx` (flood.h). */
static __always_inline void count_subnet(__u32 slot, __u32 idx, __u64 n)
{
	struct subnet_counters *c = bpf_map_lookup_elem(&subnet_stats, &slot);

	if (c && idx < SUBNET_CTR__MAX)
		c->c[idx] += n;
}

/* A forwarded packet and its bytes with one lookup: the hot paths' counters.
 * Each *_PACKETS counter is followed by its *_BYTES counter. */
_Static_assert(VIP_CTR_REDIRECT_BYTES == VIP_CTR_REDIRECT_PACKETS + 1, "counter pairs");
_Static_assert(VIP_CTR_EIP_IN_BYTES == VIP_CTR_EIP_IN_PACKETS + 1, "counter pairs");
_Static_assert(VIP_CTR_EIP_OUT_BYTES == VIP_CTR_EIP_OUT_PACKETS + 1, "counter pairs");

static __always_inline void count_vip_packet(__u32 slot, __u32 packets_idx, __u64 bytes)
{
	struct vip_counters *c = bpf_map_lookup_elem(&vip_stats, &slot);

	if (c && packets_idx + 1 < VIP_CTR__MAX) {
		c->c[packets_idx] += 1;
		c->c[packets_idx + 1] += bytes;
	}
}

/* Not ours: the kernel stack gets it as it came. */
static __always_inline int pass_untouched(void)
{
	count_global(GLB_CTR_PASSED);
	return XDP_PASS;
}

/* Too short or inconsistent to judge: the kernel stack will. */
static __always_inline int pass_malformed(void)
{
	count_global(GLB_CTR_PARSE_ERRORS);
	return XDP_PASS;
}

/* Malformed where passing it would leak something (an un-NATed VIP). */
static __always_inline int drop_malformed(void)
{
	count_global(GLB_CTR_PARSE_ERRORS);
	return XDP_DROP;
}

#endif /* HAVIP_COUNTERS_H */
