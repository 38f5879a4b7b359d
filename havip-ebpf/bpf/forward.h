/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * forward.h: finding a VIP's state (by the slot in its virtual MAC, or by
 * address) and sending a frame to the VIP's holder through the devmap (a
 * holder on another host: encapsulated, encap.h). This is the fast path:
 * keep it free of branches that a local VIP hit does not need.
 */
#ifndef HAVIP_FORWARD_H
#define HAVIP_FORWARD_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#include "havip_abi.h"
#include "maps.h"
#include "counters.h"

/* The state of the VIP `vip` in `slot`, or NULL if the slot holds another
 * VIP or none: a slot named by a frame's MAC, or by a vips entry the agent
 * is replacing, is only trusted together with the address. */
static __always_inline struct vip_state *state_in_slot(__u32 slot, __u32 vip)
{
	struct vip_state *vs = bpf_map_lookup_elem(&vip_state, &slot);

	if (!vs || !vip || *(__u32 *)vs->vip != vip)
		return NULL;
	return vs;
}

/* The state of the VIP at `addr` (4 bytes, network order), by address. */
static __always_inline struct vip_state *vip_lookup(const __u8 *addr)
{
	struct vip_ref *ref = bpf_map_lookup_elem(&vips, addr);

	if (!ref)
		return NULL;
	return state_in_slot(ref->slot, *(__u32 *)addr);
}

/* The state of the VIP a frame to `daddr` is for, by the slot its
 * destination MAC names if that is a virtual MAC (what ARP gave clients). */
static __always_inline struct vip_state *vip_by_vmac(const struct ethhdr *eth, __u32 daddr)
{
	/* Whole-word reads (x86 and arm64 load unaligned words at full speed;
	 * the verifier allows it for packets): a byte-wise read was 8 more
	 * instructions on the fast path. */
	const __u8 *d = eth->h_dest;

	if (*(const __u16 *)d != bpf_htons(HAVIP_VMAC_0 << 8 | HAVIP_VMAC_1))
		return NULL;
	return state_in_slot(bpf_ntohl(*(const __u32 *)(d + 2)), daddr);
}

/* Copies a MAC as a 4-byte and a 2-byte word: into or out of a packed
 * ethhdr, __builtin_memcpy goes byte by byte (12 loads and stores for the
 * two MACs of a VIP hit instead of 4 and 4). x86 and arm64 access unaligned
 * words at full speed, and the verifier allows it for packets and map values
 * unless strict alignment is asked for. */
static __always_inline void mac_copy(__u8 *to, const __u8 *from)
{
	*(__u32 *)to = *(const __u32 *)from;
	*(__u16 *)(to + 4) = *(const __u16 *)(from + 4);
}

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) |
		(a[4] ^ b[4]) | (a[5] ^ b[5])) == 0;
}

/* Sends the frame, VXLAN-encapsulated, to the host at `vtep` (encap.h):
 * to the holder there, or (to_gateway) to the gateway host. A subprogram,
 * so the local path below carries none of it. */
static __noinline int send_remote(struct xdp_md *ctx, struct vip_state *vs, __u32 vtep,
				  int to_gateway);

/* Redirects VIP traffic to the local holder's vNIC `ifindex`, looking as
 * if it came from the VIP's virtual router MAC. */
static __always_inline int redirect_local(struct ethhdr *eth, __u64 bytes, struct vip_state *vs,
					  __u32 ifindex)
{
	int act;

	mac_copy(eth->h_dest, vs->holder_mac);
	mac_copy(eth->h_source, vs->vmac);
	act = bpf_redirect_map(&tx_ports, ifindex, XDP_DROP);
	if (act != XDP_REDIRECT) {
		count_vip(vs->slot, VIP_CTR_NO_HOLDER_DROPS, 1);
		return act;
	}
	count_vip_packet(vs->slot, VIP_CTR_REDIRECT_PACKETS, bytes);
	return act;
}

/* VIP traffic goes to the holder: on this host, to its vNIC (never back
 * into the vNIC it came from, `ingress`: the holder sending to its own VIP
 * would get a copy of what it sent); on another host, encapsulated to it. */
static __always_inline int forward_to_holder(struct xdp_md *ctx, struct ethhdr *eth,
					     void *data_end, struct vip_state *vs, __u32 ingress)
{
	/* Read once: the agent may clear the holder while we run. */
	__u32 ifindex = *(volatile __u32 *)&vs->holder_ifindex;
	__u64 bytes = data_end - (void *)eth;

	if (!ifindex) {
		/* The remote branch lives here, off the local VIP path. */
		__u32 vtep = *(volatile __u32 *)vs->holder_vtep;

		if (vtep)
			return send_remote(ctx, vs, vtep, 0);
		count_vip(vs->slot, VIP_CTR_NO_HOLDER_DROPS, 1);
		return XDP_DROP;
	}
	if (ifindex == ingress) {
		count_vip(vs->slot, VIP_CTR_HAIRPIN_DROPS, 1);
		return XDP_DROP;
	}
	return redirect_local(eth, bytes, vs, ifindex);
}

#endif /* HAVIP_FORWARD_H */
