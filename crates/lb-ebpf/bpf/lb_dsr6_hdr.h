/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_dsr6_hdr.h: the outer IPv6 header of an IPv6 DSR packet (lb_dsr6.h),
 * built once for both hooks that encapsulate: tc (lb6_dsr_encap, into a
 * header on the stack it stores with bpf_skb_store_bytes) and XDP
 * (lb_xdp_dsr6_encap in lb_xdp.c, in place in the frame), so both send
 * the same bytes.
 */
#ifndef LB_DSR6_HDR_H
#define LB_DSR6_HDR_H

#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_endian.h>

/* The outer header's length: what encapsulation adds. */
#define LB_DSR6_OVERHEAD 40
/* The outer header's hop limit. */
#define LB_DSR6_HOP_LIMIT 64

/* Fills every field of `outer` (the 40 bytes, whatever they held): version
 * 6, the traffic class of the inner packet (from `inner_vtcfl`, its first
 * 32 bits as in the packet), be_port in the flow label (its low 16 bits),
 * a payload of the inner packet (`inner_plen`, its payload length as in
 * the packet, plus its own header), next header IPv6 (41), hop limit
 * LB_DSR6_HOP_LIMIT, node -> be_addr. `outer` may point into a packet. */
static __always_inline void lb6_dsr_outer(struct ipv6hdr *outer, const struct in6_addr *node,
					  const struct in6_addr *be_addr, __be16 be_port,
					  __be32 inner_vtcfl, __be16 inner_plen)
{
	__u32 tclass = (bpf_ntohl(inner_vtcfl) >> 20) & 0xff;

	*(__be32 *)outer = bpf_htonl((6u << 28) | (tclass << 20) | bpf_ntohs(be_port));
	outer->payload_len = bpf_htons(bpf_ntohs(inner_plen) + sizeof(struct ipv6hdr));
	outer->nexthdr = IPPROTO_IPV6;
	outer->hop_limit = LB_DSR6_HOP_LIMIT;
	outer->saddr = *node;
	outer->daddr = *be_addr;
}

#endif /* LB_DSR6_HDR_H */
