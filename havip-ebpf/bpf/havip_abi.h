/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The kernel/user ABI of havip: every map key and value, event record and
 * counter index shared by the XDP programs and the agent. havip-common mirrors
 * this file in #[repr(C)] Rust; a test compares both against the BTF of the
 * compiled object, and the asserts at the bottom pin the sizes here.
 *
 * Rules: fixed-width fields only, explicit padding, IPv4 addresses and MACs
 * as byte arrays in network order (bpftool then prints them readably).
 * Changing any layout means bumping HAVIP_ABI_VERSION, which moves the pins
 * to a new directory (/sys/fs/bpf/havip/v<N>).
 */
#ifndef HAVIP_ABI_H
#define HAVIP_ABI_H

#include <linux/types.h>
#include <linux/bpf.h>

#define HAVIP_ABI_VERSION 6

/* Default map capacities; the agent may size vips/members/tx_ports per host. */
#define HAVIP_DEFAULT_MAX_VIPS 16384
#define HAVIP_DEFAULT_MAX_MEMBERS 65536
#define HAVIP_DEFAULT_MAX_VNICS 1024
/* Capacity of the vteps map: the other hosts of the VPC. */
#define HAVIP_DEFAULT_MAX_HOSTS 4096
#define HAVIP_EVENTS_BYTES (256 * 1024)
/* Broadcast-domain subnets one host serves at once (the bcast_* maps). */
#define HAVIP_DEFAULT_MAX_SUBNETS 1024
/* Other hosts one broadcast-domain subnet's frames are replicated to, at
 * most: the head-end replication fan-out (bcast_remotes). */
#define HAVIP_MAX_REMOTE_HOSTS 64
/* VRRP adverts list the addresses they cover; we look at this many. */
#define HAVIP_VRRP_MAX_ADDRS 4

/* vips: one entry per HAVIP. Key: the VIP. Value: its slot, fixed for the
 * VIP's life; everything that changes lives in vip_state[slot]. */
struct vip_key {
	__u8 addr[4];
};

struct vip_ref {
	__u32 slot;
};

/* The virtual MAC of the VIP in slot S is 02:48:<S, 4 bytes big-endian>, so
 * a frame sent to it names its VIP's slot: forwarding needs no hash lookup. */
#define HAVIP_VMAC_0 0x02
#define HAVIP_VMAC_1 0x48

/* vip_state: array indexed by slot, one cache line per VIP. */
struct vip_state {
	/* Serialises claims (kernel) against holder clears (agent, BPF_F_LOCK).
	 * The forwarding path reads without it: a racing read can at worst send
	 * one packet to the previous holder. */
	struct bpf_spin_lock lock;
	__u32 holder_ifindex; /* 0: no holder yet, or holder cleared */
	__u8 vmac[6];         /* MAC we answer ARP for the VIP with; never changes */
	__u8 holder_mac[6];   /* the holder's guest MAC */
	__u32 slot;           /* this entry's index, also into vip_stats */
	__u64 epoch;          /* grows by one on every holder change */
	__u64 since_ns;       /* CLOCK_MONOTONIC of the claim that made the holder */
	__u64 last_claim_ns;  /* CLOCK_MONOTONIC of the last accepted claim */
	__u8 vip[4];          /* the VIP in this slot; all zero: a free slot */
	/* The underlay address (VTEP) of the holder's host when the holder is
	 * on another host: then holder_ifindex is 0 and holder_mac is the
	 * remote holder's guest MAC. All zero: the holder is local
	 * (holder_ifindex != 0) or there is none. A local claim zeroes it. */
	__u8 holder_vtep[4];
	/* With holder_vtep: the underlay next hop's MAC towards it, so the
	 * encapsulating path needs no vteps lookup (a hash lookup a packet:
	 * 0.79 of the minimal encap's rate with it, 0.92 without). All zero:
	 * not known when written, looked up in vteps. */
	__u8 holder_next_hop[6];
	__u8 _pad[2];         /* to 64 bytes: one entry, one cache line */
};

