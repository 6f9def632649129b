/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_nat46_icmp.h: ICMP errors about NAT46/64 flows (lb_nat46.h), translated
 * to the client's family (RFC 7915 §4.2 and §5.2) and sent on to it.
 *
 * An error from the backends' side, addressed to the node, quotes the
 * packet the node sent to the backend (node:SNAT port -> backend, in the
 * backend's family):
 *  - NAT46: an ICMPv6 error whose quote matches an lb6_snat entry with an
 *    IPv4-mapped client (lb_icmp6.h hands it over: LB_ICMP6_NAT46);
 *  - NAT64: an ICMPv4 error whose quote matches an lb4_snat marker (client
 *    0.0.0.0); the real entry is the lb6_snat one under the IPv4-mapped
 *    reply tuple (lb_icmp.h hands it over: LB_ICMP_NAT64).
 * The family body returns LB_XICMP_GO and lb_tc_ingress runs lb_xicmp_run
 * in a call chain of its own (as LB_XLATE_GO), with its state in a per-CPU
 * scratch entry.
 *
 * The client gets the error of its own family about the packet it sent:
 *  - type and code mapped as RFC 7915 says (lb_xicmp_map6to4,
 *    lb_xicmp_map4to6): packet too big <-> fragmentation needed with the
 *    MTU -/+ 20 (IPv4: at least 68; IPv6: at least 1280; an IPv4 MTU of 0 is
 *    the RFC 1191 plateau below the quoted length), port unreachable <->
 *    port unreachable, the other unreachable codes to their equivalents,
 *    ICMPv4 protocol unreachable to an ICMPv6 parameter problem, time
 *    exceeded <-> time exceeded. Any other error has no equivalent: dropped
 *    as LB_DROP_NAT46X64_ICMP (never passed raw towards a client of the
 *    other family);
 *  - outer header: source the frontend (no address of the client's family
 *    names the backend or a router of the other family), destination the
 *    client, traffic class/TOS and hop limit/TTL carried over; IPv4 ID 0,
 *    DF clear (RFC 7915 §5.1: at most 1260 bytes); IPv6 flow label 0;
 *  - the quote as lb_nat46.h translates packets: client -> frontend and
 *    their ports, lengths from the quoted header, IPv4 ID 0 and DF with a
 *    fresh header checksum, IPv6 flow label 0; the quoted TCP/UDP checksum,
 *    when quoted, updated for the new pseudo-header and ports;
 *  - the message is cut to LB_XICMP_MSG_MAX bytes (the error at most 1280
 *    bytes as IPv6, RFC 4443 §2.4 (c); 1260 as IPv4), and its checksum
 *    computed over it (ICMPv6: with the pseudo-header), in chunks.
 * lb-userspace's nat46x64_icmp.rs does the same; the conformance scenario
 * Nat46x64Icmp compares both with lb-testkit's reference.
 *
 * Only errors without IPv4 options or IPv6 extension headers, outer or
 * quoted, with at least 8 bytes of quoted TCP/UDP, are translated.
 */
#ifndef LB_NAT46_ICMP_H
#define LB_NAT46_ICMP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_abi.h"
#include "lb_snat.h"
#include "lb_icmp6_quote.h"
#include "lb_nat46.h"

/* The includer defines lb_drop(reason), as lb_tc.c. */

/* The family body's verdict for an error it handed over (not a TC_ACT_*). */
#define LB_XICMP_GO 0x4c49

/* What lb_xicmp_run translates. */
enum lb_xicmp_kind {
	LB_XICMP_46 = 1, /* ICMPv6 about a NAT46 flow -> ICMPv4 */
	LB_XICMP_64 = 2, /* ICMPv4 about a NAT64 flow -> ICMPv6 */
};

/* The translated message's largest size (ICMP header and quote). */
#define LB_XICMP_MSG_MAX (1280 - 40)
#define LB_XICMP_CHUNK 256
#define LB_XICMP_CHUNKS 5

/* Per-packet state, in a per-CPU scratch entry. */
struct lb_xicmp {
	__u32 kind;
	/* The quote as received (backend family). */
	struct in6_addr q_src6, q_dst6;
	__be32 q_src4, q_dst4;
	__be16 q_sport, q_dport;
	__u8 proto, q_tos, q_ttl, tos, ttl, ty, code, pad;
	__u16 q_len;   /* the quoted header's payload (IPv6) or total (IPv4) length */
	__u16 l4_len;  /* quoted L4 bytes kept */
	__u16 msg_len; /* the translated message's length */
	__u16 csum_off; /* offset of the quoted L4 checksum in the quote's L4 (0: none) */
	__u16 l4_csum;
	__u8 rest[4];
	/* The client's family. */
	struct in6_addr client6, fe6;
	__be32 client4, fe4;
	__be16 cport, fport;
	/* The snat lookup. */
	struct ct6_key k6;
	struct ct4_key k4;
	/* Checksum difference buffers: old and new pseudo-header words. */
	__be32 old_ph[9];
	__be32 new_ph[9];
	/* The new headers. */
	struct ipv6hdr ip6;
	struct ipv6hdr in6;
	struct iphdr ip4;
	struct iphdr in4;
	__u8 icmp[8];
	__u8 l4[8];
	__be32 pseudo[10];
	__u8 buf[LB_XICMP_CHUNK];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct lb_xicmp);
	__uint(max_entries, 1);
} lb_xicmp_scratch SEC(".maps");

