/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_nat46.h: NAT46/64 in the tc datapath (lb_core::nat46x64): an IPv4
 * frontend served by IPv6 backends (NAT46) or an IPv6 frontend served by
 * IPv4 backends (NAT64). The control plane marks such a frontend's slot 0
 * with LB_SVC_F_NAT46X64: its slots name backend ids of the other family's
 * backends map (ids are unique across families; Maglev tables and counters
 * are shared), and lb_tc_fam.h hands its packets here (LBF_XLATE).
 *
 * A new flow chooses its backend as usual (affinity, XDP hint, Maglev or
 * weighted random, in the client's family), is always SNATed to the node's
 * first address of the backend's family (whatever the traffic policy, the
 * backend's locality or the LB mode: lb_core::flow::egress), and is
 * recorded in the client family's CT map (LB_CT_F_SNAT, snat_port) and
 * affinity map. The packet is then translated (RFC 7915 style: TOS/traffic
 * class, TTL/hop limit and protocol carried over, IPv4 options and IPv6
 * extension headers dropped, flow label 0, IPv4 ID 0 with DF) and
 * redirected through the FIB in the backend's family.
 *
 * The reverse SNAT entries live in the backend family's SNAT map (so SNAT
 * ports are allocated from the same space as untranslated flows):
 *  - NAT46: lb6_snat, keyed as any IPv6 SNAT entry (backend -> node IPv6
 *    address:port); client_addr and frontend_addr hold the IPv4 client and
 *    frontend as IPv4-mapped addresses (::ffff:a.b.c.d), which no IPv6
 *    client has: that is what marks the entry as translated.
 *  - NAT64: an IPv4 SNAT entry cannot hold the IPv6 client. lb4_snat gets a
 *    marker entry (client_addr 0.0.0.0, which no client has) that reserves
 *    the port, and lb6_snat the real entry (the IPv6 client and frontend)
 *    under the IPv4 reply tuple in IPv4-mapped form (saddr ::ffff:backend,
 *    daddr ::ffff:node); no IPv6 packet ever has such a tuple. The
 *    client's own port is not tried first for NAT64 (only random ports): a
 *    marker cannot tell two clients apart.
 * Replies from the backend to node:snat_port find the entry (lb_snat_reply
 * in lb_tc_fam.h, LBF_XLATE_REPLY), are translated back to the client's
 * family (source the frontend, destination the client) and redirected to
 * the client.
 *
 * Sizes (below, "Sizes"): a translated TCP SYN or SYN-ACK has its MSS
 * option clamped to the MTU of the route it takes (lb_mss.h); a non-GSO
 * IPv4 packet over the IPv6 route's MTU once translated is answered with
 * ICMP fragmentation needed (MTU less 20) when it has DF. GSO packets are
 * segmented for the IPv6 route by the kernel.
 *
 * ICMP/ICMPv6 errors about translated flows are translated to the
 * client's family by lb_nat46_icmp.h (lb_icmp.h and lb_icmp6.h hand them
 * over).
 *
 * Not done: an IPv4 packet without DF over the IPv6 route's MTU once
 * translated is dropped (LB_DROP_FRAG_NEEDED), not fragmented; a too-big
 * answer is only built for frames up to 4 KiB over the answer's size
 * (lb_icmp4_frag_needed: bpf_skb_adjust_room's limit), bigger ones are
 * only dropped; an IPv6 packet that is over the IPv4 route's MTU after
 * shrinking by 20 (only with a route MTU below the client side's) is
 * dropped (NAT64 requests) or left to the stack (NAT46 replies), as
 * before; an IPv4 UDP datagram without a checksum gets one computed only
 * up to LB_XLATE_CSUM_MAX bytes (longer ones are dropped, LB_DROP_REWRITE).
 */
#ifndef LB_NAT46_H
#define LB_NAT46_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_abi.h"
#include "lb_pkt.h"
#include "lb_select.h"
#include "lb_snat.h"
#include "lb_flow.h"
#include "lb_dsr_icmp.h"
#include "lb_mss.h"

/* The includer defines lb_drop(reason) (count, TC_ACT_SHOT), as lb_tc.c. */

#ifndef LB_IP_DF
#define LB_IP_DF 0x4000
#endif

/* What the family body hands over (lb_xlate_run). */
enum lb_xlate_kind {
	LB_XLATE_NAT46 = 1,       /* IPv4 client -> IPv6 backend */
	LB_XLATE_NAT64 = 2,       /* IPv6 client -> IPv4 backend */
	LB_XLATE_NAT46_REPLY = 3, /* IPv6 reply -> IPv4 client */
	LB_XLATE_NAT64_REPLY = 4, /* IPv4 reply -> IPv6 client */
};

/* The family body's verdict for a packet it handed over: not a TC_ACT_*;
 * lb_tc_ingress then runs lb_xlate_run in a call chain of its own (the
 * family body's stack frame is gone by then: the verifier bounds a call
 * chain's frames together to 512 bytes). */
#define LB_XLATE_GO 0x4c58

/* Checksum computation of an IPv4 UDP datagram without one: in chunks of
 * LB_XLATE_CHUNK bytes, at most LB_XLATE_CSUM_MAX bytes in all. */
#define LB_XLATE_CHUNK 256
#define LB_XLATE_CHUNKS 36
#define LB_XLATE_CSUM_MAX (LB_XLATE_CHUNK * LB_XLATE_CHUNKS)

/* The MTU a translated SYN's MSS is clamped for when the FIB cannot say
 * (no route: the stack routes the packet): Ethernet's. */
#define LB_XLATE_DEFAULT_MTU 1500
/* Header bytes a TCP segment carries besides its payload: IPv6 + TCP,
 * IPv4 + TCP (lb_core::nat46x64::mss_limit). */
#define LB_XLATE_MSS_HDR6 60
#define LB_XLATE_MSS_HDR4 40

/* The translation paths' per-packet state: too wide for the stack next to
 * the family body's, so in a per-CPU scratch entry of this object (not
 * pinned, not part of the ABI). */
struct lb_xlate {
	/* What lb_xlate_run does (LB_XLATE_*). */
	__u32 kind;
	/* The frontend's slot 0, as the family body read it. */
	__u64 now;
	__u32 rev_nat;
	__u32 svc_slot; /* the frontend's counter slot */
	__u32 timeout;
	__u32 total_weight;
	__u16 flags;
	__u16 count;
	/* The translated packet's addresses: IPv6 (src6, dst6 adjacent, for
	 * bpf_csum_diff), or IPv4 (src4, dst4 adjacent). */
	struct in6_addr src6;
	struct in6_addr dst6;
	__be32 src4;
	__be32 dst4;
	/* The original packet's addresses, adjacent too. */
	struct in6_addr old6[2];
	__be32 old4[2];
	struct ct4_key ck4;
	struct ct4_entry ct4;
	struct lb4_affinity_key ak4;
	struct ct6_key ck6;
	struct ct6_entry ct6;
	struct lb6_affinity_key ak6;
	struct ct4_key sk4;
	struct lb4_snat_entry se4;
	struct ct6_key sk6;
	struct lb6_snat_entry se6;
	struct iphdr ip4;
	__u8 pad4[4];
	struct ipv6hdr ip6;
	__be32 pseudo[10]; /* IPv6 pseudo-header: saddr, daddr, length, next header */
	/* The packet and frontend key as the family body parsed them. */
	struct lb_pkt p4;
	struct lb_pkt6 p6;
	struct lb4_key key4;
	struct lb6_key key6;
	__u8 buf[LB_XLATE_CHUNK];
	/* Not cleared per packet: the route lookup of the translated packet
	 * (cleared before use) and lb_mss_clamp's scratch. */
	struct bpf_fib_lookup fib;
	struct bpf_fib_lookup fib_mtu;
	__u8 opts[LB_MSS_BUF];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct lb_xlate);
	__uint(max_entries, 1);
} lb_xlate_scratch SEC(".maps");

static __always_inline struct lb_xlate *lb_xlate_get(void)
{
	__u32 zero = 0;
	struct lb_xlate *x = bpf_map_lookup_elem(&lb_xlate_scratch, &zero);

	if (x)
		__builtin_memset(x, 0, offsetof(struct lb_xlate, buf));
	return x;
}

/* ::ffff:a.b.c.d */
static __always_inline void lb_xlate_map4(struct in6_addr *out, __be32 a)
{
	out->in6_u.u6_addr32[0] = 0;
	out->in6_u.u6_addr32[1] = 0;
	out->in6_u.u6_addr32[2] = bpf_htonl(0xffff);
	out->in6_u.u6_addr32[3] = a;
}

/* True for an IPv4-mapped address (::ffff:0:0/96). */
static __always_inline bool lb_xlate_is_mapped(const struct in6_addr *a)
{
	return a->in6_u.u6_addr32[0] == 0 && a->in6_u.u6_addr32[1] == 0 &&
	       a->in6_u.u6_addr32[2] == bpf_htonl(0xffff);
}

static __always_inline __u16 lb_xlate_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* The L4 checksum of an IPv6 UDP datagram at l4_off (ETH_HLEN + 40) of
 * l4_len bytes whose checksum field is 0: pseudo-header (x->pseudo) plus
 * the datagram, read in chunks. Stores it; 0 or -1. */
static __noinline int lb_xlate_udp_csum6(struct __sk_buff *skb, struct lb_xlate *x, __u32 l4_len)
{
	__u32 full, tail, padded;
	__u64 sum = 0;
	__s64 s;
	__u16 c;

	if (l4_len > LB_XLATE_CSUM_MAX)
		return -1;
	full = l4_len / LB_XLATE_CHUNK;
	tail = l4_len & (LB_XLATE_CHUNK - 1);
	s = bpf_csum_diff(NULL, 0, x->pseudo, sizeof(x->pseudo), 0);
	if (s < 0)
		return -1;
	sum += (__u32)s;
	for (__u32 i = 0; i < LB_XLATE_CHUNKS; i++) {
		if (i >= full)
			break;
		if (bpf_skb_load_bytes(skb, ETH_HLEN + 40 + i * LB_XLATE_CHUNK, x->buf,
				       LB_XLATE_CHUNK) < 0)
			return -1;
		s = bpf_csum_diff(NULL, 0, (__be32 *)x->buf, LB_XLATE_CHUNK, 0);
		if (s < 0)
			return -1;
		sum += (__u32)s;
	}
	if (tail) {
		/* The last bytes, zero-padded to a multiple of 4 (a zero pad
		 * does not change the sum). */
		__builtin_memset(x->buf, 0, LB_XLATE_CHUNK);
		/* For the verifier: 1..LB_XLATE_CHUNK. */
		tail -= 1;
		asm volatile("%0 &= 255" : "+r"(tail));
		tail += 1;
		if (bpf_skb_load_bytes(skb, ETH_HLEN + 40 + full * LB_XLATE_CHUNK, x->buf, tail) < 0)
			return -1;
		padded = (tail + 3) & 0x1fc;
		if (padded > LB_XLATE_CHUNK)
			return -1;
		s = bpf_csum_diff(NULL, 0, (__be32 *)x->buf, padded, 0);
		if (s < 0)
			return -1;
		sum += (__u32)s;
	}
	c = ~lb_xlate_fold(sum);
	if (c == 0)
		c = 0xffff;
	return bpf_skb_store_bytes(skb, ETH_HLEN + 40 + offsetof(struct udphdr, check), &c,
				   sizeof(c), 0) < 0 ?
		       -1 :
		       0;
}

/* Translates an IPv4 TCP/UDP packet (parsed into p) to IPv6 from
 * x->src6:sport to x->dst6:dport. 0 or -1 (the packet may be half
 * rewritten: drop it). */
static __noinline int lb_xlate_4to6(struct __sk_buff *skb, const struct lb_pkt *p,
				    struct lb_xlate *x, __u32 ports)
{
	__be16 sport = (__be16)(ports >> 16), dport = (__be16)ports;
	__u64 mangled = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__be16 eth_proto = bpf_htons(ETH_P_IPV6), old_csum = 0;
	__u32 ihl, l4_len, opts;
	bool zero_udp = false;
	__s64 diff;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &x->ip4, sizeof(x->ip4)) < 0)
		return -1;
	ihl = (__u32)x->ip4.ihl * 4;
	l4_len = bpf_ntohs(x->ip4.tot_len);
	if (ihl < 20 || l4_len < ihl)
		return -1;
	l4_len -= ihl;
	if (p->proto == IPPROTO_UDP) {
		if (bpf_skb_load_bytes(skb, p->csum_off, &old_csum, sizeof(old_csum)) < 0)
			return -1;
		zero_udp = old_csum == 0;
	}
	/* The L4 checksum: the pseudo-header's addresses (its length and
	 * protocol sum the same in both families), then the ports. */
	if (!zero_udp) {
		x->old4[0] = p->saddr;
		x->old4[1] = p->daddr;
		diff = bpf_csum_diff(x->old4, sizeof(x->old4), (__be32 *)&x->src6,
				     2 * sizeof(struct in6_addr), 0);
		if (diff < 0)
			return -1;
		if (bpf_l4_csum_replace(skb, p->csum_off, 0, diff, BPF_F_PSEUDO_HDR | mangled) < 0)
			return -1;
		if (bpf_l4_csum_replace(skb, p->csum_off, p->sport, sport, mangled | 2) < 0 ||
		    bpf_l4_csum_replace(skb, p->csum_off, p->dport, dport, mangled | 2) < 0)
			return -1;
	}
	if (bpf_skb_store_bytes(skb, p->l4_off, &sport, 2, 0) < 0 ||
	    bpf_skb_store_bytes(skb, p->l4_off + 2, &dport, 2, 0) < 0)
		return -1;
	/* IPv4 options are dropped. */
	opts = ihl - 20;
	if (opts && bpf_skb_adjust_room(skb, -(__s32)opts, BPF_ADJ_ROOM_NET, 0) < 0)
		return -1;
	if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IPV6), 0) < 0)
		return -1;
	x->ip6.version = 6;
	x->ip6.priority = x->ip4.tos >> 4;
	x->ip6.flow_lbl[0] = (x->ip4.tos & 0xf) << 4;
	x->ip6.payload_len = bpf_htons(l4_len);
	x->ip6.nexthdr = p->proto;
	x->ip6.hop_limit = x->ip4.ttl;
	x->ip6.saddr = x->src6;
	x->ip6.daddr = x->dst6;
	if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &eth_proto, 2, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &x->ip6, sizeof(x->ip6), 0) < 0)
		return -1;
	if (zero_udp) {
		/* IPv6 requires a UDP checksum. */
		__builtin_memcpy(&x->pseudo[0], &x->src6, 16);
		__builtin_memcpy(&x->pseudo[4], &x->dst6, 16);
		x->pseudo[8] = bpf_htonl(l4_len);
		x->pseudo[9] = bpf_htonl(IPPROTO_UDP);
		return lb_xlate_udp_csum6(skb, x, l4_len);
	}
	return 0;
}

