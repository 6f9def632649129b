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
static __always_inline long lb_fib(struct __sk_buff *skb, struct bpf_fib_lookup *fib,
				   __be32 saddr, __be32 daddr, __u8 proto)
{
	fib->family = AF_INET;
	fib->l4_protocol = proto;
	/* A GSO packet (GRO on the way in, TSO from a local veth peer) is
	 * longer than the MTU as a whole but leaves as segments: without
	 * tot_len the kernel checks it with is_skb_forwardable(), which lets
	 * GSO packets through (as Cilium's lookups do); with tot_len every
	 * such packet would fail the check with BPF_FIB_LKUP_RET_FRAG_NEEDED. */
	fib->tot_len = skb->gso_size ? 0 : (__u16)(skb->len - ETH_HLEN);
	fib->ipv4_src = saddr;
	fib->ipv4_dst = daddr;
	fib->ifindex = skb->ingress_ifindex ? skb->ingress_ifindex : skb->ifindex;
	return bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
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

/* The reply key of a SNATed flow: backend -> node IP:port. */
static __always_inline void lb_snat_key(struct ct4_key *k, __be32 be_addr, __be16 be_port,
					__be32 node, __be16 port, __u8 proto)
{
	k->saddr = be_addr;
	k->daddr = node;
	k->sport = be_port;
	k->dport = port;
	k->proto = proto;
	k->dir = LB_CT_SERVICE;
	k->pad[0] = 0;
	k->pad[1] = 0;
}

/* An established SNATed flow's packet: keeps its reverse entry fresh, and
 * recreates it when the LRU evicted it. Shared by tc and XDP. */
static __always_inline void lb_snat_refresh(const struct lb_pkt *p, __be32 be_addr,
					    __be16 be_port, __be32 node, __be16 snat_port,
					    __u32 rev_nat, __u64 now)
{
	struct ct4_key rk = {};
	struct lb4_snat_entry *e;

	lb_snat_key(&rk, be_addr, be_port, node, snat_port, p->proto);
	e = bpf_map_lookup_elem(&lb4_snat, &rk);
	if (e) {
		if (e->last_seen != now)
			e->last_seen = now;
	} else {
		struct lb4_snat_entry rev = {
			.client_addr = p->saddr,
			.frontend_addr = p->daddr,
			.client_port = p->sport,
			.frontend_port = p->dport,
			.rev_nat_index = rev_nat,
			.last_seen = now,
		};

		bpf_map_update_elem(&lb4_snat, &rk, &rev, BPF_ANY);
	}
}

/* True when SNAT entry `e` was written for the same client flow as `rev`. */
static __always_inline bool lb_snat_same_flow(const struct lb4_snat_entry *e,
					      const struct lb4_snat_entry *rev)
{
	return e->client_addr == rev->client_addr && e->client_port == rev->client_port &&
	       e->frontend_addr == rev->frontend_addr && e->frontend_port == rev->frontend_port;
}

/* Allocates a node source port for a new flow to (be_addr, be_port) and
 * records the reverse entry. The client's port is tried first when it is in
 * range, then random ones (Cilium's scheme). An entry outlives its flow by
 * TIME_WAIT (gc.rs, CtTimeouts::time_wait), so no other flow gets the tuple
 * while the backend may hold it; the same client flow takes its own entry
 * over (its SYN is newer than what the backend saw). Returns 0 when every
 * try collided. */
static __always_inline __be16 lb_snat_alloc(const struct lb_config *cfg, __be32 node,
					    __be32 be_addr, __be16 be_port, __u8 proto,
					    const struct lb4_snat_entry *rev, __be16 client_port)
{
	struct ct4_key k = {};
	__u16 min, max, port = bpf_ntohs(client_port);
	__u32 span;

	lb_snat_range(cfg, &min, &max);
	span = (__u32)max - min + 1;
	if (port < min || port > max) {
		port = min + bpf_get_prandom_u32() % span;
	} else {
		struct lb4_snat_entry *cur;

		lb_snat_key(&k, be_addr, be_port, node, client_port, proto);
		cur = bpf_map_lookup_elem(&lb4_snat, &k);
		if (cur && lb_snat_same_flow(cur, rev) &&
		    bpf_map_update_elem(&lb4_snat, &k, rev, BPF_ANY) == 0)
			return client_port;
	}
	for (int i = 0; i < LB_SNAT_TRIES; i++) {
		lb_snat_key(&k, be_addr, be_port, node, bpf_htons(port), proto);
		if (bpf_map_update_elem(&lb4_snat, &k, rev, BPF_NOEXIST) == 0)
			return bpf_htons(port);
		port = min + bpf_get_prandom_u32() % span;
	}
	return 0;
}

/* Reverse SNAT + reverse DNAT of a reply from a remote backend, then a
 * redirect towards the client. Returns -1 when the packet is not one. */
static __always_inline int lb_snat_reply(struct __sk_buff *skb, const struct lb_config *cfg,
					 const struct lb_pkt *p, __u64 now)
{
	struct ct4_key k = {};
	struct lb4_snat_entry *e;
	struct lb4_reverse_nat *rn;
	__be32 node = lb_snat_addr(cfg), client, fe_addr;
	__be16 client_port, fe_port;
	__u16 min, max, dport = bpf_ntohs(p->dport);
	__u32 rev_nat;
	int rc;

	lb_snat_range(cfg, &min, &max);
	if (!node || p->daddr != node || dport < min || dport > max)
		return -1;
	lb_snat_key(&k, p->saddr, p->sport, node, p->dport, p->proto);
	e = bpf_map_lookup_elem(&lb4_snat, &k);
	if (!e)
		return -1;
	if (e->last_seen != now)
		e->last_seen = now;
	client = e->client_addr;
	client_port = e->client_port;
	fe_addr = e->frontend_addr;
	fe_port = e->frontend_port;
	rev_nat = e->rev_nat_index;
	if (p->tcp_flags & (LB_TCP_FIN | LB_TCP_RST)) {
		/* The backend closes: so does the client's CT entry. */
		struct ct4_key ck = {
			.saddr = client, .daddr = fe_addr, .sport = client_port,
			.dport = fe_port, .proto = p->proto, .dir = LB_CT_SERVICE,
		};
		struct ct4_entry *ct = bpf_map_lookup_elem(&lb4_ct, &ck);

		if (ct && !(ct->flags & LB_CT_F_CLOSING))
			ct->flags |= LB_CT_F_CLOSING; /* benign race: flags only gain bits */
	}
	rn = bpf_map_lookup_elem(&lb4_reverse_nat, &rev_nat);
	if (rn && rn->address != 0) {
		fe_addr = rn->address;
		fe_port = rn->port;
	}
	if (lb_rewrite(skb, p, LB_IP_DADDR_OFF, p->daddr, client, p->l4_off + 2, p->dport,
		       client_port) < 0 ||
	    lb_rewrite(skb, p, LB_IP_SADDR_OFF, p->saddr, fe_addr, p->l4_off, p->sport, fe_port) < 0)
		return TC_ACT_SHOT;
	/* Too big for the client's route: the stack's forwarding has the
	 * last word (as before the MTU was checked here). */
	rc = lb_fib_redirect(skb, fe_addr, client, p->proto);
	return rc == LB_FIB_TOO_BIG ? TC_ACT_OK : rc;
}

#endif /* LB_SNAT_H */
