/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_pkt.h: bounds-checked Ethernet/IPv4|IPv6/TCP|UDP parsing and the
 * address/port rewrites with incremental L3/L4 checksum updates.
 */
#ifndef LB_PKT_H
#define LB_PKT_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stdbool.h>
#include <stddef.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define LB_IP_CSUM_OFF  (ETH_HLEN + offsetof(struct iphdr, check))
#define LB_IP_SADDR_OFF (ETH_HLEN + offsetof(struct iphdr, saddr))
#define LB_IP_DADDR_OFF (ETH_HLEN + offsetof(struct iphdr, daddr))
#define LB_IP_MF        0x2000
#define LB_IP_OFFSET    0x1fff
#define LB_TCP_FIN      0x01
#define LB_TCP_SYN      0x02
#define LB_TCP_RST      0x04
#define LB_TCP_ACK      0x10

/* What the programs need of a packet. */
struct lb_pkt {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags; /* TCP: the flags byte (LB_TCP_*), else 0 */
	__u32 l4_off;   /* from the start of the frame */
	__u32 csum_off; /* of the L4 checksum, from the start of the frame */
};

enum lb_parse {
	LB_PARSE_OK = 0,        /* IPv4/IPv6 TCP/UDP, headers complete */
	LB_PARSE_IGNORE = 1,    /* not ours (other protocol, fragment): pass untouched */
	LB_PARSE_MALFORMED = 2, /* IPv4/IPv6 with a broken header: drop and count */
};

/* Bytes the programs read from the start of a frame: Ethernet, an IPv4
 * header with options and a TCP header, or an ICMP error quoting IPv4 and
 * a TCP header's first 18 bytes (lb_icmp.h). */
#define LB_PULL_LEN (ETH_HLEN + 60 + 20)

/* Makes the first LB_PULL_LEN bytes (or the whole packet, if shorter)
 * linear, so that a non-linear skb (GRO, some drivers) is not mistaken for
 * a truncated one. Packet pointers must be reloaded afterwards. */
static __always_inline void lb_pull(struct __sk_buff *skb)
{
	__u32 want = skb->len < LB_PULL_LEN ? skb->len : LB_PULL_LEN;

	if ((void *)(long)skb->data + want > (void *)(long)skb->data_end)
		bpf_skb_pull_data(skb, want);
}

static __always_inline enum lb_parse lb_parse4(struct __sk_buff *skb, struct lb_pkt *p)
{
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *ip;
	void *l4;
	__u32 ihl;

	lb_pull(skb);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return LB_PARSE_IGNORE;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return LB_PARSE_MALFORMED;
	ihl = ip->ihl;
	if (ip->version != 4 || ihl < 5)
		return LB_PARSE_MALFORMED;
	if (ip->frag_off & bpf_htons(LB_IP_MF | LB_IP_OFFSET))
		return LB_PARSE_IGNORE;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return LB_PARSE_IGNORE;
	l4 = (void *)ip + ihl * 4;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->l4_off = ETH_HLEN + ihl * 4;
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return LB_PARSE_MALFORMED;
		p->sport = tcp->source;
		p->dport = tcp->dest;
		p->tcp_flags = ((__u8 *)tcp)[13];
		p->csum_off = p->l4_off + offsetof(struct tcphdr, check);
	} else {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
			return LB_PARSE_MALFORMED;
		p->sport = udp->source;
		p->dport = udp->dest;
		p->csum_off = p->l4_off + offsetof(struct udphdr, check);
	}
	return LB_PARSE_OK;
}

/* Replaces one address (at ip_off) and one port (at port_off) and fixes the IP
 * and L4 checksums incrementally. A zero UDP checksum stays zero. */
static __always_inline int lb_rewrite(struct __sk_buff *skb, const struct lb_pkt *p,
				      __u32 ip_off, __be32 old_addr, __be32 new_addr,
				      __u32 port_off, __be16 old_port, __be16 new_port)
{
	__u64 mangled = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (old_addr != new_addr) {
		if (bpf_l4_csum_replace(skb, p->csum_off, old_addr, new_addr,
					BPF_F_PSEUDO_HDR | mangled | sizeof(new_addr)) < 0)
			return -1;
		if (bpf_l3_csum_replace(skb, LB_IP_CSUM_OFF, old_addr, new_addr,
					sizeof(new_addr)) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, ip_off, &new_addr, sizeof(new_addr), 0) < 0)
			return -1;
	}
	if (old_port != new_port) {
		if (bpf_l4_csum_replace(skb, p->csum_off, old_port, new_port,
					mangled | sizeof(new_port)) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0) < 0)
			return -1;
	}
	return 0;
}

/* ---- IPv6 ---- */

#define LB_IP6_SADDR_OFF (ETH_HLEN + offsetof(struct ipv6hdr, saddr))
#define LB_IP6_DADDR_OFF (ETH_HLEN + offsetof(struct ipv6hdr, daddr))
/* Extension headers lb_parse6 skips before the L4 header at most. */
#define LB_IP6_EXT_MAX 4
/* The L4 header must start within this many bytes of the frame. */
#define LB_IP6_L4_OFF_MAX (ETH_HLEN + 40 + 256)

/* What the programs need of an IPv6 packet (struct lb_pkt's twin). */
struct lb_pkt6 {
	struct in6_addr saddr;
	struct in6_addr daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags; /* TCP: the flags byte (LB_TCP_*), else 0 */
	__u32 l4_off;   /* from the start of the frame */
	__u32 csum_off; /* of the L4 checksum, from the start of the frame */
};

