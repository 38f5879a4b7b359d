/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * maps.h: every map of the havip object, and nothing else. Key and value
 * types come from havip_abi.h; names, types, sizes and max_entries are ABI
 * (the agent finds the maps pinned by name under /sys/fs/bpf/havip/v<N>), so
 * changing one here means bumping HAVIP_ABI_VERSION there.
 */
#ifndef HAVIP_MAPS_H
#define HAVIP_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "havip_abi.h"

/* VIP -> its slot. Only for lookups by address; the fast path uses the slot
 * in the virtual MAC and reads vip_state directly. */
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

/* Who may claim which VIP, on which vNIC, with which MAC. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HAVIP_DEFAULT_MAX_MEMBERS);
	__type(key, struct member_key);
	__type(value, struct member_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} members SEC(".maps");

/* Slot -> the HAVIP's settings (claim path only). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HAVIP_DEFAULT_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct vip_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_config SEC(".maps");

/* The last VRRP advert each member sent per VIP: the holder's heartbeat,
 * and two at once is a split brain. One entry per membership at most. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HAVIP_DEFAULT_MAX_MEMBERS);
	__type(key, struct member_key);
	__type(value, struct vrrp_seen);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vrrp SEC(".maps");

/* EIP -> VIP, for DNAT on the uplink. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HAVIP_DEFAULT_MAX_VIPS);
	__type(key, struct eip_key);
	__type(value, struct eip_binding);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} eips SEC(".maps");

/* VIP -> EIP and VPC subnet, for SNAT on the way out. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HAVIP_DEFAULT_MAX_VIPS);
	__type(key, struct vip_key);
	__type(value, struct vip_nat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_nat SEC(".maps");

/* The host's uplink NIC and its next hop. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct uplink_port);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} uplink SEC(".maps");

/* The host's underlay NIC: VXLAN to and from the other hosts. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct underlay_port);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} underlay SEC(".maps");

/* Every other host's VTEP -> the underlay next hop's MAC. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HAVIP_DEFAULT_MAX_HOSTS);
	__type(key, struct vtep_key);
	__type(value, struct vtep_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vteps SEC(".maps");

/* Every vNIC, the uplink and the underlay NIC: where bpf_redirect_map
 * sends frames. */
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

/* Claim events for the agent (struct havip_event records). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, HAVIP_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

/*
 * Broadcast domains (flood.h). Slots index bcast_subnets, bcast_remotes and
 * subnet_stats and key bcast_ports and bcast_flood; the agent gives each
 * broadcast-domain subnet with vNICs on this host one.
 */

/* A vNIC of a broadcast-domain subnet -> its slot and storm bucket. A vNIC
 * without an entry is in a unicast subnet: its frames go on as before. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HAVIP_DEFAULT_MAX_VNICS);
	__type(key, __u32);
	__type(value, struct bcast_vnic);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bcast_vnics SEC(".maps");

/* Slot -> the subnet's network, mask and how many ports it has here and
 * hosts elsewhere. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HAVIP_DEFAULT_MAX_SUBNETS);
	__type(key, __u32);
	__type(value, struct bcast_subnet);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bcast_subnets SEC(".maps");

/* The subnet's prefix -> its slot: a frame from another host is placed in
 * its subnet by its inner IPv4 source. An LPM trie must be created with
 * BPF_F_NO_PREALLOC. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, HAVIP_DEFAULT_MAX_SUBNETS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bcast_prefix);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bcast_prefixes SEC(".maps");

/* Slot -> the VTEPs of the other hosts with vNICs in the subnet. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HAVIP_DEFAULT_MAX_SUBNETS);
	__type(key, __u32);
	__type(value, struct bcast_remotes);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bcast_remotes SEC(".maps");

/*
 * The inner maps of bcast_ports and bcast_flood: one devmap per (subnet,
 * kind), made by the agent. The kernel checks an inserted inner map against
 * this template (bpf_map_meta_equal): the same type, key and value size,
 * flags and max_entries (a devmap takes no BPF_F_INNER_MAP, so its size is
 * fixed here, whatever the agent's --max-vnics). key_size/value_size rather
 * than __type: the kernel has no BTF for devmap values.
 */
struct bcast_devmap {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, HAVIP_DEFAULT_MAX_VNICS);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct bpf_devmap_val));
};

/* Slot -> a devmap of the subnet's vNICs on this host: where a frame from
 * another host, or one that stays on this host, is broadcast. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, HAVIP_DEFAULT_MAX_SUBNETS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct bcast_devmap); /* last: a flexible array */
} bcast_ports SEC(".maps");

/* Slot -> the same vNICs plus the replicator port (REPLICATOR_PORT): where
 * a guest's frame is broadcast when other hosts have vNICs in the subnet. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, HAVIP_DEFAULT_MAX_SUBNETS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct bcast_devmap); /* last: a flexible array */
} bcast_flood SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HAVIP_DEFAULT_MAX_SUBNETS);
	__type(key, __u32);
	__type(value, struct subnet_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} subnet_stats SEC(".maps");

#endif /* HAVIP_MAPS_H */
