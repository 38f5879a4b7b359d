// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * Helper programs for the lab and the benchmark, never for production:
 *   xdp_pass  - on a veth peer, so frames redirected into the veth arrive
 *               natively (without an XDP program or GRO on the peer, veth
 *               drops redirected frames silently).
 *   xdp_sink  - counts and drops: proves delivery in the benchmark.
 *   xdp_limit - the practical XDP ceiling: swap in fixed MACs and redirect
 *               through a devmap, nothing else.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sink_count SEC(".maps");

/* limit_cfg[0]: the egress ifindex; the MACs written are limit_macs. */
struct limit_cfg {
	__u32 ifindex;
	__u8 dst[ETH_ALEN];
	__u8 src[ETH_ALEN];
	__u8 _pad[2];
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
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 zero = 0;
	struct limit_cfg *cfg;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&limit_config, &zero);
	if (!cfg)
		return XDP_PASS;
	__builtin_memcpy(eth->h_dest, cfg->dst, ETH_ALEN);
	__builtin_memcpy(eth->h_source, cfg->src, ETH_ALEN);
	return bpf_redirect_map(&limit_ports, cfg->ifindex, XDP_DROP);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
