/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_snat.h: SNAT of flows to remote backends (the route to the backend
 * leaves through one of our devices): source-port allocation, the reverse
 * entries, and FIB redirects. A packet the tc ingress program SNATs cannot
 * go up the stack (its source is a local address: a martian), so it is
 * redirected out of the route's device, like Cilium's nodeport path.
 */
#ifndef LB_SNAT_H
#define LB_SNAT_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_abi.h"
#include "lb_pkt.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* The SNAT address: the node's first IPv4 (lb_core::NodeConfig::node_ip_like). */
static __always_inline __be32 lb_snat_addr(const struct lb_config *cfg)
{
	return cfg && cfg->node_ip_count > 0 ? cfg->node_ips[0] : 0;
}

static __always_inline void lb_snat_range(const struct lb_config *cfg, __u16 *min, __u16 *max)
{
	*min = cfg && cfg->snat_port_min ? cfg->snat_port_min : LB_SNAT_PORT_MIN;
	*max = cfg && cfg->snat_port_max ? cfg->snat_port_max : LB_SNAT_PORT_MAX;
	if (*max < *min)
		*max = *min;
}

/* A route lookup for (saddr -> daddr) as if forwarded from the skb's device. */
static __always_inline long lb_fib_len(struct __sk_buff *skb, struct bpf_fib_lookup *fib,
				       __be32 saddr, __be32 daddr, __u8 proto, __u32 l3_len,
				       __u32 flags)
{
	fib->family = AF_INET;
	fib->l4_protocol = proto;
	/* A GSO packet (GRO on the way in, TSO from a local veth peer) is
	 * longer than the MTU as a whole but leaves as segments: without
	 * tot_len the kernel checks it with is_skb_forwardable(), which lets
	 * GSO packets through (as Cilium's lookups do); with tot_len every
	 * such packet would fail the check with BPF_FIB_LKUP_RET_FRAG_NEEDED. */
	fib->tot_len = skb->gso_size ? 0 : (__u16)l3_len;
	fib->ipv4_src = saddr;
	fib->ipv4_dst = daddr;
	fib->ifindex = skb->ingress_ifindex ? skb->ingress_ifindex : skb->ifindex;
	return bpf_fib_lookup(skb, fib, sizeof(*fib), flags);
}

/* lb_fib_len for the packet as it is (l3_len: its length after Ethernet). */
static __always_inline long lb_fib(struct __sk_buff *skb, struct bpf_fib_lookup *fib,
				   __be32 saddr, __be32 daddr, __u8 proto)
{
	return lb_fib_len(skb, fib, saddr, daddr, proto, skb->len - ETH_HLEN, 0);
}

/* True when the route to daddr leaves through one of our devices. */
static __always_inline bool lb_route_is_ours(struct __sk_buff *skb, __be32 saddr, __be32 daddr,
					     __u8 proto)
{
	struct bpf_fib_lookup fib = {};
	long rc = lb_fib(skb, &fib, saddr, daddr, proto);
	__u32 ifindex;

	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return false;
	ifindex = fib.ifindex;
	return bpf_map_lookup_elem(&lb_devices, &ifindex) != NULL;
}

/* lb_fib_redirect's answer for a packet that does not fit the route's MTU
 * (not a TC_ACT_*: the caller drops and counts it, LB_DROP_FRAG_NEEDED). */
#define LB_FIB_TOO_BIG (-2)

/* Sends the (rewritten) packet out of the route's device; TC_ACT_OK lets
 * the stack try when there is no route; LB_FIB_TOO_BIG when the packet is
 * over the route's MTU (the stack would drop it too, uncounted: its source
 * is the node's, a martian on the way in). */
static __always_inline int lb_fib_redirect(struct __sk_buff *skb, __be32 saddr, __be32 daddr,
					   __u8 proto)
{
	struct bpf_fib_lookup fib = {};
	long rc = lb_fib(skb, &fib, saddr, daddr, proto);

	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return LB_FIB_TOO_BIG;
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (bpf_skb_store_bytes(skb, 0, fib.dmac, ETH_ALEN, 0) < 0 ||
		    bpf_skb_store_bytes(skb, ETH_ALEN, fib.smac, ETH_ALEN, 0) < 0)
			return TC_ACT_SHOT;
		return bpf_redirect(fib.ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh nh = { .nh_family = AF_INET, .ipv4_nh = fib.ipv4_dst };

		return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
	}
	return TC_ACT_OK;
}

#ifndef AF_INET6
#define AF_INET6 10
#endif

/* The IPv6 SNAT address: the node's first IPv6 address (node_ip_like for an
 * IPv6 backend). False (and `out` untouched) when the node has none. */