/* Translates an IPv6 TCP/UDP packet (parsed into p) to IPv4 from
 * x->src4:sport to x->dst4:dport. 0 or -1 (drop). */
static __noinline int lb_xlate_6to4(struct __sk_buff *skb, const struct lb_pkt6 *p,
				    struct lb_xlate *x, __u32 ports)
{
	__be16 sport = (__be16)(ports >> 16), dport = (__be16)ports;
	__u64 mangled = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__be16 eth_proto = bpf_htons(ETH_P_IP);
	__u32 ext, l4_len;
	__s64 diff;
	__u16 *w;
	__u32 c = 0;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &x->ip6, sizeof(x->ip6)) < 0)
		return -1;
	if (p->l4_off < ETH_HLEN + 40)
		return -1;
	ext = p->l4_off - ETH_HLEN - 40;
	l4_len = bpf_ntohs(x->ip6.payload_len);
	if (l4_len < ext)
		return -1;
	l4_len -= ext;
	x->old6[0] = p->saddr;
	x->old6[1] = p->daddr;
	diff = bpf_csum_diff((__be32 *)x->old6, sizeof(x->old6), &x->src4, 2 * sizeof(__be32), 0);
	if (diff < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, p->csum_off, 0, diff, BPF_F_PSEUDO_HDR | mangled) < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, p->csum_off, p->sport, sport, mangled | 2) < 0 ||
	    bpf_l4_csum_replace(skb, p->csum_off, p->dport, dport, mangled | 2) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, p->l4_off, &sport, 2, 0) < 0 ||
	    bpf_skb_store_bytes(skb, p->l4_off + 2, &dport, 2, 0) < 0)
		return -1;
	/* IPv6 extension headers are dropped. */
	if (ext && bpf_skb_adjust_room(skb, -(__s32)ext, BPF_ADJ_ROOM_NET, 0) < 0)
		return -1;
	if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IP), 0) < 0)
		return -1;
	x->ip4.version = 4;
	x->ip4.ihl = 5;
	x->ip4.tos = (x->ip6.priority << 4) | (x->ip6.flow_lbl[0] >> 4);
	x->ip4.tot_len = bpf_htons(l4_len + 20);
	x->ip4.id = 0;
	x->ip4.frag_off = bpf_htons(LB_IP_DF);
	x->ip4.ttl = x->ip6.hop_limit;
	x->ip4.protocol = p->proto;
	x->ip4.check = 0;
	x->ip4.saddr = x->src4;
	x->ip4.daddr = x->dst4;
	w = (__u16 *)&x->ip4;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(struct iphdr) / 2); i++)
		c += w[i];
	x->ip4.check = ~lb_xlate_fold(c);
	if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &eth_proto, 2, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &x->ip4, sizeof(x->ip4), 0) < 0)
		return -1;
	return 0;
}

