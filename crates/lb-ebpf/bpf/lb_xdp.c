/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_xdp.c: XDP acceleration of external service traffic (IPv4 and IPv6),
 * over the same maps as lb_tc.c.
 *
 * lb_xdp handles a packet to a NodePort, LoadBalancer or ExternalIP
 * frontend whose flow goes to a remote backend through one of our devices,
 * as lb_tc_ingress would: same frontend lookup, source ranges, connection
 * tracking, affinity and selection (lb_flow.h, lb_select.h), SNAT port
 * allocation (lb_snat.h) or DSR decision (lb_dsr.h), and counters. It
 * then DNATs (+ SNATs) or IPIP-encapsulates the frame itself, looks the
 * backend up in the FIB, rewrites the MACs and sends it with XDP_TX (the
 * route leaves through the arrival device) or bpf_redirect (another one).
 *
 * IPv6 (lb6_* maps) has the same semantics, written once for both families
 * in lb_xdp_fam.h (as lb_tc_fam.h for tc): DSR flows go in IPv6-in-IPv6,
 * the outer header built by lb_dsr6_hdr.h as tc builds it (lb_dsr6.h), so
 * XDP and tc send the same bytes. IPv6 frames with extension headers are
 * passed to tc.
 *
 * Everything else goes up with XDP_PASS to tc and the stack, untouched:
 * non-IP, IP options or IPv6 extension headers, fragments, ICMP/ICMPv6,
 * replies of SNATed flows (lb_tc.c reverse-translates them), ClusterIP
 * and HostPort frontends, NAT46/64 frontends (lb_tc.c translates them,
 * lb_nat46.h), traffic policy Local, flows to local backends or routed
 * elsewhere, a backend not in the family's map, routes without a
 * resolved neighbour, and frames over the route's MTU (a DSR packet once
 * encapsulated: tc answers it with ICMP fragmentation needed or ICMPv6
 * Packet Too Big, lb_dsr_icmp.h, lb_dsr6.h). When it chose the backend of a new flow
 * before passing it, it leaves that choice in the frame's metadata
 * (struct lb_xdp_meta) and tc takes it, so selection is done once. Nothing
 * is committed (CT, SNAT, affinity, counters) for a packet it passes.
 *
 * XDP_REDIRECT and XDP_TX to a veth deliver only when the peer end has an
 * XDP program attached (or GRO enabled); see lb_xdp_pass.c.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_abi.h"
#include "lb_jhash.h"
#include "lb_pkt.h"
#include "lb_select.h"
#include "lb_snat.h"
#include "lb_dsr.h"
#include "lb_dsr6_hdr.h"
#include "lb_flow.h"

/* Indices of lb_xdp_stats (per-CPU packet counters of lb_xdp's verdicts). */
enum lb_xdp_stat {
	LB_XDP_STAT_TX = 0,       /* forwarded out of the arrival device */
	LB_XDP_STAT_REDIRECT = 1, /* forwarded out of another device */
	LB_XDP_STAT_PASS = 2,     /* a frontend's packet left to tc */
	LB_XDP_STAT_DROP = 3,     /* dropped (reason counted in lb_drops) */
	LB_XDP_STAT_MAX = 4,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, LB_XDP_STAT_MAX);
} lb_xdp_stats SEC(".maps");

static __always_inline void lb_xdp_count(__u32 stat)
{
	__u64 *n = bpf_map_lookup_elem(&lb_xdp_stats, &stat);

	if (n)
		*n += 1;
}

static __always_inline int lb_xdp_drop(__u32 reason)
{
	lb_count_drop(reason);
	lb_xdp_count(LB_XDP_STAT_DROP);
	return XDP_DROP;
}

/* Passes a frontend's packet to tc, with the backend chosen for a new flow
 * (0: none) in the metadata. */
static __always_inline int lb_xdp_pass(struct xdp_md *ctx, __u32 rev_nat, __u32 backend_id)
{
	struct lb_xdp_meta *m;
	void *data;

	lb_xdp_count(LB_XDP_STAT_PASS);
	if (!backend_id || bpf_xdp_adjust_meta(ctx, -(int)sizeof(*m)) < 0)
		return XDP_PASS;
	m = (void *)(long)ctx->data_meta;
	data = (void *)(long)ctx->data;
	if ((void *)(m + 1) > data)
		return XDP_PASS;
	m->magic = LB_XDP_META_MAGIC;
	m->rev_nat_index = rev_nat;
	m->backend_id = backend_id;
	return XDP_PASS;
}

