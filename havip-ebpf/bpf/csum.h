/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * csum.h: incremental Internet checksum updates (RFC 1624), for rewriting an
 * address without summing the packet again.
 */
#ifndef HAVIP_CSUM_H
#define HAVIP_CSUM_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

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

#endif /* HAVIP_CSUM_H */