/* The family bodies' hook: hands the error over (LB_XICMP_GO). */
static __always_inline int lb_xicmp_enter(__u32 kind)
{
	__u32 zero = 0;
	struct lb_xicmp *x = bpf_map_lookup_elem(&lb_xicmp_scratch, &zero);

	if (!x)
		return TC_ACT_OK;
	x->kind = kind;
	return LB_XICMP_GO;
}

/* ICMPv6 -> ICMPv4 type, code and rest of header (RFC 7915 §5.2); false
 * when there is no equivalent. */
static __always_inline bool lb_xicmp_map6to4(struct lb_xicmp *x)
{
	__u8 ty = x->ty, code = x->code;
	__u32 mtu;

	if (ty == 1) {
		if (code == 0 || code == 2 || code == 3)
			code = 1;
		else if (code == 1)
			code = 10;
		else if (code == 4)
			code = 3;
		else
			return false;
		ty = 3;
		__builtin_memset(x->rest, 0, 4);
	} else if (ty == 2) {
		__builtin_memcpy(&mtu, x->rest, 4);
		mtu = bpf_ntohl(mtu);
		mtu = mtu > 20 ? mtu - 20 : 0;
		if (mtu < 68)
			mtu = 68;
		if (mtu > 0xffff)
			mtu = 0xffff;
		ty = 3;
		code = 4;
		x->rest[0] = 0;
		x->rest[1] = 0;
		x->rest[2] = mtu >> 8;
		x->rest[3] = mtu & 0xff;
	} else if (ty == 3 && (code == 0 || code == 1)) {
		ty = 11;
		__builtin_memset(x->rest, 0, 4);
	} else {
		return false;
	}
	x->ty = ty;
	x->code = code;
	return true;
}

/* The RFC 1191 plateau below `len`. */
static __always_inline __u32 lb_xicmp_plateau(__u32 len)
{
	if (len > 65535)
		return 65535;
	if (len > 32000)
		return 32000;
	if (len > 17914)
		return 17914;
	if (len > 8166)
		return 8166;
	if (len > 4352)
		return 4352;
	if (len > 2002)
		return 2002;
	if (len > 1492)
		return 1492;
	if (len > 1006)
		return 1006;
	if (len > 508)
		return 508;
	if (len > 296)
		return 296;
	return 68;
}