/* The TCP or UDP part of lb_xdp_parse4 and lb_xdp_parse6: the header of
 * `proto` at `l4` (frame offset l4_off) must be complete; its ports, the
 * TCP flags and the L4 checksum's frame offset go to the family's packet
 * fields (LB_XDP_PARSE_L4). False for another protocol or a truncated
 * header. */
static __always_inline bool lb_xdp_parse_l4(void *l4, void *data_end, __u8 proto, __u32 l4_off,
					    __be16 *sport, __be16 *dport, __u8 *tcp_flags,
					    __u32 *csum_off)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return false;
		*sport = tcp->source;
		*dport = tcp->dest;
		*tcp_flags = ((__u8 *)tcp)[13];
		*csum_off = l4_off + offsetof(struct tcphdr, check);
		return true;
	}
	if (proto == IPPROTO_UDP) {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
			return false;
		*sport = udp->source;
		*dport = udp->dest;
		*csum_off = l4_off + offsetof(struct udphdr, check);
		return true;
	}
	return false;
}

/* lb_xdp_parse_l4 into `p` (struct lb_pkt or lb_pkt6), whose proto and
 * l4_off are set. */
#define LB_XDP_PARSE_L4(p, l4, data_end)                                                          \
	lb_xdp_parse_l4(l4, data_end, (p)->proto, (p)->l4_off, &(p)->sport, &(p)->dport,          \
			&(p)->tcp_flags, &(p)->csum_off)

/* Parses what lb_xdp handles: Ethernet, IPv4 without options, not a
 * fragment, TCP or UDP with a complete header. Anything else (including
 * malformed headers, which tc drops and counts) is not ours. */
static __always_inline bool lb_xdp_parse4(struct xdp_md *ctx, struct lb_pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return false;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return false;
	if (ip->version != 4 || ip->ihl != 5)
		return false;
	if (ip->frag_off & bpf_htons(LB_IP_MF | LB_IP_OFFSET))
		return false;
	if ((void *)ip + bpf_ntohs(ip->tot_len) > data_end)
		return false;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->l4_off = ETH_HLEN + sizeof(*ip);
	return LB_XDP_PARSE_L4(p, ip + 1, data_end);
}

static __always_inline __u16 lb_csum_fold(__u32 c)
{
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return (__u16)~c;
}

/* RFC 1624 incremental update of a checksum for a 32-bit field change. */
static __always_inline __u16 lb_csum_upd4(__u16 check, __be32 from, __be32 to)
{
	__u32 c = (~check & 0xffff) + (~from & 0xffff) + ((~from >> 16) & 0xffff) +
		  (to & 0xffff) + (to >> 16);

	return lb_csum_fold(c);
}

/* The same for a 16-bit field. */
static __always_inline __u16 lb_csum_upd2(__u16 check, __be16 from, __be16 to)
{
	__u32 c = (~check & 0xffff) + (~from & 0xffff) + to;

	return lb_csum_fold(c);
}

/* The TCP or UDP header lb_xdp_nat4 and lb_xdp_nat6 rewrite, at `l4`:
 * its ports (source, destination) and, in `csum`, its checksum; NULL when
 * the header is not complete. */
static __always_inline __be16 *lb_xdp_l4_ports(void *l4, void *data_end, __u8 proto,
					       __u16 **csum)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return NULL;
		*csum = &tcp->check;
		return &tcp->source;
	} else {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
			return NULL;
		*csum = &udp->check;
		return &udp->source;
	}
}

/* The L4 end of lb_xdp_nat4 and lb_xdp_nat6: writes sport and dport and,
 * when `update` (TCP, or UDP with a checksum), the checksum `c` (already
 * updated for the addresses) updated for them; a UDP checksum that comes
 * out zero is sent as 0xffff. */
static __always_inline void lb_xdp_l4_rewrite(__u8 proto, __u16 *csum, __be16 *ports, __u16 c,
					      bool update, __be16 sport, __be16 dport)
{
	if (update) {
		c = lb_csum_upd2(c, ports[0], sport);
		c = lb_csum_upd2(c, ports[1], dport);
		if (proto == IPPROTO_UDP && c == 0)
			c = 0xffff;
		*csum = c;
	}
	ports[0] = sport;
	ports[1] = dport;
}

/* Rewrites the addresses and ports and fixes both checksums
 * incrementally; a zero UDP checksum stays zero. 0 or -1. */
