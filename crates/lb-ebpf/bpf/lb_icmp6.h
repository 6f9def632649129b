/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_icmp6.h: ICMPv6 errors (destination unreachable, packet too big, time
 * exceeded) about IPv6 flows the tc programs translated, made about the
 * packet the client sent (lb_icmp.h's IPv6 twin; the rewrite is
 * lb_icmp6_quote.h's):
 *
 * lb6_icmp_error_rev (egress, towards the client): an error about a DNATed
 * flow quotes client -> backend; the quote goes back to the frontend (and a
 * remapped source port, LB_CT_F_PORTMAP, to the client's own), an error
 * from the backend itself comes from the frontend.
 *
 * lb6_icmp_error_snat (ingress, addressed to the node): an error about a
 * SNATed flow quotes node:port -> backend; the quote goes back to client ->
 * frontend, the error is addressed to the client and redirected towards it
 * like lb_snat_reply.
 *
 * Both are __noinline (frames of their own, off the IPv6 body's stack) and
 * keep their state in a per-CPU scratch entry (the IPv6 body's frame and
 * theirs share the verifier's 512 bytes).
 */
#ifndef LB_ICMP6_H
#define LB_ICMP6_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_abi.h"
#include "lb_icmp6_quote.h"
#include "lb_snat.h"

/* The per-packet state of the functions below. */
struct lb_icmp6_work {
	struct lb_icmp6_quote q;
	struct lb_icmp6_xlate x;
	struct ct6_key k;
	struct in6_addr node;
	struct in6_addr src;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct lb_icmp6_work);
	__uint(max_entries, 1);
} lb6_icmp_scratch SEC(".maps");

static __always_inline struct lb_icmp6_work *lb_icmp6_work(void)
{
	__u32 zero = 0;
	struct lb_icmp6_work *w = bpf_map_lookup_elem(&lb6_icmp_scratch, &zero);

	if (w)
		__builtin_memset(w, 0, sizeof(*w));
	return w;
}

/* Translates an ICMPv6 error leaving towards a client. Returns TC_ACT_OK
 * (translated or not ours) or TC_ACT_SHOT when a store failed. */
static __noinline __attribute__((unused)) int lb6_icmp_error_rev(struct __sk_buff *skb)
{
	struct lb_icmp6_work *w = lb_icmp6_work();
	struct ct6_entry *ct;
	struct lb6_reverse_nat *rn;
	__u32 rev_nat;

	if (!w || !lb_icmp6_quote(skb, &w->q))
		return TC_ACT_OK;
	/* The flow as the backend would answer it: backend -> client. */
	w->k.saddr = w->q.be_addr;
	w->k.daddr = w->q.client;
	w->k.sport = w->q.be_port;
	w->k.dport = w->q.q_port;
	w->k.proto = w->q.proto;
	w->k.dir = LB_CT_REPLY;
	ct = bpf_map_lookup_elem(&lb6_ct, &w->k);
	if (!ct)
		return TC_ACT_OK;
	w->x.client = w->q.client;
	/* The quoted source port: the client's own, or the one it was
	 * remapped to (the reply entry then holds the client's). */
	w->x.cport = ct->flags & LB_CT_F_PORTMAP ? ct->snat_port : w->q.q_port;
	w->x.fe_addr = ct->frontend_addr;
	w->x.fe_port = ct->frontend_port;
	rev_nat = ct->rev_nat_index;
	rn = bpf_map_lookup_elem(&lb6_reverse_nat, &rev_nat);
	if (rn && !lb6_addr_is_zero(&rn->address)) {
		w->x.fe_addr = rn->address;
		w->x.fe_port = rn->port;
	}
	return lb_icmp6_quote_rewrite(skb, &w->q, &w->x);
}

/* lb6_icmp_error_snat's answer for a translated error: the caller
 * redirects it towards the client (lb6_icmp_snat_redirect). */
#define LB_ICMP6_REDIRECT 1000
/* ... and for an error about a NAT46 flow: the caller hands it to
 * lb_nat46_icmp.h. */
#define LB_ICMP6_NAT46 1001

/* Translates an ICMPv6 error about a SNATed flow (it quotes node:port ->
 * backend and is addressed to the node) for the client. Returns -1 when the
 * packet is not one, TC_ACT_SHOT when a store failed, else
 * LB_ICMP6_REDIRECT. */
static __noinline __attribute__((unused)) int lb6_icmp_error_snat(struct __sk_buff *skb,
								  const struct lb_config *cfg)
{
	struct lb_icmp6_work *w = lb_icmp6_work();
	struct lb6_snat_entry *e;
	struct lb6_reverse_nat *rn;
	__u32 rev_nat;
	int rc;

	if (!w || !lb6_snat_addr(cfg, &w->node) || !lb_icmp6_quote(skb, &w->q) ||
	    !lb6_addr_eq(&w->q.out_daddr, &w->node) || !lb6_addr_eq(&w->q.client, &w->node))
		return -1;
	lb_snat_key6(&w->k, w->q.be_addr, w->q.be_port, w->node, w->q.q_port, w->q.proto);
	e = bpf_map_lookup_elem(&lb6_snat, &w->k);
	if (!e)
		return -1;
	/* A NAT46 flow's entry (an IPv4-mapped client, lb_nat46.h): the
	 * error goes to the IPv4 client translated (lb_nat46_icmp.h). */
	if (e->client_addr.in6_u.u6_addr32[0] == 0 && e->client_addr.in6_u.u6_addr32[1] == 0 &&
	    e->client_addr.in6_u.u6_addr32[2] == bpf_htonl(0xffff))
		return LB_ICMP6_NAT46;
	w->x.out_dst = 1;
	w->x.client = e->client_addr;
	w->x.cport = e->client_port;
	w->x.fe_addr = e->frontend_addr;
	w->x.fe_port = e->frontend_port;
	rev_nat = e->rev_nat_index;
	rn = bpf_map_lookup_elem(&lb6_reverse_nat, &rev_nat);
	if (rn && !lb6_addr_is_zero(&rn->address)) {
		w->x.fe_addr = rn->address;
		w->x.fe_port = rn->port;
	}
	rc = lb_icmp6_quote_rewrite(skb, &w->q, &w->x);
	if (rc != TC_ACT_OK)
		return rc;
	/* An error from the backend itself now comes from the frontend. */
	w->src = lb6_addr_eq(&w->q.out_saddr, &w->q.be_addr) ? w->x.fe_addr : w->q.out_saddr;
	return LB_ICMP6_REDIRECT;
}

/* Sends the error lb6_icmp_error_snat translated towards the client, like
 * lb_snat_reply (a call of its own from the caller's frame: the route
 * lookup's frame would not fit under lb6_icmp_error_snat's). */
static __always_inline int lb6_icmp_snat_redirect(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct lb_icmp6_work *w = bpf_map_lookup_elem(&lb6_icmp_scratch, &zero);

	if (!w)
		return TC_ACT_OK;
	return lb6_fib_redirect(skb, &w->src, &w->x.client, IPPROTO_ICMPV6);
}

#endif /* LB_ICMP6_H */