/* ---- Sizes: MSS clamping, packets over the route's MTU ----
 *
 * A translated TCP SYN or SYN-ACK has its MSS option lowered (never
 * raised) so that a full segment from the peer fits the route the
 * translated packet takes (lb_core::nat46x64::mss_limit): to the IPv6
 * route's MTU less 60 (IPv6 + TCP headers) when translated to IPv6, to
 * the IPv4 route's MTU less 40 when translated to IPv4. The MTU is the
 * one bpf_fib_lookup() finds for the route (the dataplane learns it per
 * SYN, so a route MTU or a device MTU below the peer's is honoured);
 * LB_XLATE_DEFAULT_MTU when there is no route (the stack routes the
 * packet). As with iptables' --clamp-mss-to-pmtu, the route to a peer
 * stands for the way back from it.
 *
 * An IPv4 packet grows by 20 bytes as IPv6 (NAT46 requests, NAT64
 * replies): one over the IPv6 route's MTU is answered with ICMP
 * fragmentation needed (lb_xlate_too_big4); IPv6 packets shrink. */

#ifndef BPF_FIB_LOOKUP_SKIP_NEIGH
#define BPF_FIB_LOOKUP_SKIP_NEIGH (1U << 2) /* Linux 6.5 */
#endif

/* The MTU of the route from x->src6 to x->dst6 (v6) or x->src4 to x->dst4,
 * as the kernel's forwarding uses it (a route's mtu metric when locked,
 * else the device's): bpf_fib_lookup's mtu_result, looked up without the
 * neighbour (which, unresolved, would leave mtu_result unset) into
 * x->fib_mtu; LB_XLATE_DEFAULT_MTU without a route or an answer below
 * `min`. */
