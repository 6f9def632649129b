/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_dsr6.h: the node side of direct server return for IPv6 (lb_dsr.h's
 * twin). A DSR flow's IPv6 packets leave the node as the client sent them
 * (destination the frontend, source the client) inside an outer IPv6
 * header (next header 41, IPv6-in-IPv6) from the node's first IPv6 address
 * to the backend's, and are redirected out of the route's device; the
 * backend's side (lb_dsr_backend.c) decapsulates, translates the frontend
 * to the backend and answers the client directly.
 *
 * The outer header carries the backend's port in its flow label (20 bits;
 * the port in the low 16): IPv6 has no Identification field, and a flow
 * label set by the source is delivered unchanged (RFC 6437). The backend
 * side reads it for the first packet of a flow and remembers the flow after
 * that. The traffic class is the inner packet's, the hop limit 64
 * (lb_dsr6_hdr.h builds the header, for tc here and for XDP).
 *
 * With XDP acceleration (lb_xdp.c) the flows' packets are encapsulated at
 * XDP in the same bytes, from the same decision and state (CT entries
 * flagged LB_CT_F_DSR); a packet that would not fit the route once
 * encapsulated is passed up to tc, which answers it here.
 *
 * MTU: encapsulation adds 40 bytes. A GSO packet is re-cut into segments
 * 40 bytes smaller by bpf_skb_adjust_room; a single packet that no longer
 * fits the route to the backend gets an ICMPv6 Packet Too Big back to the
 * client from the frontend it used, with the route's MTU less 40
 * (lb6_dsr_too_big), so the client's TCP sends smaller segments from then
 * on (its path MTU to the frontend drops by 40).
 *
 * The functions here are __noinline: each has a stack frame of its own (the
 * IPv6 tc body's call chain shares the verifier's 512 bytes), and the Packet
 * Too Big frame is built in a per-CPU scratch entry.
 */
#ifndef LB_DSR6_H
#define LB_DSR6_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/pkt_cls.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_abi.h"
#include "lb_csum.h"
#include "lb_dsr.h"
#include "lb_dsr6_hdr.h"
#include "lb_flow.h"
#include "lb_pkt.h"
#include "lb_snat.h"

#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif
/* ICMPv6 Packet Too Big (RFC 4443 3.2). */
#define LB_ICMP6_PKT_TOOBIG 2
/* IPv6's minimum link MTU (RFC 8200 5): a Packet Too Big below it is not
 * sent (the client could not go below it). */
#define LB_IP6_MIN_MTU 1280

/* DSR applies to IPv6 flows exactly as to IPv4 ones. */
static __always_inline bool lb6_dsr_applies(const struct lb_config *cfg, __u8 proto,
					    __u8 fe_type)
{
	return lb_dsr_applies(cfg, proto, fe_type);
}

/* Wraps the IPv6 packet in an outer IPv6 header node -> be_addr carrying
 * be_port in its flow label (lb6_dsr_outer; lb_xdp.c's lb_xdp_dsr6_encap
 * writes the same header at XDP). Returns 0 or -1. */
static __noinline __attribute__((unused)) int lb6_dsr_encap(struct __sk_buff *skb,
							    const struct in6_addr *node,
							    const struct in6_addr *be_addr,
							    __be16 be_port)
{
	struct ipv6hdr outer;
	__be32 vtcfl;
	__be16 inner_plen;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &vtcfl, sizeof(vtcfl)) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, payload_len), &inner_plen,
			       sizeof(inner_plen)) < 0)
		return -1;
	if (bpf_skb_adjust_room(skb, LB_DSR6_OVERHEAD, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_ENCAP_L3_IPV6) < 0)
		return -1;
	lb6_dsr_outer(&outer, node, be_addr, be_port, vtcfl, inner_plen);
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &outer, sizeof(outer), 0) < 0)
		return -1;
	return 0;
}

/* What a Packet Too Big quotes of the client's packet: its IPv6 header and
 * the first 8 bytes after it (the ports, for the client's stack to find
 * the socket). RFC 4443 allows any length up to the minimum MTU. */
#define LB_ICMP6_QUOTE_LEN (sizeof(struct ipv6hdr) + 8)

/* The ICMPv6 message: type, code, checksum, MTU, then the quote. */
struct lb_icmp6_ptb {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 mtu;
	__u8 quote[LB_ICMP6_QUOTE_LEN];
} __attribute__((packed));

/* The new frame from the IPv6 header on, and the checksum's
 * pseudo-header (RFC 8200 8.1). */
