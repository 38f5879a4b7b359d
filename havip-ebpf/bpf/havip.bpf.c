// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * havip's XDP programs: the three entry points, each read top to bottom as a
 * packet's way through it. The work is in the headers, one job each:
 *   maps.h      every map (pinned by name; types in havip_abi.h)
 *   parse.h     header cursor: where each header starts, bounds checks
 *   csum.h      incremental checksum updates
 *   counters.h  global and per-VIP counters, counted pass/drop verdicts
 *   forward.h   VIP lookup, redirect to the holder
 *   encap.h     VXLAN to and from other hosts, ICMP frag-needed, probes
 *   claim.h     ARP claims and answers, VRRP observation, claim events
 *   nat.h       EIP DNAT (uplink) and SNAT (vNIC, or at the gateway host)
 *   holder.h    the agent's holder writes, atomic with claims
 *   flood.h     broadcast-domain subnets: multicast and broadcast to the
 *               subnet's vNICs here and (head-end replication) elsewhere
 *
 * xdp_vnic: attached to the host end of every guest vNIC; sees what the guest
 * sends. Rules, in order:
 *   gratuitous ARP for a VIP         -> a claim: member moves the holder
 *   (request VIP->VIP, reply from VIP)  (XDP_DROP: consumed), non-member is
 *                                       dropped and counted.
 *   ARP request from a VIP for       -> a neighbour lookup: passed, counted.
 *   another address
 *   ARP request for a VIP            -> answered here (XDP_TX) with the VIP's
 *                                       fixed virtual MAC; a probe (sender
 *                                       0.0.0.0) only if another vNIC holds it.
 *   IPv4 proto 112 (VRRP)            -> observed per VIP, then handled like
 *                                       any IPv4 packet below.
 *   IPv4 to a VIP                    -> MACs rewritten, redirected to the
 *                                       holder's vNIC; no holder, or sent by
 *                                       the holder itself: dropped, counted.
 *                                       Found by the slot in the virtual
 *                                       MAC it was sent to, else by address.
 *                                       Holder on another host: the same
 *                                       MACs, VXLAN-encapsulated to its
 *                                       host out of the underlay NIC; too
 *                                       big for the underlay: ICMP
 *                                       frag-needed (DF) or dropped.
 *   IPv4 to a group MAC, from a vNIC -> to 224.0.0.0/4, 255.255.255.255 or
 *   of a broadcast-domain subnet        the subnet's directed broadcast: over
 *   (bcast_vnics)                       the vNIC's storm limit dropped
 *                                       (storm_drops); else broadcast to the
 *                                       subnet's other vNICs here (never
 *                                       back, never to another subnet or the
 *                                       uplink) and, if it has other hosts
 *                                       and the source is in the subnet,
 *                                       with a flood_meta to the replicator
 *                                       port (one copy per host, TC); source
 *                                       outside: here only (local_only).
 *                                       Any other group-MAC frame, or from a
 *                                       unicast subnet's vNIC: on below, as
 *                                       before. ARP is never flooded (a GARP
 *                                       stays a claim).
 *   IPv4 from a VIP with an EIP, to  -> from the holder: SNAT to the EIP,
 *   outside the VPC subnet              redirected out of the uplink (no
 *                                       uplink here: encapsulated as it is
 *                                       to the gateway host); from anyone
 *                                       else: dropped, counted.
 *   VLAN-tagged (VID != 0)           -> not ours: passed (a claim in one is
 *                                       counted: tagged_claims).
 *   anything else                    -> XDP_PASS, untouched.
 * A priority tag (802.1Q VID 0) is read past: such a frame is untagged.
 * xdp_uplink: attached to the host's uplink NIC.
 *   IPv4 to a bound EIP              -> DNAT to the VIP, redirected to the
 *                                       holder exactly like VIP traffic
 *                                       (encapsulated if it is elsewhere).
 *   anything else                    -> XDP_PASS, untouched.
 * xdp_underlay: attached to the host's underlay NIC.
 *   UDP to our VTEP, probe port,     -> answered (XDP_TX) with magic HVPA.
 *   magic HVPR
 *   UDP to our VTEP, VXLAN port,     -> the inner frame:
 *   flag I and our VNI                  IPv4 to a VIP held here: decapsulated,
 *                                       delivered to the holder's vNIC; held
 *                                       elsewhere: dropped (never sent on).
 *                                       IPv4 from a VIP with an EIP to outside
 *                                       the subnet, from the holder's host
 *                                       and MAC, uplink here: decapsulated,
 *                                       SNATed out of the uplink.
 *                                       IPv4 to a group MAC: the subnet of
 *                                       its source (bcast_prefixes), if it
 *                                       is a flood destination there:
 *                                       decapsulated, broadcast to the
 *                                       subnet's vNICs here only (never the
 *                                       replicator: not sent on); no such
 *                                       subnet: dropped (flood_unknown).
 *                                       Anything else: dropped, counted.
 *   anything else                    -> XDP_PASS, untouched (VRRP and other
 *                                       guest traffic is the kernel's).
 * xdp_replicator: on the replicator peer (havip-rep1).
 *   a frame with its flood_meta      -> XDP_PASS, on to tc_replicate.
 *   anything else                    -> dropped, counted (flood_unknown).
 * tc_replicate (TC ingress, TCX): on the replicator peer, after it.
 *   a frame with its flood_meta      -> too big for the underlay once
 *                                       encapsulated: dropped (too_big);
 *                                       else VXLAN pushed once and one copy
 *                                       cloned out of the underlay NIC to
 *                                       each other host of the subnet
 *                                       (remote_copies; no next hop for a
 *                                       host: no_vtep); the original dropped.
 *   anything else                    -> dropped, counted (flood_unknown).
 * Malformed rule: a frame too short or inconsistent for the header we must
 * read is passed untouched (the kernel stack will judge it) and counted in
 * GLB_CTR_PARSE_ERRORS; it never changes any state. The one exception is a
 * packet we would SNAT whose L4 header is truncated: it is dropped (and
 * counted), so a VIP address never leaks out of the uplink un-NATed.
 */
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
#include "encap.h"
#include "claim.h"
#include "nat.h"
#include "holder.h"
#include "flood.h"

/*
 * Each entry point sends its own parse failures to one `malformed:` exit at
 * the end. Besides saying it once, that keeps the counting code out of the way
 * of the forwarding path: clang then lays the good case out as fall-through
 * (with an early return there, it put a jump on the VIP path).
 */
SEC("xdp")
int xdp_vnic(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct hdr_cursor nh = { .pos = (void *)(long)ctx->data };
	struct vip_state *vs;
	struct vip_nat *nat;
	struct ethhdr *eth;
	struct iphdr *iph;
	__u16 vid;
	int proto, act;

	proto = parse_ethhdr(&nh, data_end, &eth);
	if (proto < 0)
		goto malformed;
	/* IPv4 first: the VIP path tests nothing it does not need. */
	if (proto == bpf_htons(ETH_P_IP))
		goto ipv4;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		proto = parse_vlan_tag(&nh, data_end, &vid);
		if (proto < 0)
			goto malformed;
		if (vid)
			return pass_tagged(&nh, data_end, proto);
		if (proto == bpf_htons(ETH_P_IP))
			goto ipv4;
	}
	if (proto == bpf_htons(ETH_P_ARP))
		return handle_arp(ctx, &nh, data_end, eth);
	return pass_untouched();

ipv4:
	proto = parse_iphdr(&nh, data_end, &iph);
	if (proto < 0)
		goto malformed;
	if (proto == IPPROTO_VRRP)
		observe_vrrp(ctx, nh, data_end, iph);

	vs = vip_by_vmac(eth, iph->daddr);
	if (!vs) /* a stale or other MAC: correctness never rests on it */
		vs = vip_lookup((__u8 *)&iph->daddr);
	if (vs)
		return forward_to_holder(ctx, eth, data_end, vs, ctx->ingress_ifindex);

	/* A group MAC: multicast or broadcast, maybe a broadcast domain's.
	 * Tested after the VIP lookup, which such a frame never matches (a
	 * flood destination is never a VIP, and a group MAC never a virtual
	 * MAC), so the VIP path pays nothing for it; before the EIP SNAT, so
	 * a multicast from a VIP stays in its broadcast domain. */
	if (__builtin_expect(eth->h_dest[0] & 1, 0)) {
		act = flood_decide(ctx, iph);
		if (act != FLOOD_CONTINUE) /* FLOOD_CONTINUE (-1) has every bit */
			return act & FLOOD_GO ? flood_send(ctx, act) : act;
	}
	nat = bpf_map_lookup_elem(&vip_nat, &iph->saddr);
	if (nat)
		return snat_to_uplink(ctx, &nh, data_end, eth, iph, nat);
	return pass_untouched();
malformed:
	return pass_malformed();
}

