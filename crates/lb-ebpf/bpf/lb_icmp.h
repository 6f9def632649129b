/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_icmp.h: ICMP errors (destination unreachable incl. fragmentation
 * needed, time exceeded) about a DNATed flow, translated on their way to the
 * client: the quoted packet's destination goes back from the backend to the
 * frontend, and an error sent by the backend itself gets the frontend as its
 * source. Checksums are updated incrementally (RFC 1624): the inner IP
 * header's, the inner TCP/UDP one when it was quoted (a zero UDP checksum
 * stays zero), the ICMP one (no pseudo-header: every rewritten inner word
 * counts) and the outer IP one.
 *
 * A flow whose client port was remapped towards the backend (a reply-tuple
 * clash, LB_CT_F_PORTMAP, lb_ctport.h) is quoted with the remapped port as
 * its source: that goes back to the client's own port too.
 *
 * lb_icmp_error_snat does the same for an error about a SNATed flow, which
 * arrives on ingress addressed to the node: the quote goes back from
 * (node:port -> backend) to (client -> frontend) and the error is sent on
 * to the client.
 */
#ifndef LB_ICMP_H
#define LB_ICMP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_abi.h"
#include "lb_csum.h"
#include "lb_icmp_quote.h"
#include "lb_snat.h"

/* Translates an ICMP error leaving towards a client (lb_icmp_quote.h).
 * Returns TC_ACT_OK (translated or not ours) or TC_ACT_SHOT when a store
 * failed. */
static __always_inline int lb_icmp_error_rev(struct __sk_buff *skb)
{
	struct lb_icmp_quote q = {};
	struct ct4_key ck = {};
	struct ct4_entry *ct;
	struct lb4_reverse_nat *rn;
	__be32 fe_addr;
	__be16 fe_port, cport;
	__u32 rev_nat;

	if (!lb_icmp_quote(skb, &q))
		return TC_ACT_OK;
	/* The flow as the backend would answer it: backend -> client. */
	ck.saddr = q.be_addr;
	ck.daddr = q.client;
	ck.sport = q.be_port;
	ck.dport = q.q_port;
	ck.proto = q.proto;
	ck.dir = LB_CT_REPLY;
	ct = bpf_map_lookup_elem(&lb4_ct, &ck);
	if (!ct)
		return TC_ACT_OK;
	/* The quoted source port: the client's own, or the one it was
	 * remapped to (the reply entry then holds the client's). */
	cport = ct->flags & LB_CT_F_PORTMAP ? ct->snat_port : q.q_port;
	fe_addr = ct->frontend_addr;
	fe_port = ct->frontend_port;
	rev_nat = ct->rev_nat_index;
	rn = bpf_map_lookup_elem(&lb4_reverse_nat, &rev_nat);
	if (rn && rn->address != 0) {
		fe_addr = rn->address;
		fe_port = rn->port;
	}
	return lb_icmp_quote_rewrite(skb, &q, fe_addr, fe_port, cport);
}

/* lb_icmp_error_snat's answer for an error about a NAT64 flow: the
 * caller hands it to lb_nat46_icmp.h. */
#define LB_ICMP_NAT64 1001

/* Translates an ICMP error about a SNATed flow (it quotes node:port ->
 * backend and is addressed to the node) for the client, then redirects it
 * towards the client like lb_snat_reply. Returns -1 when the packet is not
 * one, LB_ICMP_NAT64 for a NAT64 flow's, else TC_ACT_SHOT (a store failed)
 * or the redirect's verdict. */