/* ICMPv4 -> ICMPv6 (RFC 7915 §4.2); false when there is no equivalent. */
static __always_inline bool lb_xicmp_map4to6(struct lb_xicmp *x)
{
	__u8 ty = x->ty, code = x->code;
	__u32 mtu;

	if (ty == 3) {
		switch (code) {
		case 0: case 1: case 5: case 6: case 7: case 8: case 11: case 12:
			ty = 1;
			code = 0;
			__builtin_memset(x->rest, 0, 4);
			break;
		case 9: case 10: case 13: case 15:
			ty = 1;
			code = 1;
			__builtin_memset(x->rest, 0, 4);
			break;
		case 3:
			ty = 1;
			code = 4;
			__builtin_memset(x->rest, 0, 4);
			break;
		case 2:
			/* Parameter problem, unrecognized next header, pointing
			 * at the next header field. */
			ty = 4;
			code = 1;
			x->rest[0] = 0;
			x->rest[1] = 0;
			x->rest[2] = 0;
			x->rest[3] = 6;
			break;
		case 4:
			mtu = ((__u32)x->rest[2] << 8) | x->rest[3];
			if (mtu == 0)
				mtu = lb_xicmp_plateau(x->q_len);
			mtu += 20;
			if (mtu < 1280)
				mtu = 1280;
			ty = 2;
			code = 0;
			mtu = bpf_htonl(mtu);
			__builtin_memcpy(x->rest, &mtu, 4);
			break;
		default:
			return false;
		}
	} else if (ty == 11 && (code == 0 || code == 1)) {
		ty = 3;
		__builtin_memset(x->rest, 0, 4);
	} else {
		return false;
	}
	x->ty = ty;
	x->code = code;
	return true;
}

/* The quoted L4 header's first 8 bytes (x->l4) with the client's ports,
 * and its checksum (x->l4_csum at x->csum_off, when quoted) updated from
 * the old pseudo-header and ports (x->old_ph, `old_len` bytes) to the new
 * ones (x->new_ph, `new_len` bytes). */
static __always_inline void lb_xicmp_l4(struct lb_xicmp *x, __u32 old_len, __u32 new_len)
{
	__s64 d;

	if (x->csum_off && !(x->proto == IPPROTO_UDP && x->l4_csum == 0)) {
		__u16 c;

		d = bpf_csum_diff(x->old_ph, old_len, x->new_ph, new_len, 0);
		c = d < 0 ? x->l4_csum : lb_csum_add(x->l4_csum, lb_csum_fold((__u32)d));
		if (x->proto == IPPROTO_UDP && c == 0)
			c = 0xffff;
		x->l4_csum = c;
		if (x->csum_off == 6)
			__builtin_memcpy(&x->l4[6], &c, 2);
	}
	__builtin_memcpy(&x->l4[0], &x->cport, 2);
	__builtin_memcpy(&x->l4[2], &x->fport, 2);
}

/* The translated message's checksum: the message at `off` (x->msg_len
 * bytes), plus x->pseudo (IPv6) when `pseudo`. Stored; 0 or -1. */
static __noinline int lb_xicmp_csum(struct __sk_buff *skb, struct lb_xicmp *x, __u32 off,
				    bool pseudo)
{
	__u32 len = x->msg_len, full, tail, padded;
	__u64 sum = 0;
	__s64 s;
	__u16 c;

	if (len > LB_XICMP_MSG_MAX || off > ETH_HLEN + 40)
		return -1;
	full = len / LB_XICMP_CHUNK;
	tail = len & (LB_XICMP_CHUNK - 1);
	if (pseudo) {
		s = bpf_csum_diff(NULL, 0, x->pseudo, sizeof(x->pseudo), 0);
		if (s < 0)
			return -1;
		sum += (__u32)s;
	}
	for (__u32 i = 0; i < LB_XICMP_CHUNKS; i++) {
		if (i >= full)
			break;
		if (bpf_skb_load_bytes(skb, off + i * LB_XICMP_CHUNK, x->buf, LB_XICMP_CHUNK) < 0)
			return -1;
		s = bpf_csum_diff(NULL, 0, (__be32 *)x->buf, LB_XICMP_CHUNK, 0);
		if (s < 0)
			return -1;
		sum += (__u32)s;
	}
	if (tail) {
		__builtin_memset(x->buf, 0, LB_XICMP_CHUNK);
		tail -= 1;
		asm volatile("%0 &= 255" : "+r"(tail));
		tail += 1;
		if (full > LB_XICMP_CHUNKS)
			return -1;
		if (bpf_skb_load_bytes(skb, off + full * LB_XICMP_CHUNK, x->buf, tail) < 0)
			return -1;
		padded = (tail + 3) & 0x1fc;
		if (padded > LB_XICMP_CHUNK)
			return -1;
		s = bpf_csum_diff(NULL, 0, (__be32 *)x->buf, padded, 0);
		if (s < 0)
			return -1;
		sum += (__u32)s;
	}
	c = ~lb_xlate_fold(sum);
	return bpf_skb_store_bytes(skb, off + 2, &c, sizeof(c), 0) < 0 ? -1 : 0;
}

