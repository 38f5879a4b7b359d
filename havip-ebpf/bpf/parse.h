/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * parse.h: the one place that knows where each header starts and checks that
 * it lies inside the frame, in the style of xdp-tools' parsing_helpers.h. A
 * struct hdr_cursor walks the frame; each parse_*() checks its header's bounds
 * against data_end (the verifier insists on it), hands the header out and
 * moves the cursor past it, or returns -1 and leaves the cursor alone. Those
 * for headers that name the next protocol return it, as in xdp-tools.
 * They count nothing and judge nothing: what a failed parse means (pass, drop,
 * which counter) is the caller's call.
 */
#ifndef HAVIP_PARSE_H
#define HAVIP_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define IPPROTO_VRRP 112
#define ARPOP_REQUEST 1
#define ARPOP_REPLY 2
#define ARPHRD_ETHER 1
#define IP_OFFSET 0x1fff /* fragment offset bits of iphdr.frag_off */

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

/* Where the next header starts. */
struct hdr_cursor {
	void *pos;
};

/* Moves the cursor past a header of `size` bytes, or returns -1 if the frame
 * ends first. Failure is -1, not a NULL header: the compiler cannot know that
 * ctx->data is never NULL and would test for it on the fast path. */
static __always_inline int parse_fixed(struct hdr_cursor *nh, void *data_end, __u32 size)
{
	if (nh->pos + size > data_end)
		return -1;
	nh->pos += size;
	return 0;
}

/* An 802.1Q tag: the TCI (priority, DEI, VID) and the EtherType inside. */
struct vlan_tag {
	__be16 tci;
	__be16 proto;
} __attribute__((packed));

#define VLAN_VID_MASK 0x0fff

/* Returns the EtherType (network order). */
static __always_inline int parse_ethhdr(struct hdr_cursor *nh, void *data_end,
					struct ethhdr **ethhdr)
{
	struct ethhdr *eth = nh->pos;

	if (parse_fixed(nh, data_end, sizeof(*eth)) < 0)
		return -1;
	*ethhdr = eth;
	/* One 2-byte load: through the packed struct clang reads it bytewise. */
	return *(const __u16 *)((const __u8 *)eth + 12);
}

/* After an EtherType of ETH_P_8021Q: returns the EtherType inside the tag,
 * `*vid` its VLAN id (host order). A vNIC carries untagged frames; VID 0 is
 * a priority tag, which means untagged (IEEE 802.1Q §6.9.1). Called only off
 * the IPv4 path, so untagged traffic never pays for tags. */
static __always_inline int parse_vlan_tag(struct hdr_cursor *nh, void *data_end, __u16 *vid)
{
	struct vlan_tag *tag = nh->pos;

	if (parse_fixed(nh, data_end, sizeof(*tag)) < 0)
		return -1;
	*vid = bpf_ntohs(tag->tci) & VLAN_VID_MASK;
	return tag->proto;
}

/* Returns the IP protocol; -1 if the fixed header is cut short or is not a
 * sane IPv4 header. The cursor moves past the options (ihl * 4: the only
 * place that computes it) without checking that they are all there: nothing
 * reads them, and the next parse_*() checks its own header's end, which lies
 * beyond them. */
static __always_inline int parse_iphdr(struct hdr_cursor *nh, void *data_end,
				       struct iphdr **iphdr)
{
	struct iphdr *iph = nh->pos;

	if ((void *)(iph + 1) > data_end || iph->version != 4 || iph->ihl < 5)
		return -1;
	nh->pos = (void *)iph + iph->ihl * 4;
	*iphdr = iph;
	return iph->protocol;
}

/* Returned by parse_eth_ipv4 for a frame of another EtherType. */
#define NOT_IPV4 (-2)

/* An untagged Ethernet frame carrying IPv4 (the uplink and the underlay
 * carry no tags): returns the IP protocol, NOT_IPV4 for another EtherType,
 * -1 if either header is cut short or not sane. */
static __always_inline int parse_eth_ipv4(struct hdr_cursor *nh, void *data_end,
					  struct ethhdr **ethhdr, struct iphdr **iphdr)
{
	int proto = parse_ethhdr(nh, data_end, ethhdr);

	if (proto < 0)
		return -1;
	if (proto != bpf_htons(ETH_P_IP))
		return NOT_IPV4;
	return parse_iphdr(nh, data_end, iphdr);
}

static __always_inline int parse_arphdr(struct hdr_cursor *nh, void *data_end,
					struct arp_eth_ipv4 **arphdr)
{
	*arphdr = nh->pos;
	return parse_fixed(nh, data_end, sizeof(**arphdr));
}

/* The cursor is left on the first address of the advert. */
static __always_inline int parse_vrrphdr(struct hdr_cursor *nh, void *data_end,
					 struct vrrp_hdr **vrrphdr)
{
	*vrrphdr = nh->pos;
	return parse_fixed(nh, data_end, sizeof(**vrrphdr));
}

static __always_inline int parse_tcphdr(struct hdr_cursor *nh, void *data_end,
					struct tcphdr **tcphdr)
{
	*tcphdr = nh->pos;
	return parse_fixed(nh, data_end, sizeof(**tcphdr));
}

static __always_inline int parse_udphdr(struct hdr_cursor *nh, void *data_end,
					struct udphdr **udphdr)
{
	*udphdr = nh->pos;
	return parse_fixed(nh, data_end, sizeof(**udphdr));
}

#endif /* HAVIP_PARSE_H */
