/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_tc.c: tc programs for the client-facing devices (IPv4, no SNAT).
 *
 * lb_tc_ingress: frontend lookup (exact, then the wildcard NodePort/HostPort
 * entry for node-local destinations), source ranges, connection tracking,
 * ClientIP affinity, Maglev or weighted random selection, DNAT.
 * lb_tc_egress: reverse NAT of replies of tracked flows.
 *
 * The decision order is lb_core::flow::decide's; tests/prog_run.rs compares.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_abi.h"
#include "lb_jhash.h"
#include "lb_pkt.h"

#define NSEC_PER_SEC 1000000000ULL

static __always_inline void lb_count_drop(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&lb_drops, &reason);

	if (n)
		*n += 1;
}

static __always_inline int lb_drop(__u32 reason)
{
	lb_count_drop(reason);
	return TC_ACT_SHOT;
}

/* Seconds of CLOCK_MONOTONIC_COARSE, the affinity clock. */
static __always_inline __u64 lb_now_secs(void)
{
	return bpf_ktime_get_coarse_ns() / NSEC_PER_SEC;
}

/* True for the addresses a wildcard frontend answers on: node IPs, 127/8. */
static __always_inline bool lb_is_node_local(const struct lb_config *cfg, __be32 addr)
{
	if ((bpf_ntohl(addr) >> 24) == 127)
		return true;
	if (!cfg)
		return false;
#pragma unroll
	for (int i = 0; i < LB_MAX_NODE_IPS; i++) {
		if (i < cfg->node_ip_count && cfg->node_ips[i] == addr)
			return true;
	}
	return false;
}

static __always_inline struct lb4_service *lb_lookup_frontend(struct lb4_key *key,
							      const struct lb_config *cfg,
							      const struct lb_pkt *p)
{
	struct lb4_service *svc;

	key->address = p->daddr;
	key->dport = p->dport;
	key->proto = p->proto;
	key->backend_slot = 0;
	key->scope = 0; /* the client-facing device carries external traffic */
	svc = bpf_map_lookup_elem(&lb4_services, key);
	if (svc || p->daddr == 0 || !lb_is_node_local(cfg, p->daddr))
		return svc;
	key->address = 0;
	svc = bpf_map_lookup_elem(&lb4_services, key);
	if (svc && svc->fe_type != LB_FE_NODE_PORT && svc->fe_type != LB_FE_HOST_PORT)
		return NULL;
	return svc;
}

/* State of the bpf_loop walks over a frontend's selectable slots. */
struct lb_slot_walk {
	struct lb4_key key; /* frontend key; backend_slot is set per step */
	__u32 point;        /* weighted: remaining weight; find: backend id */
	__u32 found;        /* backend id found, 0 if none */
};

static long lb_weighted_step(__u32 i, void *ctx)
{
	struct lb_slot_walk *w = ctx;
	struct lb4_service *slot;

	w->key.backend_slot = i + 1;
	slot = bpf_map_lookup_elem(&lb4_services, &w->key);
	if (!slot)
		return 1;
	if (w->point < slot->weight) {
		w->found = slot->backend_id;
		return 1;
	}
	w->point -= slot->weight;
	return 0;
}

static long lb_find_step(__u32 i, void *ctx)
{
	struct lb_slot_walk *w = ctx;
	struct lb4_service *slot;

	w->key.backend_slot = i + 1;
	slot = bpf_map_lookup_elem(&lb4_services, &w->key);
	if (!slot)
		return 1;
	if (slot->backend_id == w->point) {
		w->found = slot->backend_id;
		return 1;
	}
	return 0;
}

/* True when backend_id is among the frontend's selectable slots. */
static __always_inline bool lb_is_selectable(const struct lb4_key *key, __u16 count,
					     __u32 backend_id)
{
	struct lb_slot_walk w = { .key = *key, .point = backend_id };

	bpf_loop(count, lb_find_step, &w, 0);
	return w.found != 0;
}