/* Traffic to an EIP goes to the VIP's holder, as if sent to the VIP. */
SEC("xdp")
int xdp_uplink(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct hdr_cursor nh = { .pos = (void *)(long)ctx->data };
	struct eip_binding *eb;
	struct ethhdr *eth;
	struct iphdr *iph;
	int proto;

	proto = parse_eth_ipv4(&nh, data_end, &eth, &iph);
	if (proto == NOT_IPV4)
		return pass_untouched();
	if (proto < 0)
		goto malformed;

	eb = bpf_map_lookup_elem(&eips, &iph->daddr);
	if (!eb)
		return pass_untouched();
	return dnat_to_holder(ctx, &nh, data_end, eth, iph, eb);
malformed:
	return pass_malformed();
}

/* VXLAN from the other hosts and their probes; the rest is the kernel's. */
SEC("xdp")
int xdp_underlay(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct hdr_cursor nh = { .pos = data };
	struct ethhdr *eth, *inner_eth;
	struct iphdr *iph, *inner;
	struct underlay_port *ul;
	struct vxlanhdr *vx;
	struct udphdr *udp;
	struct vip_state *vs;
	struct vip_nat *nat;
	int proto, outer;

	proto = parse_eth_ipv4(&nh, data_end, &eth, &iph);
	if (proto == NOT_IPV4)
		return pass_untouched();
	if (proto < 0)
		goto malformed;
	if (proto != IPPROTO_UDP)
		return pass_untouched();
	ul = underlay_port();
	if (!ul || !ul->ifindex || iph->daddr != *(__u32 *)ul->addr)
		return pass_untouched();
	if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return pass_untouched(); /* a fragment: the kernel reassembles */
	if (parse_udphdr(&nh, data_end, &udp) < 0)
		goto malformed;
	if (udp->dest == ul->probe_port)
		return answer_underlay_probe(eth, iph, udp, nh.pos, data_end);
	if (udp->dest != ul->vxlan_port)
		return pass_untouched();
	vx = nh.pos;
	if (parse_fixed(&nh, data_end, sizeof(*vx)) < 0)
		goto malformed;
	if (!(vx->flags & VXLAN_FLAG_I) || vx->vni != bpf_htonl(ul->vni << 8))
		return pass_untouched(); /* another VNI: a kernel vxlan device's */

	/* Ours: the inner frame is for a VIP or an EIP here, or dropped. */
	outer = nh.pos - data;
	proto = parse_ethhdr(&nh, data_end, &inner_eth);
	if (proto < 0)
		goto malformed;
	if (proto != bpf_htons(ETH_P_IP))
		goto unknown;
	if (parse_iphdr(&nh, data_end, &inner) < 0)
		goto malformed;
	if (inner_eth->h_dest[0] & 1)
		return flood_from_underlay(ctx, outer, inner);
	vs = vip_lookup((__u8 *)&inner->daddr);
	if (vs)
		return decap_to_holder(ctx, outer, vs);
	nat = bpf_map_lookup_elem(&vip_nat, &inner->saddr);
	if (nat && outside_subnet(inner->daddr, nat))
		return decap_to_uplink(ctx, outer, iph->saddr, inner_eth, inner, nat);
unknown:
	count_global(GLB_CTR_DECAP_UNKNOWN);
	return XDP_DROP;
malformed:
	return pass_malformed();
}

