/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * holder.h: holder changes the agent makes (a holder that is no longer a
 * member cleared, a wrong holder corrected), atomic with the kernel's
 * claims. From user space, reading vip_state and writing it back are two
 * syscalls, and a claim between them would be overwritten. So the agent runs
 * xdp_holder_write through BPF_PROG_TEST_RUN (it is never attached) with a
 * struct holder_write as the frame: a compare-and-swap on the epoch, under
 * the value's spin lock. The holder may be on another host (ifindex 0, its
 * host's VTEP): how the agent points a VIP at a holder elsewhere.
 */
#ifndef HAVIP_HOLDER_H
#define HAVIP_HOLDER_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#include "havip_abi.h"
#include "maps.h"

/* A real subprogram, rarely run: it also puts struct holder_write into the
 * object's BTF, where the layout test finds it. `w` is checked in bounds. */
static __noinline int holder_write(const struct holder_write *w)
{
	struct vip_state *vs;
	__u8 mac[ETH_ALEN], next_hop[ETH_ALEN];
	__u64 expect, now;
	__u32 slot, ifindex, vtep;
	int verdict = XDP_DROP;

	slot = w->slot;
	ifindex = w->ifindex;
	vtep = *(__u32 *)w->vtep;
	if (ifindex && vtep)
		return XDP_ABORTED; /* here and elsewhere at once */
	expect = w->expect_epoch;
	__builtin_memcpy(mac, w->mac, ETH_ALEN);
	__builtin_memcpy(next_hop, w->next_hop, ETH_ALEN);
	vs = bpf_map_lookup_elem(&vip_state, &slot);
	if (!vs)
		return XDP_ABORTED;
	/* No helper may be called under the lock: take the time before. */
	now = bpf_ktime_get_ns();

	bpf_spin_lock(&vs->lock);
	if (vs->epoch == expect) {
		vs->holder_ifindex = ifindex;
		*(__u32 *)vs->holder_vtep = vtep;
		__builtin_memcpy(vs->holder_mac, mac, ETH_ALEN);
		__builtin_memcpy(vs->holder_next_hop, next_hop, ETH_ALEN);
		vs->epoch = expect + 1;
		vs->since_ns = now;
		verdict = XDP_PASS;
	}
	bpf_spin_unlock(&vs->lock);
	return verdict;
}

#endif /* HAVIP_HOLDER_H */