static __always_inline __u32 lb_select_maglev(const struct lb_config *cfg, __u16 rev_nat,
					      const struct lb_pkt *p)
{
	void *table;
	__u32 idx, *id;

	if (!cfg || cfg->maglev_table_size == 0)
		return 0;
	table = bpf_map_lookup_elem(&lb4_maglev, &rev_nat);
	if (!table)
		return 0;
	idx = lb_flow_hash4(p->saddr, p->daddr, p->sport, p->dport, p->proto,
			    cfg->maglev_seed) % cfg->maglev_table_size;
	id = bpf_map_lookup_elem(table, &idx);
	return id ? *id : 0;
}

/* Weighted random choice among slots 1..count (lb_core::select::random). */
static __always_inline __u32 lb_select_random(const struct lb4_key *key, __u16 count,
					      __u32 total_weight, __u16 flags)
{
	struct lb_slot_walk w = { .key = *key };
	struct lb4_service *slot;
	__u32 entropy = bpf_get_prandom_u32();

	if (count == 0 || total_weight == 0)
		return 0;
	if (flags & LB_SVC_F_UNIFORM) {
		w.key.backend_slot = (entropy % count) + 1;
		slot = bpf_map_lookup_elem(&lb4_services, &w.key);
		return slot ? slot->backend_id : 0;
	}
	w.point = entropy % total_weight;
	bpf_loop(count, lb_weighted_step, &w, 0);
	return w.found;
}

static __always_inline void lb_count_service(__u16 rev_nat, __u32 bytes, bool new_flow)
{
	struct lb_svc_stats *st = bpf_map_lookup_elem(&lb_svc_stats, &rev_nat);

	if (!st)
		return;
	st->packets += 1;
	st->bytes += bytes;
	if (new_flow)
		st->new_flows += 1;
}

