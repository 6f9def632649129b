/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_icmp6_quote.h: an ICMPv6 error (destination unreachable, packet too
 * big, time exceeded) quoting a TCP/UDP packet a dataplane translated, and
 * the rewrite that makes it about the packet the client sent (lb_icmp_quote.h's
 * IPv6 twin): the quoted source back to the client (address and port), the
 * quoted destination back to the frontend, the outer destination to the
 * client, and an error the backend itself sent comes from the frontend.
 *
 * Checksums are updated incrementally (RFC 1624): the quoted TCP/UDP one
 * when it was quoted (a zero UDP checksum stays zero), and the ICMPv6 one,
 * which, unlike ICMP's, covers a pseudo-header with the outer addresses
 * (RFC 4443 2.3): a rewritten outer address counts as well as every
 * rewritten quoted word. IPv6 has no header checksum.
 *
 * Only errors without extension headers, outside and in the quote, are
 * translated (as lb-userspace's path/icmp.rs). Packet bytes are read with
 * bpf_skb_load_bytes, so a non-linear skb needs no pull.
 *
 * Used by tc (lb_icmp6.h) and by the DSR backend side (lb_dsr_backend.c);
 * it defines no map, so either object can include it.
 */
#ifndef LB_ICMP6_QUOTE_H
#define LB_ICMP6_QUOTE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/pkt_cls.h>
#include <stdbool.h>
#include <stddef.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_csum.h"
#include "lb_pkt.h"

#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif
/* ICMPv6 error types (RFC 4443). */
#define LB_ICMP6_DEST_UNREACH  1
#define LB_ICMP6_PACKET_TOO_BIG 2
#define LB_ICMP6_TIME_EXCEEDED 3

/* The error's offsets from the start of the frame. */
#define LB_ICMP6_OFF    (ETH_HLEN + 40)
#define LB_ICMP6_IN_OFF (LB_ICMP6_OFF + 8)
#define LB_ICMP6_IN_L4  (LB_ICMP6_IN_OFF + 40)

/* An ICMPv6 error quoting `client:q_port -> be_addr:be_port`. */
struct lb_icmp6_quote {
	struct in6_addr out_saddr; /* who sent the error */
	struct in6_addr out_daddr; /* whom it is for */
	struct in6_addr client;    /* the quoted source */
	struct in6_addr be_addr;   /* the quoted destination */
	__u32 l4_csum_off;         /* 0: no quoted L4 checksum (or a zero UDP one) */
	__be16 q_port, be_port;
	__u16 icmp_csum, l4_csum;
	__u8 proto;
};

/* The translated error: quoted source (and outer destination) `client`
 * port `cport`, quoted destination `fe_addr` port `fe_port`. */
struct lb_icmp6_xlate {
	struct in6_addr client;
	struct in6_addr fe_addr;
	__be16 cport, fe_port;
	__u8 out_dst; /* 1: the outer destination becomes `client` too */
};

/* The folded one's-complement difference of replacing the 16-byte values
 * at old1 and old2 with those at new1 and new2 (pointers to the stack or a
 * map value), for lb_csum_add; 0 when the helper fails (callers check the
 * addresses first). */
static __always_inline __u16 lb_csum_diff2x128(const struct in6_addr *old1,
					       const struct in6_addr *new1,
					       const struct in6_addr *old2,
					       const struct in6_addr *new2)
{
	__s64 d = bpf_csum_diff((__be32 *)old1, 16, (__be32 *)new1, 16, 0);

	if (d < 0)
		return 0;
	d = bpf_csum_diff((__be32 *)old2, 16, (__be32 *)new2, 16, (__u32)d);
	return d < 0 ? 0 : lb_csum_fold((__u32)d);
}

/* csum with a folded difference `d` added (RFC 1624: ~(~HC + d)). */
static __always_inline __u16 lb_csum_add(__u16 csum, __u16 d)
{
	return ~lb_csum_fold((__u32)(__u16)~csum + d);
}

/* Parses skb (from its Ethernet header) as an ICMPv6 error quoting an
 * IPv6 TCP/UDP packet (no extension headers, at least 8 bytes of L4). */
static __always_inline bool lb_icmp6_quote(struct __sk_buff *skb, struct lb_icmp6_quote *q)
{
	struct ethhdr eth;
	__u8 hdr[8];
	__be16 ports[2];
	__u16 c;

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0 ||
	    eth.h_proto != bpf_htons(ETH_P_IPV6))
		return false;
	/* Outer: version and next header. */
	if (bpf_skb_load_bytes(skb, ETH_HLEN, hdr, sizeof(hdr)) < 0 || (hdr[0] >> 4) != 6 ||
	    hdr[6] != IPPROTO_ICMPV6)
		return false;
	if (bpf_skb_load_bytes(skb, LB_ICMP6_OFF, hdr, 4) < 0)
		return false;
	if (hdr[0] != LB_ICMP6_DEST_UNREACH && hdr[0] != LB_ICMP6_PACKET_TOO_BIG &&
	    hdr[0] != LB_ICMP6_TIME_EXCEEDED)
		return false;
	__builtin_memcpy(&q->icmp_csum, &hdr[2], 2);
	/* The quote: version and next header. */
	if (bpf_skb_load_bytes(skb, LB_ICMP6_IN_OFF, hdr, sizeof(hdr)) < 0 ||
	    (hdr[0] >> 4) != 6 || (hdr[6] != IPPROTO_TCP && hdr[6] != IPPROTO_UDP))
		return false;
	q->proto = hdr[6];
	if (bpf_skb_load_bytes(skb, LB_ICMP6_IN_L4, ports, sizeof(ports)) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, saddr), &q->out_saddr,
			       16) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, daddr), &q->out_daddr,
			       16) < 0 ||
	    bpf_skb_load_bytes(skb, LB_ICMP6_IN_OFF + offsetof(struct ipv6hdr, saddr), &q->client,
			       16) < 0 ||
	    bpf_skb_load_bytes(skb, LB_ICMP6_IN_OFF + offsetof(struct ipv6hdr, daddr), &q->be_addr,
			       16) < 0)
		return false;
	q->q_port = ports[0];
	q->be_port = ports[1];
	q->l4_csum = 0;
	q->l4_csum_off = 0;
	if (q->proto == IPPROTO_UDP) {
		if (bpf_skb_load_bytes(skb, LB_ICMP6_IN_L4 + 6, &c, 2) == 0 && c != 0) {
			q->l4_csum = c;
			q->l4_csum_off = LB_ICMP6_IN_L4 + 6;
		}
	} else if (bpf_skb_load_bytes(skb, LB_ICMP6_IN_L4 + 16, &c, 2) == 0) {
		q->l4_csum = c;
		q->l4_csum_off = LB_ICMP6_IN_L4 + 16;
	}
	return true;
}