struct lb_dsr6_scratch {
	struct ipv6hdr ip;
	struct lb_icmp6_ptb msg;
	struct in6_addr ph_saddr;
	struct in6_addr ph_daddr;
	__be32 ph_len;
	__be32 ph_next;
	struct bpf_fib_lookup fib;
	struct ethhdr eth;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct lb_dsr6_scratch);
	__uint(max_entries, 1);
} lb6_dsr_scratch SEC(".maps");

/* Turns the encapsulated packet in `skb` (outer IPv6 header at ETH_HLEN,
 * the client's packet after it) into an ICMPv6 Packet Too Big carrying
 * `mtu`, from the client packet's destination back to its source, out of
 * the device it arrived on, to the hop it came from. Returns the tc verdict
 * or -1 when it cannot be built. */
static __always_inline int lb6_icmp_too_big(struct __sk_buff *skb, struct lb_dsr6_scratch *f,
					    __u32 mtu)
{
	__u32 quote_off = ETH_HLEN + sizeof(struct ipv6hdr);
	__u32 frame_len = sizeof(struct ipv6hdr) + sizeof(struct lb_icmp6_ptb);
	__s64 sum;
	__s32 excess;

	__builtin_memset(f, 0, offsetof(struct lb_dsr6_scratch, fib));
	if (bpf_skb_load_bytes(skb, 0, &f->eth, sizeof(f->eth)) < 0 ||
	    bpf_skb_load_bytes(skb, quote_off, f->msg.quote, sizeof(f->msg.quote)) < 0)
		return -1;
	*(__be32 *)&f->ip = bpf_htonl(6u << 28);
	f->ip.payload_len = bpf_htons(sizeof(struct lb_icmp6_ptb));
	f->ip.nexthdr = IPPROTO_ICMPV6;
	f->ip.hop_limit = 64;
	/* From the quoted packet's destination (the frontend) to its source. */
	__builtin_memcpy(&f->ip.saddr, f->msg.quote + offsetof(struct ipv6hdr, daddr), 16);
	__builtin_memcpy(&f->ip.daddr, f->msg.quote + offsetof(struct ipv6hdr, saddr), 16);
	f->msg.type = LB_ICMP6_PKT_TOOBIG;
	f->msg.mtu = bpf_htonl(mtu);
	f->ph_saddr = f->ip.saddr;
	f->ph_daddr = f->ip.daddr;
	f->ph_len = bpf_htonl(sizeof(struct lb_icmp6_ptb));
	f->ph_next = bpf_htonl(IPPROTO_ICMPV6);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&f->ph_saddr, 40, 0);
	if (sum < 0)
		return -1;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&f->msg, sizeof(f->msg), (__u32)sum);
	if (sum < 0)
		return -1;
	f->msg.checksum = ~lb_csum_fold((__u32)sum);
	/* Keep Ethernet + the new frame's length (bytes after the outer IPv6
	 * header go), then write the new frame over it. */
	excess = (__s32)skb->len - (__s32)(ETH_HLEN + frame_len);
	if (excess <= 0 || excess > 0xffff)
		return -1;
	if (bpf_skb_adjust_room(skb, -excess, BPF_ADJ_ROOM_NET, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, f, frame_len, 0) < 0 ||
	    bpf_skb_store_bytes(skb, 0, f->eth.h_source, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, f->eth.h_dest, ETH_ALEN, 0) < 0)
		return -1;
	return bpf_redirect(skb->ifindex, 0);
}

/* An IPv6 DSR packet, already encapsulated towards be_addr, is over the
 * MTU of the route there (lb6_fib_redirect said LB_FIB_TOO_BIG): counts it
 * as LB_DROP_FRAG_NEEDED and answers the client with Packet Too Big (the
 * route's MTU less the outer header); drops it when it cannot. */
static __noinline __attribute__((unused)) int lb6_dsr_too_big(struct __sk_buff *skb,
							      const struct in6_addr *node,
							      const struct in6_addr *be_addr)
{
	__u32 zero = 0, mtu;
	struct lb_dsr6_scratch *f = bpf_map_lookup_elem(&lb6_dsr_scratch, &zero);
	int rc;

	lb_count_drop(LB_DROP_FRAG_NEEDED);
	if (!f)
		return TC_ACT_SHOT;
	__builtin_memset(&f->fib, 0, sizeof(f->fib));
	if (lb6_fib(skb, &f->fib, node, be_addr, IPPROTO_IPV6) != BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return TC_ACT_SHOT;
	mtu = f->fib.mtu_result;
	if (mtu < LB_DSR6_OVERHEAD + LB_IP6_MIN_MTU)
		return TC_ACT_SHOT;
	rc = lb6_icmp_too_big(skb, f, mtu - LB_DSR6_OVERHEAD);
	return rc < 0 ? TC_ACT_SHOT : rc;
}

#endif /* LB_DSR6_H */