static __always_inline int lb_icmp_error_snat(struct __sk_buff *skb, const struct lb_config *cfg)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip, *in;
	struct lb_icmphdr *icmp;
	struct ct4_key k = {};
	struct lb4_snat_entry *e;
	struct lb4_reverse_nat *rn;
	__u32 icmp_off, in_off, in_l4_off, l4_csum_off = 0;
	__be32 node = lb_snat_addr(cfg), out_saddr, out_new_saddr, be_addr, fe_addr, client;
	__be16 be_port, fe_port, snat_port, client_port, *ports;
	__u16 ip_csum, icmp_csum, in_csum, new_in_csum, l4_csum = 0;
	__u32 rev_nat;
	__u8 proto;

	if (!node || (void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_ICMP || ip->ihl != 5 ||
	    ip->daddr != node)
		return -1;
	icmp = (void *)(ip + 1);
	in = (void *)(icmp + 1);
	if ((void *)(in + 1) + 8 > data_end)
		return -1;
	if (icmp->type != ICMP_DEST_UNREACH && icmp->type != ICMP_TIME_EXCEEDED)
		return -1;
	if (in->ihl != 5 || in->saddr != node ||
	    (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP))
		return -1;
	proto = in->protocol;
	ports = (void *)(in + 1);
	be_addr = in->daddr;
	be_port = ports[1];
	snat_port = ports[0];
	lb_snat_key(&k, be_addr, be_port, node, snat_port, proto);
	e = bpf_map_lookup_elem(&lb4_snat, &k);
	if (!e)
		return -1;
	/* A NAT64 flow's marker (client 0.0.0.0, lb_nat46.h): the error goes
	 * to the IPv6 client translated (lb_nat46_icmp.h). */
	if (!e->client_addr)
		return LB_ICMP_NAT64;
	client = e->client_addr;
	client_port = e->client_port;
	fe_addr = e->frontend_addr;
	fe_port = e->frontend_port;
	rev_nat = e->rev_nat_index;
	rn = bpf_map_lookup_elem(&lb4_reverse_nat, &rev_nat);
	if (rn && rn->address != 0) {
		fe_addr = rn->address;
		fe_port = rn->port;
	}

	icmp_off = ETH_HLEN + sizeof(*ip);
	in_off = icmp_off + sizeof(*icmp);
	in_l4_off = in_off + sizeof(*in);
	out_saddr = ip->saddr;
	ip_csum = ip->check;
	icmp_csum = icmp->checksum;
	in_csum = in->check;
	if (proto == IPPROTO_UDP) {
		__u16 *c = (void *)ports + 6;

		if ((void *)(c + 1) <= data_end && *c != 0) {
			l4_csum = *c;
			l4_csum_off = in_l4_off + 6;
		}
	} else {
		__u16 *c = (void *)ports + 16;

		if ((void *)(c + 1) <= data_end) {
			l4_csum = *c;
			l4_csum_off = in_l4_off + 16;
		}
	}

	/* Inner IP header: both addresses and its checksum. */
	new_in_csum = lb_csum_upd32(lb_csum_upd32(in_csum, node, client), be_addr, fe_addr);
	icmp_csum = lb_csum_upd32(icmp_csum, node, client);
	icmp_csum = lb_csum_upd32(icmp_csum, be_addr, fe_addr);
	icmp_csum = lb_csum_upd16(icmp_csum, in_csum, new_in_csum);
	/* Inner ports, and the inner L4 checksum (pseudo-header and ports). */
	icmp_csum = lb_csum_upd16(icmp_csum, snat_port, client_port);
	icmp_csum = lb_csum_upd16(icmp_csum, be_port, fe_port);
	if (l4_csum_off) {
		__u16 new_l4 = lb_csum_upd32(l4_csum, node, client);

		new_l4 = lb_csum_upd32(new_l4, be_addr, fe_addr);
		new_l4 = lb_csum_upd16(new_l4, snat_port, client_port);
		new_l4 = lb_csum_upd16(new_l4, be_port, fe_port);
		if (proto == IPPROTO_UDP && new_l4 == 0)
			new_l4 = 0xffff;
		icmp_csum = lb_csum_upd16(icmp_csum, l4_csum, new_l4);
		l4_csum = new_l4;
	}
	if (bpf_skb_store_bytes(skb, in_off + offsetof(struct iphdr, saddr), &client, 4, 0) < 0 ||
	    bpf_skb_store_bytes(skb, in_off + offsetof(struct iphdr, daddr), &fe_addr, 4, 0) < 0 ||
	    bpf_skb_store_bytes(skb, in_off + offsetof(struct iphdr, check), &new_in_csum, 2, 0) < 0 ||
	    bpf_skb_store_bytes(skb, in_l4_off, &client_port, 2, 0) < 0 ||
	    bpf_skb_store_bytes(skb, in_l4_off + 2, &fe_port, 2, 0) < 0)
		return TC_ACT_SHOT;
	if (l4_csum_off && bpf_skb_store_bytes(skb, l4_csum_off, &l4_csum, 2, 0) < 0)
		return TC_ACT_SHOT;
	/* Outer header: to the client; an error from the backend itself comes
	 * from the frontend. */
	out_new_saddr = out_saddr == be_addr ? fe_addr : out_saddr;
	ip_csum = lb_csum_upd32(ip_csum, node, client);
	ip_csum = lb_csum_upd32(ip_csum, out_saddr, out_new_saddr);
	if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, daddr), &client, 4, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, saddr), &out_new_saddr, 4,
				0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, check), &ip_csum, 2, 0) < 0 ||
	    bpf_skb_store_bytes(skb, icmp_off + offsetof(struct lb_icmphdr, checksum), &icmp_csum, 2,
				0) < 0)
		return TC_ACT_SHOT;
	return lb_fib_redirect(skb, out_new_saddr, client, IPPROTO_ICMP);
}

#endif /* LB_ICMP_H */