static __noinline __u32 lb_xlate_route_mtu(struct __sk_buff *skb, struct lb_xlate *x, __u8 proto,
					   bool v6, __u32 min)
{
	struct bpf_fib_lookup *f = &x->fib_mtu;
	__u32 mtu = 0;
	long rc;

	/* A length that fits any route (68): with a length the kernel
	 * answers the route's MTU, without one the device's. */
	__builtin_memset(f, 0, sizeof(*f));
	if (v6)
		rc = lb6_fib_len(skb, f, &x->src6, &x->dst6, proto, 68, BPF_FIB_LOOKUP_SKIP_NEIGH);
	else
		rc = lb_fib_len(skb, f, x->src4, x->dst4, proto, 68, BPF_FIB_LOOKUP_SKIP_NEIGH);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		mtu = f->mtu_result;
	return mtu >= min && mtu <= 0xffff ? mtu : LB_XLATE_DEFAULT_MTU;
}

/* An IPv4 packet that would be over the IPv6 route's MTU (`mtu`) once
 * translated: counted as LB_DROP_FRAG_NEEDED and answered as an IPv4
 * router would (RFC 7915 section 4 leaves the size to the IPv6 side):
 * fragmentation needed carrying the IPv4 size that fits, the route's MTU
 * less the 20 bytes the translation adds, from the packet's destination
 * (lb_icmp4_frag_needed, which DSR uses too). Without DF (a translator may
 * fragment it; this one does not), with IPv4 options, or when the answer
 * cannot be built, the packet is only dropped. */
static __noinline int lb_xlate_too_big4(struct __sk_buff *skb, __u32 mtu)
{
	int rc;

	lb_count_drop(LB_DROP_FRAG_NEEDED);
	if (mtu < LB_IP6_MIN_MTU || mtu > 0xffff)
		return TC_ACT_SHOT;
	rc = lb_icmp4_frag_needed(skb, ETH_HLEN, mtu - 20);
	return rc < 0 ? TC_ACT_SHOT : rc;
}

/* Translates the IPv4 packet x->p4 to IPv6 from x->src6:sport to
 * x->dst6:dport and sends it out of the IPv6 route, looked up once before
 * the translation for the translated size: over the route's MTU, the
 * packet is answered instead (lb_xlate_too_big4); a SYN's MSS is first
 * clamped to the route's MTU less 60. */
