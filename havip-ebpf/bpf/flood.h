/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * flood.h: a subnet as a broadcast domain. In a subnet in broadcast-domain
 * mode (its vNICs have bcast_vnics entries) the IPv4 multicast and broadcast
 * a guest sends (VRRP and CARP adverts to 224.0.0.18, 255.255.255.255, the
 * subnet's directed broadcast) reach every other vNIC of the subnet:
 *
 *   on this host   bpf_redirect_map(devmap of the subnet's vNICs, 0,
 *                  BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS): one copy
 *                  each, never back to the sender, never into another
 *                  subnet (a devmap per subnet), never out of the uplink or
 *                  the underlay (neither is in any of these devmaps);
 *   other hosts    the devmap is then bcast_flood[slot], which also holds
 *                  the replicator port: the frame gets an 8-byte
 *                  struct flood_meta (bpf_xdp_adjust_meta) and, through the
 *                  veth, reaches tc_replicate on the peer, which pushes the
 *                  VXLAN header once and bpf_clone_redirect()s one copy per
 *                  other host out of the underlay NIC. XDP cannot clone and
 *                  devmap egress programs cannot tell copies to one device
 *                  apart, so the fan-out to N hosts is TC's (as Cilium's
 *                  multicast does it);
 *   from the       VXLAN of our VNI whose inner frame is such a frame is
 *   underlay       placed in its subnet by the inner IPv4 source
 *                  (bcast_prefixes: RFC 5798 §5.1.1.1, an advert's source is
 *                  the sender's address in the subnet), decapsulated and
 *                  broadcast to the local vNICs only (bcast_ports): never to
 *                  the replicator, so never replicated again.
 *
 * Storm control: each vNIC's replicated frames pass a GCRA bucket (rate_pps,
 * burst) kept in its bcast_vnics entry under the entry's spin lock; over
 * the limit the frame is dropped and counted (STORM_DROPS).
 *
 * Everything here is off the VIP path: xdp_vnic tests the destination MAC's
 * group bit only once the VIP lookup has missed (a VIP hit never gets there:
 * 2 instructions more on it than before, register allocation, none for the
 * test) and calls in only when it is set.
 */
#ifndef HAVIP_FLOOD_H
#define HAVIP_FLOOD_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "havip_abi.h"
#include "maps.h"
#include "parse.h"
#include "counters.h"
#include "encap.h"

/* flood_decide's "not a frame to flood": the caller goes on as if it
 * had never looked (not an XDP action). */
#define FLOOD_CONTINUE (-1)

#define NSEC_PER_SEC 1000000000ULL

/* Whether a frame to `daddr` is flooded in the subnet `sn`: IPv4 multicast
 * (224.0.0.0/4), the limited broadcast, or the subnet's directed broadcast. */
static __always_inline int flood_destination(__u32 daddr, const struct bcast_subnet *sn)
{
	__u32 net = *(const __u32 *)sn->network, mask = *(const __u32 *)sn->mask;

	return (bpf_ntohl(daddr) & 0xf0000000) == 0xe0000000 || daddr == 0xffffffff ||
	       daddr == (net | ~mask);
}

/* The storm bucket (GCRA, one time per vNIC: the theoretical arrival time
 * `tat`). A frame costs T = 1e9 / rate_pps ns and passes if, with it, the
 * bucket is at most burst * T ahead of now: from idle, exactly `burst`
 * frames pass at once, then one every T. rate_pps 0: none passes. A frame
 * that does not pass is counted in the entry (storm_drops: who floods). Under the
 * entry's lock, so frames of one vNIC on two CPUs never both take the last
 * token; the clock is read before (no helper calls under a spin lock). */
static __always_inline int storm_pass(struct bcast_vnic *bv, __u64 now)
{
	__u64 interval, tat;
	int pass = 0;

	bpf_spin_lock(&bv->lock);
	if (bv->rate_pps) {
		interval = NSEC_PER_SEC / bv->rate_pps;
		tat = bv->tat_ns > now ? bv->tat_ns : now;
		tat += interval;
		if (tat - now <= (__u64)bv->burst * interval) {
			bv->tat_ns = tat;
			pass = 1;
		}
	}
	if (!pass) /* under the lock already: the vNIC's own count */
		bv->storm_drops++;
	bpf_spin_unlock(&bv->lock);
	return pass;
}

