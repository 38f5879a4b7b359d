/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * nat.h: 1:1 NAT between a VIP and its EIP. DNAT on the uplink (to the EIP
 * -> to the VIP's holder), SNAT on the vNIC side (from the VIP by its holder,
 * to outside the VPC -> from the EIP, out of the uplink). Each is a routed
 * hop: TTL goes down by one, and a TTL that would expire is left to the
 * kernel, which sends the ICMP time-exceeded.
 *
 * Fragments: every fragment's IP address is rewritten; the L4 checksum is
 * updated in the fragment that carries the L4 header (offset 0), which is
 * exact for 1:1 NAT since ports never change.
 */
#ifndef HAVIP_NAT_H
#define HAVIP_NAT_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "havip_abi.h"
#include "maps.h"
#include "parse.h"
#include "csum.h"
#include "counters.h"
#include "forward.h"

static __always_inline int mac_is_zero(const __u8 *m)
{
	return (m[0] | m[1] | m[2] | m[3] | m[4] | m[5]) == 0;
}

/* Fixes the L4 checksum for an address change from -> to; the cursor is on
 * the L4 header. Checks bounds before writing anything: -1 means truncated,
 * nothing was changed. */
static __always_inline int nat_l4(struct hdr_cursor *nh, void *data_end, struct iphdr *iph,
				  __u32 from, __u32 to)
{
	struct tcphdr *tcp;
	struct udphdr *udp;

	if (iph->frag_off & bpf_htons(IP_OFFSET))
		return 0; /* a later fragment: no L4 header here */
	if (iph->protocol == IPPROTO_TCP) {
		if (parse_tcphdr(nh, data_end, &tcp) < 0)
			return -1;
		csum_replace4(&tcp->check, from, to);
	} else if (iph->protocol == IPPROTO_UDP) {
		if (parse_udphdr(nh, data_end, &udp) < 0)
			return -1;
		if (udp->check) { /* 0: the sender chose no checksum */
			csum_replace4(&udp->check, from, to);
			if (!udp->check)
				udp->check = 0xffff;
		}
	}
	/* ICMP's checksum has no pseudo-header: nothing to fix. */
	return 0;
}

/* The address and TTL half of a routed NAT hop; L4 must be fixed first. */
static __always_inline void nat_ip(struct iphdr *iph, __u32 *field, __u32 to)
{
	__u16 old_ttl_proto = *(__u16 *)&iph->ttl;

	csum_replace4(&iph->check, *field, to);
	*field = to;
	iph->ttl -= 1;
	csum_replace2(&iph->check, old_ttl_proto, *(__u16 *)&iph->ttl);
}

/* Traffic to an EIP goes to the VIP's holder, as if sent to the VIP. The
 * cursor is on the L4 header. A truncated L4 header is passed: the frame is
 * then still addressed to the EIP, so nothing leaks. */
static __always_inline int dnat_to_holder(struct hdr_cursor *nh, void *data_end,
					  struct ethhdr *eth, struct iphdr *iph,
					  struct eip_binding *eb)
{
	struct vip_state *vs;
	__u32 eip, vip;
	int act;

	vs = vip_lookup(eb->vip);
	if (!vs)
		return pass_untouched();
	if (iph->ttl <= 1) {
		count_vip(vs->slot, VIP_CTR_EIP_TTL_EXCEEDED, 1);
		return XDP_PASS;
	}
	eip = iph->daddr;
	vip = *(__u32 *)eb->vip;
	if (nat_l4(nh, data_end, iph, eip, vip) < 0)
		return pass_malformed();
	nat_ip(iph, &iph->daddr, vip);
	/* From the uplink: no vNIC to hairpin into (ifindex 0 is nobody's). */
	act = forward_to_holder(eth, data_end, vs, 0);
	if (act == XDP_REDIRECT)
		count_vip_packet(vs->slot, VIP_CTR_EIP_IN_PACKETS, data_end - (void *)eth);
	return act;
}

/* Traffic the holder sends from the VIP to outside the VPC leaves from the
 * EIP. Only the holder may: a standby's packets from the VIP are dropped. The
 * cursor is on the L4 header. A truncated L4 header is dropped, so a VIP
 * address never leaks out of the uplink un-NATed. */
static __always_inline int snat_to_uplink(struct xdp_md *ctx, struct hdr_cursor *nh,
					  void *data_end, struct ethhdr *eth,
					  struct iphdr *iph, struct vip_nat *nat)
{
	__u32 vip = iph->saddr, eip = *(__u32 *)nat->eip, zero = 0;
	__u64 bytes = data_end - (void *)eth;
	struct uplink_port *up;
	struct vip_state *vs;
	int act;

	if ((iph->daddr & *(__u32 *)nat->mask) == *(__u32 *)nat->subnet)
		return pass_untouched(); /* inside the VPC: no NAT */
	vs = vip_lookup((__u8 *)&vip);
	if (!vs)
		return pass_untouched();
	if (ctx->ingress_ifindex != vs->holder_ifindex) {
		count_vip(vs->slot, VIP_CTR_EIP_OUT_NOT_HOLDER, 1);
		return XDP_DROP;
	}
	up = bpf_map_lookup_elem(&uplink, &zero);
	if (!up || !up->ifindex || mac_is_zero(up->next_hop_mac)) {
		count_vip(vs->slot, VIP_CTR_EIP_OUT_NO_UPLINK, 1);
		return XDP_DROP;
	}
	if (iph->ttl <= 1) {
		/* The kernel sends time-exceeded; it never forwards TTL 1. */
		count_vip(vs->slot, VIP_CTR_EIP_TTL_EXCEEDED, 1);
		return XDP_PASS;
	}
	if (nat_l4(nh, data_end, iph, vip, eip) < 0)
		return drop_malformed();
	nat_ip(iph, &iph->saddr, eip);
	__builtin_memcpy(eth->h_dest, up->next_hop_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, up->mac, ETH_ALEN);
	act = bpf_redirect_map(&tx_ports, up->ifindex, XDP_DROP);
	if (act != XDP_REDIRECT) {
		count_vip(vs->slot, VIP_CTR_EIP_OUT_NO_UPLINK, 1);
		return act;
	}
	count_vip_packet(vs->slot, VIP_CTR_EIP_OUT_PACKETS, bytes);
	return act;
}

#endif /* HAVIP_NAT_H */
