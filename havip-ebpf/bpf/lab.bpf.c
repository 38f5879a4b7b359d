// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * Helper programs for the lab and the benchmark, never for production:
 *   xdp_pass  - on a veth peer, so frames redirected into the veth arrive
 *               natively (without an XDP program or GRO on the peer, veth
 *               drops redirected frames silently).
 *   xdp_sink  - counts and drops: proves delivery in the benchmark.
 *   xdp_limit - the practical XDP ceiling: swap in fixed MACs and redirect
 *               through a devmap, nothing else.
 * Benchmark only (havip-bench):
 *   xdp_sink_stamp   - xdp_sink that also stamps the first packet after
 *                      userspace zeroes sink_first_ns: the far end of the
 *                      re-point latency.
 *   xdp_restore_pass - rewrites the frame from frame_template, then XDP_PASS:
 *                      injects live frames into the kernel stack, whose
 *                      forwarding (TTL, checksum) would otherwise wear down
 *                      the recycled live-frame pages.
 *   xdp_harness      - rewrites the frame from frame_template, then tail-calls
 *                      harness_target[0]: a plain test run repeated over a
 *                      program that changes the frame (ARP answer) measures
 *                      the same branch every time.
 *   xdp_spray        - sets the IPv4 destination to the next of spray_config's
 *                      addresses (and the destination MAC to its virtual
 *                      MAC), then tail-calls harness_target[0]: live
 *                      traffic spread over many VIPs from one frame.
 *   xdp_lookup       - one lookup of the IPv4 destination in probe_vips, a
 *                      hash shaped like havip's vips map: what that lookup
 *                      alone costs.
 *   xdp_generate     - rewrites the frame from frame_template, then redirects
 *                      it through gen_port[0] (a veth): live frames from one
 *                      core become real traffic arriving at the veth's peer,
 *                      where the program under test runs in that veth's
 *                      NAPI poll on another core (the bench's real-traffic
 *                      part).
 *   xdp_encap_limit  - the practical ceiling of encapsulation: xdp_limit's
 *                      MAC rewrite, then bpf_xdp_adjust_head(-50), the outer
 *                      Ethernet/IPv4/UDP/VXLAN headers copied from
 *                      encap_limit_config (a template, nothing computed per
 *                      packet), devmap redirect (the bench's encap part).
 *   xdp_decap_limit  - the same for decapsulation: bpf_xdp_adjust_head(+50)
 *                      without reading the outer headers, xdp_limit's MAC
 *                      rewrite, devmap redirect.
 *   xdp_bcast_limit  - the practical ceiling of replication: one
 *                      bpf_redirect_map(bcast_limit_ports, 0, BPF_F_BROADCAST
 *                      | BPF_F_EXCLUDE_INGRESS) and nothing else (the bench's
 *                      flood part; it sizes the devmap).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "havip_abi.h"
#include "parse.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sink_count SEC(".maps");

/* limit_config[0]: the egress ifindex and the MACs xdp_limit writes. */
struct limit_cfg {
	__u8 dst[ETH_ALEN]; /* with src: wire order, copied as two words */
	__u8 src[ETH_ALEN];
	__u32 ifindex;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct limit_cfg);
} limit_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} limit_ports SEC(".maps");

/* Every benchmark frame is this long (the Ethernet minimum with FCS). */
#define BENCH_FRAME_LEN 64

struct frame {
	__u8 b[BENCH_FRAME_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct frame);
} frame_template SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} harness_target SEC(".maps");

/* CLOCK_MONOTONIC of the first packet xdp_sink_stamp saw since it was zeroed. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sink_first_ns SEC(".maps");

/* xdp_spray sends to base, base + 1, ... base + n - 1, base, ... each at the
 * virtual MAC of its slot (first_slot, first_slot + 1, ...), as clients that
 * resolved the VIPs by ARP do. */
struct spray_cfg {
	__u32 base; /* host byte order */
	__u32 n;
	__u32 next;
	__u32 first_slot;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct spray_cfg);
} spray_config SEC(".maps");

/* Shaped like havip's vips map (its key and value types, not a copy). The
 * bench sizes it like vips when it loads the object; everyone else gets one
 * entry. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct vip_key);
	__type(value, struct vip_ref);
} probe_vips SEC(".maps");

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int xdp_sink(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *c = bpf_map_lookup_elem(&sink_count, &zero);

	if (c)
		*c += 1;
	return XDP_DROP;
}

SEC("xdp")
int xdp_limit(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct hdr_cursor nh = { .pos = (void *)(long)ctx->data };
	struct ethhdr *eth;
	__u32 zero = 0;
	struct limit_cfg *cfg;

	/* The bounds check alone: the limit reads no EtherType. */
	eth = nh.pos;
	if (parse_fixed(&nh, data_end, sizeof(*eth)) < 0)
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&limit_config, &zero);
	if (!cfg)
		return XDP_PASS;
	/* Word copies, as havip's rewrite_macs does: the limit gets every trick. */
	*(__u64 *)eth = *(const __u64 *)cfg->dst;
	*(__u32 *)((__u8 *)eth + 8) = *(const __u32 *)(cfg->dst + 8);
	return bpf_redirect_map(&limit_ports, cfg->ifindex, XDP_DROP);
}

SEC("xdp")
int xdp_sink_stamp(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *c = bpf_map_lookup_elem(&sink_count, &zero);
	__u64 *first = bpf_map_lookup_elem(&sink_first_ns, &zero);

	if (c)
		*c += 1;
	if (first && !*first)
		*first = bpf_ktime_get_ns();
	return XDP_DROP;
}