/* flood_decide's verdict "flood it": FLOOD_GO | FLOOD_REMOTE? |
 * FLOOD_LOCAL_ONLY? | slot. */
#define FLOOD_GO 0x40000000
#define FLOOD_REMOTE 0x20000000     /* to the other hosts too */
#define FLOOD_LOCAL_ONLY 0x10000000 /* not to them: its source is outside the subnet */
#define FLOOD_SLOT_MASK 0x000fffff

/*
 * A frame a guest sent to a group MAC (xdp_vnic, after the VIP lookup), `iph`
 * its IPv4 header: is it flooded? From a vNIC of a broadcast-domain subnet,
 * to a flood destination there, within the vNIC's storm limit: FLOOD_GO with
 * the slot, and FLOOD_REMOTE if it also goes to the subnet's other hosts;
 * over the limit: XDP_DROP, counted. Anything else (a unicast subnet's vNIC,
 * another destination, a subnet whose devmaps the agent has not made yet):
 * FLOOD_CONTINUE, and the caller goes on as if it had never looked.
 *
 * Two subprograms, this one and flood_send, because the verifier forgets
 * every packet pointer of the caller after a call to a subprogram that may
 * change the packet (bpf_xdp_adjust_meta), on every path: this one changes
 * nothing, so xdp_vnic's FLOOD_CONTINUE path keeps its headers; flood_send
 * is only ever called as the last thing. Both are real subprograms: the VIP
 * path carries none of this.
 */
static __noinline int flood_decide(struct xdp_md *ctx, struct iphdr *iph)
{
	__u32 ifindex = ctx->ingress_ifindex;
	struct bcast_subnet *sn;
	struct bcast_vnic *bv;
	int remote, outside = 0;
	__u32 slot;

	bv = bpf_map_lookup_elem(&bcast_vnics, &ifindex);
	if (!bv)
		return FLOOD_CONTINUE;
	slot = bv->subnet;
	if (slot > FLOOD_SLOT_MASK)
		return FLOOD_CONTINUE;
	sn = bpf_map_lookup_elem(&bcast_subnets, &slot);
	if (!sn || !flood_destination(iph->daddr, sn))
		return FLOOD_CONTINUE;

	/* Other hosts get it only if its source is in the subnet: that is how
	 * they place it in theirs (xdp_underlay, by the inner source). */
	remote = 0;
	if (sn->remote_hosts) {
		if ((iph->saddr & *(__u32 *)sn->mask) == *(__u32 *)sn->network)
			remote = 1;
		else
			outside = FLOOD_LOCAL_ONLY; /* counted when sent */
	}
	/* The flood devmap not made yet: this host's vNICs only; neither:
	 * as if the subnet were unicast. */
	if (remote && !bpf_map_lookup_elem(&bcast_flood, &slot))
		remote = 0;
	if (!remote && !bpf_map_lookup_elem(&bcast_ports, &slot))
		return FLOOD_CONTINUE;

	if (!storm_pass(bv, bpf_ktime_get_ns())) {
		count_subnet(slot, SUBNET_CTR_STORM_DROPS, 1);
		return XDP_DROP;
	}
	return FLOOD_GO | (remote ? FLOOD_REMOTE : 0) | outside | slot;
}

/*
 * Sends a frame flood_decide let through (`go`, its verdict): with
 * BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS into the subnet's devmap, one copy
 * per port but the sender's. To other hosts too (FLOOD_REMOTE): into
 * bcast_flood[slot], whose replicator port takes it to tc_replicate, with
 * the struct flood_meta it needs in front (XDP metadata).
 */
