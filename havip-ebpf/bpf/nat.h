/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * nat.h: 1:1 NAT between a VIP and its EIP. DNAT on the uplink (to the EIP
 * -> to the VIP's holder), SNAT on the vNIC side (from the VIP by its holder,
 * to outside the VPC -> from the EIP, out of the uplink). Each is a routed
 * hop: TTL goes down by one, and a TTL that would expire is left to the
 * kernel, which sends the ICMP time-exceeded.
 *
 * Across hosts: traffic to the EIP whose holder is on another host is
 * DNATed here and encapsulated to it (encap.h); the holder's traffic to
 * outside, on a host without the uplink, is encapsulated un-NATed to the
 * gateway host (underlay.gateway_vtep), which decapsulates and SNATs it only
 * if it came from the holder's host (outer source == holder_vtep) with the
 * holder's MAC.
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
#include "encap.h"

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
static __always_inline int dnat_to_holder(struct xdp_md *ctx, struct hdr_cursor *nh,
					  void *data_end, struct ethhdr *eth, struct iphdr *iph,
					  struct eip_binding *eb)
{
	struct underlay_port *ul;
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
	/* To another host: a frag-needed must quote the packet as it came
	 * (to the EIP), so the size is checked before the NAT. */
	if (!vs->holder_ifindex && *(__u32 *)vs->holder_vtep) {
		ul = underlay_port();
		if (ul && ul->ifindex && !fits_underlay(data_end - (void *)eth, ul))
			return frag_needed(ctx, vs->slot, ul->mtu);
	}
	eip = iph->daddr;
	vip = *(__u32 *)eb->vip;
	if (nat_l4(nh, data_end, iph, eip, vip) < 0)
		return pass_malformed();
	nat_ip(iph, &iph->daddr, vip);
	/* From the uplink: no vNIC to hairpin into (ifindex 0 is nobody's). */
	act = forward_to_holder(ctx, eth, data_end, vs, 0);
	if (act == XDP_REDIRECT)
		count_vip_packet(vs->slot, VIP_CTR_EIP_IN_PACKETS, data_end - (void *)eth);
	return act;
}

/* The holder's packet to outside (the cursor on its L4 header) SNATed to
 * the EIP and sent out of the uplink `up`, whose next hop is known. A
 * truncated L4 header is dropped, so a VIP address never leaks out of the
 * uplink un-NATed. */
static __always_inline int snat_out(struct hdr_cursor *nh, void *data_end, struct ethhdr *eth,
				    struct iphdr *iph, struct vip_nat *nat, struct vip_state *vs,
				    struct uplink_port *up)
{
	__u32 vip = iph->saddr, eip = *(__u32 *)nat->eip;
	__u64 bytes = data_end - (void *)eth;
	int act;

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

/* Whether `daddr` lies outside the VIP's VPC subnet (traffic there is NATed). */
static __always_inline int outside_subnet(__u32 daddr, const struct vip_nat *nat)
{
	return (daddr & *(__u32 *)nat->mask) != *(__u32 *)nat->subnet;
}

/* Traffic the holder sends from the VIP to outside the VPC leaves from the
 * EIP. Only the holder may: a standby's packets from the VIP are dropped. On
 * a host without the uplink it goes to the gateway host, un-NATed. The
 * cursor is on the L4 header. */
static __always_inline int snat_to_uplink(struct xdp_md *ctx, struct hdr_cursor *nh,
					  void *data_end, struct ethhdr *eth,
					  struct iphdr *iph, struct vip_nat *nat)
{
	__u32 vip = iph->saddr, zero = 0;
	struct underlay_port *ul;
	struct uplink_port *up;
	struct vip_state *vs;

	if (!outside_subnet(iph->daddr, nat))
		return pass_untouched(); /* inside the VPC: no NAT */
	vs = vip_lookup((__u8 *)&vip);
	if (!vs)
		return pass_untouched();
	if (ctx->ingress_ifindex != vs->holder_ifindex) {
		count_vip(vs->slot, VIP_CTR_EIP_OUT_NOT_HOLDER, 1);
		return XDP_DROP;
	}
	up = bpf_map_lookup_elem(&uplink, &zero);
	if (!up || !up->ifindex) {
		ul = underlay_port();
		if (ul && *(__u32 *)ul->gateway_vtep)
			return send_remote(ctx, vs, *(__u32 *)ul->gateway_vtep, 1);
	}
	if (!up || !up->ifindex || mac_is_zero(up->next_hop_mac)) {
		count_vip(vs->slot, VIP_CTR_EIP_OUT_NO_UPLINK, 1);
		return XDP_DROP;
	}
	return snat_out(nh, data_end, eth, iph, nat, vs, up);
}

/* At the gateway host: VXLAN (`outer` bytes of outer headers, outer source
 * `from_vtep`) carrying a packet from a VIP with an EIP to outside the VPC
 * (`inner_eth`, `inner`, `nat`). Decapsulated and SNATed out of the uplink
 * only if it came from the holder's host with the holder's MAC: only the
 * holder's packets ever leave through the EIP. */
static __always_inline int decap_to_uplink(struct xdp_md *ctx, int outer, __u32 from_vtep,
					   struct ethhdr *inner_eth, struct iphdr *inner,
					   struct vip_nat *nat)
{
	struct hdr_cursor nh;
	struct uplink_port *up;
	struct vip_state *vs;
	void *data_end;
	struct ethhdr *eth;
	struct iphdr *iph;
	__u32 zero = 0;

	vs = vip_lookup((__u8 *)&inner->saddr);
	if (!vs) {
		count_global(GLB_CTR_DECAP_UNKNOWN);
		return XDP_DROP;
	}
	if (!from_vtep || from_vtep != *(volatile __u32 *)vs->holder_vtep ||
	    !mac_eq(inner_eth->h_source, vs->holder_mac)) {
		count_vip(vs->slot, VIP_CTR_EIP_OUT_NOT_HOLDER, 1);
		return XDP_DROP;
	}
	up = bpf_map_lookup_elem(&uplink, &zero);
	if (!up || !up->ifindex || mac_is_zero(up->next_hop_mac)) {
		count_vip(vs->slot, VIP_CTR_EIP_OUT_NO_UPLINK, 1);
		return XDP_DROP;
	}
	if (inner->ttl <= 1) {
		/* Decapsulated, the kernel could not route it back: dropped. */
		count_vip(vs->slot, VIP_CTR_EIP_TTL_EXCEEDED, 1);
		return XDP_DROP;
	}
	if (vxlan_pop(ctx, outer) < 0)
		return drop_malformed();
	nh.pos = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (parse_eth_ipv4(&nh, data_end, &eth, &iph) < 0)
		return drop_malformed();
	count_vip(vs->slot, VIP_CTR_DECAP_PACKETS, 1);
	return snat_out(&nh, data_end, eth, iph, nat, vs, up);
}

#endif /* HAVIP_NAT_H */