static __always_inline int lb_xdp_nat4(struct xdp_md *ctx, __u8 proto, __be32 saddr,
				       __be16 sport, __be32 daddr, __be16 dport)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	__be16 *ports;
	__u16 *csum;
	__u16 c;
	bool update;

	if ((void *)(ip + 1) > data_end)
		return -1;
	ports = lb_xdp_l4_ports(ip + 1, data_end, proto, &csum);
	if (!ports)
		return -1;
	c = *csum;
	update = proto == IPPROTO_TCP || c != 0;
	if (update) {
		c = lb_csum_upd4(c, ip->saddr, saddr);
		c = lb_csum_upd4(c, ip->daddr, daddr);
	}
	lb_xdp_l4_rewrite(proto, csum, ports, c, update, sport, dport);
	ip->check = lb_csum_upd4(lb_csum_upd4(ip->check, ip->saddr, saddr), ip->daddr, daddr);
	ip->saddr = saddr;
	ip->daddr = daddr;
	return 0;
}

/* Grows the frame's head by `len` bytes for an outer header of that length
 * between Ethernet (moved to the new start, ethertype `h_proto`; the MACs
 * are set by lb_xdp_send) and the frame's IP header. Returns the outer
 * header's start, `len` bytes within the frame, or NULL. */
static __always_inline void *lb_xdp_push_outer(struct xdp_md *ctx, __u32 len, __be16 h_proto)
{
	void *data, *data_end;
	struct ethhdr *eth;

	if (bpf_xdp_adjust_head(ctx, -(int)len) < 0)
		return NULL;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if (data + ETH_HLEN + len > data_end)
		return NULL;
	eth->h_proto = h_proto;
	return data + ETH_HLEN;
}

/* lb_dsr_encap for XDP: an outer IPv4 header node -> be_addr (protocol
 * IPIP, DF, the backend port in its Identification field) in front of the
 * frame's IPv4 header. The MACs are set by lb_xdp_send. 0 or -1. */
static __always_inline int lb_xdp_dsr_encap(struct xdp_md *ctx, __be32 node, __be32 be_addr,
					    __be16 be_port)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *outer, *inner = data + ETH_HLEN;
	__u16 inner_len, *w;
	__u32 c = 0;
	__u8 tos;

	if ((void *)(inner + 1) > data_end)
		return -1;
	inner_len = bpf_ntohs(inner->tot_len);
	tos = inner->tos;
	outer = lb_xdp_push_outer(ctx, sizeof(*outer), bpf_htons(ETH_P_IP));
	if (!outer)
		return -1;
	outer->version = 4;
	outer->ihl = 5;
	outer->tos = tos;
	outer->tot_len = bpf_htons(inner_len + sizeof(*outer));
	outer->id = be_port;
	outer->frag_off = bpf_htons(LB_IP_DF);
	outer->ttl = 64;
	outer->protocol = IPPROTO_IPIP;
	outer->check = 0;
	outer->saddr = node;
	outer->daddr = be_addr;
	w = (__u16 *)outer;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*outer) / 2); i++)
		c += w[i];
	outer->check = lb_csum_fold(c);
	return 0;
}

/* A FIB lookup for (saddr -> daddr) as if forwarded from the arrival device. */
static __always_inline long lb_xdp_fib(struct xdp_md *ctx, struct bpf_fib_lookup *fib,
				       __be32 saddr, __be32 daddr, __u8 proto, __u32 tot_len)
{
	fib->family = AF_INET;
	fib->l4_protocol = proto;
	fib->tot_len = (__u16)tot_len;
	fib->ipv4_src = saddr;
	fib->ipv4_dst = daddr;
	fib->ifindex = ctx->ingress_ifindex;
	return bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
}

/* lb_route_is_ours for XDP: the route to daddr leaves through one of our
 * devices (a resolved or unresolved neighbour, as in tc). */
static __always_inline bool lb_xdp_route_is_ours(struct xdp_md *ctx, __be32 saddr, __be32 daddr,
						 __u8 proto, __u32 tot_len)
{
	struct bpf_fib_lookup fib = {};
	long rc = lb_xdp_fib(ctx, &fib, saddr, daddr, proto, tot_len);
	__u32 ifindex;

	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return false;
	ifindex = fib.ifindex;
	return bpf_map_lookup_elem(&lb_devices, &ifindex) != NULL;
}