static __always_inline bool lb6_addr_eq(const struct in6_addr *a, const struct in6_addr *b)
{
	return a->in6_u.u6_addr32[0] == b->in6_u.u6_addr32[0] &&
	       a->in6_u.u6_addr32[1] == b->in6_u.u6_addr32[1] &&
	       a->in6_u.u6_addr32[2] == b->in6_u.u6_addr32[2] &&
	       a->in6_u.u6_addr32[3] == b->in6_u.u6_addr32[3];
}

/* True for :: (the wildcard frontend address, "no address"). */
static __always_inline bool lb6_addr_is_zero(const struct in6_addr *a)
{
	return (a->in6_u.u6_addr32[0] | a->in6_u.u6_addr32[1] | a->in6_u.u6_addr32[2] |
		a->in6_u.u6_addr32[3]) == 0;
}

/* Classifies an IPv6 frame like lb_parse4 does an IPv4 one, and like
 * lb-userspace's packet::parse: a fixed header cut short or a version other
 * than 6 is malformed, so is a TCP or UDP header cut short. Up to
 * LB_IP6_EXT_MAX hop-by-hop, routing (with no segments left: the fixed
 * header names the final destination) and destination-options headers are
 * skipped before the L4 header; anything else (a fragment header, ICMPv6,
 * another protocol, a routing header with segments left, an extension
 * header cut short or reaching past LB_IP6_L4_OFF_MAX) is not ours and
 * passes untouched. lb-userspace's packet::ipv6_l4 and the conformance
 * reference skip the same headers (the differential traces carry them). */
static __always_inline enum lb_parse lb_parse6(struct __sk_buff *skb, struct lb_pkt6 *p)
{
	void *data, *data_end;
	struct ethhdr *eth;
	struct ipv6hdr *ip6;
	__u32 off, need;
	__u8 next;

	lb_pull(skb);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IPV6))
		return LB_PARSE_IGNORE;
	ip6 = (void *)(eth + 1);
	if ((void *)(ip6 + 1) > data_end)
		return LB_PARSE_MALFORMED;
	if (ip6->version != 6)
		return LB_PARSE_MALFORMED;
	next = ip6->nexthdr;
	p->saddr = ip6->saddr;
	p->daddr = ip6->daddr;
	off = ETH_HLEN + sizeof(*ip6);
#pragma unroll
	for (int i = 0; i < LB_IP6_EXT_MAX; i++) {
		__u8 h[4];

		if (next == IPPROTO_TCP || next == IPPROTO_UDP)
			break;
		if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS)
			return LB_PARSE_IGNORE;
		if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
			return LB_PARSE_IGNORE;
		if (next == IPPROTO_ROUTING && h[3] != 0)
			return LB_PARSE_IGNORE;
		next = h[0];
		off += ((__u32)h[1] + 1) * 8;
		if (off > LB_IP6_L4_OFF_MAX)
			return LB_PARSE_IGNORE;
	}
	if (next != IPPROTO_TCP && next != IPPROTO_UDP)
		return LB_PARSE_IGNORE;
	p->proto = next;
	p->l4_off = off;
	need = off + (next == IPPROTO_TCP ? sizeof(struct tcphdr) : sizeof(struct udphdr));
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + need > data_end) {
		/* Extension headers took the L4 header past what lb_pull made
		 * linear; a header cut short stays short. */
		if (need > skb->len)
			return LB_PARSE_MALFORMED;
		if (bpf_skb_pull_data(skb, need) < 0)
			return LB_PARSE_MALFORMED;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	off &= 0x1ff; /* for the verifier: off <= LB_IP6_L4_OFF_MAX */
	if (next == IPPROTO_TCP) {
		struct tcphdr *tcp = data + off;

		if ((void *)(tcp + 1) > data_end)
			return LB_PARSE_MALFORMED;
		p->sport = tcp->source;
		p->dport = tcp->dest;
		p->tcp_flags = ((__u8 *)tcp)[13];
		p->csum_off = off + offsetof(struct tcphdr, check);
	} else {
		struct udphdr *udp = data + off;

		if ((void *)(udp + 1) > data_end)
			return LB_PARSE_MALFORMED;
		p->sport = udp->source;
		p->dport = udp->dest;
		p->csum_off = off + offsetof(struct udphdr, check);
	}
	return LB_PARSE_OK;
}

/* lb_rewrite for IPv6: replaces one address (16 bytes at ip_off) and one
 * port (at port_off) and fixes the L4 checksum incrementally (its
 * pseudo-header covers the addresses; IPv6 has no header checksum). A zero
 * UDP checksum stays zero, as with IPv4 (lb-userspace does the same). */
static __always_inline int lb_rewrite6(struct __sk_buff *skb, const struct lb_pkt6 *p,
				       __u32 ip_off, const struct in6_addr *old_addr,
				       const struct in6_addr *new_addr, __u32 port_off,
				       __be16 old_port, __be16 new_port)
{
	__u64 mangled = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	/* old_addr and new_addr are on the stack (never in the packet, which
	 * the helpers below may move). */
	if (!lb6_addr_eq(old_addr, new_addr)) {
		__s64 diff = bpf_csum_diff((__be32 *)old_addr, sizeof(*old_addr),
					   (__be32 *)new_addr, sizeof(*new_addr), 0);

		if (diff < 0)
			return -1;
		if (bpf_l4_csum_replace(skb, p->csum_off, 0, diff,
					BPF_F_PSEUDO_HDR | mangled) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, ip_off, new_addr, sizeof(*new_addr), 0) < 0)
			return -1;
	}
	if (old_port != new_port) {
		if (bpf_l4_csum_replace(skb, p->csum_off, old_port, new_port,
					mangled | sizeof(new_port)) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0) < 0)
			return -1;
	}
	return 0;
}

#endif /* LB_PKT_H */
