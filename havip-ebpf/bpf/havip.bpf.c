// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * xdp_vnic: attached to the host end of every guest vNIC; sees what the guest
 * sends. Rules, in order:
 *   ARP whose sender IP is a VIP     -> a claim: member moves the holder
 *                                       (XDP_DROP: consumed), non-member is
 *                                       dropped and counted.
 *   ARP request for a VIP            -> answered here (XDP_TX) with the VIP's
 *                                       fixed virtual MAC.
 *   IPv4 proto 112 (VRRP)            -> observed per VIP, then handled like
 *                                       any IPv4 packet below.
 *   IPv4 to a VIP                    -> MACs rewritten, redirected to the
 *                                       holder's vNIC; no holder: dropped.
 *   anything else                    -> XDP_PASS, untouched.
 * Malformed rule: a frame too short or inconsistent for the header we must
 * read is passed untouched (the kernel stack will judge it) and counted in
 * GLB_CTR_PARSE_ERRORS; it never changes any state.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "havip_abi.h"

#define LIBBPF_PIN_BY_NAME 1
#define IPPROTO_VRRP 112
#define ARPOP_REQUEST 1
#define ARPOP_REPLY 2
#define ARPHRD_ETHER 1

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HAVIP_DEFAULT_MAX_VIPS);
	__type(key, struct vip_key);
	__type(value, struct vip_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HAVIP_DEFAULT_MAX_MEMBERS);
	__type(key, struct member_key);
	__type(value, struct member_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} members SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HAVIP_DEFAULT_MAX_VIPS);
	__type(key, struct vip_key);
	__type(value, struct vrrp_seen);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vrrp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, HAVIP_DEFAULT_MAX_VNICS);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HAVIP_DEFAULT_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct vip_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GLB_CTR__MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} global_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, HAVIP_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

/* ARP for IPv4 over Ethernet (RFC 826), the only kind a claim can be. */
struct arp_eth_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[ETH_ALEN];
	__u8 spa[4];
	__u8 tha[ETH_ALEN];
	__u8 tpa[4];
} __attribute__((packed));

/* VRRP v2/v3 fixed header (RFC 3768, RFC 5798); addresses follow. */
struct vrrp_hdr {
	__u8 vers_type;
	__u8 vrid;
	__u8 priority;
	__u8 count_addrs;
	__be16 word; /* v2: auth type + advert interval; v3: max advert interval */
	__be16 checksum;
} __attribute__((packed));

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

static __always_inline int pass_untouched(void)
{
	count_global(GLB_CTR_PASSED);
	return XDP_PASS;
}

static __always_inline int pass_malformed(void)
{
	count_global(GLB_CTR_PARSE_ERRORS);
	return XDP_PASS;
}

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) |
		(a[4] ^ b[4]) | (a[5] ^ b[5])) == 0;
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
	else if (!mac_eq(m->mac, eth->h_source) || !mac_eq(m->mac, arp->sha))
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

	/* A gratuitous ARP or a reply is consumed: there is no L2 segment to
	 * flood it into. A real request the holder sends from its VIP (to
	 * resolve a peer) still needs the host's proxy-ARP answer. */
	if (arp->op == bpf_htons(ARPOP_REQUEST) &&
	    *(__u32 *)arp->tpa != *(__u32 *)arp->spa)
		return XDP_PASS;
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

static __always_inline int handle_arp(struct xdp_md *ctx, struct ethhdr *eth, void *data_end)
{
	struct arp_eth_ipv4 *arp = (void *)(eth + 1);
	struct vip_state *vs;

	if ((void *)(arp + 1) > data_end)
		return pass_malformed();
	if (arp->htype != bpf_htons(ARPHRD_ETHER) || arp->ptype != bpf_htons(ETH_P_IP) ||
	    arp->hlen != ETH_ALEN || arp->plen != 4)
		return pass_untouched();
	if (arp->op != bpf_htons(ARPOP_REQUEST) && arp->op != bpf_htons(ARPOP_REPLY))
		return pass_untouched();

	vs = bpf_map_lookup_elem(&vips, arp->spa);
	if (vs)
		return handle_claim(ctx, eth, arp, vs);

	if (arp->op == bpf_htons(ARPOP_REQUEST)) {
		vs = bpf_map_lookup_elem(&vips, arp->tpa);
		if (vs)
			return answer_arp(eth, arp, vs);
	}
	return pass_untouched();
}

/* Record the heartbeat for every VIP the advert covers. Never changes the
 * verdict: the advert is then forwarded like any packet. */
static __always_inline void observe_vrrp(struct xdp_md *ctx, struct iphdr *iph,
					 void *data_end)
{
	struct vrrp_hdr *vh = (void *)iph + iph->ihl * 4;
	__u8 *addr = (__u8 *)(vh + 1);
	struct vrrp_seen seen = { .ifindex = ctx->ingress_ifindex };
	__u8 version, n;

	if ((void *)(vh + 1) > data_end) {
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
	for (int i = 0; i < HAVIP_VRRP_MAX_ADDRS; i++, addr += 4) {
		struct vip_state *vs;

		if (i >= n)
			break;
		if ((void *)(addr + 4) > data_end) {
			count_global(GLB_CTR_PARSE_ERRORS);
			break;
		}
		vs = bpf_map_lookup_elem(&vips, addr);
		if (!vs)
			continue;
		count_vip(vs->slot, VIP_CTR_VRRP_ADVERTS, 1);
		bpf_map_update_elem(&vrrp, addr, &seen, BPF_ANY);
	}
}

/* VIP traffic goes to the holder's vNIC, looking as if it came from the
 * VIP's virtual router MAC. */
static __always_inline int forward_to_holder(struct ethhdr *eth, void *data_end,
					     struct vip_state *vs)
{
	__u32 ifindex = *(volatile __u32 *)&vs->holder_ifindex;
	__u64 bytes = data_end - (void *)eth;
	int act;

	if (!ifindex) {
		count_vip(vs->slot, VIP_CTR_NO_HOLDER_DROPS, 1);
		return XDP_DROP;
	}
	__builtin_memcpy(eth->h_dest, vs->holder_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, vs->vmac, ETH_ALEN);
	act = bpf_redirect_map(&tx_ports, ifindex, XDP_DROP);
	if (act != XDP_REDIRECT) {
		count_vip(vs->slot, VIP_CTR_NO_HOLDER_DROPS, 1);
		return act;
	}
	count_vip(vs->slot, VIP_CTR_REDIRECT_PACKETS, 1);
	count_vip(vs->slot, VIP_CTR_REDIRECT_BYTES, bytes);
	return act;
}

static __always_inline int handle_ipv4(struct xdp_md *ctx, struct ethhdr *eth, void *data_end)
{
	struct iphdr *iph = (void *)(eth + 1);
	struct vip_state *vs;

	if ((void *)(iph + 1) > data_end)
		return pass_malformed();
	if (iph->version != 4 || iph->ihl < 5)
		return pass_malformed();

	if (iph->protocol == IPPROTO_VRRP)
		observe_vrrp(ctx, iph, data_end);

	vs = bpf_map_lookup_elem(&vips, &iph->daddr);
	if (vs)
		return forward_to_holder(eth, data_end, vs);
	return pass_untouched();
}

SEC("xdp")
int xdp_vnic(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return pass_malformed();

	/* A vNIC carries untagged frames; anything tagged is not ours. */
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return handle_arp(ctx, eth, data_end);
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return handle_ipv4(ctx, eth, data_end);
	return pass_untouched();
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