/* On the replicator peer: lets only frames xdp_vnic flooded with their
 * flood_meta through to tc_replicate (flood.h). */
SEC("xdp")
int xdp_replicator(struct xdp_md *ctx)
{
	return replicator_gate((void *)(long)ctx->data_meta, (void *)(long)ctx->data);
}

/* TC ingress on the replicator peer: one VXLAN copy per other host of the
 * subnet (flood.h). SEC("classifier"), the name aya 0.14 knows for a TC
 * program (libbpf's "tc" it does not parse). */
SEC("classifier")
int tc_replicate(struct __sk_buff *skb)
{
	return replicate(skb);
}

/* Never attached: the agent runs it through BPF_PROG_TEST_RUN to change a
 * holder atomically with claims (holder.h). */
SEC("xdp")
int xdp_holder_write(struct xdp_md *ctx)
{
	struct holder_write *w = (void *)(long)ctx->data;

	if ((void *)(w + 1) > (void *)(long)ctx->data_end)
		return XDP_ABORTED;
	return holder_write(w);
}

/*
 * The kernel lets a program call GPL-only helpers only if this string is one
 * it deems GPL-compatible. The code is GPL-2.0-only OR Apache-2.0 (SPDX line
 * above): "GPL and additional rights" is the kernel's name for GPL v2 plus
 * more rights, here the Apache-2.0 alternative.
 */
char LICENSE[] SEC("license") = "GPL and additional rights";
