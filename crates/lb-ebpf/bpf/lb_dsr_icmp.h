/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_dsr_icmp.h: path MTU discovery through a DSR node (IPv4), after
 * Cilium's ENABLE_DSR_ICMP_ERRORS. IPIP encapsulation adds 20 bytes, so a
 * client's full-sized packet does not fit a node->backend route of the same
 * MTU. A router would answer "fragmentation needed" and the client's TCP
 * would send smaller segments; a DSR node that only dropped the packet
 * would stall the connection for good. lb_dsr_too_big answers the client
 * instead: an ICMP destination unreachable / fragmentation needed from the
 * frontend the client used, quoting the client's packet, with the MTU the
 * client must use (the route's MTU less the outer header).
 */
#ifndef LB_DSR_ICMP_H
#define LB_DSR_ICMP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_abi.h"
#include "lb_csum.h"
#include "lb_dsr.h"
#include "lb_flow.h"
#include "lb_icmp_quote.h"
#include "lb_snat.h"

#define LB_ICMP_FRAG_NEEDED 4 /* code of ICMP_DEST_UNREACH */

/* What an ICMP error quotes of the offending packet: its IPv4 header
 * (without options) and the first 8 bytes of its payload (RFC 792). */
#define LB_ICMP_QUOTE_LEN (sizeof(struct iphdr) + 8)

/* The new headers in front of the quote. */
struct lb_icmp4_frame {
	struct iphdr ip;
	struct lb_icmphdr icmp;
	__u8 quote[LB_ICMP_QUOTE_LEN];
} __attribute__((packed));

/* One's-complement sum of `len` bytes at `p` (a multiple of 4), folded. */
static __always_inline __u16 lb_csum_bytes(void *p, __u32 len)
{
	__s64 s = bpf_csum_diff(NULL, 0, p, len, 0);

	return s < 0 ? 0 : ~lb_csum_fold((__u32)s);
}

/* Turns the packet in `skb` into an ICMP fragmentation-needed error
 * carrying `mtu`, about the client's IPv4 packet found at `quote_off`
 * (after Ethernet, or after the outer header of its encapsulation): from
 * that packet's destination back to its source, out of the device it
 * arrived on, to the hop it came from. The frame is cut down with
 * bpf_skb_adjust_room (bpf_skb_change_tail refuses an encapsulated skb)
 * and rewritten from Ethernet on. Returns the tc verdict, or -1 when the
 * packet cannot be answered: IPv4 options, DF clear (a router would
 * fragment it; the node drops it), a fragment, or a helper failure. */
static __always_inline int lb_icmp4_frag_needed(struct __sk_buff *skb, __u32 quote_off,
						__u16 mtu)
{
	struct lb_icmp4_frame f = {};
	struct iphdr orig;
	struct ethhdr eth;
	__s32 excess;

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0 ||
	    bpf_skb_load_bytes(skb, quote_off, f.quote, sizeof(f.quote)) < 0)
		return -1;
	__builtin_memcpy(&orig, f.quote, sizeof(orig));
	if (orig.ihl != 5 || !(orig.frag_off & bpf_htons(LB_IP_DF)) ||
	    (orig.frag_off & bpf_htons(0x1fff)))
		return -1;
	f.ip.version = 4;
	f.ip.ihl = 5;
	f.ip.tot_len = bpf_htons(sizeof(f));
	f.ip.ttl = 64;
	f.ip.protocol = IPPROTO_ICMP;
	f.ip.saddr = orig.daddr;
	f.ip.daddr = orig.saddr;
	f.ip.check = lb_csum_bytes(&f.ip, sizeof(f.ip));
	f.icmp.type = ICMP_DEST_UNREACH;
	f.icmp.code = LB_ICMP_FRAG_NEEDED;
	f.icmp.rest = bpf_htonl(mtu); /* unused (16 bits), next-hop MTU (16 bits) */
	f.icmp.checksum = lb_csum_bytes(&f.icmp, sizeof(f.icmp) + sizeof(f.quote));
	/* Remove all but Ethernet + sizeof(f) (bytes after the first IPv4
	 * header go), then write the new frame over what is left. */
	excess = (__s32)skb->len - (__s32)(ETH_HLEN + sizeof(f));
	if (excess <= 0 || excess > 0xfff)
		return -1;
	if (bpf_skb_adjust_room(skb, -excess, BPF_ADJ_ROOM_NET, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &f, sizeof(f), 0) < 0 ||
	    bpf_skb_store_bytes(skb, 0, eth.h_source, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, eth.h_dest, ETH_ALEN, 0) < 0)
		return -1;
	return bpf_redirect(skb->ifindex, 0);
}

/* A DSR packet, already encapsulated towards be_addr, is over the MTU of
 * the route there (lb_fib_redirect said LB_FIB_TOO_BIG): counts it as
 * LB_DROP_FRAG_NEEDED and answers the client with fragmentation needed
 * (route MTU less the outer header); drops it when it cannot. */
static __always_inline int lb_dsr_too_big(struct __sk_buff *skb, __be32 node, __be32 be_addr)
{
	struct bpf_fib_lookup fib = {};
	int rc;

	lb_count_drop(LB_DROP_FRAG_NEEDED);
	if (lb_fib(skb, &fib, node, be_addr, IPPROTO_IPIP) != BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return TC_ACT_SHOT;
	/* 68: RFC 791's minimum MTU must stay reachable. */
	if (fib.mtu_result < sizeof(struct iphdr) + 68)
		return TC_ACT_SHOT;
	rc = lb_icmp4_frag_needed(skb, ETH_HLEN + sizeof(struct iphdr),
				  fib.mtu_result - sizeof(struct iphdr));
	return rc < 0 ? TC_ACT_SHOT : rc;
}

#endif /* LB_DSR_ICMP_H */
