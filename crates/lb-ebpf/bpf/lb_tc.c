/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_tc.c: tc programs for the client-facing devices (IPv4 and IPv6).
 *
 * lb_tc_ingress: reverse SNAT of replies from remote backends, and of ICMP
 * errors about SNATed flows (lb_icmp.h); frontend
 * lookup (exact, then the wildcard NodePort/HostPort entry for node-local
 * destinations), source ranges, connection tracking, ClientIP affinity,
 * Maglev or weighted random selection, DNAT, and SNAT to the node IP when
 * the backend is remote (lb_snat.h).
 * In DSR and hybrid modes (lb_dsr.h) a new external flow through a NodePort,
 * LoadBalancer or ExternalIP frontend to a remote backend is sent unchanged
 * inside IPIP to the backend instead of SNATed; its replies bypass the node.
 * A DSR packet that no longer fits the route once encapsulated gets ICMP
 * fragmentation needed back to the client (lb_dsr_icmp.h).
 * lb_tc_egress: reverse NAT of replies of tracked (non-SNAT) flows, and
 * of ICMP errors about them (lb_icmp.h).
 *
 * IPv6 (lb6_* maps) has the same semantics, written once for both families
 * in lb_tc_fam.h: DSR in IPv6-in-IPv6 with ICMPv6 Packet Too Big for a
 * packet that no longer fits (lb_dsr6.h), and ICMPv6 error translation
 * (lb_icmp6.h).
 *
 * NAT46/64 (lb_nat46.h): a frontend whose slot 0 has LB_SVC_F_NAT46X64 is
 * served by backends of the other family; its packets are handed over by
 * the family body (LB_XLATE_GO) and translated in a call chain of their
 * own (lb_xlate_run), as are the replies of such flows.
 *
 * The decision order is lb_core::flow::decide's; tests/prog_run.rs and
 * tests/prog_run_v6.rs compare.
 * With XDP acceleration (lb_xdp.c) external flows to remote backends are
 * handled before tc; for a new flow lb_xdp passes up, tc takes the backend
 * it chose (lb_flow.h, struct lb_xdp_meta).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_abi.h"
#include "lb_jhash.h"
#include "lb_pkt.h"
#include "lb_select.h"
#include "lb_snat.h"
#include "lb_ctport.h"
#include "lb_icmp.h"
#include "lb_dsr.h"
#include "lb_flow.h"
#include "lb_dsr_icmp.h"
#include "lb_dsr6.h"
#include "lb_icmp6.h"

/* A bit of the service flags the ingress program sets for itself (no
 * LB_SVC_F_* uses it): a new flow of this packet would use DSR. */
#define LB_TC_F_DSR (1 << 15)

static __always_inline int lb_drop(__u32 reason)
{
	lb_count_drop(reason);
	return TC_ACT_SHOT;
}

#include "lb_nat46.h"
#include "lb_nat46_icmp.h"

/* ---- IPv4 ---- */
#define LBF(name) name##4
#define LBF_PKT struct lb_pkt
#define LBF_ADDR __be32
#define LBF_ADDR_NONE 0
#define LBF_KEY struct lb4_key
#define LBF_CT_KEY struct ct4_key
#define LBF_CT_ENTRY struct ct4_entry
#define LBF_AFF_KEY struct lb4_affinity_key
#define LBF_SNAT_ENTRY struct lb4_snat_entry
#define LBF_BACKEND struct lb4_backend
#define LBF_REV_NAT struct lb4_reverse_nat
#define LBF_CT_MAP lb4_ct
#define LBF_BACKENDS_MAP lb4_backends
#define LBF_AFFINITY_MAP lb4_affinity
#define LBF_SNAT_MAP lb4_snat
#define LBF_REV_NAT_MAP lb4_reverse_nat
#define LBF_PARSE lb_parse4
#define LBF_IS_SET(a) ((a) != 0)
#define LBF_EQ LB_ADDR4_EQ
#define LBF_SNAT_ADDR(cfg, out) (((out) = lb_snat_addr(cfg)) != 0)
#define LBF_LOOKUP_FRONTEND(key, cfg, p)                                                          \
	lb_lookup_frontend(key, cfg, (p)->daddr, (p)->dport, (p)->proto, 0)