static __noinline int lb_xlate_send6(struct __sk_buff *skb, struct lb_xlate *x, __u32 ports)
{
	const struct lb_pkt *p = &x->p4;
	__u32 max_mss;
	long rc;

	__builtin_memset(&x->fib, 0, sizeof(x->fib));
	rc = lb6_fib_len(skb, &x->fib, &x->src6, &x->dst6, p->proto,
			 skb->len - p->l4_off + sizeof(struct ipv6hdr), 0);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return lb_xlate_too_big4(skb, x->fib.mtu_result);
	if (p->tcp_flags & LB_TCP_SYN) {
		max_mss = lb_xlate_route_mtu(skb, x, p->proto, true, LB_IP6_MIN_MTU) -
			  LB_XLATE_MSS_HDR6;
		if (lb_mss_clamp(skb, p->l4_off, p->csum_off, max_mss, x->opts) < 0)
			return lb_drop(LB_DROP_REWRITE);
	}
	if (lb_xlate_4to6(skb, p, x, ports) < 0)
		return lb_drop(LB_DROP_REWRITE);
	return lb6_fib_send(skb, &x->fib, rc);
}

/* A SYN or SYN-ACK about to be translated from IPv6 (x->p6) to IPv4 from
 * x->src4 to x->dst4: its MSS is clamped to the IPv4 route's MTU less 40.
 * 0 or -1 (drop). */
static __noinline int lb_xlate_clamp4(struct __sk_buff *skb, struct lb_xlate *x)
{
	const struct lb_pkt6 *p = &x->p6;
	__u32 max_mss = lb_xlate_route_mtu(skb, x, p->proto, false, 68) - LB_XLATE_MSS_HDR4;

	return lb_mss_clamp(skb, p->l4_off, p->csum_off, max_mss, x->opts) < 0 ? -1 : 0;
}

/* ---- The client family's flow step, shared by NAT46 and NAT64 ----
 *
 * NAT46 and NAT64 keep a translated flow the same way, in the client
 * family's CT and affinity maps, with a backend of the other family's
 * backends map; LB_DEFINE_XLATE_FLOW defines for client family `cf`:
 *   lb_xlate_flow<cf>: the flow's backend: its CT entry's (*ctp, backend
 *     id and SNAT port), unless gone, another frontend's or a closing
 *     flow's new SYN (that entry is deleted), else a new choice (affinity,
 *     XDP hint, Maglev or weighted random; *new_flow). NULL when there is
 *     no backend (the frontend's packet counted; the caller drops);
 *   lb_xlate_ct_new<cf>: records a new flow (CT entry with LB_CT_F_SNAT and
 *     its SNAT port, affinity when the frontend has it). */