/* vip_config: array indexed by slot, the HAVIP's settings the kernel
 * applies. Apart from vip_state so the agent writes them without a
 * read-modify-write of the holder; read on the claim path only. */
struct vip_config {
	__u32 flags; /* HAVIP_VIP_F_* */
};

/* A member's claim may come from a VRRP virtual router MAC
 * 00:00:5e:00:01:{VRID} (RFC 5798 §7.3: keepalived use_vmac) instead of the
 * member's own MAC; the ingress vNIC stays the credential. The holder's MAC
 * is then that virtual MAC, and its traffic goes to it. */
#define HAVIP_VIP_F_VRRP_VMAC 0x01

/* The request xdp_holder_write takes as its frame (BPF_PROG_TEST_RUN): set
 * vip_state[slot]'s holder to (ifindex, vtep, mac) if its epoch is still
 * expect_epoch. ifindex != 0: a holder on this host (vtep must be 0);
 * ifindex 0 and vtep set: a holder on the host with that underlay address;
 * both 0: no holder. Verdict XDP_PASS: written, the epoch grew; XDP_DROP:
 * the epoch had moved (a claim came first), nothing written; XDP_ABORTED: a
 * malformed request or slot. */
struct holder_write {
	__u32 slot;
	__u32 ifindex;
	__u64 expect_epoch;
	__u8 mac[6];
	__u8 _pad[2];
	__u8 vtep[4];     /* network order */
	__u8 next_hop[6]; /* with vtep: the underlay next hop's MAC (0: look it up) */
	__u8 _pad2[6];    /* to 40 bytes */
};

/* members: who may claim a VIP. A claim must arrive on `ifindex` with both
 * the Ethernet source and the ARP sender hardware address equal to `mac`. */
struct member_key {
	__u8 vip[4];
	__u32 ifindex;
};

struct member_info {
	__u8 mac[6];
	__u8 _pad[2];
};

/* vrrp: the last VRRP advertisement each member sent for a VIP (the
 * holder's heartbeat as the platform sees it; two members advertising at once
 * is a split brain). Key: struct member_key (VIP, the member's vNIC). Only
 * members' adverts are recorded. */
struct vrrp_seen {
	__u8 advertiser[4]; /* IPv4 source of the advert */
	__u8 vrid;
	__u8 priority;
	__u8 version;
	__u8 _pad0;
	__u32 ifindex;      /* vNIC the advert arrived on */
	__u32 _pad1;
	__u64 last_ns;      /* CLOCK_MONOTONIC */
};

/* eips: EIP -> the VIP it is bound to (1:1 NAT; DNAT on the uplink). */
struct eip_key {
	__u8 addr[4];
};

struct eip_binding {
	__u8 vip[4];
};

/* vip_nat: VIP -> its EIP and VPC subnet, for traffic leaving from the VIP:
 * to a destination outside the subnet it is SNATed to the EIP. Key: vip_key. */
struct vip_nat {
	__u8 eip[4];
	__u8 subnet[4]; /* network address */
	__u8 mask[4];
};

/* uplink: one-entry array; the host's uplink NIC. ifindex 0: none yet. */
struct uplink_port {
	__u32 ifindex;
	__u8 mac[6];          /* the uplink's own MAC */
	__u8 next_hop_mac[6]; /* where frames to the outside go */
};

/* underlay: one-entry array; the host's underlay NIC, where VXLAN to and
 * from the other hosts goes. ifindex 0: no underlay (a single host). */
struct underlay_port {
	__u32 ifindex;
	__u8 mac[6];          /* the underlay NIC's own MAC: outer source */
	__u16 mtu;            /* the underlay NIC's MTU, bytes (outer IPv4 length) */
	__u8 addr[4];         /* this host's VTEP: outer source, network order */
	__u32 vni;            /* the VPC's VXLAN network identifier, host order, 24 bits */
	__u16 vxlan_port;     /* UDP destination port of VXLAN, network order (4789) */
	__u16 probe_port;     /* UDP port underlay probes are answered on, network order (4790) */
	__u8 gateway_vtep[4]; /* VTEP of the host with the uplink when not this one; else 0 */
};