/* Rewrites the error `q` as `x` says. Returns TC_ACT_OK or TC_ACT_SHOT
 * when a store failed. */
static __noinline __attribute__((unused)) int
lb_icmp6_quote_rewrite(struct __sk_buff *skb, const struct lb_icmp6_quote *q,
		       const struct lb_icmp6_xlate *x)
{
	__u16 icmp_csum = q->icmp_csum, l4_csum = q->l4_csum, d;
	bool from_backend = lb6_addr_eq(&q->out_saddr, &q->be_addr);

	/* The quote: addresses (in the quoted L4 checksum's pseudo-header
	 * too) and ports. */
	d = lb_csum_diff2x128(&q->client, &x->client, &q->be_addr, &x->fe_addr);
	icmp_csum = lb_csum_add(icmp_csum, d);
	icmp_csum = lb_csum_upd16(icmp_csum, q->q_port, x->cport);
	icmp_csum = lb_csum_upd16(icmp_csum, q->be_port, x->fe_port);
	if (q->l4_csum_off) {
		__u16 new_l4 = lb_csum_add(l4_csum, d);

		new_l4 = lb_csum_upd16(new_l4, q->q_port, x->cport);
		new_l4 = lb_csum_upd16(new_l4, q->be_port, x->fe_port);
		/* A computed UDP checksum of 0 is sent as 0xffff (0: none). */
		if (q->proto == IPPROTO_UDP && new_l4 == 0)
			new_l4 = 0xffff;
		icmp_csum = lb_csum_upd16(icmp_csum, l4_csum, new_l4);
		l4_csum = new_l4;
	}
	/* The outer addresses, in the ICMPv6 pseudo-header. */
	d = lb_csum_diff2x128(&q->out_saddr, from_backend ? &x->fe_addr : &q->out_saddr,
			      &q->out_daddr, x->out_dst ? &x->client : &q->out_daddr);
	icmp_csum = lb_csum_add(icmp_csum, d);

	if (bpf_skb_store_bytes(skb, LB_ICMP6_IN_OFF + offsetof(struct ipv6hdr, saddr), &x->client,
				16, 0) < 0 ||
	    bpf_skb_store_bytes(skb, LB_ICMP6_IN_OFF + offsetof(struct ipv6hdr, daddr),
				&x->fe_addr, 16, 0) < 0 ||
	    bpf_skb_store_bytes(skb, LB_ICMP6_IN_L4, &x->cport, 2, 0) < 0 ||
	    bpf_skb_store_bytes(skb, LB_ICMP6_IN_L4 + 2, &x->fe_port, 2, 0) < 0)
		return TC_ACT_SHOT;
	if (q->l4_csum_off && bpf_skb_store_bytes(skb, q->l4_csum_off, &l4_csum, 2, 0) < 0)
		return TC_ACT_SHOT;
	if (from_backend && bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, saddr),
						&x->fe_addr, 16, 0) < 0)
		return TC_ACT_SHOT;
	if (x->out_dst && bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, daddr),
					      &x->client, 16, 0) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, LB_ICMP6_OFF + 2, &icmp_csum, 2, 0) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

#endif /* LB_ICMP6_QUOTE_H */