/* A header's IPv4 checksum. */
static __always_inline void lb_xicmp_ip4_csum(struct iphdr *h)
{
	__u16 *w = (__u16 *)h;
	__u32 c = 0;

	h->check = 0;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(struct iphdr) / 2); i++)
		c += w[i];
	h->check = ~lb_xlate_fold(c);
}

/* NAT46: an ICMPv6 error -> ICMPv4 to the IPv4 client. */
static __noinline int lb_xicmp_46(struct __sk_buff *skb, const struct lb_config *cfg,
				  struct lb_xicmp *x)
{
	struct lb6_snat_entry *e;
	struct lb4_reverse_nat *rn;
	struct in6_addr node;
	__u32 end, rev_nat;
	__be16 eth_proto = bpf_htons(ETH_P_IP);
	__be16 ports[2];
	__u16 c;
	int rc;

	/* [eth][ip6][icmp6][ip6][l4] */
	if (!lb6_snat_addr(cfg, &node) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, &x->ip6, sizeof(x->ip6)) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + 40, x->icmp, 8) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + 48, &x->in6, sizeof(x->in6)) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + 88, x->l4, 8) < 0)
		return TC_ACT_OK;
	if (x->ip6.nexthdr != IPPROTO_ICMPV6 ||
	    (x->in6.nexthdr != IPPROTO_TCP && x->in6.nexthdr != IPPROTO_UDP))
		return TC_ACT_OK;
	end = ETH_HLEN + 40 + bpf_ntohs(x->ip6.payload_len);
	if (end > skb->len)
		end = skb->len;
	if (end < ETH_HLEN + 96)
		return TC_ACT_OK;
	x->proto = x->in6.nexthdr;
	x->q_src6 = x->in6.saddr;
	x->q_dst6 = x->in6.daddr;
	__builtin_memcpy(ports, x->l4, 4);
	x->q_sport = ports[0];
	x->q_dport = ports[1];
	/* The flow: its reverse SNAT entry (lb_icmp6.h found it). */
	lb_snat_key6(&x->k6, x->q_dst6, x->q_dport, node, x->q_sport, x->proto);
	e = bpf_map_lookup_elem(&lb6_snat, &x->k6);
	if (!e || !lb_xlate_is_mapped(&e->client_addr))
		return TC_ACT_OK;
	x->client4 = e->client_addr.in6_u.u6_addr32[3];
	x->fe4 = e->frontend_addr.in6_u.u6_addr32[3];
	x->cport = e->client_port;
	x->fport = e->frontend_port;
	rev_nat = e->rev_nat_index;
	rn = bpf_map_lookup_elem(&lb4_reverse_nat, &rev_nat);
	if (rn && rn->address) {
		x->fe4 = rn->address;
		x->fport = rn->port;
	}
	x->ty = x->icmp[0];
	x->code = x->icmp[1];
	__builtin_memcpy(x->rest, &x->icmp[4], 4);
	if (!lb_xicmp_map6to4(x))
		return lb_drop(LB_DROP_NAT46X64_ICMP);
	x->tos = (x->ip6.priority << 4) | (x->ip6.flow_lbl[0] >> 4);
	x->ttl = x->ip6.hop_limit;
	x->q_tos = (x->in6.priority << 4) | (x->in6.flow_lbl[0] >> 4);
	x->q_ttl = x->in6.hop_limit;
	x->q_len = bpf_ntohs(x->in6.payload_len);
	/* The quoted L4 bytes kept, and the message. */
	x->l4_len = end - (ETH_HLEN + 88);
	if (x->l4_len > LB_XICMP_MSG_MAX - 28)
		x->l4_len = LB_XICMP_MSG_MAX - 28;
	x->msg_len = 28 + x->l4_len;
	/* The quoted L4 checksum. */
	x->csum_off = 0;
	if (x->proto == IPPROTO_UDP) {
		x->csum_off = 6;
		__builtin_memcpy(&x->l4_csum, &x->l4[6], 2);
	} else if (x->l4_len >= 18 &&
		   bpf_skb_load_bytes(skb, ETH_HLEN + 88 + 16, &x->l4_csum, 2) == 0) {
		x->csum_off = 16;
	}
	__builtin_memcpy(&x->old_ph[0], &x->q_src6, 16);
	__builtin_memcpy(&x->old_ph[4], &x->q_dst6, 16);
	__builtin_memcpy(&x->old_ph[8], x->l4, 4);
	x->new_ph[0] = x->client4;
	x->new_ph[1] = x->fe4;
	__builtin_memcpy(&x->new_ph[2], &x->cport, 2);
	__builtin_memcpy((__u8 *)&x->new_ph[2] + 2, &x->fport, 2);
	lb_xicmp_l4(x, 36, 12);
	/* The new headers. */
	__builtin_memset(&x->in4, 0, sizeof(x->in4));
	x->in4.version = 4;
	x->in4.ihl = 5;
	x->in4.tos = x->q_tos;
	x->in4.tot_len = bpf_htons(x->q_len > 0xffff - 20 ? 0xffff : x->q_len + 20);
	x->in4.frag_off = bpf_htons(LB_IP_DF);
	x->in4.ttl = x->q_ttl;
	x->in4.protocol = x->proto;
	x->in4.saddr = x->client4;
	x->in4.daddr = x->fe4;
	lb_xicmp_ip4_csum(&x->in4);
	__builtin_memset(&x->ip4, 0, sizeof(x->ip4));
	x->ip4.version = 4;
	x->ip4.ihl = 5;
	x->ip4.tos = x->tos;
	x->ip4.tot_len = bpf_htons(20 + x->msg_len);
	x->ip4.ttl = x->ttl;
	x->ip4.protocol = IPPROTO_ICMP;
	x->ip4.saddr = x->fe4;
	x->ip4.daddr = x->client4;
	lb_xicmp_ip4_csum(&x->ip4);
	x->icmp[0] = x->ty;
	x->icmp[1] = x->code;
	x->icmp[2] = 0;
	x->icmp[3] = 0;
	__builtin_memcpy(&x->icmp[4], x->rest, 4);
	/* [eth][ip6][icmp6][ip6][l4] -> [eth][ip4][icmp][ip4][l4]: 20 bytes
	 * off after the outer header (the ICMPv6 header and the quote's first
	 * 12 bytes, rewritten below), then 20 off the outer header. */
	if (bpf_skb_change_tail(skb, ETH_HLEN + 88 + x->l4_len, 0) < 0 ||
	    bpf_skb_adjust_room(skb, -20, BPF_ADJ_ROOM_NET, 0) < 0 ||
	    bpf_skb_change_proto(skb, bpf_htons(ETH_P_IP), 0) < 0)
		return lb_drop(LB_DROP_REWRITE);
	if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &eth_proto, 2, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &x->ip4, 20, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + 20, x->icmp, 8, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + 28, &x->in4, 20, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + 48, x->l4, 8, 0) < 0)
		return lb_drop(LB_DROP_REWRITE);
	c = x->l4_csum;
	if (x->csum_off == 16 && bpf_skb_store_bytes(skb, ETH_HLEN + 48 + 16, &c, 2, 0) < 0)
		return lb_drop(LB_DROP_REWRITE);
	if (lb_xicmp_csum(skb, x, ETH_HLEN + 20, false) < 0)
		return lb_drop(LB_DROP_REWRITE);
	rc = lb_fib_redirect(skb, x->fe4, x->client4, IPPROTO_ICMP);
	return rc == LB_FIB_TOO_BIG ? TC_ACT_OK : rc;
}

