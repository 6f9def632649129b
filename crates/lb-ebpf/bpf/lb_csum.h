/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_csum.h: incremental Internet checksum updates (RFC 1624) of values
 * stored in a packet by hand, where bpf_l3/l4_csum_replace do not fit (a
 * checksum inside an ICMP error's quote, the ICMP checksum itself).
 */
#ifndef LB_CSUM_H
#define LB_CSUM_H

#include <linux/types.h>

static __always_inline __u16 lb_csum_fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* RFC 1624 eqn. 3 for one 16-bit word: HC' = ~(~HC + ~m + m'). Values as
 * they sit in memory; one's-complement sums do not care about byte order. */
static __always_inline __u16 lb_csum_upd16(__u16 csum, __u16 old, __u16 new)
{
	return ~lb_csum_fold((__u32)(__u16)~csum + (__u16)~old + new);
}

static __always_inline __u16 lb_csum_upd32(__u16 csum, __u32 old, __u32 new)
{
	csum = lb_csum_upd16(csum, (__u16)old, (__u16)new);
	return lb_csum_upd16(csum, (__u16)(old >> 16), (__u16)(new >> 16));
}

#endif /* LB_CSUM_H */