#define LBF_SRC_RANGE_OK(rev_nat, saddr) lb4_src_range_ok(rev_nat, saddr)
#define LBF_CHOOSE_BACKEND lb_choose_backend
#define LBF_DSR_APPLIES lb_dsr_applies
#define LBF_ROUTE_IS_OURS lb_route_is_ours
#define LBF_FIB_REDIRECT lb_fib_redirect
#define LBF_SNAT_ALLOC lb_snat_alloc
#define LBF_SNAT_REFRESH lb_snat_refresh
#define LBF_SNAT_KEY lb_snat_key
#define LBF_CT_REPLY_INSERT lb_ct_reply_insert
#define LBF_CT_TOUCH lb_ct_touch
#define LBF_CT_FRESH lb_ct_fresh
#define LBF_CT_CLOSE lb_ct_close
#define LBF_FLOW_HASH(p, seed)                                                                    \
	lb_flow_hash4((p)->saddr, (p)->daddr, (p)->sport, (p)->dport, (p)->proto, seed)
#define LBF_REWRITE_SRC(skb, p, old, new, old_port, new_port)                                     \
	lb_rewrite(skb, p, LB_IP_SADDR_OFF, old, new, (p)->l4_off, old_port, new_port)
#define LBF_REWRITE_DST(skb, p, old, new, old_port, new_port)                                     \
	lb_rewrite(skb, p, LB_IP_DADDR_OFF, old, new, (p)->l4_off + 2, old_port, new_port)
#define LBF_INGRESS_OTHER lb_ingress_other4
#define LBF_EGRESS_OTHER lb_egress_other4
#define LBF_HAS_DSR 1
#define LBF_XLATE(skb, cfg, p, key, rev_nat, svc_slot, flags, count, timeout, total_weight, now)  \
	LB_XLATE_ENTER(4, LB_XLATE_NAT46, p, key, rev_nat, svc_slot, flags, count, timeout,          \
		       total_weight, now)
/* NAT64's marker entry (lb_nat46.h): no client is 0.0.0.0. */
#define LBF_XLATE_REPLY_IS(e) ((e)->client_addr == 0)
#define LBF_XLATE_REPLY(skb, p, e, now) lb_xlate_reply4(p, now)
#define LBF_DSR_PROTO IPPROTO_IPIP
#define LBF_DSR_FORWARD lb_dsr_forward4
#define LBF_SUBFN __always_inline

/* A DSR packet: into IPIP and on to the backend (lb_dsr.h), or
 * fragmentation needed back to the client (lb_dsr_icmp.h). */
static __always_inline int lb_dsr_forward4(struct __sk_buff *skb, __be32 node, __be32 be_addr,
					   __be16 be_port)
{
	int rc;

	if (lb_dsr_encap(skb, node, be_addr, be_port) < 0)
		return lb_drop(LB_DROP_REWRITE);
	rc = lb_fib_redirect(skb, node, be_addr, IPPROTO_IPIP);
	return rc == LB_FIB_TOO_BIG ? lb_dsr_too_big(skb, node, be_addr) : rc;
}

/* The ingress program's per-packet state: on the stack. */
struct lb4_tc_state {
	struct lb_pkt p;
	struct lb4_key key;
	struct ct4_key ck;
	struct ct4_entry ct_val;
	struct lb4_affinity_key ak;
	__u32 svc_slot; /* counter slots (lb_svc_stats, lb_be_stats) */
	__u32 be_slot;
};
#define LBF_STATE struct lb4_tc_state
#define LBF_STATE_DECL(st) struct lb4_tc_state st##_local = {}, *st = &st##_local

static __always_inline bool lb4_src_range_ok(__u32 rev_nat, __be32 saddr)
{
	struct lb4_src_range_key rk = {
		.prefixlen = 64, .rev_nat_index = rev_nat, .addr = saddr,
	};

	return bpf_map_lookup_elem(&lb4_src_range, &rk) != NULL;
}

/* An IPv4 packet lb_parse4 ignores: ICMP errors about a SNATed flow, for
 * the node. */
static __always_inline int lb_ingress_other4(struct __sk_buff *skb, const struct lb_config *cfg)
{
	int rc = lb_icmp_error_snat(skb, cfg);

	/* About a NAT64 flow: to the IPv6 client (lb_nat46_icmp.h). */
	if (rc == LB_ICMP_NAT64)
		return lb_xicmp_enter(LB_XICMP_64);
	if (rc < 0)
		return TC_ACT_OK;
	return rc == TC_ACT_SHOT ? lb_drop(LB_DROP_REWRITE) : rc;
}

/* ICMP errors about a DNATed flow, from its backend. */
static __always_inline int lb_egress_other4(struct __sk_buff *skb)
{
	if (lb_icmp_error_rev(skb) == TC_ACT_SHOT)
		return lb_drop(LB_DROP_REWRITE);
	return TC_ACT_OK;
}

#include "lb_tc_fam.h"
#include "lb_tc_unfam.h"

