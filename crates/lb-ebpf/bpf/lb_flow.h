/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_flow.h: per-flow bookkeeping shared by the tc (lb_tc.c) and XDP
 * (lb_xdp.c) programs: drop/service/backend counters, connection-tracking
 * touches, the backend choice for a new flow (affinity, the XDP hint,
 * Maglev or weighted random), and the metadata the XDP program leaves in
 * front of a frame it passes up so that tc keeps its choice.
 */
#ifndef LB_FLOW_H
#define LB_FLOW_H

#include <linux/bpf.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>

#include "lb_abi.h"
#include "lb_jhash.h"
#include "lb_pkt.h"
#include "lb_select.h"

static __always_inline void lb_count_drop(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&lb_drops, &reason);

	if (n)
		*n += 1;
}

/* Counts a packet (and a new flow) in counter slot `slot` of the per-CPU
 * array `map` (lb_svc_stats, lb_be_stats). */
static __always_inline void lb_count(void *map, __u32 slot, __u32 bytes, bool new_flow)
{
	struct lb_svc_stats *st = bpf_map_lookup_elem(map, &slot);

	if (!st)
		return;
	st->packets += 1;
	st->bytes += bytes;
	if (new_flow)
		st->new_flows += 1;
}

/* Counts for the frontend with counter slot `slot` (lb4_service.stats_slot
 * of its slot-0 entry). */
static __always_inline void lb_count_service_slot(__u32 slot, __u32 bytes, bool new_flow)
{
	lb_count(&lb_svc_stats, slot, bytes, new_flow);
}

/* Counts for the backend with counter slot `slot` (its stats_slot). */
static __always_inline void lb_count_backend_slot(__u32 slot, __u32 bytes, bool new_flow)
{
	lb_count(&lb_be_stats, slot, bytes, new_flow);
}

/* Counts for the frontend whose slot-0 entry is `svc`. */
static __always_inline void lb_count_service(const struct lb4_service *svc, __u32 bytes,
					     bool new_flow)
{
	lb_count_service_slot(svc->stats_slot, bytes, new_flow);
}

/* Counts for backend `be` (a struct lb4_backend or lb6_backend pointer). */
#define lb_count_backend(be, bytes, new_flow)                                                  \
	lb_count_backend_slot((be)->stats_slot, (bytes), (new_flow))

/* A FIN or RST (TCP flags byte `f`): the flow is closing. */
static __always_inline bool lb_tcp_closing(__u8 f)
{
	return f & (LB_TCP_FIN | LB_TCP_RST);
}

/* A SYN without ACK: a new connection (reusing the tuple of a closed one). */
static __always_inline bool lb_tcp_new_syn(__u8 f)
{
	return (f & (LB_TCP_SYN | LB_TCP_ACK)) == LB_TCP_SYN;
}

static __always_inline bool lb_closing(const struct lb_pkt *p)
{
	return lb_tcp_closing(p->tcp_flags);
}

static __always_inline bool lb_new_syn(const struct lb_pkt *p)
{
	return lb_tcp_new_syn(p->tcp_flags);
}

/* Records activity on a CT entry (at most one write per second) and a
 * FIN/RST. A macro so that it serves struct ct4_entry and ct6_entry (same
 * field names); lb_ct_touch and lb6_ct_touch are its typed forms. */
#define LB_CT_TOUCH(ct, now, closing)                                                          \
	do {                                                                                   \
		if ((ct)->last_seen != (now))                                                  \
			(ct)->last_seen = (now);                                               \
		/* benign race: flags only gain bits */                                        \
		if ((closing) && !((ct)->flags & LB_CT_F_CLOSING))                             \
			(ct)->flags |= LB_CT_F_CLOSING;                                        \
	} while (0)

static __always_inline void lb_ct_touch(struct ct4_entry *ct, __u64 now, bool closing)
{
	LB_CT_TOUCH(ct, now, closing);
}

static __always_inline void lb6_ct_touch(struct ct6_entry *ct, __u64 now, bool closing)
{
	LB_CT_TOUCH(ct, now, closing);
}

/* True when an established packet that does not close may skip refreshing
 * the flow's other entries (the reply CT entry, the SNAT reverse entry):
 * its CT entry was already touched in second `now`, and the packet that
 * touched it first refreshed them in that same second (a packet only
 * refreshes them when the coarse second changed, or when it closes). An
 * entry the LRU evicted meanwhile is recreated within a second. Saves
 * one hash lookup per packet of a busy flow. Read before lb_ct_touch. */