/* Sets the MACs of the FIB result and sends the frame out of its device. */
static __always_inline int lb_xdp_send(struct xdp_md *ctx, const struct bpf_fib_lookup *fib)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return lb_xdp_drop(LB_DROP_REWRITE);
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	if (fib->ifindex == ctx->ingress_ifindex) {
		lb_xdp_count(LB_XDP_STAT_TX);
		return XDP_TX;
	}
	lb_xdp_count(LB_XDP_STAT_REDIRECT);
	return bpf_redirect(fib->ifindex, 0);
}

/* ---- IPv6 helpers ---- */

/* lb_xdp_parse4 for IPv6: Ethernet, an IPv6 header whose next header is
 * TCP or UDP (no extension headers), a payload within the frame, a
 * complete TCP or UDP header. Anything else is not ours. */
static __always_inline bool lb_xdp_parse6(struct xdp_md *ctx, struct lb_pkt6 *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IPV6))
		return false;
	ip6 = (void *)(eth + 1);
	if ((void *)(ip6 + 1) > data_end)
		return false;
	if (ip6->version != 6)
		return false;
	if ((void *)(ip6 + 1) + bpf_ntohs(ip6->payload_len) > data_end)
		return false;
	p->saddr = ip6->saddr;
	p->daddr = ip6->daddr;
	p->proto = ip6->nexthdr;
	p->l4_off = ETH_HLEN + sizeof(*ip6);
	return LB_XDP_PARSE_L4(p, ip6 + 1, data_end);
}

/* lb_xdp_nat4 for IPv6: the L4 checksum covers the addresses through its
 * pseudo-header (IPv6 has no header checksum). A zero UDP checksum stays
 * zero, as in lb_rewrite6. `saddr` and `daddr` are not in the packet. */
static __always_inline int lb_xdp_nat6(struct xdp_md *ctx, __u8 proto,
				       const struct in6_addr *saddr, __be16 sport,
				       const struct in6_addr *daddr, __be16 dport)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	__be16 *ports;
	__u16 *csum;
	__u16 c;
	bool update;

	if ((void *)(ip6 + 1) > data_end)
		return -1;
	ports = lb_xdp_l4_ports(ip6 + 1, data_end, proto, &csum);
	if (!ports)
		return -1;
	c = *csum;
	update = proto == IPPROTO_TCP || c != 0;
	if (update) {
#pragma unroll
		for (int i = 0; i < 4; i++) {
			c = lb_csum_upd4(c, ip6->saddr.in6_u.u6_addr32[i], saddr->in6_u.u6_addr32[i]);
			c = lb_csum_upd4(c, ip6->daddr.in6_u.u6_addr32[i], daddr->in6_u.u6_addr32[i]);
		}
	}
	lb_xdp_l4_rewrite(proto, csum, ports, c, update, sport, dport);
	ip6->saddr = *saddr;
	ip6->daddr = *daddr;
	return 0;
}

/* lb6_dsr_encap (lb_dsr6.h) for XDP: an outer IPv6 header node -> be_addr
 * (next header IPv6, the inner traffic class, be_port in the flow label,
 * hop limit 64; lb6_dsr_outer, the bytes tc writes) in front of the
 * frame's IPv6 header. The MACs are set by lb_xdp_send. 0 or -1. */
static __always_inline int lb_xdp_dsr6_encap(struct xdp_md *ctx, const struct in6_addr *node,
					     const struct in6_addr *be_addr, __be16 be_port)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *outer, *inner = data + ETH_HLEN;
	__be32 vtcfl;
	__be16 plen;

	if ((void *)(inner + 1) > data_end)
		return -1;
	vtcfl = *(__be32 *)inner;
	plen = inner->payload_len;
	outer = lb_xdp_push_outer(ctx, LB_DSR6_OVERHEAD, bpf_htons(ETH_P_IPV6));
	if (!outer)
		return -1;
	lb6_dsr_outer(outer, node, be_addr, be_port, vtcfl, plen);
	return 0;
}

/* lb_xdp_fib for IPv6. */
static __always_inline long lb_xdp_fib6(struct xdp_md *ctx, struct bpf_fib_lookup *fib,
					const struct in6_addr *saddr,
					const struct in6_addr *daddr, __u8 proto, __u32 tot_len)
{
	fib->family = AF_INET6;
	fib->l4_protocol = proto;
	fib->tot_len = (__u16)tot_len;
	__builtin_memcpy(fib->ipv6_src, saddr, sizeof(fib->ipv6_src));
	__builtin_memcpy(fib->ipv6_dst, daddr, sizeof(fib->ipv6_dst));
	fib->ifindex = ctx->ingress_ifindex;
	return bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
}