/* ---- IPv6 ---- */
#define LBF(name) name##6
#define LBF_PKT struct lb_pkt6
#define LBF_ADDR struct in6_addr
#define LBF_ADDR_NONE {}
#define LBF_KEY struct lb6_key
#define LBF_CT_KEY struct ct6_key
#define LBF_CT_ENTRY struct ct6_entry
#define LBF_AFF_KEY struct lb6_affinity_key
#define LBF_SNAT_ENTRY struct lb6_snat_entry
#define LBF_BACKEND struct lb6_backend
#define LBF_REV_NAT struct lb6_reverse_nat
#define LBF_CT_MAP lb6_ct
#define LBF_BACKENDS_MAP lb6_backends
#define LBF_AFFINITY_MAP lb6_affinity
#define LBF_SNAT_MAP lb6_snat
#define LBF_REV_NAT_MAP lb6_reverse_nat
#define LBF_PARSE lb_parse6
#define LBF_IS_SET(a) (!lb6_addr_is_zero(&(a)))
#define LBF_EQ LB_ADDR6_EQ
#define LBF_SNAT_ADDR(cfg, out) lb6_snat_addr(cfg, &(out))
#define LBF_LOOKUP_FRONTEND(key, cfg, p)                                                          \
	lb6_lookup_frontend(key, cfg, &(p)->daddr, (p)->dport, (p)->proto, 0)
#define LBF_SRC_RANGE_OK(rev_nat, saddr) lb6_src_range_ok(rev_nat, &(saddr))
#define LBF_CHOOSE_BACKEND lb6_choose_backend
/* IPv6 DSR: IPv6-in-IPv6 (lb_dsr6.h). */
#define LBF_DSR_APPLIES lb6_dsr_applies
#define LBF_ROUTE_IS_OURS(skb, saddr, daddr, proto) lb6_route_is_ours(skb, &(saddr), &(daddr), proto)
#define LBF_FIB_REDIRECT(skb, saddr, daddr, proto) lb6_fib_redirect(skb, &(saddr), &(daddr), proto)
#define LBF_SNAT_ALLOC lb_snat_alloc6
#define LBF_SNAT_REFRESH lb_snat_refresh6
#define LBF_SNAT_KEY lb_snat_key6
#define LBF_CT_REPLY_INSERT lb_ct_reply_insert6
#define LBF_CT_TOUCH lb6_ct_touch
#define LBF_CT_FRESH lb6_ct_fresh
#define LBF_CT_CLOSE lb6_ct_close
#define LBF_FLOW_HASH(p, seed)                                                                    \
	lb_flow_hash6(&(p)->saddr, &(p)->daddr, (p)->sport, (p)->dport, (p)->proto, seed)
#define LBF_REWRITE_SRC(skb, p, old, new, old_port, new_port)                                     \
	lb_rewrite6(skb, p, LB_IP6_SADDR_OFF, &(old), &(new), (p)->l4_off, old_port, new_port)
#define LBF_REWRITE_DST(skb, p, old, new, old_port, new_port)                                     \
	lb_rewrite6(skb, p, LB_IP6_DADDR_OFF, &(old), &(new), (p)->l4_off + 2, old_port, new_port)
/* ICMPv6 errors about translated flows (lb_icmp6.h). */
#define LBF_INGRESS_OTHER lb_ingress_other6
#define LBF_EGRESS_OTHER lb_egress_other6
#define LBF_HAS_DSR 1
#define LBF_DSR_PROTO IPPROTO_IPV6
#define LBF_DSR_FORWARD(skb, node, be_addr, be_port)                                              \
	lb6_dsr_forward(skb, &(node), &(be_addr), be_port)
#define LBF_XLATE(skb, cfg, p, key, rev_nat, svc_slot, flags, count, timeout, total_weight, now)  \
	LB_XLATE_ENTER(6, LB_XLATE_NAT64, p, key, rev_nat, svc_slot, flags, count, timeout,          \
		       total_weight, now)
/* NAT46's entries hold an IPv4-mapped client (lb_nat46.h). */
#define LBF_XLATE_REPLY_IS(e) lb_xlate_is_mapped(&(e)->client_addr)
#define LBF_XLATE_REPLY(skb, p, e, now) lb_xlate_reply6(p, e, now)
#define LBF_SUBFN __noinline

/* The IPv6 ingress program's per-packet state is too wide for the stack
 * (the verifier's 512 bytes for a whole call chain): it lives in a per-CPU
 * scratch entry, cleared for every packet. The map is this object's own
 * (not pinned, not part of the ABI). */