static __always_inline bool lb_ct_fresh_at(__u64 last_seen, __u64 now, bool closing)
{
	return !closing && last_seen == now;
}

static __always_inline bool lb_ct_fresh(const struct ct4_entry *ct, __u64 now, bool closing)
{
	return lb_ct_fresh_at(ct->last_seen, now, closing);
}

static __always_inline bool lb6_ct_fresh(const struct ct6_entry *ct, __u64 now, bool closing)
{
	return lb_ct_fresh_at(ct->last_seen, now, closing);
}

/* Marks the CT entry under `k` closing, if any. */
static __always_inline void lb_ct_close(const struct ct4_key *k, __u64 now)
{
	struct ct4_entry *ct = bpf_map_lookup_elem(&lb4_ct, k);

	if (ct)
		lb_ct_touch(ct, now, true);
}

static __always_inline void lb6_ct_close(const struct ct6_key *k, __u64 now)
{
	struct ct6_entry *ct = bpf_map_lookup_elem(&lb6_ct, k);

	if (ct)
		lb6_ct_touch(ct, now, true);
}

/* The backend of a new flow: a fresh, selectable affinity entry, else
 * `hint` (the XDP program's choice for this very packet, 0 if none), else
 * Maglev or weighted random selection. 0 when there is none. */
static __always_inline __u32 lb_choose_backend(const struct lb_config *cfg,
					       const struct lb4_key *key,
					       const struct lb4_affinity_key *ak,
					       const struct lb_pkt *p, __u32 rev_nat, __u16 flags,
					       __u16 count, __u32 timeout, __u32 total_weight,
					       __u64 now, __u32 hint)
{
	__u32 backend_id = 0;

	if (flags & LB_SVC_F_AFFINITY)
		backend_id = lb_affinity_backend(ak, key, count, timeout, now);
	if (!backend_id)
		backend_id = hint;
	if (!backend_id) {
		if (flags & LB_SVC_F_MAGLEV)
			backend_id = lb_select_maglev(
				cfg, rev_nat,
				lb_flow_hash4(p->saddr, p->daddr, p->sport, p->dport, p->proto,
					      cfg ? cfg->maglev_seed : 0));
		else
			backend_id = lb_select_random(key, count, total_weight, flags,
						      bpf_get_prandom_u32());
	}
	return backend_id;
}

/* lb_choose_backend for an IPv6 flow (Maglev hashes the IPv6 5-tuple,
 * lb_flow_hash6; the Maglev tables are shared, keyed by service id). */
static __always_inline __u32 lb6_choose_backend(const struct lb_config *cfg,
						const struct lb6_key *key,
						const struct lb6_affinity_key *ak,
						const struct lb_pkt6 *p, __u32 rev_nat, __u16 flags,
						__u16 count, __u32 timeout, __u32 total_weight,
						__u64 now, __u32 hint)
{
	__u32 backend_id = 0;

	if (flags & LB_SVC_F_AFFINITY)
		backend_id = lb_affinity_backend6(ak, key, count, timeout, now);
	if (!backend_id)
		backend_id = hint;
	if (!backend_id) {
		if (flags & LB_SVC_F_MAGLEV)
			backend_id = lb_select_maglev(
				cfg, rev_nat,
				lb_flow_hash6(&p->saddr, &p->daddr, p->sport, p->dport, p->proto,
					      cfg ? cfg->maglev_seed : 0));
		else
			backend_id = lb_select_random6(key, count, total_weight, flags,
						       bpf_get_prandom_u32());
	}
	return backend_id;
}

/* Metadata the XDP program puts in front of a frame it passes to the stack
 * after choosing the backend of a new flow it does not forward itself (a
 * local backend, a route not through our devices): tc ingress takes the
 * same backend instead of choosing again, so random selection keeps its
 * distribution. */
struct lb_xdp_meta {
	__u32 magic;      /* LB_XDP_META_MAGIC */
	__u32 rev_nat_index;
	__u32 backend_id;
};

#define LB_XDP_META_MAGIC 0x6c627864 /* "lbxd" */

/* The XDP program's backend choice for this frame and frontend, 0 if none. */
static __always_inline __u32 lb_xdp_hint(struct __sk_buff *skb, __u32 rev_nat)
{
	void *meta = (void *)(long)skb->data_meta;
	void *data = (void *)(long)skb->data;
	struct lb_xdp_meta *m = meta;

	if ((void *)(m + 1) > data)
		return 0;
	if (m->magic != LB_XDP_META_MAGIC || m->rev_nat_index != rev_nat)
		return 0;
	return m->backend_id;
}

#endif /* LB_FLOW_H */