static __always_inline bool lb6_snat_addr(const struct lb_config *cfg, struct in6_addr *out)
{
	if (!cfg || cfg->node_ip6_count == 0)
		return false;
	*out = cfg->node_ips6[0];
	return true;
}

/* lb_fib_len for IPv6. */
static __always_inline long lb6_fib_len(struct __sk_buff *skb, struct bpf_fib_lookup *fib,
					const struct in6_addr *saddr, const struct in6_addr *daddr,
					__u8 proto, __u32 l3_len, __u32 flags)
{
	fib->family = AF_INET6;
	fib->l4_protocol = proto;
	fib->tot_len = skb->gso_size ? 0 : (__u16)l3_len;
	__builtin_memcpy(fib->ipv6_src, saddr, sizeof(fib->ipv6_src));
	__builtin_memcpy(fib->ipv6_dst, daddr, sizeof(fib->ipv6_dst));
	fib->ifindex = skb->ingress_ifindex ? skb->ingress_ifindex : skb->ifindex;
	return bpf_fib_lookup(skb, fib, sizeof(*fib), flags);
}

/* lb_fib for IPv6. */
static __always_inline long lb6_fib(struct __sk_buff *skb, struct bpf_fib_lookup *fib,
				    const struct in6_addr *saddr, const struct in6_addr *daddr,
				    __u8 proto)
{
	return lb6_fib_len(skb, fib, saddr, daddr, proto, skb->len - ETH_HLEN, 0);
}

/* Sends the packet as lookup `fib` (answer `rc`) said: out of the route's
 * device (Ethernet addresses written, or the neighbour resolved by the
 * kernel), TC_ACT_OK without a route. Not for BPF_FIB_LKUP_RET_FRAG_NEEDED. */
static __always_inline int lb6_fib_send(struct __sk_buff *skb, const struct bpf_fib_lookup *fib,
					long rc)
{
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (bpf_skb_store_bytes(skb, 0, fib->dmac, ETH_ALEN, 0) < 0 ||
		    bpf_skb_store_bytes(skb, ETH_ALEN, fib->smac, ETH_ALEN, 0) < 0)
			return TC_ACT_SHOT;
		return bpf_redirect(fib->ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh nh = { .nh_family = AF_INET6 };

		__builtin_memcpy(nh.ipv6_nh, fib->ipv6_dst, sizeof(nh.ipv6_nh));
		return bpf_redirect_neigh(fib->ifindex, &nh, sizeof(nh), 0);
	}
	return TC_ACT_OK;
}

/* lb_route_is_ours for IPv6 (a function of its own: its own stack frame,
 * as IPv6 flows' state is wider; so is lb6_fib_redirect). */
static __noinline __attribute__((unused)) bool lb6_route_is_ours(struct __sk_buff *skb,
					      const struct in6_addr *saddr,
					      const struct in6_addr *daddr, __u8 proto)
{
	struct bpf_fib_lookup fib = {};
	long rc = lb6_fib(skb, &fib, saddr, daddr, proto);
	__u32 ifindex;

	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return false;
	ifindex = fib.ifindex;
	return bpf_map_lookup_elem(&lb_devices, &ifindex) != NULL;
}

/* lb_fib_redirect for IPv6. */
static __noinline __attribute__((unused)) int lb6_fib_redirect(struct __sk_buff *skb, const struct in6_addr *saddr,
					    const struct in6_addr *daddr, __u8 proto)
{
	struct bpf_fib_lookup fib = {};
	long rc = lb6_fib(skb, &fib, saddr, daddr, proto);

	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return LB_FIB_TOO_BIG;
	return lb6_fib_send(skb, &fib, rc);
}

/* Equality of two addresses of one family, by value. */
#define LB_ADDR4_EQ(a, b) ((a) == (b))
#define LB_ADDR6_EQ(a, b) lb6_addr_eq(&(a), &(b))

/* The SNAT state of a flow is the same for both families but for the
 * address type and the maps; LB_DEFINE_SNAT defines for one family:
 *   lb_snat_key<sfx>: the reply key of a SNATed flow (backend -> node
 *     IP:port, dir LB_CT_SERVICE);
 *   lb_snat_refresh<sfx>: an established SNATed flow's packet keeps its
 *     reverse entry fresh, and recreates it when the LRU evicted it
 *     (shared by tc and XDP);
 *   lb_snat_same_flow<sfx>: true when SNAT entry `e` was written for the
 *     same client flow as `rev`;
 *   lb_snat_alloc<sfx>: allocates a node source port for a new flow to
 *     (be_addr, be_port) and records the reverse entry. The client's port
 *     is tried first when it is in range, then random ones (Cilium's
 *     scheme). An entry outlives its flow by TIME_WAIT (gc.rs,
 *     CtTimeouts::time_wait), so no other flow gets the tuple while the
 *     backend may hold it; the same client flow takes its own entry over
 *     (its SYN is newer than what the backend saw). Returns 0 when every
 *     try collided. */