/* NAT64: an ICMPv4 error -> ICMPv6 to the IPv6 client. */
static __noinline int lb_xicmp_64(struct __sk_buff *skb, const struct lb_config *cfg,
				  struct lb_xicmp *x)
{
	struct lb6_snat_entry *e;
	struct lb6_reverse_nat *rn;
	__be32 node = lb_snat_addr(cfg);
	__u32 end, rev_nat;
	__be16 eth_proto = bpf_htons(ETH_P_IPV6);
	__be16 ports[2];
	__u16 c;
	int rc;

	/* [eth][ip4][icmp][ip4][l4] */
	if (!node || bpf_skb_load_bytes(skb, ETH_HLEN, &x->ip4, sizeof(x->ip4)) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + 20, x->icmp, 8) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + 28, &x->in4, sizeof(x->in4)) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + 48, x->l4, 8) < 0)
		return TC_ACT_OK;
	if (x->ip4.ihl != 5 || x->ip4.protocol != IPPROTO_ICMP || x->in4.ihl != 5 ||
	    (x->in4.protocol != IPPROTO_TCP && x->in4.protocol != IPPROTO_UDP))
		return TC_ACT_OK;
	end = ETH_HLEN + bpf_ntohs(x->ip4.tot_len);
	if (end > skb->len)
		end = skb->len;
	if (end < ETH_HLEN + 56)
		return TC_ACT_OK;
	x->proto = x->in4.protocol;
	x->q_src4 = x->in4.saddr;
	x->q_dst4 = x->in4.daddr;
	__builtin_memcpy(ports, x->l4, 4);
	x->q_sport = ports[0];
	x->q_dport = ports[1];
	/* The flow: its real entry, under the IPv4-mapped reply tuple. */
	lb_nat64_snat_key(&x->k6, x->q_dst4, x->q_dport, node, x->q_sport, x->proto);
	e = bpf_map_lookup_elem(&lb6_snat, &x->k6);
	if (!e)
		return TC_ACT_OK;
	x->client6 = e->client_addr;
	x->fe6 = e->frontend_addr;
	x->cport = e->client_port;
	x->fport = e->frontend_port;
	rev_nat = e->rev_nat_index;
	rn = bpf_map_lookup_elem(&lb6_reverse_nat, &rev_nat);
	if (rn && !lb6_addr_is_zero(&rn->address)) {
		x->fe6 = rn->address;
		x->fport = rn->port;
	}
	x->ty = x->icmp[0];
	x->code = x->icmp[1];
	__builtin_memcpy(x->rest, &x->icmp[4], 4);
	x->q_len = bpf_ntohs(x->in4.tot_len);
	if (!lb_xicmp_map4to6(x))
		return lb_drop(LB_DROP_NAT46X64_ICMP);
	x->tos = x->ip4.tos;
	x->ttl = x->ip4.ttl;
	x->q_tos = x->in4.tos;
	x->q_ttl = x->in4.ttl;
	x->l4_len = end - (ETH_HLEN + 48);
	if (x->l4_len > LB_XICMP_MSG_MAX - 48)
		x->l4_len = LB_XICMP_MSG_MAX - 48;
	x->msg_len = 48 + x->l4_len;
	x->csum_off = 0;
	if (x->proto == IPPROTO_UDP) {
		x->csum_off = 6;
		__builtin_memcpy(&x->l4_csum, &x->l4[6], 2);
	} else if (x->l4_len >= 18 &&
		   bpf_skb_load_bytes(skb, ETH_HLEN + 48 + 16, &x->l4_csum, 2) == 0) {
		x->csum_off = 16;
	}
	x->old_ph[0] = x->q_src4;
	x->old_ph[1] = x->q_dst4;
	__builtin_memcpy(&x->old_ph[2], x->l4, 4);
	__builtin_memcpy(&x->new_ph[0], &x->client6, 16);
	__builtin_memcpy(&x->new_ph[4], &x->fe6, 16);
	__builtin_memcpy(&x->new_ph[8], &x->cport, 2);
	__builtin_memcpy((__u8 *)&x->new_ph[8] + 2, &x->fport, 2);
	lb_xicmp_l4(x, 12, 36);
	/* The new headers. */
	__builtin_memset(&x->in6, 0, sizeof(x->in6));
	x->in6.version = 6;
	x->in6.priority = x->q_tos >> 4;
	x->in6.flow_lbl[0] = (x->q_tos & 0xf) << 4;
	x->in6.payload_len = bpf_htons(x->q_len > 20 ? x->q_len - 20 : 0);
	x->in6.nexthdr = x->proto;
	x->in6.hop_limit = x->q_ttl;
	x->in6.saddr = x->client6;
	x->in6.daddr = x->fe6;
	__builtin_memset(&x->ip6, 0, sizeof(x->ip6));
	x->ip6.version = 6;
	x->ip6.priority = x->tos >> 4;
	x->ip6.flow_lbl[0] = (x->tos & 0xf) << 4;
	x->ip6.payload_len = bpf_htons(x->msg_len);
	x->ip6.nexthdr = IPPROTO_ICMPV6;
	x->ip6.hop_limit = x->ttl;
	x->ip6.saddr = x->fe6;
	x->ip6.daddr = x->client6;
	x->icmp[0] = x->ty;
	x->icmp[1] = x->code;
	x->icmp[2] = 0;
	x->icmp[3] = 0;
	__builtin_memcpy(&x->icmp[4], x->rest, 4);
	__builtin_memcpy(&x->pseudo[0], &x->fe6, 16);
	__builtin_memcpy(&x->pseudo[4], &x->client6, 16);
	x->pseudo[8] = bpf_htonl(x->msg_len);
	x->pseudo[9] = bpf_htonl(IPPROTO_ICMPV6);
	/* [eth][ip4][icmp][ip4][l4] -> [eth][ip6][icmp6][ip6][l4]: cut to the
	 * kept bytes, 20 more for the outer header, then 20 after it (the
	 * ICMPv6 header and the quoted header are written over them). */
	if (bpf_skb_change_tail(skb, ETH_HLEN + 48 + x->l4_len, 0) < 0 ||
	    bpf_skb_change_proto(skb, bpf_htons(ETH_P_IPV6), 0) < 0 ||
	    bpf_skb_adjust_room(skb, 20, BPF_ADJ_ROOM_NET, 0) < 0)
		return lb_drop(LB_DROP_REWRITE);
	if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &eth_proto, 2, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &x->ip6, 40, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + 40, x->icmp, 8, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + 48, &x->in6, 40, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + 88, x->l4, 8, 0) < 0)
		return lb_drop(LB_DROP_REWRITE);
	c = x->l4_csum;
	if (x->csum_off == 16 && bpf_skb_store_bytes(skb, ETH_HLEN + 88 + 16, &c, 2, 0) < 0)
		return lb_drop(LB_DROP_REWRITE);
	if (lb_xicmp_csum(skb, x, ETH_HLEN + 40, true) < 0)
		return lb_drop(LB_DROP_REWRITE);
	rc = lb6_fib_redirect(skb, &x->fe6, &x->client6, IPPROTO_ICMPV6);
	return rc == LB_FIB_TOO_BIG ? TC_ACT_OK : rc;
}

/* Runs what a family body handed over (LB_XICMP_GO). */
static __noinline int lb_xicmp_run(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct lb_xicmp *x = bpf_map_lookup_elem(&lb_xicmp_scratch, &zero);
	const struct lb_config *cfg = bpf_map_lookup_elem(&lb_config, &zero);
	__u32 kind;

	if (!x)
		return TC_ACT_OK;
	kind = x->kind;
	__builtin_memset(x, 0, offsetof(struct lb_xicmp, buf));
	if (kind == LB_XICMP_46)
		return lb_xicmp_46(skb, cfg, x);
	if (kind == LB_XICMP_64)
		return lb_xicmp_64(skb, cfg, x);
	return TC_ACT_OK;
}

#endif /* LB_NAT46_ICMP_H */
