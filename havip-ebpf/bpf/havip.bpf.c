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
 *                                       Found by the slot in the virtual
 *                                       MAC it was sent to, else by address.
 *   IPv4 from a VIP with an EIP, to  -> from the holder: SNAT to the EIP,
 *   outside the VPC subnet              redirected out of the uplink; from
 *                                       anyone else: dropped, counted.
 *   anything else                    -> XDP_PASS, untouched.
 * xdp_uplink: attached to the host's uplink NIC.
 *   IPv4 to a bound EIP              -> DNAT to the VIP, redirected to the
 *                                       holder exactly like VIP traffic.
 *   anything else                    -> XDP_PASS, untouched.
 * Malformed rule: a frame too short or inconsistent for the header we must
 * read is passed untouched (the kernel stack will judge it) and counted in
 * GLB_CTR_PARSE_ERRORS; it never changes any state. The one exception is a
 * packet we would NAT whose L4 header is truncated: it is dropped (and
 * counted), so a VIP address never leaks out of the uplink un-NATed.
 * NAT rule for fragments: every fragment's IP address is rewritten; the L4
 * checksum is updated in the fragment that carries the L4 header (offset 0),
 * which is exact for 1:1 NAT since ports never change.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "havip_abi.h"

#define LIBBPF_PIN_BY_NAME 1
#define IPPROTO_VRRP 112
#define ARPOP_REQUEST 1
#define ARPOP_REPLY 2
#define ARPHRD_ETHER 1
#define IP_OFFSET 0x1fff

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HAVIP_DEFAULT_MAX_VIPS);
	__type(key, struct vip_key);
	__type(value, struct vip_ref);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vips SEC(".maps");

/* An array, so the verifier inlines its lookups: no hashing on the fast path. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HAVIP_DEFAULT_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct vip_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_state SEC(".maps");

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
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HAVIP_DEFAULT_MAX_VIPS);
	__type(key, struct eip_key);
	__type(value, struct eip_binding);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} eips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HAVIP_DEFAULT_MAX_VIPS);
	__type(key, struct vip_key);
	__type(value, struct vip_nat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct uplink_port);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} uplink SEC(".maps");

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

static __always_inline int drop_malformed(void)
{
	count_global(GLB_CTR_PARSE_ERRORS);
	return XDP_DROP;
}

static __always_inline int mac_is_zero(const __u8 *m)
{
	return (m[0] | m[1] | m[2] | m[3] | m[4] | m[5]) == 0;
}

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) |
		(a[4] ^ b[4]) | (a[5] ^ b[5])) == 0;
}

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
	const __u8 *d = eth->h_dest;

	if (d[0] != HAVIP_VMAC_0 || d[1] != HAVIP_VMAC_1)
		return NULL;
	return state_in_slot((__u32)d[2] << 24 | (__u32)d[3] << 16 | (__u32)d[4] << 8 | d[5], daddr);
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

	vs = vip_lookup(arp->spa);
	if (vs)
		return handle_claim(ctx, eth, arp, vs);

	if (arp->op == bpf_htons(ARPOP_REQUEST)) {
		vs = vip_lookup(arp->tpa);
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
		vs = vip_lookup(addr);
		if (!vs)
			continue;
		count_vip(vs->slot, VIP_CTR_VRRP_ADVERTS, 1);
		bpf_map_update_elem(&vrrp, addr, &seen, BPF_ANY);
	}
}

/* RFC 1624: HC' = ~(~HC + ~m + m'), on 16-bit words as they lie in memory
 * (the one's complement sum does not care about byte order). */
static __always_inline __u16 csum_fold(__u32 c)
{
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return (__u16)~c;
}

static __always_inline void csum_replace2(__u16 *sum, __u16 from, __u16 to)
{
	*sum = csum_fold((__u16)~*sum + (__u16)~from + to);
}

static __always_inline void csum_replace4(__u16 *sum, __u32 from, __u32 to)
{
	__u32 c = (__u16)~*sum;

	c += (__u16)~(from & 0xffff) + (__u16)~(from >> 16);
	c += (to & 0xffff) + (to >> 16);
	*sum = csum_fold(c);
}