static __noinline int flood_send(struct xdp_md *ctx, int go)
{
	__u32 slot = go & FLOOD_SLOT_MASK, ifindex = ctx->ingress_ifindex;
	struct flood_meta *meta;
	struct bcast_subnet *sn;
	void *ports = NULL;

	if (go & FLOOD_REMOTE) {
		ports = bpf_map_lookup_elem(&bcast_flood, &slot);
		if (ports && !bpf_xdp_adjust_meta(ctx, -(int)sizeof(*meta))) {
			meta = (void *)(long)ctx->data_meta;
			if ((void *)(meta + 1) > (void *)(long)ctx->data)
				return XDP_DROP; /* cannot happen: the verifier wants it */
			meta->subnet = slot;
			meta->ifindex = ifindex;
		} else if (ports) {
			/* No room for the metadata: the replicator would
			 * drop the copy, so this host's vNICs only. */
			ports = NULL;
			count_subnet(slot, SUBNET_CTR_LOCAL_ONLY, 1);
		}
	}
	if (!ports)
		ports = bpf_map_lookup_elem(&bcast_ports, &slot);
	sn = bpf_map_lookup_elem(&bcast_subnets, &slot);
	if (!ports || !sn)
		return XDP_DROP; /* removed since flood_decide looked: a race */
	if (go & FLOOD_LOCAL_ONLY)
		count_subnet(slot, SUBNET_CTR_LOCAL_ONLY, 1);
	count_subnet(slot, SUBNET_CTR_FLOODED, 1);
	if (sn->local_ports) /* the sender is one of them and gets none */
		count_subnet(slot, SUBNET_CTR_LOCAL_COPIES, sn->local_ports - 1);
	return bpf_redirect_map(ports, 0, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS);
}

/*
 * VXLAN of our VNI from another host whose inner frame (`inner`, its IPv4
 * header; the inner Ethernet `outer` bytes in) is to a group MAC: placed in
 * its subnet by the inner source, decapsulated, broadcast to the subnet's
 * vNICs here. Never to the replicator port, so never sent on to another
 * host. No subnet here for it, or not a flood destination of it: dropped,
 * GLB_CTR_FLOOD_UNKNOWN.
 */
static __noinline int flood_from_underlay(struct xdp_md *ctx, int outer, struct iphdr *inner)
{
	struct bcast_prefix key = { .prefixlen = 32 };
	struct bcast_subnet *sn;
	__u32 *slotp, slot;
	void *ports;

	__builtin_memcpy(key.addr, &inner->saddr, 4);
	slotp = bpf_map_lookup_elem(&bcast_prefixes, &key);
	if (!slotp)
		goto unknown;
	slot = *slotp;
	sn = bpf_map_lookup_elem(&bcast_subnets, &slot);
	if (!sn || !flood_destination(inner->daddr, sn))
		goto unknown;
	ports = bpf_map_lookup_elem(&bcast_ports, &slot);
	if (!ports)
		goto unknown;
	if (vxlan_pop(ctx, outer) < 0)
		return drop_malformed();
	count_subnet(slot, SUBNET_CTR_RECEIVED, 1);
	count_subnet(slot, SUBNET_CTR_LOCAL_COPIES, sn->local_ports);
	/* No EXCLUDE_INGRESS: the ingress is the underlay NIC, in no bcast devmap. */
	return bpf_redirect_map(ports, 0, BPF_F_BROADCAST);
unknown:
	count_global(GLB_CTR_FLOOD_UNKNOWN);
	return XDP_DROP;
}

/* On the replicator peer: only frames xdp_vnic sent with their flood_meta
 * (`meta`, the metadata area in front of `data`) go on to tc_replicate;
 * anything else the host sends into the replicator port (IPv6 router
 * solicitations, a stray ping) is dropped and counted. Its being there also
 * makes the veth take XDP frames at all (FIELD-NOTES). A real subprogram:
 * its argument puts struct flood_meta into the object's BTF (the layout
 * test looks for it there). */
static __noinline int replicator_gate(const struct flood_meta *meta, void *data)
{
	if ((void *)(meta + 1) > data) {
		count_global(GLB_CTR_FLOOD_UNKNOWN);
		return XDP_DROP;
	}
	return XDP_PASS;
}