/* lb_xdp_route_is_ours for IPv6 (a function of its own: its own stack
 * frame for the lookup's parameters). */
static __noinline bool lb_xdp_route_is_ours6(struct xdp_md *ctx, const struct in6_addr *saddr,
					     const struct in6_addr *daddr, __u8 proto,
					     __u32 tot_len)
{
	struct bpf_fib_lookup fib = {};
	long rc = lb_xdp_fib6(ctx, &fib, saddr, daddr, proto, tot_len);
	__u32 ifindex;

	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return false;
	ifindex = fib.ifindex;
	return bpf_map_lookup_elem(&lb_devices, &ifindex) != NULL;
}

/* ---- IPv4 ---- */
#define LBX(name) name##4
#define LBX_PKT struct lb_pkt
#define LBX_ADDR __be32
#define LBX_ADDR_NONE 0
#define LBX_KEY struct lb4_key
#define LBX_CT_KEY struct ct4_key
#define LBX_CT_ENTRY struct ct4_entry
#define LBX_AFF_KEY struct lb4_affinity_key
#define LBX_SNAT_ENTRY struct lb4_snat_entry
#define LBX_BACKEND struct lb4_backend
#define LBX_CT_MAP lb4_ct
#define LBX_BACKENDS_MAP lb4_backends
#define LBX_AFFINITY_MAP lb4_affinity
#define LBX_SNAT_MAP lb4_snat
#define LBX_PARSE lb_xdp_parse4
#define LBX_EQ LB_ADDR4_EQ
#define LBX_SNAT_ADDR(cfg, out) (((out) = lb_snat_addr(cfg)) != 0)
#define LBX_LOOKUP_FRONTEND(key, cfg, p)                                                          \
	lb_lookup_frontend(key, cfg, (p)->daddr, (p)->dport, (p)->proto, 0)
#define LBX_SRC_RANGE_OK(rev_nat, saddr) lb_xdp_src_range_ok4(rev_nat, saddr)
#define LBX_CHOOSE_BACKEND lb_choose_backend
#define LBX_HAS_DSR 1
#define LBX_DSR_PROTO IPPROTO_IPIP
#define LBX_DSR_OVERHEAD sizeof(struct iphdr)
#define LBX_ROUTE_IS_OURS lb_xdp_route_is_ours
#define LBX_FIB lb_xdp_fib
#define LBX_SNAT_ALLOC lb_snat_alloc
#define LBX_SNAT_REFRESH lb_snat_refresh
#define LBX_SNAT_KEY lb_snat_key
#define LBX_CT_TOUCH lb_ct_touch
#define LBX_CT_FRESH lb_ct_fresh
#define LBX_NAT lb_xdp_nat4
#define LBX_DSR_ENCAP lb_xdp_dsr_encap

/* The IPv4 program's per-packet state: on the stack. */
struct lb4_xdp_state {
	struct lb_pkt p;
	struct lb4_key key;
	struct ct4_key ck;
	struct ct4_entry ct_val;
	struct lb4_affinity_key ak;
	struct lb4_snat_entry rev;
	struct bpf_fib_lookup fib;
};
#define LBX_STATE struct lb4_xdp_state
#define LBX_STATE_DECL(st) struct lb4_xdp_state st##_local = {}, *st = &st##_local

static __always_inline bool lb_xdp_src_range_ok4(__u32 rev_nat, __be32 saddr)
{
	struct lb4_src_range_key rk = {
		.prefixlen = 64, .rev_nat_index = rev_nat, .addr = saddr,
	};

	return bpf_map_lookup_elem(&lb4_src_range, &rk) != NULL;
}

#include "lb_xdp_fam.h"
#include "lb_xdp_unfam.h"