static __always_inline int restore_frame(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct frame *t;

	if (data + BENCH_FRAME_LEN > data_end)
		return -1;
	t = bpf_map_lookup_elem(&frame_template, &zero);
	if (!t)
		return -1;
	__builtin_memcpy(data, t->b, BENCH_FRAME_LEN);
	return 0;
}

SEC("xdp")
int xdp_restore_pass(struct xdp_md *ctx)
{
	if (restore_frame(ctx))
		return XDP_ABORTED;
	return XDP_PASS;
}

SEC("xdp")
int xdp_harness(struct xdp_md *ctx)
{
	if (restore_frame(ctx))
		return XDP_ABORTED;
	bpf_tail_call(ctx, &harness_target, 0);
	/* No target installed. */
	return XDP_ABORTED;
}

SEC("xdp")
int xdp_spray(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = data + sizeof(struct ethhdr);
	__u32 zero = 0, k, slot;
	struct spray_cfg *cfg;

	if ((void *)(iph + 1) > data_end)
		return XDP_ABORTED;
	cfg = bpf_map_lookup_elem(&spray_config, &zero);
	if (!cfg || !cfg->n)
		return XDP_ABORTED;
	k = cfg->next % cfg->n;
	iph->daddr = bpf_htonl(cfg->base + k);
	/* All six bytes: a recycled live frame comes back addressed to the
	 * holder, so the prefix must be written too, or havip would find every
	 * VIP by address instead (the bench measured that until ABI 4). */
	slot = bpf_htonl(cfg->first_slot + k);
	eth->h_dest[0] = HAVIP_VMAC_0;
	eth->h_dest[1] = HAVIP_VMAC_1;
	__builtin_memcpy(&eth->h_dest[2], &slot, 4);
	cfg->next += 1;
	bpf_tail_call(ctx, &harness_target, 0);
	return XDP_ABORTED;
}

/* gen_port[0]: the veth xdp_generate sends into. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} gen_port SEC(".maps");

SEC("xdp")
int xdp_generate(struct xdp_md *ctx)
{
	if (restore_frame(ctx))
		return XDP_ABORTED;
	return bpf_redirect_map(&gen_port, 0, XDP_DROP);
}

SEC("xdp")
int xdp_lookup(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *iph = data + sizeof(struct ethhdr);

	if ((void *)(iph + 1) > data_end)
		return XDP_ABORTED;
	if (!bpf_map_lookup_elem(&probe_vips, &iph->daddr))
		return XDP_ABORTED;
	return XDP_PASS;
}

/* encap_limit_config[0]: the outer headers xdp_encap_limit writes, wire
 * order (lengths and checksum for the bench's frame size baked in). */
struct encap_limit_cfg {
	__u8 outer[HAVIP_VXLAN_OVERHEAD];
	__u8 _pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct encap_limit_cfg);
} encap_limit_config SEC(".maps");

/* xdp_limit's rewrite: the inner MACs from limit_config, word copies. */
static __always_inline int limit_macs(void *data, void *data_end, struct limit_cfg *cfg)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	*(__u64 *)eth = *(const __u64 *)cfg->dst;
	*(__u32 *)((__u8 *)eth + 8) = *(const __u32 *)(cfg->dst + 8);
	return 0;
}

SEC("xdp")
int xdp_encap_limit(struct xdp_md *ctx)
{
	struct encap_limit_cfg *outer;
	struct limit_cfg *cfg;
	void *data, *data_end;
	__u32 zero = 0;

	cfg = bpf_map_lookup_elem(&limit_config, &zero);
	outer = bpf_map_lookup_elem(&encap_limit_config, &zero);
	if (!cfg || !outer)
		return XDP_ABORTED;
	if (limit_macs((void *)(long)ctx->data, (void *)(long)ctx->data_end, cfg))
		return XDP_ABORTED;
	if (bpf_xdp_adjust_head(ctx, -HAVIP_VXLAN_OVERHEAD))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + HAVIP_VXLAN_OVERHEAD > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, outer->outer, HAVIP_VXLAN_OVERHEAD);
	return bpf_redirect_map(&limit_ports, cfg->ifindex, XDP_DROP);
}

SEC("xdp")
int xdp_decap_limit(struct xdp_md *ctx)
{
	struct limit_cfg *cfg;
	__u32 zero = 0;

	cfg = bpf_map_lookup_elem(&limit_config, &zero);
	if (!cfg)
		return XDP_ABORTED;
	if (bpf_xdp_adjust_head(ctx, HAVIP_VXLAN_OVERHEAD))
		return XDP_ABORTED;
	if (limit_macs((void *)(long)ctx->data, (void *)(long)ctx->data_end, cfg))
		return XDP_ABORTED;
	return bpf_redirect_map(&limit_ports, cfg->ifindex, XDP_DROP);
}

/* bcast_limit_ports: where xdp_bcast_limit sends a copy each (but the
 * ingress). A broadcast over a DEVMAP_HASH walks all its buckets, so the
 * bench loads it at havip's per-subnet devmap size and small. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} bcast_limit_ports SEC(".maps");

SEC("xdp")
int xdp_bcast_limit(struct xdp_md *ctx)
{
	return bpf_redirect_map(&bcast_limit_ports, 0, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS);
}

/* GPL v2 plus the Apache-2.0 alternative: see the end of havip.bpf.c. */
char LICENSE[] SEC("license") = "GPL and additional rights";
