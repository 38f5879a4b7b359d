/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * claim.h: the control frames a guest sends on its vNIC.
 *   A gratuitous ARP for a VIP is a claim that moves the holder (and an event
 *   for the agent): a request whose sender and target are the VIP, or a reply
 *   from the VIP (the rule OVN's virtual ports use). A request from the VIP
 *   for another address is a neighbour lookup (arp_announce=0 on a node with
 *   the VIP configured): passed to the host, never a claim.
 *   A request for a VIP is answered here with the VIP's virtual MAC; an RFC
 *   5227 probe (sender 0.0.0.0) only when the VIP is held by someone else than
 *   the prober, so a guest's duplicate-address detection sees the truth.
 *   VRRP adverts are recorded per member: the holder's heartbeat.
 */
#ifndef HAVIP_CLAIM_H
#define HAVIP_CLAIM_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "havip_abi.h"
#include "maps.h"
#include "parse.h"
#include "counters.h"
#include "forward.h"

/* A VRRP virtual router MAC, 00:00:5e:00:01:{VRID} (RFC 5798 §7.3). */
static __always_inline int is_vrrp_vmac(const __u8 *m)
{
	return m[0] == 0x00 && m[1] == 0x00 && m[2] == 0x5e && m[3] == 0x00 && m[4] == 0x01;
}

/* Whether a member's claim carries an acceptable MAC: both the Ethernet
 * source and the ARP sender hardware address are the member's MAC, or (if
 * the HAVIP allows it) the same VRRP virtual MAC. */
static __always_inline int claim_mac_ok(const struct member_info *m, const struct ethhdr *eth,
					const struct arp_eth_ipv4 *arp, const struct vip_state *vs)
{
	struct vip_config *cfg;
	__u32 slot = vs->slot;

	if (mac_eq(m->mac, eth->h_source) && mac_eq(m->mac, arp->sha))
		return 1;
	if (!is_vrrp_vmac(eth->h_source) || !mac_eq(eth->h_source, arp->sha))
		return 0;
	cfg = bpf_map_lookup_elem(&vip_config, &slot);
	return cfg && (cfg->flags & HAVIP_VIP_F_VRRP_VMAC);
}

/* Claims are rare, so this is a real subprogram: it also puts struct
 * havip_event into the object's BTF, where the layout test finds it. */
static __noinline void emit_event(const struct havip_event *ev)
{
	if (bpf_ringbuf_output(&events, (void *)ev, sizeof(*ev), 0))
		count_global(GLB_CTR_EVENTS_LOST);
}

/* A member's claim moves the holder at once; anyone else's is dropped. */
static __always_inline int handle_claim(struct xdp_md *ctx, struct ethhdr *eth,
					struct arp_eth_ipv4 *arp, struct vip_state *vs)
{
	struct member_key mk = { .ifindex = ctx->ingress_ifindex };
	struct havip_event ev = {
		.ts_ns = bpf_ktime_get_ns(),
		.ifindex = ctx->ingress_ifindex,
	};
	struct member_info *m;

	__builtin_memcpy(ev.vip, arp->spa, 4);
	__builtin_memcpy(ev.mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(mk.vip, arp->spa, 4);
	m = bpf_map_lookup_elem(&members, &mk);
	if (!m)
		ev.reason = HAVIP_REJECT_NOT_MEMBER;
	else if (!claim_mac_ok(m, eth, arp, vs))
		ev.reason = HAVIP_REJECT_MAC_MISMATCH;

	if (ev.reason != HAVIP_REJECT_NONE) {
		ev.kind = HAVIP_EV_CLAIM_REJECTED;
		ev.prev_ifindex = vs->holder_ifindex;
		ev.epoch = vs->epoch;
		count_vip(vs->slot, VIP_CTR_CLAIMS_REJECTED, 1);
		emit_event(&ev);
		return XDP_DROP;
	}

	bpf_spin_lock(&vs->lock);
	ev.prev_ifindex = vs->holder_ifindex;
	if (ev.prev_ifindex != ev.ifindex || !mac_eq(vs->holder_mac, eth->h_source)) {
		vs->holder_ifindex = ev.ifindex;
		*(__u32 *)vs->holder_vtep = 0; /* the holder is here now */
		__builtin_memcpy(vs->holder_mac, eth->h_source, ETH_ALEN);
		vs->epoch += 1;
		vs->since_ns = ev.ts_ns;
		ev.changed = 1;
	}
	vs->last_claim_ns = ev.ts_ns;
	ev.epoch = vs->epoch;
	bpf_spin_unlock(&vs->lock);

	ev.kind = HAVIP_EV_CLAIM;
	count_vip(vs->slot, VIP_CTR_CLAIMS_ACCEPTED, 1);
	emit_event(&ev);
	/* Consumed: there is no L2 segment to flood it into. */
	return XDP_DROP;
}

/* Answer "who has VIP?" with the VIP's fixed virtual MAC, so no client's ARP
 * cache ever depends on hearing a gratuitous ARP. */
static __always_inline int answer_arp(struct ethhdr *eth, struct arp_eth_ipv4 *arp,
				      struct vip_state *vs)
{
	__u8 vip[4];

	__builtin_memcpy(vip, arp->tpa, 4);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, vs->vmac, ETH_ALEN);
	arp->op = bpf_htons(ARPOP_REPLY);
	__builtin_memcpy(arp->tha, arp->sha, ETH_ALEN);
	__builtin_memcpy(arp->tpa, arp->spa, 4);
	__builtin_memcpy(arp->sha, vs->vmac, ETH_ALEN);
	__builtin_memcpy(arp->spa, vip, 4);
	count_vip(vs->slot, VIP_CTR_ARP_REPLIES, 1);
	return XDP_TX;
}

/* An RFC 5227 probe for a VIP: "is this address in use?". In use means held
 * by another vNIC than the prober's (or on another host); the holder probing its own VIP, or
 * anyone probing a VIP nobody holds, must hear nothing. */
static __always_inline int answer_probe(struct xdp_md *ctx, struct ethhdr *eth,
					struct arp_eth_ipv4 *arp, struct vip_state *vs)
{
	__u32 holder = *(volatile __u32 *)&vs->holder_ifindex;
	__u32 remote = *(volatile __u32 *)vs->holder_vtep;

	if ((!holder && !remote) || holder == ctx->ingress_ifindex) {
		count_vip(vs->slot, VIP_CTR_PROBES_UNANSWERED, 1);
		return XDP_DROP;
	}
	count_vip(vs->slot, VIP_CTR_PROBES_ANSWERED, 1);
	return answer_arp(eth, arp, vs);
}

/* An ARP frame from a guest, the cursor on its ARP header: a claim if it is
 * a gratuitous ARP for a VIP, answered if it asks for one, else not ours. */
static __always_inline int handle_arp(struct xdp_md *ctx, struct hdr_cursor *nh,
				      void *data_end, struct ethhdr *eth)
{
	struct arp_eth_ipv4 *arp;
	struct vip_state *vs;

	if (parse_arphdr(nh, data_end, &arp) < 0)
		return pass_malformed();
	if (arp->htype != bpf_htons(ARPHRD_ETHER) || arp->ptype != bpf_htons(ETH_P_IP) ||
	    arp->hlen != ETH_ALEN || arp->plen != 4)
		return pass_untouched();
	if (arp->op != bpf_htons(ARPOP_REQUEST) && arp->op != bpf_htons(ARPOP_REPLY))
		return pass_untouched();

	vs = vip_lookup(arp->spa);
	if (vs) {
		if (arp->op == bpf_htons(ARPOP_REPLY) || *(__u32 *)arp->tpa == *(__u32 *)arp->spa)
			return handle_claim(ctx, eth, arp, vs);
		/* From the VIP, asking for someone else: whoever sent it has
		 * the VIP configured and needs a neighbour, the host's proxy
		 * ARP answers. Not a claim from anyone, member or not. */
		count_vip(vs->slot, VIP_CTR_NEIGHBOUR_LOOKUPS, 1);
		return pass_untouched();
	}

	if (arp->op == bpf_htons(ARPOP_REQUEST)) {
		vs = vip_lookup(arp->tpa);
		if (vs) {
			if (*(__u32 *)arp->spa == 0)
				return answer_probe(ctx, eth, arp, vs);
			return answer_arp(eth, arp, vs);
		}
	}
	return pass_untouched();
}

/* A frame tagged with a VLAN (VID != 0), the cursor past the tag, `inner`
 * its EtherType: a vNIC carries untagged frames, so it is not ours and is
 * passed; a claim in one is counted by name, or it would be lost unseen. */
static __always_inline int pass_tagged(struct hdr_cursor *nh, void *data_end, int inner)
{
	struct arp_eth_ipv4 *arp;

	if (inner == bpf_htons(ETH_P_ARP) && parse_arphdr(nh, data_end, &arp) == 0 &&
	    vip_lookup(arp->spa))
		count_global(GLB_CTR_TAGGED_CLAIMS);
	return pass_untouched();
}

/* Record the heartbeat for every VIP the advert covers that the sending vNIC
 * is a member of. Never changes the verdict: the advert is then forwarded
 * like any packet. The cursor (on the VRRP header) is a copy, so the
 * caller's stays where it was. */
static __always_inline void observe_vrrp(struct xdp_md *ctx, struct hdr_cursor nh,
					 void *data_end, struct iphdr *iph)
{
	struct vrrp_seen seen = { .ifindex = ctx->ingress_ifindex };
	struct member_key mk = { .ifindex = ctx->ingress_ifindex };
	struct vrrp_hdr *vh;
	__u8 *addr;
	__u8 version, n;

	if (parse_vrrphdr(&nh, data_end, &vh) < 0) {
		count_global(GLB_CTR_PARSE_ERRORS);
		return;
	}
	version = vh->vers_type >> 4;
	if ((version != 2 && version != 3) || (vh->vers_type & 0xf) != 1)
		return;

	__builtin_memcpy(seen.advertiser, &iph->saddr, 4);
	seen.vrid = vh->vrid;
	seen.priority = vh->priority;
	seen.version = version;
	seen.last_ns = bpf_ktime_get_ns();

	n = vh->count_addrs;
	addr = nh.pos;
	for (int i = 0; i < HAVIP_VRRP_MAX_ADDRS; i++, addr += 4) {
		struct vip_state *vs;

		if (i >= n)
			break;
		if ((void *)(addr + 4) > data_end) {
			count_global(GLB_CTR_PARSE_ERRORS);
			break;
		}
		vs = vip_lookup(addr);
		if (!vs)
			continue;
		count_vip(vs->slot, VIP_CTR_VRRP_ADVERTS, 1);
		__builtin_memcpy(mk.vip, addr, 4);
		if (bpf_map_lookup_elem(&members, &mk))
			bpf_map_update_elem(&vrrp, &mk, &seen, BPF_ANY);
	}
}

#endif /* HAVIP_CLAIM_H */
