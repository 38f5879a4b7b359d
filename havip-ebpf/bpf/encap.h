/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * encap.h: the underlay between hosts. VIP traffic whose holder is on
 * another host is VXLAN-encapsulated (RFC 7348) and redirected out of the
 * underlay NIC; VXLAN of our VNI to our VTEP is decapsulated and delivered
 * to a local holder; underlay probes are answered.
 *
 * Outer headers (50 bytes): Ethernet (from the underlay NIC's MAC to the
 * next hop's MAC for the VTEP, vteps map), IPv4 (from our VTEP to the
 * peer's, DF set, TTL 64, id 0, checksum computed), UDP (source port from a
 * hash of the inner flow in 49152..65535 so the underlay's ECMP spreads
 * flows, destination underlay.vxlan_port, checksum 0 as RFC 7348 allows for
 * IPv4), VXLAN (flags I, the VNI).
 *
 * MTU rule: a redirect into a NIC of a frame larger than its MTU is dropped
 * by the driver without a trace, so the size is checked here: an inner
 * frame whose outer IPv4 packet (frame + 36) would exceed underlay.mtu gets
 * an ICMP fragmentation-needed (next-hop MTU underlay.mtu - 50) if its DF
 * is set, sent back by XDP_TX from the address and MAC it was sent to (for
 * VIP traffic the VIP and its virtual MAC); otherwise it is dropped. Counted
 * either way (TOO_BIG_ICMP, TOO_BIG_DROPS).
 */
#ifndef HAVIP_ENCAP_H
#define HAVIP_ENCAP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "havip_abi.h"
#include "maps.h"
#include "parse.h"
#include "csum.h"
#include "counters.h"
#include "forward.h"

#define IP_DF 0x4000
#define IP_MF 0x2000
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
#define VXLAN_FLAG_I 0x08
/* Outer IPv4 + UDP + VXLAN + inner Ethernet: what the outer IPv4 length
 * adds to the inner frame's length. */
#define VXLAN_IP_OVERHEAD (HAVIP_VXLAN_OVERHEAD - (int)sizeof(struct ethhdr))
/* What a frag-needed carries of the packet it answers: its IPv4 header
 * (20 bytes: one with options is dropped instead) and 8 bytes (RFC 792). */
#define ICMP_QUOTE (20 + 8)
#define ICMP_FRAME (14 + 20 + 8 + ICMP_QUOTE)

struct vxlanhdr {
	__u8 flags;
	__u8 reserved[3];
	__be32 vni; /* VNI in the upper 24 bits */
};

/* The whole outer header block, written at once. */
struct vxlan_outer {
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
	struct vxlanhdr vx;
} __attribute__((packed));

_Static_assert(sizeof(struct vxlan_outer) == HAVIP_VXLAN_OVERHEAD, "VXLAN overhead");

static __always_inline struct underlay_port *underlay_port(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&underlay, &zero);
}

/* The Internet checksum of a 20-byte IPv4 header (its check field 0). */
static __always_inline __u16 ip_header_csum(const void *ip)
{
	const __u16 *w = ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	return csum_fold(sum);
}

/* Whether a frame of `len` bytes fits the underlay once encapsulated. */
static __always_inline int fits_underlay(__u64 len, const struct underlay_port *ul)
{
	return len + VXLAN_IP_OVERHEAD <= ul->mtu;
}

/*
 * The frame does not fit the underlay: with DF set, turned into an ICMP
 * fragmentation-needed for its sender (XDP_TX), from the address and MAC it
 * was sent to; otherwise (or a tagged frame, or one with IPv4 options) dropped.
 * The frame becomes [Ethernet][IPv4][ICMP][its IPv4 header + 8 bytes]: 28
 * bytes more in front put its IPv4 header right where the quote goes.
 */
