/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_dsr.h: the node side of direct server return (lb_core::LbMode::Dsr and
 * Hybrid). A DSR flow's packets leave the node as the client sent them
 * (destination the frontend, source the client: no DNAT, no SNAT) inside
 * an outer IPv4 header (protocol 4, IPIP) from the node's first address to
 * the backend's address, and are redirected out of the route's device.
 * The backend's side (lb_dsr_backend.c) decapsulates, translates the
 * frontend to the backend and answers the client directly, so the node
 * keeps no reply state and a flow may move between nodes that share
 * services and Maglev seed.
 *
 * The outer header carries the backend's port in its Identification field
 * (with DF set the datagram is atomic and the field is free, RFC 6864):
 * the backend side reads it for the first packet of a flow and remembers
 * the flow after that.
 *
 * MTU: encapsulation adds 20 bytes. A GSO packet (GRO on the way in) is
 * re-cut by bpf_skb_adjust_room into segments 20 bytes smaller, which fit;
 * a single full-sized packet from a client whose path MTU equals the
 * node->backend link MTU no longer fits: the FIB lookup says so, and tc
 * counts it as LB_DROP_FRAG_NEEDED and answers the client with ICMP
 * fragmentation needed for an MTU 20 bytes smaller (lb_dsr_icmp.h), so the
 * client's TCP sends smaller segments from then on. Giving the
 * node->backend path 20 bytes more MTU than the client side avoids that
 * first round trip.
 */
#ifndef LB_DSR_H
#define LB_DSR_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_abi.h"
#include "lb_pkt.h"

#define LB_IP_DF 0x4000

/* True when a new flow of `proto` through a frontend of `fe_type` uses DSR
 * when its backend is remote (lb_core::LbMode::dsr_applies; the tc
 * ingress program sees external traffic only). */
static __always_inline bool lb_dsr_applies(const struct lb_config *cfg, __u8 proto,
					   __u8 fe_type)
{
	__u32 mode = cfg ? cfg->lb_mode : LB_MODE_SNAT;

	if (fe_type != LB_FE_NODE_PORT && fe_type != LB_FE_LOAD_BALANCER &&
	    fe_type != LB_FE_EXTERNAL_IP)
		return false;
	return mode == LB_MODE_DSR || (mode == LB_MODE_HYBRID && proto == IPPROTO_TCP);
}

/* Wraps the packet in an outer IPv4 header node -> be_addr carrying
 * be_port in its Identification field. Returns 0 or -1. */
static __always_inline int lb_dsr_encap(struct __sk_buff *skb, __be32 node, __be32 be_addr,
					__be16 be_port)
{
	struct iphdr outer = {};
	struct iphdr *inner;
	void *data, *data_end;
	__u16 inner_len;
	__u8 tos;
	__s64 csum;

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	inner = data + ETH_HLEN;
	if ((void *)(inner + 1) > data_end)
		return -1;
	inner_len = bpf_ntohs(inner->tot_len);
	tos = inner->tos;
	if (bpf_skb_adjust_room(skb, sizeof(outer), BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_ENCAP_L3_IPV4) < 0)
		return -1;
	outer.version = 4;
	outer.ihl = 5;
	outer.tos = tos;
	outer.tot_len = bpf_htons(inner_len + sizeof(outer));
	outer.id = be_port;
	outer.frag_off = bpf_htons(LB_IP_DF);
	outer.ttl = 64;
	outer.protocol = IPPROTO_IPIP;
	outer.saddr = node;
	outer.daddr = be_addr;
	csum = bpf_csum_diff(NULL, 0, (__be32 *)&outer, sizeof(outer), 0);
	if (csum < 0)
		return -1;
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	outer.check = (__u16)~csum;
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &outer, sizeof(outer), 0) < 0)
		return -1;
	return 0;
}

#endif /* LB_DSR_H */
