/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_icmp_quote.h: an ICMP error (destination unreachable incl.
 * fragmentation needed, time exceeded) quoting a TCP/UDP packet sent to a
 * backend, and the rewrite that makes it about the frontend instead: the
 * quoted destination goes back to the frontend (and, for a remapped flow,
 * the quoted source port to the client's own), an error sent by the backend
 * itself gets the frontend as its source. Checksums are updated
 * incrementally (RFC 1624): the inner IP header's, the inner TCP/UDP one
 * when it was quoted (a zero UDP checksum stays zero), the ICMP one (no
 * pseudo-header: every rewritten inner word counts) and the outer IP one.
 *
 * Used by tc egress (lb_icmp.h, DNATed flows) and by the DSR backend side
 * (lb_dsr_backend.c); it defines no map, so either object can include it.
 */
#ifndef LB_ICMP_QUOTE_H
#define LB_ICMP_QUOTE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_csum.h"

/* From linux/icmp.h, which drags in libc headers. */
#define ICMP_DEST_UNREACH  3
#define ICMP_TIME_EXCEEDED 11

struct lb_icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 rest;
};

/* An ICMP error quoting `client:q_port -> be_addr:be_port` (lb_icmp_quote). */
struct lb_icmp_quote {
	__u32 icmp_off, in_off, in_l4_off;
	__u32 l4_csum_off; /* 0: no quoted L4 checksum (or a zero UDP one) */
	__be32 out_saddr;  /* who sent the error */
	__be32 client, be_addr;
	__be16 q_port, be_port;
	__u16 ip_csum, icmp_csum, in_csum, l4_csum;
	__u8 proto;
};

/* Parses skb (from its Ethernet header) as an ICMP error quoting an IPv4
 * TCP/UDP packet (no options, at least 8 bytes of L4). */
static __always_inline bool lb_icmp_quote(struct __sk_buff *skb, struct lb_icmp_quote *q)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip, *in;
	struct lb_icmphdr *icmp;
	__be16 *ports;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return false;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_ICMP || ip->ihl != 5)
		return false;
	icmp = (void *)(ip + 1);
	in = (void *)(icmp + 1);
	/* The quoted IPv4 header (no options) and the first 8 bytes of L4. */
	if ((void *)(in + 1) + 8 > data_end)
		return false;
	if (icmp->type != ICMP_DEST_UNREACH && icmp->type != ICMP_TIME_EXCEEDED)
		return false;
	if (in->ihl != 5 || (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP))
		return false;
	ports = (void *)(in + 1);
	q->proto = in->protocol;
	q->client = in->saddr;
	q->be_addr = in->daddr;
	q->q_port = ports[0];
	q->be_port = ports[1];
	q->icmp_off = ETH_HLEN + sizeof(*ip);
	q->in_off = q->icmp_off + sizeof(*icmp);
	q->in_l4_off = q->in_off + sizeof(*in);
	q->out_saddr = ip->saddr;
	q->ip_csum = ip->check;
	q->icmp_csum = icmp->checksum;
	q->in_csum = in->check;
	q->l4_csum = 0;
	q->l4_csum_off = 0;
	if (q->proto == IPPROTO_UDP) {
		__u16 *c = (void *)ports + 6;

		if ((void *)(c + 1) <= data_end && *c != 0) {
			q->l4_csum = *c;
			q->l4_csum_off = q->in_l4_off + 6;
		}
	} else {
		__u16 *c = (void *)ports + 16;

		if ((void *)(c + 1) <= data_end) {
			q->l4_csum = *c;
			q->l4_csum_off = q->in_l4_off + 16;
		}
	}
	return true;
}

/* Makes the error `q` about fe_addr:fe_port, quoted from the client's
 * port `cport` (q->q_port unless the flow was remapped). Returns TC_ACT_OK
 * or TC_ACT_SHOT when a store failed. */
static __always_inline int lb_icmp_quote_rewrite(struct __sk_buff *skb,
						 const struct lb_icmp_quote *q, __be32 fe_addr,
						 __be16 fe_port, __be16 cport)
{
	__u16 icmp_csum = q->icmp_csum, ip_csum = q->ip_csum, l4_csum = q->l4_csum;
	/* Inner IP header: destination and its checksum. */
	__u16 in_csum = lb_csum_upd32(q->in_csum, q->be_addr, fe_addr);

	icmp_csum = lb_csum_upd32(icmp_csum, q->be_addr, fe_addr);
	icmp_csum = lb_csum_upd16(icmp_csum, q->in_csum, in_csum);
	/* Inner ports (destination; source when remapped), and the inner L4
	 * checksum (pseudo-header address and ports). */
	icmp_csum = lb_csum_upd16(icmp_csum, q->be_port, fe_port);
	icmp_csum = lb_csum_upd16(icmp_csum, q->q_port, cport);
	if (q->l4_csum_off) {
		__u16 new_l4 = lb_csum_upd16(lb_csum_upd32(l4_csum, q->be_addr, fe_addr),
					     q->be_port, fe_port);

		new_l4 = lb_csum_upd16(new_l4, q->q_port, cport);
		/* A computed UDP checksum of 0 is sent as 0xffff (0: none). */
		if (q->proto == IPPROTO_UDP && new_l4 == 0)
			new_l4 = 0xffff;
		icmp_csum = lb_csum_upd16(icmp_csum, l4_csum, new_l4);
		l4_csum = new_l4;
	}
	/* Stores (they invalidate packet pointers). */
	if (bpf_skb_store_bytes(skb, q->in_off + offsetof(struct iphdr, daddr), &fe_addr, 4, 0) <
		    0 ||
	    bpf_skb_store_bytes(skb, q->in_off + offsetof(struct iphdr, check), &in_csum, 2, 0) <
		    0 ||
	    bpf_skb_store_bytes(skb, q->in_l4_off + 2, &fe_port, 2, 0) < 0)
		return TC_ACT_SHOT;
	if (cport != q->q_port && bpf_skb_store_bytes(skb, q->in_l4_off, &cport, 2, 0) < 0)
		return TC_ACT_SHOT;
	if (q->l4_csum_off && bpf_skb_store_bytes(skb, q->l4_csum_off, &l4_csum, 2, 0) < 0)
		return TC_ACT_SHOT;
	/* An error from the backend itself comes from the frontend, as the
	 * flow's replies do. */
	if (q->out_saddr == q->be_addr) {
		ip_csum = lb_csum_upd32(ip_csum, q->be_addr, fe_addr);
		if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, saddr), &fe_addr, 4,
					0) < 0 ||
		    bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, check), &ip_csum, 2,
					0) < 0)
			return TC_ACT_SHOT;
	}
	if (bpf_skb_store_bytes(skb, q->icmp_off + offsetof(struct lb_icmphdr, checksum),
				&icmp_csum, 2, 0) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

#endif /* LB_ICMP_QUOTE_H */