static __noinline int frag_needed(struct xdp_md *ctx, __u32 slot, __u16 mtu)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	__u8 to_mac[ETH_ALEN], from_mac[ETH_ALEN];
	__u32 to, from, sum = 0;
	__u8 *icmp;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->ihl != 5 || !(ip->frag_off & bpf_htons(IP_DF)))
		goto drop;
	__builtin_memcpy(to_mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(from_mac, eth->h_dest, ETH_ALEN);
	to = ip->saddr;
	from = ip->daddr;

	if (bpf_xdp_adjust_head(ctx, -(int)(sizeof(struct iphdr) + 8)))
		goto drop;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + ICMP_FRAME > data_end)
		goto drop;
	if (bpf_xdp_adjust_tail(ctx, ICMP_FRAME - (int)(data_end - data)))
		goto drop;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + ICMP_FRAME > data_end)
		goto drop;

	eth = data;
	__builtin_memcpy(eth->h_dest, to_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, from_mac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	ip = data + sizeof(*eth);
	*ip = (struct iphdr){
		.version = 4,
		.ihl = 5,
		.tos = 0xc0, /* internetwork control, as the kernel's ICMP */
		.tot_len = bpf_htons(ICMP_FRAME - sizeof(*eth)),
		.ttl = 64,
		.protocol = IPPROTO_ICMP,
		.saddr = from,
		.daddr = to,
	};
	ip->check = ip_header_csum(ip);
	icmp = (__u8 *)(ip + 1);
	icmp[0] = ICMP_DEST_UNREACH;
	icmp[1] = ICMP_FRAG_NEEDED;
	*(__u32 *)(icmp + 2) = 0; /* checksum, unused */
	*(__u16 *)(icmp + 6) = bpf_htons(mtu - HAVIP_VXLAN_OVERHEAD);
#pragma unroll
	for (int i = 0; i < (8 + ICMP_QUOTE) / 2; i++)
		sum += ((__u16 *)icmp)[i];
	*(__u16 *)(icmp + 2) = csum_fold(sum);
	count_vip(slot, VIP_CTR_TOO_BIG_ICMP, 1);
	return XDP_TX;
drop:
	count_vip(slot, VIP_CTR_TOO_BIG_DROPS, 1);
	return XDP_DROP;
}

/* The UDP source port for the inner flow: a hash of its addresses,
 * protocol and (first fragment only) ports, in 49152..65535. */
static __always_inline __u16 flow_port(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	__u32 h = 0;

	if ((void *)(ip + 1) <= data_end && eth->h_proto == bpf_htons(ETH_P_IP)) {
		__u32 *ports = (void *)ip + ((ip->ihl * 4) & 0x3c);

		h = ip->saddr ^ (ip->daddr * 0x9e3779b1u) ^ ip->protocol;
		if (!(ip->frag_off & bpf_htons(IP_OFFSET)) && (void *)(ports + 1) <= data_end)
			h ^= *ports * 0x85ebca6bu;
	} else if (data + sizeof(*eth) <= data_end) {
		h = *(__u32 *)eth->h_dest ^ *(__u32 *)eth->h_source;
	}
	h ^= h >> 16;
	h *= 0x7feb352du;
	h ^= h >> 15;
	return 49152 + (h & 0x3fff);
}

/* Writes the outer headers at `o` for an inner frame of `len` bytes to
 * `vtep` (network order) through `next_hop`. The one definition of what
 * havip puts on the underlay: XDP encapsulation (vxlan_push) and TC
 * head-end replication (flood.h) both write through it. */
static __always_inline void vxlan_outer_write(struct vxlan_outer *o, const struct underlay_port *ul,
					      const __u8 *next_hop, __u32 vtep, __u64 len,
					      __u16 sport)
{
	mac_copy(o->eth.h_dest, next_hop);
	mac_copy(o->eth.h_source, ul->mac);
	o->eth.h_proto = bpf_htons(ETH_P_IP);
	o->ip = (struct iphdr){
		.version = 4,
		.ihl = 5,
		.tot_len = bpf_htons(len + VXLAN_IP_OVERHEAD),
		.frag_off = bpf_htons(IP_DF),
		.ttl = 64,
		.protocol = IPPROTO_UDP,
		.saddr = *(__u32 *)ul->addr,
		.daddr = vtep,
	};
	o->ip.check = ip_header_csum((void *)o + sizeof(struct ethhdr));
	o->udp = (struct udphdr){
		.source = bpf_htons(sport),
		.dest = ul->vxlan_port,
		.len = bpf_htons(len + sizeof(struct udphdr) + sizeof(struct vxlanhdr)),
		.check = 0,
	};
	/* Flags byte first, then 3 reserved bytes of 0. */
	*(__u32 *)((void *)o + HAVIP_VXLAN_OVERHEAD - sizeof(struct vxlanhdr)) = VXLAN_FLAG_I;
	o->vx.vni = bpf_htonl(ul->vni << 8);
}

/* Puts the outer headers in front of the frame (`len` bytes, the inner
 * frame) for `vtep` reached through `next_hop`. 0, or -1 when the head
 * could not grow (nothing changed). */
static __always_inline int vxlan_push(struct xdp_md *ctx, const struct underlay_port *ul,
				      const __u8 *next_hop, __u32 vtep, __u64 len, __u16 sport)
{
	struct vxlan_outer *o;
	void *data, *data_end;

	if (bpf_xdp_adjust_head(ctx, -HAVIP_VXLAN_OVERHEAD))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	o = data;
	if ((void *)(o + 1) > data_end)
		return -1;
	vxlan_outer_write(o, ul, next_hop, vtep, len, sport);
	return 0;
}