/* vteps: every other host's VTEP -> the MAC of the underlay next hop
 * towards it (the agent resolves it in the neighbour table). */
struct vtep_key {
	__u8 addr[4];
};

struct vtep_info {
	__u8 next_hop_mac[6];
	__u8 _pad[2];
};

/* The VXLAN overhead: outer Ethernet 14, IPv4 20, UDP 8, VXLAN 8 (RFC 7348). */
#define HAVIP_VXLAN_OVERHEAD 50

/* An underlay probe (UDP to probe_port of a host's VTEP): magic "HVPR",
 * zero, a nonce the answer echoes. Answered in XDP with magic "HVPA". */
struct underlay_probe {
	__u8 magic[4];
	__u32 zero;
	__u64 nonce;
};
#define HAVIP_PROBE_REQUEST "HVPR"
#define HAVIP_PROBE_ANSWER "HVPA"

/*
 * Broadcast domains (the ZEC product page: a HAVIP's subnet carries VRRP
 * multicast and broadcast). A subnet in broadcast-domain mode has a slot on
 * each host that serves vNICs of it; the slot indexes bcast_subnets,
 * bcast_remotes and subnet_stats and keys bcast_ports and bcast_flood.
 */

/* bcast_vnics: a vNIC's ifindex (__u32) -> its subnet and storm bucket.
 * Only vNICs of broadcast-domain subnets have an entry. Storm control is a
 * GCRA (a token bucket kept as one time): each replicated frame costs
 * 1e9 / rate_pps ns, and at most `burst` frames may be sent ahead of the
 * rate. */
struct bcast_vnic {
	struct bpf_spin_lock lock; /* serialises the bucket between CPUs */
	__u32 subnet;   /* the subnet's slot */
	__u32 rate_pps; /* frames per second it may have replicated; 0: none */
	__u32 burst;    /* frames it may send at once above the rate */
	__u64 tat_ns;   /* the bucket: theoretical arrival time, CLOCK_MONOTONIC;
			 * the kernel's, written 0 by the agent */
	__u64 storm_drops; /* its frames over the limit, since the entry was
			    * written: who floods (the kernel's, written 0) */
};

/* bcast_subnets: array by slot; the subnet's facts the fast path reads. */
struct bcast_subnet {
	__u8 network[4];    /* network address */
	__u8 mask[4];       /* netmask */
	__u32 local_ports;  /* its vNICs on this host: entries of bcast_ports[slot] */
	__u32 remote_hosts; /* other hosts with vNICs in it: bcast_remotes[slot].count */
};

/* bcast_prefixes: LPM trie, the subnet's prefix -> its slot (__u32): which
 * subnet a frame from another host belongs to, by its IPv4 source. */
struct bcast_prefix {
	__u32 prefixlen;
	__u8 addr[4];
};

/* bcast_remotes: array by slot; the VTEPs of the other hosts with vNICs in
 * the subnet: one copy of each frame goes to each (head-end replication). */
struct bcast_remotes {
	__u32 count; /* valid entries of vteps, at most HAVIP_MAX_REMOTE_HOSTS */
	__u8 vteps[HAVIP_MAX_REMOTE_HOSTS][4];
};

/* The XDP metadata in front of a frame xdp_vnic sends to the replicator
 * port, for tc_replicate: which subnet, from which vNIC. */
struct flood_meta {
	__u32 subnet;  /* slot */
	__u32 ifindex; /* the vNIC it came from */
};

/* subnet_stats: per-CPU array by slot. */
enum subnet_counter {
	SUBNET_CTR_FLOODED = 0,   /* frames from guests replicated */
	SUBNET_CTR_LOCAL_COPIES,  /* copies to this host's vNICs of the subnet (sent and received) */
	SUBNET_CTR_REMOTE_COPIES, /* copies sent to other hosts, one per host */
	SUBNET_CTR_STORM_DROPS,   /* over the sending vNIC's storm limit: dropped */
	SUBNET_CTR_RECEIVED,      /* frames from other hosts, decapsulated and replicated here */
	SUBNET_CTR_LOCAL_ONLY,    /* IPv4 source outside the subnet: not sent to other hosts */
	SUBNET_CTR_TOO_BIG,       /* would not fit the underlay: not sent to other hosts */
	SUBNET_CTR_NO_VTEP,       /* copies not sent to another host: no next hop for its VTEP
				   * (vteps), or the underlay NIC refused the copy */
	SUBNET_CTR__MAX,
};