#define LB_DEFINE_XLATE_FLOW(cf, pkt_t, key_t, ct_entry_t, ct_map, aff_map, choose, be_t,     \
			     be_map)                                                           \
	static __always_inline be_t *lb_xlate_flow##cf(                                        \
		struct __sk_buff *skb, const struct lb_config *cfg, struct lb_xlate *x,        \
		const pkt_t *p, const key_t *key, ct_entry_t **ctp, __u32 *backend_id,         \
		__be16 *snat_port, bool *new_flow)                                             \
	{                                                                                      \
		ct_entry_t *ct;                                                                \
		be_t *be = NULL;                                                               \
                                                                                               \
		x->ck##cf.saddr = p->saddr;                                                    \
		x->ck##cf.daddr = p->daddr;                                                    \
		x->ck##cf.sport = p->sport;                                                    \
		x->ck##cf.dport = p->dport;                                                    \
		x->ck##cf.proto = p->proto;                                                    \
		x->ck##cf.dir = LB_CT_SERVICE;                                                 \
		ct = bpf_map_lookup_elem(&ct_map, &x->ck##cf);                                 \
		if (ct && ct->rev_nat_index == x->rev_nat &&                                   \
		    !((ct->flags & LB_CT_F_CLOSING) && lb_tcp_new_syn(p->tcp_flags))) {         \
			*backend_id = ct->backend_id;                                          \
			*snat_port = ct->snat_port;                                            \
			be = bpf_map_lookup_elem(&be_map, backend_id);                         \
		}                                                                              \
		if (!be) {                                                                     \
			if (ct)                                                                \
				bpf_map_delete_elem(&ct_map, &x->ck##cf);                      \
			ct = NULL;                                                             \
			x->ak##cf.client = p->saddr;                                           \
			x->ak##cf.rev_nat_index = x->rev_nat;                                  \
			*backend_id = choose(cfg, key, &x->ak##cf, p, x->rev_nat, x->flags,    \
					     x->count, x->timeout, x->total_weight, x->now,    \
					     lb_xdp_hint(skb, x->rev_nat));                    \
			if (*backend_id)                                                       \
				be = bpf_map_lookup_elem(&be_map, backend_id);                 \
			if (!be) {                                                             \
				lb_count_service_slot(x->svc_slot, skb->len, false);           \
				return NULL;                                                   \
			}                                                                      \
			*new_flow = true;                                                      \
		}                                                                              \
		*ctp = ct;                                                                     \
		return be;                                                                     \
	}                                                                                      \
                                                                                               \
	static __always_inline void lb_xlate_ct_new##cf(struct lb_xlate *x, const pkt_t *p,    \
							__u32 backend_id, __be16 snat_port,    \
							bool closing)                          \
	{                                                                                      \
		struct lb_affinity_val av = { .last_used = x->now, .backend_id = backend_id }; \
                                                                                               \
		x->ct##cf.backend_id = backend_id;                                             \
		x->ct##cf.rev_nat_index = x->rev_nat;                                          \
		x->ct##cf.frontend_addr = p->daddr;                                            \
		x->ct##cf.frontend_port = p->dport;                                            \
		x->ct##cf.last_seen = x->now;                                                  \
		x->ct##cf.flags = LB_CT_F_SNAT | (closing ? LB_CT_F_CLOSING : 0);              \
		x->ct##cf.snat_port = snat_port;                                               \
		bpf_map_update_elem(&ct_map, &x->ck##cf, &x->ct##cf, BPF_ANY);                 \
		if (x->flags & LB_SVC_F_AFFINITY)                                              \
			bpf_map_update_elem(&aff_map, &x->ak##cf, &av, BPF_ANY);               \
	}

/* NAT46: IPv4 clients, IPv6 backends; NAT64: the reverse. */
LB_DEFINE_XLATE_FLOW(4, struct lb_pkt, struct lb4_key, struct ct4_entry, lb4_ct, lb4_affinity,
		     lb_choose_backend, struct lb6_backend, lb6_backends)
LB_DEFINE_XLATE_FLOW(6, struct lb_pkt6, struct lb6_key, struct ct6_entry, lb6_ct, lb6_affinity,
		     lb6_choose_backend, struct lb4_backend, lb4_backends)

/* ---- NAT46: IPv4 client and frontend, IPv6 backend ---- */

/* A packet of an IPv4 client to a frontend marked LB_SVC_F_NAT46X64 (the
 * IPv4 family body's LBF_XLATE). */
static __noinline int lb_nat46_ingress(struct __sk_buff *skb, const struct lb_config *cfg,
				       struct lb_xlate *x)
{
	const struct lb_pkt *p = &x->p4;
	const struct lb4_key *key = &x->key4;
	struct lb6_backend *be = NULL;
	struct ct4_entry *ct;
	struct lb6_snat_entry *e;
	__u32 backend_id = 0, rev_nat = x->rev_nat;
	__u16 flags = x->flags;
	__be16 snat_port = 0, be_port;
	__u64 now = x->now;
	bool new_flow = false, closing = lb_tcp_closing(p->tcp_flags);

	if (!lb6_snat_addr(cfg, &x->src6))
		return lb_drop(LB_DROP_SNAT_PORTS);
	be = lb_xlate_flow4(skb, cfg, x, p, key, &ct, &backend_id, &snat_port, &new_flow);
	if (!be)
		return lb_drop(flags & LB_SVC_F_LOCAL_ONLY ? LB_DROP_NO_LOCAL_BACKEND :
							   LB_DROP_NO_BACKEND);
	x->dst6 = be->address;
	be_port = be->port;
	/* The reverse entry: the IPv4 client and frontend, IPv4-mapped. */
	lb_xlate_map4(&x->se6.client_addr, p->saddr);
	lb_xlate_map4(&x->se6.frontend_addr, p->daddr);
	x->se6.client_port = p->sport;
	x->se6.frontend_port = p->dport;
	x->se6.rev_nat_index = rev_nat;
	x->se6.last_seen = now;
	if (new_flow) {
		snat_port = lb_snat_alloc6(cfg, x->src6, x->dst6, be_port, p->proto, &x->se6,
					   p->sport);
		if (!snat_port)
			return lb_drop(LB_DROP_SNAT_PORTS);
		lb_xlate_ct_new4(x, p, backend_id, snat_port, closing);
	} else if (ct) {
		bool fresh = lb_ct_fresh(ct, now, closing);

		lb_ct_touch(ct, now, closing);
		if (!fresh) {
			/* Keep the reverse entry fresh; recreate it if the LRU
			 * evicted it. */
			lb_snat_key6(&x->sk6, x->dst6, be_port, x->src6, snat_port, p->proto);
			e = bpf_map_lookup_elem(&lb6_snat, &x->sk6);
			if (e) {
				if (e->last_seen != now)
					e->last_seen = now;
			} else {
				bpf_map_update_elem(&lb6_snat, &x->sk6, &x->se6, BPF_ANY);
			}
		}
	}
	lb_count_service_slot(x->svc_slot, skb->len, new_flow);
	lb_count_backend(be, skb->len, new_flow);
	return lb_xlate_send6(skb, x, ((__u32)snat_port << 16) | be_port);
}

/* A reply of a NAT46 flow: an IPv6 packet from the backend to the node's
 * IPv6 address:snat_port whose lb6_snat entry `e` holds an IPv4-mapped
 * client (lb_snat_reply6's LBF_XLATE_REPLY). Translated back to IPv4 from
 * the frontend to the client, and redirected to the client. */
static __noinline int lb_nat46_reply(struct __sk_buff *skb, struct lb_xlate *x)
{
	const struct lb_pkt6 *p = &x->p6;
	const struct lb6_snat_entry *e = &x->se6;
	struct lb4_reverse_nat *rn;
	__be16 client_port, fe_port;
	__u64 now = x->now;
	__u32 rev_nat;
	int rc;

	x->dst4 = e->client_addr.in6_u.u6_addr32[3];
	x->src4 = e->frontend_addr.in6_u.u6_addr32[3];
	client_port = e->client_port;
	fe_port = e->frontend_port;
	rev_nat = e->rev_nat_index;
	if (p->tcp_flags & (LB_TCP_FIN | LB_TCP_RST)) {
		/* The backend closes: so does the client's CT entry. */
		x->ck4.saddr = x->dst4;
		x->ck4.daddr = x->src4;
		x->ck4.sport = client_port;
		x->ck4.dport = fe_port;
		x->ck4.proto = p->proto;
		x->ck4.dir = LB_CT_SERVICE;
		lb_ct_close(&x->ck4, now);
	}
	rn = bpf_map_lookup_elem(&lb4_reverse_nat, &rev_nat);
	if (rn && rn->address) {
		x->src4 = rn->address;
		fe_port = rn->port;
	}
	if ((p->tcp_flags & LB_TCP_SYN) && lb_xlate_clamp4(skb, x) < 0)
		return lb_drop(LB_DROP_REWRITE);
	if (lb_xlate_6to4(skb, p, x, ((__u32)fe_port << 16) | client_port) < 0)
		return lb_drop(LB_DROP_REWRITE);
	rc = lb_fib_redirect(skb, x->src4, x->dst4, p->proto);
	return rc == LB_FIB_TOO_BIG ? TC_ACT_OK : rc;
}

/* ---- NAT64: IPv6 client and frontend, IPv4 backend ---- */

/* The lb6_snat key of a NAT64 flow's reverse entry: its IPv4 reply tuple,
 * IPv4-mapped. */
static __always_inline void lb_nat64_snat_key(struct ct6_key *k, __be32 be_addr, __be16 be_port,
					      __be32 node, __be16 port, __u8 proto)
{
	lb_xlate_map4(&k->saddr, be_addr);
	lb_xlate_map4(&k->daddr, node);
	k->sport = be_port;
	k->dport = port;
	k->proto = proto;
	k->dir = LB_CT_SERVICE;
	k->pad[0] = 0;
	k->pad[1] = 0;
}

/* A packet of an IPv6 client to a frontend marked LB_SVC_F_NAT46X64 (the
 * IPv6 family body's LBF_XLATE). */
static __noinline int lb_nat64_ingress(struct __sk_buff *skb, const struct lb_config *cfg,
				       struct lb_xlate *x)
{
	const struct lb_pkt6 *p = &x->p6;
	const struct lb6_key *key = &x->key6;
	struct lb4_backend *be = NULL;
	struct ct6_entry *ct;
	struct lb4_snat_entry *m;
	struct lb6_snat_entry *e;
	__u32 backend_id = 0, rev_nat = x->rev_nat;
	__u16 flags = x->flags;
	__be16 snat_port = 0, be_port;
	__u64 now = x->now;
	bool new_flow = false, closing = lb_tcp_closing(p->tcp_flags);
	int rc;

	x->src4 = lb_snat_addr(cfg);
	if (!x->src4)
		return lb_drop(LB_DROP_SNAT_PORTS);
	be = lb_xlate_flow6(skb, cfg, x, p, key, &ct, &backend_id, &snat_port, &new_flow);
	if (!be)
		return lb_drop(flags & LB_SVC_F_LOCAL_ONLY ? LB_DROP_NO_LOCAL_BACKEND :
							   LB_DROP_NO_BACKEND);
	x->dst4 = be->address;
	be_port = be->port;
	/* The marker in lb4_snat (client 0.0.0.0) and the real entry in
	 * lb6_snat. */
	x->se4.client_port = p->sport;
	x->se4.frontend_port = p->dport;
	x->se4.rev_nat_index = rev_nat;
	x->se4.last_seen = now;
	x->se6.client_addr = p->saddr;
	x->se6.frontend_addr = p->daddr;
	x->se6.client_port = p->sport;
	x->se6.frontend_port = p->dport;
	x->se6.rev_nat_index = rev_nat;
	x->se6.last_seen = now;
	if (new_flow) {
		snat_port = lb_snat_alloc(cfg, x->src4, x->dst4, be_port, p->proto, &x->se4, 0);
		if (!snat_port)
			return lb_drop(LB_DROP_SNAT_PORTS);
		lb_nat64_snat_key(&x->sk6, x->dst4, be_port, x->src4, snat_port, p->proto);
		bpf_map_update_elem(&lb6_snat, &x->sk6, &x->se6, BPF_ANY);
		lb_xlate_ct_new6(x, p, backend_id, snat_port, closing);
	} else if (ct) {
		bool fresh = lb_ct_fresh_at(ct->last_seen, now, closing);

		lb6_ct_touch(ct, now, closing);
		if (!fresh) {
			lb_snat_key(&x->sk4, x->dst4, be_port, x->src4, snat_port, p->proto);
			m = bpf_map_lookup_elem(&lb4_snat, &x->sk4);
			if (m) {
				if (m->last_seen != now)
					m->last_seen = now;
			} else {
				bpf_map_update_elem(&lb4_snat, &x->sk4, &x->se4, BPF_ANY);
			}
			lb_nat64_snat_key(&x->sk6, x->dst4, be_port, x->src4, snat_port, p->proto);
			e = bpf_map_lookup_elem(&lb6_snat, &x->sk6);
			if (e) {
				if (e->last_seen != now)
					e->last_seen = now;
			} else {
				bpf_map_update_elem(&lb6_snat, &x->sk6, &x->se6, BPF_ANY);
			}
		}
	}
	lb_count_service_slot(x->svc_slot, skb->len, new_flow);
	lb_count_backend(be, skb->len, new_flow);
	if ((p->tcp_flags & LB_TCP_SYN) && lb_xlate_clamp4(skb, x) < 0)
		return lb_drop(LB_DROP_REWRITE);
	if (lb_xlate_6to4(skb, p, x, ((__u32)snat_port << 16) | be_port) < 0)
		return lb_drop(LB_DROP_REWRITE);
	rc = lb_fib_redirect(skb, x->src4, x->dst4, p->proto);
	return rc == LB_FIB_TOO_BIG ? lb_drop(LB_DROP_FRAG_NEEDED) : rc;
}

/* A reply of a NAT64 flow: an IPv4 packet from the backend to the node's
 * IPv4 address:snat_port whose lb4_snat entry is a marker; x->se6 holds
 * the real entry (lb_xlate_reply4). */
static __noinline int lb_nat64_reply(struct __sk_buff *skb, struct lb_xlate *x)
{
	const struct lb_pkt *p = &x->p4;
	struct lb6_reverse_nat *rn;
	__be16 client_port, fe_port;
	__u64 now = x->now;
	__u32 rev_nat;

	x->dst6 = x->se6.client_addr;
	x->src6 = x->se6.frontend_addr;
	client_port = x->se6.client_port;
	fe_port = x->se6.frontend_port;
	rev_nat = x->se6.rev_nat_index;
	if (p->tcp_flags & (LB_TCP_FIN | LB_TCP_RST)) {
		x->ck6.saddr = x->dst6;
		x->ck6.daddr = x->src6;
		x->ck6.sport = client_port;
		x->ck6.dport = fe_port;
		x->ck6.proto = p->proto;
		x->ck6.dir = LB_CT_SERVICE;
		lb6_ct_close(&x->ck6, now);
	}
	rn = bpf_map_lookup_elem(&lb6_reverse_nat, &rev_nat);
	if (rn && !lb6_addr_is_zero(&rn->address)) {
		x->src6 = rn->address;
		fe_port = rn->port;
	}
	return lb_xlate_send6(skb, x, ((__u32)fe_port << 16) | client_port);
}

/* Runs what a family body handed over (LB_XLATE_GO). */
static __noinline int lb_xlate_run(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct lb_xlate *x = bpf_map_lookup_elem(&lb_xlate_scratch, &zero);
	const struct lb_config *cfg = bpf_map_lookup_elem(&lb_config, &zero);

	if (!x)
		return TC_ACT_OK;
	switch (x->kind) {
	case LB_XLATE_NAT46:
		return lb_nat46_ingress(skb, cfg, x);
	case LB_XLATE_NAT64:
		return lb_nat64_ingress(skb, cfg, x);
	case LB_XLATE_NAT46_REPLY:
		return lb_nat46_reply(skb, x);
	case LB_XLATE_NAT64_REPLY:
		return lb_nat64_reply(skb, x);
	default:
		return TC_ACT_OK;
	}
}

/* The family bodies' hooks (lb_tc.c's LBF_XLATE, LBF_XLATE_REPLY): they
 * hand the packet over through the scratch entry and return LB_XLATE_GO. */

/* A packet to a LB_SVC_F_NAT46X64 frontend of family 4 or 6. */
#define LB_XLATE_ENTER(fam, kind_, p, key, rev_nat_, svc_slot_, flags_, count_, timeout_,        \
		       total_weight_, now_)                                                       \
	({                                                                                        \
		struct lb_xlate *__x = lb_xlate_get();                                            \
		int __rc = TC_ACT_OK;                                                             \
		if (__x) {                                                                        \
			__x->kind = (kind_);                                                      \
			__x->p##fam = *(p);                                                       \
			__x->key##fam = *(key);                                                   \
			__x->rev_nat = (rev_nat_);                                                \
			__x->svc_slot = (svc_slot_);                                              \
			__x->flags = (flags_);                                                    \
			__x->count = (count_);                                                    \
			__x->timeout = (timeout_);                                                \
			__x->total_weight = (total_weight_);                                      \
			__x->now = (now_);                                                        \
			__rc = LB_XLATE_GO;                                                       \
		}                                                                                 \
		__rc;                                                                             \
	})

/* A reply to a NAT46 flow: its lb6_snat entry `e`. */
static __always_inline int lb_xlate_reply6(const struct lb_pkt6 *p,
					   const struct lb6_snat_entry *e, __u64 now)
{
	struct lb_xlate *x = lb_xlate_get();

	if (!x)
		return TC_ACT_SHOT;
	x->kind = LB_XLATE_NAT46_REPLY;
	x->p6 = *p;
	x->se6 = *e;
	x->now = now;
	return LB_XLATE_GO;
}

/* A reply to a NAT64 flow (its lb4_snat entry is a marker): -1 when its
 * real entry is gone (the packet is then not a reply). */
static __always_inline int lb_xlate_reply4(const struct lb_pkt *p, __u64 now)
{
	struct lb_xlate *x = lb_xlate_get();
	struct lb6_snat_entry *e;

	if (!x)
		return TC_ACT_SHOT;
	lb_nat64_snat_key(&x->sk6, p->saddr, p->sport, p->daddr, p->dport, p->proto);
	e = bpf_map_lookup_elem(&lb6_snat, &x->sk6);
	if (!e)
		return -1;
	if (e->last_seen != now)
		e->last_seen = now;
	x->kind = LB_XLATE_NAT64_REPLY;
	x->p4 = *p;
	x->se6 = *e;
	x->now = now;
	return LB_XLATE_GO;
}

#endif /* LB_NAT46_H */