/* VIP traffic to a holder on the host at `vtep` (inner MACs rewritten as
 * for a local holder: to the holder's MAC, from the virtual MAC), or
 * (to_gateway) the holder's traffic to outside the VPC, as it came, to the
 * gateway host that SNATs it. */
static __noinline int send_remote(struct xdp_md *ctx, struct vip_state *vs, __u32 vtep,
				  int to_gateway)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct underlay_port *ul = underlay_port();
	const __u8 *next_hop = vs->holder_next_hop;
	struct vtep_info *hop;
	__u32 slot = vs->slot;
	__u64 len = data_end - data;
	__u16 sport;
	int act;

	if (!ul || !ul->ifindex)
		goto no_vtep;
	/* The holder's next hop is kept with it; the gateway's (or one not
	 * known when the holder was written) is looked up. */
	if (to_gateway || !(*(const __u32 *)next_hop | *(const __u16 *)(next_hop + 4))) {
		hop = bpf_map_lookup_elem(&vteps, &vtep);
		if (!hop)
			goto no_vtep;
		next_hop = hop->next_hop_mac;
	}
	if ((void *)(eth + 1) > data_end)
		return drop_malformed();
	if (!fits_underlay(len, ul))
		return frag_needed(ctx, slot, ul->mtu);
	if (!to_gateway) {
		mac_copy(eth->h_dest, vs->holder_mac);
		mac_copy(eth->h_source, vs->vmac);
	}
	sport = flow_port(data, data_end);
	if (vxlan_push(ctx, ul, next_hop, vtep, len, sport) < 0)
		goto no_vtep;
	act = bpf_redirect_map(&tx_ports, ul->ifindex, XDP_DROP);
	if (act != XDP_REDIRECT)
		goto no_vtep;
	count_vip_packet(slot, VIP_CTR_ENCAP_PACKETS, len);
	if (to_gateway)
		count_vip(slot, VIP_CTR_EIP_OUT_TO_GATEWAY, 1);
	return act;
no_vtep:
	count_vip(slot, VIP_CTR_NO_VTEP_DROPS, 1);
	return XDP_DROP;
}

/* An underlay probe (`p`, the UDP payload) answered where it arrived: MACs,
 * addresses and ports swapped, magic HVPA, TTL 64, UDP checksum 0. Anything
 * else to the probe port is not ours. A real subprogram, rarely run: it also
 * puts struct underlay_probe into the object's BTF for the layout test. */
static __noinline int answer_underlay_probe(struct ethhdr *eth, struct iphdr *ip,
					    struct udphdr *udp, struct underlay_probe *p,
					    void *data_end)
{
	__u16 old_ttl_proto = *(__u16 *)&ip->ttl;
	__u8 mac[ETH_ALEN];
	__u32 addr;
	__u16 port;

	if ((void *)(p + 1) > data_end)
		return pass_malformed();
	if (p->magic[0] != 'H' || p->magic[1] != 'V' || p->magic[2] != 'P' || p->magic[3] != 'R')
		return pass_untouched();
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	/* Swapping the addresses leaves the header's sum as it was. */
	addr = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = addr;
	ip->ttl = 64;
	csum_replace2(&ip->check, old_ttl_proto, *(__u16 *)&ip->ttl);
	port = udp->source;
	udp->source = udp->dest;
	udp->dest = port;
	udp->check = 0;
	p->magic[3] = 'A';
	count_global(GLB_CTR_UNDERLAY_PROBES);
	return XDP_TX;
}

/* Strips `outer` bytes (the outer headers up to the inner frame). 0, or -1. */
static __always_inline int vxlan_pop(struct xdp_md *ctx, int outer)
{
	return bpf_xdp_adjust_head(ctx, outer);
}

/* VXLAN to a VIP whose holder is on this host: decapsulated, delivered to
 * its vNIC like VIP traffic. For a holder elsewhere, dropped: never sent
 * on again, so no frame can loop between hosts. */
static __always_inline int decap_to_holder(struct xdp_md *ctx, int outer, struct vip_state *vs)
{
	__u32 ifindex = *(volatile __u32 *)&vs->holder_ifindex;
	void *data, *data_end;
	struct ethhdr *eth;
	int act;

	if (!ifindex) {
		count_vip(vs->slot, VIP_CTR_DECAP_NOT_LOCAL, 1);
		return XDP_DROP;
	}
	if (vxlan_pop(ctx, outer) < 0)
		return drop_malformed();
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return drop_malformed();
	act = redirect_local(eth, data_end - data, vs, ifindex);
	if (act == XDP_REDIRECT)
		count_vip(vs->slot, VIP_CTR_DECAP_PACKETS, 1);
	return act;
}

#endif /* HAVIP_ENCAP_H */