struct subnet_counters {
	__u64 c[SUBNET_CTR__MAX];
};

/* vip_stats: per-CPU array indexed by vip_state.slot. A HAVIP has at most
 * one EIP, so the EIP's counters live in the same slot. */
enum vip_counter {
	VIP_CTR_REDIRECT_PACKETS = 0, /* forwarded to the holder */
	VIP_CTR_REDIRECT_BYTES,
	VIP_CTR_CLAIMS_ACCEPTED,
	VIP_CTR_CLAIMS_REJECTED,
	VIP_CTR_NO_HOLDER_DROPS, /* no holder, or holder vNIC not in tx_ports */
	VIP_CTR_ARP_REPLIES,     /* ARP requests for the VIP answered in XDP */
	VIP_CTR_VRRP_ADVERTS,
	VIP_CTR_EIP_IN_PACKETS,  /* to the EIP, DNATed and sent to the holder */
	VIP_CTR_EIP_IN_BYTES,
	VIP_CTR_EIP_OUT_PACKETS, /* from the holder, SNATed out of the uplink */
	VIP_CTR_EIP_OUT_BYTES,
	VIP_CTR_EIP_OUT_NOT_HOLDER, /* from the VIP by a non-holder: dropped */
	VIP_CTR_EIP_OUT_NO_UPLINK,  /* uplink or its next hop unknown: dropped */
	VIP_CTR_EIP_TTL_EXCEEDED,   /* TTL would expire: left to the kernel (ICMP) */
	VIP_CTR_NEIGHBOUR_LOOKUPS,  /* ARP requests from the VIP for another address: passed */
	VIP_CTR_PROBES_ANSWERED,    /* RFC 5227 probes (sender 0.0.0.0) answered: the VIP is held */
	VIP_CTR_PROBES_UNANSWERED,  /* probes from the holder, or for a VIP nobody holds: dropped */
	VIP_CTR_HAIRPIN_DROPS,      /* to the VIP from the holder's own vNIC: never sent back */
	VIP_CTR_ENCAP_PACKETS,      /* VXLAN-encapsulated to the holder's (or the gateway's) host */
	VIP_CTR_ENCAP_BYTES,        /* their bytes before encapsulation */
	VIP_CTR_DECAP_PACKETS,      /* decapsulated from the underlay and delivered (holder or uplink) */
	VIP_CTR_DECAP_NOT_LOCAL,    /* decapsulated for a VIP whose holder is not here: dropped */
	VIP_CTR_TOO_BIG_ICMP,       /* would not fit the underlay, DF set: ICMP frag-needed sent */
	VIP_CTR_TOO_BIG_DROPS,      /* would not fit the underlay, DF clear (or no room to answer): dropped */
	VIP_CTR_NO_VTEP_DROPS,      /* remote holder, but no underlay or no next hop for its VTEP: dropped */
	VIP_CTR_EIP_OUT_TO_GATEWAY, /* from the holder to outside, encapsulated to the gateway host */
	VIP_CTR__MAX,
};

struct vip_counters {
	__u64 c[VIP_CTR__MAX];
};

/* global_stats: per-CPU array indexed by enum global_counter. */
enum global_counter {
	GLB_CTR_PASSED = 0,   /* not ours: handed to the kernel untouched */
	GLB_CTR_PARSE_ERRORS, /* truncated/malformed Ethernet, ARP, IPv4 or VRRP: passed untouched */
	GLB_CTR_EVENTS_LOST,  /* ring buffer full (agent stopped or slow) */
	GLB_CTR_TAGGED_CLAIMS, /* claims in a VLAN-tagged frame (VID != 0): not ours, passed */
	GLB_CTR_UNDERLAY_PROBES, /* underlay probes answered (xdp_underlay) */
	GLB_CTR_DECAP_UNKNOWN, /* VXLAN of our VNI to us, for no VIP or EIP here: dropped */
	GLB_CTR_FLOOD_UNKNOWN, /* broadcast from the underlay for no subnet here, or at the
				* replicator without its metadata: dropped */
	GLB_CTR__MAX,
};