struct lb6_tc_state {
	struct lb_pkt6 p;
	struct lb6_key key;
	struct ct6_key ck;
	struct ct6_entry ct_val;
	struct lb6_affinity_key ak;
	__u32 svc_slot; /* counter slots (lb_svc_stats, lb_be_stats) */
	__u32 be_slot;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct lb6_tc_state);
	__uint(max_entries, 1);
} lb6_tc_scratch SEC(".maps");

static __always_inline struct lb6_tc_state *lb6_tc_state(void)
{
	__u32 zero = 0;
	struct lb6_tc_state *st = bpf_map_lookup_elem(&lb6_tc_scratch, &zero);

	if (st)
		__builtin_memset(st, 0, sizeof(*st));
	return st;
}
#define LBF_STATE struct lb6_tc_state
#define LBF_STATE_DECL(st) struct lb6_tc_state *st = lb6_tc_state()

/* lb_dsr_forward4 for IPv6 (lb_dsr6.h): a call of its own, off the IPv6
 * body's frame. */
static __noinline int lb6_dsr_forward(struct __sk_buff *skb, const struct in6_addr *node,
				      const struct in6_addr *be_addr, __be16 be_port)
{
	int rc;

	if (lb6_dsr_encap(skb, node, be_addr, be_port) < 0)
		return lb_drop(LB_DROP_REWRITE);
	rc = lb6_fib_redirect(skb, node, be_addr, IPPROTO_IPV6);
	return rc == LB_FIB_TOO_BIG ? lb6_dsr_too_big(skb, node, be_addr) : rc;
}

/* An IPv6 packet lb_parse6 ignores: ICMPv6 errors about a SNATed flow,
 * for the node. */
static __noinline int lb_ingress_other6(struct __sk_buff *skb, const struct lb_config *cfg)
{
	int rc = lb6_icmp_error_snat(skb, cfg);

	/* About a NAT46 flow: to the IPv4 client (lb_nat46_icmp.h). */
	if (rc == LB_ICMP6_NAT46)
		return lb_xicmp_enter(LB_XICMP_46);
	if (rc == TC_ACT_SHOT)
		return lb_drop(LB_DROP_REWRITE);
	if (rc != LB_ICMP6_REDIRECT)
		return TC_ACT_OK;
	rc = lb6_icmp_snat_redirect(skb);
	return rc < 0 ? TC_ACT_OK : rc;
}

/* ICMPv6 errors about a DNATed flow, from its backend or a router. */
static __always_inline int lb_egress_other6(struct __sk_buff *skb)
{
	if (lb6_icmp_error_rev(skb) == TC_ACT_SHOT)
		return lb_drop(LB_DROP_REWRITE);
	return TC_ACT_OK;
}

static __always_inline bool lb6_src_range_ok(__u32 rev_nat, const struct in6_addr *saddr)
{
	struct lb6_src_range_key rk = {
		.prefixlen = 32 + 128, .rev_nat_index = rev_nat, .addr = *saddr,
	};

	return bpf_map_lookup_elem(&lb6_src_range, &rk) != NULL;
}

#include "lb_tc_fam.h"
#include "lb_tc_unfam.h"

/* Each family's program body is a function of its own with its own stack
 * frame: the verifier bounds the frames of a call chain together (512
 * bytes), and an IPv6 flow's state is wider. */
static __noinline int lb_tc_ingress4_fn(struct __sk_buff *skb)
{
	return lb_tc_ingress4(skb);
}

static __noinline int lb_tc_ingress6_fn(struct __sk_buff *skb)
{
	return lb_tc_ingress6(skb);
}

static __noinline int lb_tc_egress4_fn(struct __sk_buff *skb)
{
	return lb_tc_egress4(skb);
}

static __noinline int lb_tc_egress6_fn(struct __sk_buff *skb)
{
	return lb_tc_egress6(skb);
}

SEC("classifier")
int lb_tc_ingress(struct __sk_buff *skb)
{
	int rc;

	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		rc = lb_tc_ingress6_fn(skb);
	else
		rc = lb_tc_ingress4_fn(skb);
	/* An ICMP error about a NAT46/64 flow (lb_nat46_icmp.h). */
	if (rc == LB_XICMP_GO)
		return lb_xicmp_run(skb);
	/* A NAT46/64 packet, handed over by the family body (lb_nat46.h). */
	return rc == LB_XLATE_GO ? lb_xlate_run(skb) : rc;
}

SEC("classifier")
int lb_tc_egress(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return lb_tc_egress6_fn(skb);
	return lb_tc_egress4_fn(skb);
}

char LICENSE[] SEC("license") = "GPL";