#define LB_DEFINE_SNAT(sfx, addr_t, ct_key_t, snat_entry_t, pkt_t, snat_map, eq)               \
	static __always_inline void lb_snat_key##sfx(ct_key_t *k, addr_t be_addr,             \
						     __be16 be_port, addr_t node, __be16 port, \
						     __u8 proto)                               \
	{                                                                                      \
		k->saddr = be_addr;                                                            \
		k->daddr = node;                                                               \
		k->sport = be_port;                                                            \
		k->dport = port;                                                               \
		k->proto = proto;                                                              \
		k->dir = LB_CT_SERVICE;                                                        \
		k->pad[0] = 0;                                                                 \
		k->pad[1] = 0;                                                                 \
	}                                                                                      \
                                                                                               \
	static __always_inline void lb_snat_refresh##sfx(const pkt_t *p, addr_t be_addr,      \
							 __be16 be_port, addr_t node,          \
							 __be16 snat_port, __u32 rev_nat,      \
							 __u64 now)                            \
	{                                                                                      \
		ct_key_t rk = {};                                                              \
		snat_entry_t *e;                                                               \
                                                                                               \
		lb_snat_key##sfx(&rk, be_addr, be_port, node, snat_port, p->proto);            \
		e = bpf_map_lookup_elem(&snat_map, &rk);                                       \
		if (e) {                                                                       \
			if (e->last_seen != now)                                               \
				e->last_seen = now;                                            \
		} else {                                                                       \
			snat_entry_t rev = {                                                   \
				.client_addr = p->saddr,                                       \
				.frontend_addr = p->daddr,                                     \
				.client_port = p->sport,                                       \
				.frontend_port = p->dport,                                     \
				.rev_nat_index = rev_nat,                                      \
				.last_seen = now,                                              \
			};                                                                     \
                                                                                               \
			bpf_map_update_elem(&snat_map, &rk, &rev, BPF_ANY);                    \
		}                                                                              \
	}                                                                                      \
                                                                                               \
	static __always_inline bool lb_snat_same_flow##sfx(const snat_entry_t *e,             \
							   const snat_entry_t *rev)            \
	{                                                                                      \
		return eq(e->client_addr, rev->client_addr) &&                                 \
		       e->client_port == rev->client_port &&                                   \
		       eq(e->frontend_addr, rev->frontend_addr) &&                             \
		       e->frontend_port == rev->frontend_port;                                 \
	}                                                                                      \
                                                                                               \
	static __always_inline __be16 lb_snat_alloc##sfx(                                      \
		const struct lb_config *cfg, addr_t node, addr_t be_addr, __be16 be_port,      \
		__u8 proto, const snat_entry_t *rev, __be16 client_port)                       \
	{                                                                                      \
		ct_key_t k = {};                                                               \
		__u16 min, max, port = bpf_ntohs(client_port);                                 \
		__u32 span;                                                                    \
                                                                                               \
		lb_snat_range(cfg, &min, &max);                                                \
		span = (__u32)max - min + 1;                                                   \
		if (port < min || port > max) {                                                \
			port = min + bpf_get_prandom_u32() % span;                             \
		} else {                                                                       \
			snat_entry_t *cur;                                                     \
                                                                                               \
			lb_snat_key##sfx(&k, be_addr, be_port, node, client_port, proto);      \
			cur = bpf_map_lookup_elem(&snat_map, &k);                              \
			if (cur && lb_snat_same_flow##sfx(cur, rev) &&                         \
			    bpf_map_update_elem(&snat_map, &k, rev, BPF_ANY) == 0)             \
				return client_port;                                            \
		}                                                                              \
		for (int i = 0; i < LB_SNAT_TRIES; i++) {                                      \
			lb_snat_key##sfx(&k, be_addr, be_port, node, bpf_htons(port), proto);  \
			if (bpf_map_update_elem(&snat_map, &k, rev, BPF_NOEXIST) == 0)         \
				return bpf_htons(port);                                        \
			port = min + bpf_get_prandom_u32() % span;                             \
		}                                                                              \
		return 0;                                                                      \
	}

LB_DEFINE_SNAT(, __be32, struct ct4_key, struct lb4_snat_entry, struct lb_pkt, lb4_snat,
	       LB_ADDR4_EQ)
LB_DEFINE_SNAT(6, struct in6_addr, struct ct6_key, struct lb6_snat_entry, struct lb_pkt6,
	       lb6_snat, LB_ADDR6_EQ)

#endif /* LB_SNAT_H */