/* events: ring buffer records. */
enum havip_event_kind {
	HAVIP_EV_CLAIM = 1,          /* a member claimed; `changed` says whether the holder moved */
	HAVIP_EV_CLAIM_REJECTED = 2, /* a claim that was dropped; `reason` says why */
};

enum havip_reject_reason {
	HAVIP_REJECT_NONE = 0,
	HAVIP_REJECT_NOT_MEMBER = 1,   /* the vNIC is not a member of the VIP */
	HAVIP_REJECT_MAC_MISMATCH = 2, /* member vNIC, but a MAC that is not the member's */
};

struct havip_event {
	__u64 ts_ns;        /* CLOCK_MONOTONIC */
	__u64 epoch;        /* the VIP's epoch after this claim */
	__u32 kind;         /* enum havip_event_kind */
	__u8 vip[4];
	__u32 ifindex;      /* vNIC the claim arrived on */
	__u32 prev_ifindex; /* holder before the claim (0: none) */
	__u8 mac[6];        /* Ethernet source of the claim */
	__u8 reason;        /* enum havip_reject_reason */
	__u8 changed;       /* 1: the claim moved the holder */
};

_Static_assert(sizeof(struct vip_key) == 4, "vip_key layout");
_Static_assert(sizeof(struct vip_ref) == 4, "vip_ref layout");
_Static_assert(sizeof(struct vip_state) == 64, "vip_state layout");
_Static_assert(__builtin_offsetof(struct vip_state, epoch) == 24, "vip_state layout");
_Static_assert(__builtin_offsetof(struct vip_state, vip) == 48, "vip_state layout");
_Static_assert(__builtin_offsetof(struct vip_state, holder_vtep) == 52, "vip_state layout");
_Static_assert(sizeof(struct vip_config) == 4, "vip_config layout");
_Static_assert(sizeof(struct holder_write) == 40, "holder_write layout");
_Static_assert(__builtin_offsetof(struct vip_state, holder_next_hop) == 56, "vip_state layout");
_Static_assert(sizeof(struct member_key) == 8, "member_key layout");
_Static_assert(sizeof(struct member_info) == 8, "member_info layout");
_Static_assert(sizeof(struct vrrp_seen) == 24, "vrrp_seen layout");
_Static_assert(sizeof(struct eip_key) == 4, "eip_key layout");
_Static_assert(sizeof(struct eip_binding) == 4, "eip_binding layout");
_Static_assert(sizeof(struct vip_nat) == 12, "vip_nat layout");
_Static_assert(sizeof(struct uplink_port) == 16, "uplink_port layout");
_Static_assert(sizeof(struct underlay_port) == 28, "underlay_port layout");
_Static_assert(sizeof(struct vtep_key) == 4, "vtep_key layout");
_Static_assert(sizeof(struct vtep_info) == 8, "vtep_info layout");
_Static_assert(sizeof(struct underlay_probe) == 16, "underlay_probe layout");
_Static_assert(sizeof(struct vip_counters) == 8 * VIP_CTR__MAX, "vip_counters layout");
_Static_assert(sizeof(struct havip_event) == 40, "havip_event layout");
_Static_assert(sizeof(struct bcast_vnic) == 32, "bcast_vnic layout");
_Static_assert(sizeof(struct bcast_subnet) == 16, "bcast_subnet layout");
_Static_assert(sizeof(struct bcast_prefix) == 8, "bcast_prefix layout");
_Static_assert(sizeof(struct bcast_remotes) == 4 + 4 * HAVIP_MAX_REMOTE_HOSTS, "bcast_remotes layout");
_Static_assert(sizeof(struct flood_meta) == 8, "flood_meta layout");
_Static_assert(sizeof(struct subnet_counters) == 8 * SUBNET_CTR__MAX, "subnet_counters layout");

#endif /* HAVIP_ABI_H */
