/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_jhash.h: Bob Jenkins' lookup3 jhash2 as Linux defines it, and the flow
 * hashes (IPv4, IPv6) Maglev indexes with. Must equal lb_core::hash::jhash2 and
 * lb_core::FlowKey::hash bit for bit (tests/prog_run.rs checks it).
 */
#ifndef LB_JHASH_H
#define LB_JHASH_H

#include <linux/types.h>
#include <linux/in6.h>
#include <bpf/bpf_endian.h>

#define LB_JHASH_INITVAL 0xdeadbeef

static __always_inline __u32 lb_rol32(__u32 w, unsigned int s)
{
	return (w << s) | (w >> ((-s) & 31));
}

#define lb_jhash_mix(a, b, c)                  \
	{                                      \
		a -= c; a ^= lb_rol32(c, 4);  c += b; \
		b -= a; b ^= lb_rol32(a, 6);  a += c; \
		c -= b; c ^= lb_rol32(b, 8);  b += a; \
		a -= c; a ^= lb_rol32(c, 16); c += b; \
		b -= a; b ^= lb_rol32(a, 19); a += c; \
		c -= b; c ^= lb_rol32(b, 4);  b += a; \
	}

#define lb_jhash_final(a, b, c)                 \
	{                                       \
		c ^= b; c -= lb_rol32(b, 14);   \
		a ^= c; a -= lb_rol32(c, 11);   \
		b ^= a; b -= lb_rol32(a, 25);   \
		c ^= b; c -= lb_rol32(b, 16);   \
		a ^= c; a -= lb_rol32(c, 4);    \
		b ^= a; b -= lb_rol32(a, 14);   \
		c ^= b; c -= lb_rol32(b, 24);   \
	}

/* jhash2 over exactly four words: one mix round, then the fourth word. */
static __always_inline __u32 lb_jhash2_4words(__u32 w0, __u32 w1, __u32 w2, __u32 w3,
					      __u32 initval)
{
	__u32 a, b, c;

	a = b = c = LB_JHASH_INITVAL + (4 << 2) + initval;
	a += w0;
	b += w1;
	c += w2;
	lb_jhash_mix(a, b, c);
	a += w3;
	lb_jhash_final(a, b, c);
	return c;
}

/* FlowKey::hash for IPv4: jhash2([saddr, daddr, sport << 16 | dport, proto], seed),
 * every word in host order. Arguments are as on the wire. */
static __always_inline __u32 lb_flow_hash4(__be32 saddr, __be32 daddr, __be16 sport,
					   __be16 dport, __u8 proto, __u32 seed)
{
	return lb_jhash2_4words(bpf_ntohl(saddr), bpf_ntohl(daddr),
				((__u32)bpf_ntohs(sport) << 16) | bpf_ntohs(dport), proto, seed);
}

/* FlowKey::hash for IPv6: jhash2 over ten words, [saddr (4 words), daddr
 * (4 words), sport << 16 | dport, proto], every word in host order (the
 * address words are the address's bytes read big-endian). Three mix rounds
 * take the first nine words, the tenth goes into the final round, as in
 * Linux's jhash2. Arguments are as on the wire. */
static __always_inline __u32 lb_flow_hash6(const struct in6_addr *saddr,
					   const struct in6_addr *daddr, __be16 sport,
					   __be16 dport, __u8 proto, __u32 seed)
{
	__u32 a, b, c;

	a = b = c = LB_JHASH_INITVAL + (10 << 2) + seed;
	a += bpf_ntohl(saddr->in6_u.u6_addr32[0]);
	b += bpf_ntohl(saddr->in6_u.u6_addr32[1]);
	c += bpf_ntohl(saddr->in6_u.u6_addr32[2]);
	lb_jhash_mix(a, b, c);
	a += bpf_ntohl(saddr->in6_u.u6_addr32[3]);
	b += bpf_ntohl(daddr->in6_u.u6_addr32[0]);
	c += bpf_ntohl(daddr->in6_u.u6_addr32[1]);
	lb_jhash_mix(a, b, c);
	a += bpf_ntohl(daddr->in6_u.u6_addr32[2]);
	b += bpf_ntohl(daddr->in6_u.u6_addr32[3]);
	c += ((__u32)bpf_ntohs(sport) << 16) | bpf_ntohs(dport);
	lb_jhash_mix(a, b, c);
	a += proto;
	lb_jhash_final(a, b, c);
	return c;
}

#endif /* LB_JHASH_H */