/* Fixes the L4 checksum for an address change from -> to. Checks bounds
 * before writing anything: -1 means truncated, nothing was changed. */
static __always_inline int nat_l4(struct iphdr *iph, void *data_end, __u32 from, __u32 to)
{
	void *l4 = (void *)iph + iph->ihl * 4;

	if (iph->frag_off & bpf_htons(IP_OFFSET))
		return 0; /* a later fragment: no L4 header here */
	if (iph->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return -1;
		csum_replace4(&tcp->check, from, to);
	} else if (iph->protocol == IPPROTO_UDP) {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
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
	count_vip_packet(vs->slot, VIP_CTR_REDIRECT_PACKETS, bytes);
	return act;
}

/* Traffic the holder sends from the VIP to outside the VPC leaves from the
 * EIP. Only the holder may: a standby's packets from the VIP are dropped. */
static __always_inline int snat_to_uplink(struct xdp_md *ctx, struct ethhdr *eth, struct iphdr *iph,
					  void *data_end, struct vip_nat *nat)
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
	if (nat_l4(iph, data_end, vip, eip) < 0)
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

/* The Ethernet + IPv4 headers of a frame, or NULL if it is not IPv4.
 * *verdict says what to do with a frame that is not. */
static __always_inline struct iphdr *parse_ipv4(struct ethhdr *eth, void *data_end, int *verdict)
{
	struct iphdr *iph = (void *)(eth + 1);

	if (eth->h_proto != bpf_htons(ETH_P_IP)) {
		*verdict = pass_untouched();
		return NULL;
	}
	if ((void *)(iph + 1) > data_end || iph->version != 4 || iph->ihl < 5) {
		*verdict = pass_malformed();
		return NULL;
	}
	return iph;
}

static __always_inline int handle_ipv4(struct xdp_md *ctx, struct ethhdr *eth, void *data_end)
{
	struct vip_state *vs;
	struct vip_nat *nat;
	struct iphdr *iph;
	int verdict;

	iph = parse_ipv4(eth, data_end, &verdict);
	if (!iph)
		return verdict;

	if (iph->protocol == IPPROTO_VRRP)
		observe_vrrp(ctx, iph, data_end);

	vs = vip_by_vmac(eth, iph->daddr);
	if (!vs) /* a stale or other MAC: correctness never rests on it */
		vs = vip_lookup((__u8 *)&iph->daddr);
	if (vs)
		return forward_to_holder(eth, data_end, vs);
	nat = bpf_map_lookup_elem(&vip_nat, &iph->saddr);
	if (nat)
		return snat_to_uplink(ctx, eth, iph, data_end, nat);
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
	return handle_ipv4(ctx, eth, data_end);
}

/* Traffic to an EIP goes to the VIP's holder, as if sent to the VIP. */
SEC("xdp")
int xdp_uplink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct eip_binding *eb;
	struct vip_state *vs;
	struct iphdr *iph;
	__u32 eip, vip;
	int verdict;

	if ((void *)(eth + 1) > data_end)
		return pass_malformed();
	iph = parse_ipv4(eth, data_end, &verdict);
	if (!iph)
		return verdict;
	eb = bpf_map_lookup_elem(&eips, &iph->daddr);
	if (!eb)
		return pass_untouched();
	vs = vip_lookup(eb->vip);
	if (!vs)
		return pass_untouched();
	if (iph->ttl <= 1) {
		count_vip(vs->slot, VIP_CTR_EIP_TTL_EXCEEDED, 1);
		return XDP_PASS;
	}
	eip = iph->daddr;
	vip = *(__u32 *)eb->vip;
	if (nat_l4(iph, data_end, eip, vip) < 0)
		return pass_malformed();
	nat_ip(iph, &iph->daddr, vip);
	verdict = forward_to_holder(eth, data_end, vs);
	if (verdict == XDP_REDIRECT) {
		count_vip_packet(vs->slot, VIP_CTR_EIP_IN_PACKETS, data_end - data);
	}
	return verdict;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