/* ---- IPv6 ---- */
#define LBX(name) name##6
#define LBX_PKT struct lb_pkt6
#define LBX_ADDR struct in6_addr
#define LBX_ADDR_NONE {}
#define LBX_KEY struct lb6_key
#define LBX_CT_KEY struct ct6_key
#define LBX_CT_ENTRY struct ct6_entry
#define LBX_AFF_KEY struct lb6_affinity_key
#define LBX_SNAT_ENTRY struct lb6_snat_entry
#define LBX_BACKEND struct lb6_backend
#define LBX_CT_MAP lb6_ct
#define LBX_BACKENDS_MAP lb6_backends
#define LBX_AFFINITY_MAP lb6_affinity
#define LBX_SNAT_MAP lb6_snat
#define LBX_PARSE lb_xdp_parse6
#define LBX_EQ LB_ADDR6_EQ
#define LBX_SNAT_ADDR(cfg, out) lb6_snat_addr(cfg, &(out))
#define LBX_LOOKUP_FRONTEND(key, cfg, p)                                                          \
	lb6_lookup_frontend(key, cfg, &(p)->daddr, (p)->dport, (p)->proto, 0)
#define LBX_SRC_RANGE_OK(rev_nat, saddr) lb_xdp_src_range_ok6(rev_nat, &(saddr))
#define LBX_CHOOSE_BACKEND lb6_choose_backend
/* IPv6 DSR: IPv6-in-IPv6 (lb_dsr6.h), encapsulated here as tc does. */
#define LBX_HAS_DSR 1
#define LBX_DSR_PROTO IPPROTO_IPV6
#define LBX_DSR_OVERHEAD LB_DSR6_OVERHEAD
#define LBX_ROUTE_IS_OURS(ctx, saddr, daddr, proto, tot_len)                                      \
	lb_xdp_route_is_ours6(ctx, &(saddr), &(daddr), proto, tot_len)
#define LBX_FIB(ctx, fib, saddr, daddr, proto, tot_len)                                           \
	lb_xdp_fib6(ctx, fib, &(saddr), &(daddr), proto, tot_len)
#define LBX_SNAT_ALLOC lb_snat_alloc6
#define LBX_SNAT_REFRESH lb_snat_refresh6
#define LBX_SNAT_KEY lb_snat_key6
#define LBX_CT_TOUCH lb6_ct_touch
#define LBX_CT_FRESH lb6_ct_fresh
#define LBX_NAT(ctx, proto, saddr, sport, daddr, dport)                                           \
	lb_xdp_nat6(ctx, proto, &(saddr), sport, &(daddr), dport)
#define LBX_DSR_ENCAP(ctx, node, be_addr, be_port)                                                \
	lb_xdp_dsr6_encap(ctx, &(node), &(be_addr), be_port)

/* The IPv6 program's per-packet state is too wide for the stack (the
 * verifier's 512 bytes for a whole call chain): it lives in a per-CPU
 * scratch entry, cleared for every packet. The map is this object's own
 * (not pinned, not part of the ABI). */
struct lb6_xdp_state {
	struct lb_pkt6 p;
	struct lb6_key key;
	struct ct6_key ck;
	struct ct6_entry ct_val;
	struct lb6_affinity_key ak;
	struct lb6_snat_entry rev;
	struct bpf_fib_lookup fib;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct lb6_xdp_state);
	__uint(max_entries, 1);
} lb6_xdp_scratch SEC(".maps");

static __always_inline struct lb6_xdp_state *lb6_xdp_state(void)
{
	__u32 zero = 0;
	struct lb6_xdp_state *st = bpf_map_lookup_elem(&lb6_xdp_scratch, &zero);

	if (st)
		__builtin_memset(st, 0, sizeof(*st));
	return st;
}
#define LBX_STATE struct lb6_xdp_state
#define LBX_STATE_DECL(st) struct lb6_xdp_state *st = lb6_xdp_state()

static __always_inline bool lb_xdp_src_range_ok6(__u32 rev_nat, const struct in6_addr *saddr)
{
	struct lb6_src_range_key rk = {
		.prefixlen = 32 + 128, .rev_nat_index = rev_nat, .addr = *saddr,
	};

	return bpf_map_lookup_elem(&lb6_src_range, &rk) != NULL;
}

#include "lb_xdp_fam.h"
#include "lb_xdp_unfam.h"

/* Each family's body is a function of its own with its own stack frame
 * (the verifier bounds the frames of a call chain together). */
static __noinline int lb_xdp4_fn(struct xdp_md *ctx)
{
	return lb_xdp4(ctx);
}

static __noinline int lb_xdp6_fn(struct xdp_md *ctx)
{
	return lb_xdp6(ctx);
}

SEC("xdp")
int lb_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return lb_xdp6_fn(ctx);
	return lb_xdp4_fn(ctx);
}

char LICENSE[] SEC("license") = "GPL";