SEC("classifier")
int lb_tc_ingress(struct __sk_buff *skb)
{
	struct lb_pkt p = {};
	struct lb4_key key = {};
	struct ct4_key ck = {};
	struct ct4_entry ct_val = {};
	struct lb4_affinity_key ak = {};
	struct lb4_service *svc;
	struct lb4_backend *be = NULL;
	struct ct4_entry *ct;
	const struct lb_config *cfg;
	__u32 zero = 0, backend_id = 0, timeout, total_weight;
	__be32 be_addr;
	__be16 be_port;
	__u16 rev_nat, flags, count;
	__u64 now = 0;
	bool new_flow = false;

	switch (lb_parse4(skb, &p)) {
	case LB_PARSE_OK:
		break;
	case LB_PARSE_MALFORMED:
		return lb_drop(LB_DROP_MALFORMED);
	default:
		return TC_ACT_OK;
	}
	cfg = bpf_map_lookup_elem(&lb_config, &zero);
	svc = lb_lookup_frontend(&key, cfg, &p);
	if (!svc)
		return TC_ACT_OK;
	/* Copy what we use: userspace may rewrite the entry meanwhile. */
	rev_nat = svc->rev_nat_index;
	flags = svc->flags;
	count = svc->count;
	timeout = svc->affinity_timeout;
	total_weight = svc->total_weight;

	if (flags & LB_SVC_F_SOURCE_RANGES) {
		struct lb4_src_range_key rk = {
			.prefixlen = 64, .rev_nat_index = rev_nat, .addr = p.saddr,
		};

		if (!bpf_map_lookup_elem(&lb4_src_range, &rk))
			return lb_drop(LB_DROP_SOURCE_RANGE);
	}

	/* An established flow keeps its backend while the backend exists. */
	ck.saddr = p.saddr;
	ck.daddr = p.daddr;
	ck.sport = p.sport;
	ck.dport = p.dport;
	ck.proto = p.proto;
	ck.dir = LB_CT_SERVICE;
	ct = bpf_map_lookup_elem(&lb4_ct, &ck);
	if (ct && ct->rev_nat_index == rev_nat) {
		backend_id = ct->backend_id;
		be = bpf_map_lookup_elem(&lb4_backends, &backend_id);
	}
	if (!be) {
		if (ct)
			bpf_map_delete_elem(&lb4_ct, &ck);
		backend_id = 0;
		now = lb_now_secs();
		if (flags & LB_SVC_F_AFFINITY) {
			struct lb_affinity_val *a;

			ak.client = p.saddr;
			ak.rev_nat_index = rev_nat;
			a = bpf_map_lookup_elem(&lb4_affinity, &ak);
			if (a) {
				__u64 last = a->last_used;
				__u32 id = a->backend_id;
				__u64 age = now > last ? now - last : 0;

				if (age <= timeout && lb_is_selectable(&key, count, id))
					backend_id = id;
			}
		}
		if (!backend_id) {
			if (flags & LB_SVC_F_MAGLEV)
				backend_id = lb_select_maglev(cfg, rev_nat, &p);
			else
				backend_id = lb_select_random(&key, count, total_weight, flags);
		}
		if (backend_id)
			be = bpf_map_lookup_elem(&lb4_backends, &backend_id);
		if (!be) {
			lb_count_service(rev_nat, skb->len, false);
			return lb_drop(LB_DROP_NO_BACKEND);
		}
		new_flow = true;
	}
	be_addr = be->address;
	be_port = be->port;
	lb_count_service(rev_nat, skb->len, new_flow);

	if (new_flow) {
		struct lb_affinity_val av = { .last_used = now, .backend_id = backend_id };

		ct_val.backend_id = backend_id;
		ct_val.rev_nat_index = rev_nat;
		ct_val.frontend_addr = p.daddr;
		ct_val.frontend_port = p.dport;
		bpf_map_update_elem(&lb4_ct, &ck, &ct_val, BPF_ANY);
		ck.saddr = be_addr;
		ck.daddr = p.saddr;
		ck.sport = be_port;
		ck.dport = p.sport;
		ck.dir = LB_CT_REPLY;
		bpf_map_update_elem(&lb4_ct, &ck, &ct_val, BPF_ANY);
		if (flags & LB_SVC_F_AFFINITY)
			bpf_map_update_elem(&lb4_affinity, &ak, &av, BPF_ANY);
	}

	if (lb_rewrite(skb, &p, LB_IP_DADDR_OFF, p.daddr, be_addr, p.l4_off + 2, p.dport,
		       be_port) < 0)
		return lb_drop(LB_DROP_REWRITE);
	return TC_ACT_OK;
}

SEC("classifier")
int lb_tc_egress(struct __sk_buff *skb)
{
	struct lb_pkt p = {};
	struct ct4_key ck = {};
	struct ct4_entry *ct;
	struct lb4_reverse_nat *rn;
	__be32 fe_addr;
	__be16 fe_port;
	__u16 rev_nat;

	switch (lb_parse4(skb, &p)) {
	case LB_PARSE_OK:
		break;
	case LB_PARSE_MALFORMED:
		return lb_drop(LB_DROP_MALFORMED);
	default:
		return TC_ACT_OK;
	}
	ck.saddr = p.saddr;
	ck.daddr = p.daddr;
	ck.sport = p.sport;
	ck.dport = p.dport;
	ck.proto = p.proto;
	ck.dir = LB_CT_REPLY;
	ct = bpf_map_lookup_elem(&lb4_ct, &ck);
	if (!ct)
		return TC_ACT_OK;
	fe_addr = ct->frontend_addr;
	fe_port = ct->frontend_port;
	rev_nat = ct->rev_nat_index;
	/* The reverse-NAT entry names the frontend; a wildcard entry (0.0.0.0)
	 * keeps the node address the client used, stored in the CT entry. */
	rn = bpf_map_lookup_elem(&lb4_reverse_nat, &rev_nat);
	if (rn && rn->address != 0) {
		fe_addr = rn->address;
		fe_port = rn->port;
	}
	if (lb_rewrite(skb, &p, LB_IP_SADDR_OFF, p.saddr, fe_addr, p.l4_off, p.sport,
		       fe_port) < 0)
		return lb_drop(LB_DROP_REWRITE);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