/* What each round of the replication loop needs (bpf_loop's context). */
struct replicate_ctx {
	struct __sk_buff *skb;
	struct bcast_remotes *rem;
	struct underlay_port *ul;
	__u64 len;   /* the inner frame's */
	__u32 slot;
	__u16 sport;
};

/* One copy to the i-th other host: the outer header written for its VTEP,
 * cloned out of the underlay NIC. A host with no next hop (or a copy the
 * NIC refused) is counted, never skipped silently. bpf_loop's callback: the
 * verifier checks it once, not once per host. */
static long replicate_one(__u32 i, void *arg)
{
	struct replicate_ctx *c = arg;
	struct __sk_buff *skb = c->skb;
	struct vtep_info *hop;
	struct vxlan_outer *o;
	void *data_end;
	__u32 vtep;

	if (i >= HAVIP_MAX_REMOTE_HOSTS)
		return 1;
	vtep = *(__u32 *)c->rem->vteps[i];
	hop = bpf_map_lookup_elem(&vteps, &vtep);
	/* Each bpf_clone_redirect may move the data: the header is found
	 * again, and checked, every round. */
	o = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (!hop || (void *)(o + 1) > data_end) {
		count_subnet(c->slot, SUBNET_CTR_NO_VTEP, 1);
		return 0;
	}
	/* The whole header each time: one definition with encap.h, and no
	 * state carried from one copy to the next. */
	vxlan_outer_write(o, c->ul, hop->next_hop_mac, vtep, c->len, c->sport);
	if (bpf_clone_redirect(skb, c->ul->ifindex, 0)) {
		count_subnet(c->slot, SUBNET_CTR_NO_VTEP, 1);
		return 0;
	}
	count_subnet(c->slot, SUBNET_CTR_REMOTE_COPIES, 1);
	return 0;
}

/*
 * Head-end replication (TC ingress on the replicator peer): the frame a
 * guest flooded, with its flood_meta, goes once to each other host with
 * vNICs in its subnet, VXLAN-encapsulated as encap.h does it. The header
 * room is pushed once; per VTEP the outer header is written and the frame
 * bpf_clone_redirect()ed out of the underlay NIC. The original is then
 * dropped (TC_ACT_SHOT): it has been everywhere it goes.
 */
static __always_inline int replicate(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	struct flood_meta *meta = (void *)(long)skb->data_meta;
	struct replicate_ctx c = { .skb = skb };
	__u32 n;

	if ((void *)(meta + 1) > data || data + sizeof(struct ethhdr) > data_end) {
		count_global(GLB_CTR_FLOOD_UNKNOWN);
		return TC_ACT_SHOT;
	}
	c.slot = meta->subnet;
	c.rem = bpf_map_lookup_elem(&bcast_remotes, &c.slot);
	c.ul = underlay_port();
	if (!c.rem || !c.ul || !c.ul->ifindex) {
		/* No underlay (yet): nowhere to send it. */
		count_global(GLB_CTR_FLOOD_UNKNOWN);
		return TC_ACT_SHOT;
	}
	n = c.rem->count;
	if (n > HAVIP_MAX_REMOTE_HOSTS)
		n = HAVIP_MAX_REMOTE_HOSTS;
	if (!n)
		return TC_ACT_SHOT; /* the last other host just left */
	c.len = skb->len;
	if (!fits_underlay(c.len, c.ul)) {
		/* The underlay NIC would drop it without a trace. */
		count_subnet(c.slot, SUBNET_CTR_TOO_BIG, 1);
		return TC_ACT_SHOT;
	}
	c.sport = flow_port(data, data_end);
	if (bpf_skb_change_head(skb, HAVIP_VXLAN_OVERHEAD, 0)) {
		count_subnet(c.slot, SUBNET_CTR_NO_VTEP, n);
		return TC_ACT_SHOT;
	}
	bpf_loop(n, replicate_one, &c, 0);
	return TC_ACT_SHOT;
}

#endif /* HAVIP_FLOOD_H */
