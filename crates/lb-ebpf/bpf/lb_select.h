/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_select.h: frontend lookup and backend selection shared by the tc and
 * socket programs (lb_core::flow::lookup_frontend and lb_core::select), for
 * IPv4 (lb4_services) and IPv6 (lb6_services) frontends.
 */
#ifndef LB_SELECT_H
#define LB_SELECT_H

#include <linux/bpf.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_abi.h"
#include "lb_pkt.h"

#define NSEC_PER_SEC 1000000000ULL
#define READ_ONCE_U32(x) (*(const volatile __u32 *)&(x))

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

/* The frontend entry for (daddr, dport, proto) in `scope`, falling back to
 * the external entry; then the wildcard NodePort/HostPort entry when daddr
 * is node-local. `key` is left on the entry found. */
static __always_inline struct lb4_service *lb_lookup_frontend(struct lb4_key *key,
							      const struct lb_config *cfg,
							      __be32 daddr, __be16 dport,
							      __u8 proto, __u8 scope)
{
	struct lb4_service *svc, *internal;

	key->address = daddr;
	key->dport = dport;
	key->proto = proto;
	key->backend_slot = 0;
	key->scope = 0;
	svc = bpf_map_lookup_elem(&lb4_services, key);
	if (!svc && daddr != 0 && lb_is_node_local(cfg, daddr)) {
		key->address = 0;
		svc = bpf_map_lookup_elem(&lb4_services, key);
		if (svc && svc->fe_type != LB_FE_NODE_PORT && svc->fe_type != LB_FE_HOST_PORT)
			svc = NULL;
	}
	if (svc && scope == 1 && (svc->flags & LB_SVC_F_TWO_SCOPES)) {
		key->scope = 1;
		internal = bpf_map_lookup_elem(&lb4_services, key);
		if (internal)
			return internal;
		key->scope = 0;
	}
	return svc;
}

/* True for the addresses an IPv6 wildcard frontend answers on: the node's
 * IPv6 addresses and ::1 (lb_core::NodeConfig::is_local_addr). */
static __always_inline bool lb6_is_node_local(const struct lb_config *cfg,
					      const struct in6_addr *addr)
{
	if ((addr->in6_u.u6_addr32[0] | addr->in6_u.u6_addr32[1] | addr->in6_u.u6_addr32[2]) == 0 &&
	    addr->in6_u.u6_addr32[3] == bpf_htonl(1))
		return true;
	if (!cfg)
		return false;
#pragma unroll
	for (int i = 0; i < LB_MAX_NODE_IPS; i++) {
		if (i < cfg->node_ip6_count && lb6_addr_eq(&cfg->node_ips6[i], addr))
			return true;
	}
	return false;
}

/* lb_lookup_frontend for IPv6 frontends (lb6_services; the wildcard entry
 * has address ::). */
static __always_inline struct lb4_service *lb6_lookup_frontend(struct lb6_key *key,
							       const struct lb_config *cfg,
							       const struct in6_addr *daddr,
							       __be16 dport, __u8 proto, __u8 scope)
{
	struct lb4_service *svc, *internal;

	key->address = *daddr;
	key->dport = dport;
	key->proto = proto;
	key->backend_slot = 0;
	key->scope = 0;
	svc = bpf_map_lookup_elem(&lb6_services, key);
	if (!svc && !lb6_addr_is_zero(daddr) && lb6_is_node_local(cfg, daddr)) {
		__builtin_memset(&key->address, 0, sizeof(key->address));
		svc = bpf_map_lookup_elem(&lb6_services, key);
		if (svc && svc->fe_type != LB_FE_NODE_PORT && svc->fe_type != LB_FE_HOST_PORT)
			svc = NULL;
	}
	if (svc && scope == 1 && (svc->flags & LB_SVC_F_TWO_SCOPES)) {
		key->scope = 1;
		internal = bpf_map_lookup_elem(&lb6_services, key);
		if (internal)
			return internal;
		key->scope = 0;
	}
	return svc;
}

/* Copies what the programs use of a frontend's slot 0 (userspace may
 * rewrite the entry meanwhile, so it is read once). */
static __always_inline void lb_svc_load(const struct lb4_service *svc, __u32 *rev_nat,
					__u16 *flags, __u16 *count, __u32 *timeout,
					__u32 *total_weight)
{
	*rev_nat = svc->rev_nat_index;
	*flags = svc->flags;
	*count = svc->count;
	*timeout = svc->affinity_timeout;
	*total_weight = svc->total_weight;
}

/* Selection over a frontend's slots (struct lb4_service values, shared by
 * both families) is the same for IPv4 and IPv6 but for the key type and the
 * services map; LB_DEFINE_SELECT defines it for one family:
 *   lb_is_selectable<sfx>: true when backend_id is among slots 1..count;
 *   lb_select_random<sfx>: weighted choice among slots 1..count by
 *     `entropy` (lb_core::select::random);
 *   lb_affinity_backend<sfx>: the affinity entry's backend when it is fresh
 *     and still selectable.
 * The bpf_loop step callbacks are per family too, so the IPv4 ones stay
 * what they were (no family test per step). */
#define LB_DEFINE_SELECT(sfx, key_t, services, aff_key_t, affinity)                          \
	/* State of the bpf_loop walks over a frontend's selectable slots. */                  \
	struct lb_slot_walk##sfx {                                                             \
		key_t key;   /* frontend key; backend_slot is set per step */                  \
		__u32 point; /* weighted: remaining weight; find: backend id */                \
		__u32 found; /* backend id found, 0 if none */                                 \
	};                                                                                     \
                                                                                               \
	static long lb_weighted_step##sfx(__u32 i, void *ctx)                                  \
	{                                                                                      \
		struct lb_slot_walk##sfx *w = ctx;                                             \
		struct lb4_service *slot;                                                      \
                                                                                               \
		w->key.backend_slot = i + 1;                                                   \
		slot = bpf_map_lookup_elem(&services, &w->key);                                \
		if (!slot)                                                                     \
			return 1;                                                              \
		if (w->point < slot->weight) {                                                 \
			w->found = slot->backend_id;                                           \
			return 1;                                                              \
		}                                                                              \
		w->point -= slot->weight;                                                      \
		return 0;                                                                      \
	}                                                                                      \
                                                                                               \
	static long lb_find_step##sfx(__u32 i, void *ctx)                                      \
	{                                                                                      \
		struct lb_slot_walk##sfx *w = ctx;                                             \
		struct lb4_service *slot;                                                      \
                                                                                               \
		w->key.backend_slot = i + 1;                                                   \
		slot = bpf_map_lookup_elem(&services, &w->key);                                \
		if (!slot)                                                                     \
			return 1;                                                              \
		if (slot->backend_id == w->point) {                                            \
			w->found = slot->backend_id;                                           \
			return 1;                                                              \
		}                                                                              \
		return 0;                                                                      \
	}                                                                                      \
                                                                                               \
	static __always_inline bool lb_is_selectable##sfx(const key_t *key, __u16 count,       \
							  __u32 backend_id)                    \
	{                                                                                      \
		struct lb_slot_walk##sfx w = { .key = *key, .point = backend_id };             \
                                                                                               \
		bpf_loop(count, lb_find_step##sfx, &w, 0);                                     \
		return w.found != 0;                                                           \
	}                                                                                      \
                                                                                               \
	static __always_inline __u32 lb_select_random##sfx(const key_t *key, __u16 count,      \
							   __u32 total_weight, __u16 flags,    \
							   __u32 entropy)                      \
	{                                                                                      \
		struct lb_slot_walk##sfx w = { .key = *key };                                  \
		struct lb4_service *slot;                                                      \
                                                                                               \
		if (count == 0 || total_weight == 0)                                           \
			return 0;                                                              \
		if (flags & LB_SVC_F_UNIFORM) {                                                \
			w.key.backend_slot = (entropy % count) + 1;                            \
			slot = bpf_map_lookup_elem(&services, &w.key);                         \
			return slot ? slot->backend_id : 0;                                    \
		}                                                                              \
		w.point = entropy % total_weight;                                              \
		bpf_loop(count, lb_weighted_step##sfx, &w, 0);                                 \
		if (w.found)                                                                   \
			return w.found;                                                        \
		/* Slots and slot 0 disagree (a rewrite in progress shrank the                 \
		 * weights): fall back to a uniform choice rather than drop. */                \
		w.key.backend_slot = (entropy % count) + 1;                                    \
		slot = bpf_map_lookup_elem(&services, &w.key);                                 \
		return slot ? slot->backend_id : 0;                                            \
	}                                                                                      \
                                                                                               \
	static __always_inline __u32 lb_affinity_backend##sfx(const aff_key_t *ak,             \
							      const key_t *key, __u16 count,   \
							      __u32 timeout, __u64 now)        \
	{                                                                                      \
		struct lb_affinity_val *a = bpf_map_lookup_elem(&affinity, ak);                \
		__u64 last, age;                                                               \
		__u32 id;                                                                      \
                                                                                               \
		if (!a)                                                                        \
			return 0;                                                              \
		last = a->last_used;                                                           \
		id = a->backend_id;                                                            \
		age = now > last ? now - last : 0;                                             \
		if (age <= timeout && lb_is_selectable##sfx(key, count, id))                   \
			return id;                                                             \
		return 0;                                                                      \
	}

LB_DEFINE_SELECT(, struct lb4_key, lb4_services, struct lb4_affinity_key, lb4_affinity)
LB_DEFINE_SELECT(6, struct lb6_key, lb6_services, struct lb6_affinity_key, lb6_affinity)

/* The Maglev table entry for `hash` (0 when there is none). */
static __always_inline __u32 lb_select_maglev(const struct lb_config *cfg, __u32 rev_nat,
					      __u32 hash)
{
	void *table;
	__u32 idx, m, *id;

	if (!cfg)
		return 0;
	/* Read once: the divisor must be the value checked against 0. */
	m = READ_ONCE_U32(cfg->maglev_table_size);
	if (m == 0)
		return 0;
	table = bpf_map_lookup_elem(&lb4_maglev, &rev_nat);
	if (!table)
		return 0;
	idx = hash % m;
	id = bpf_map_lookup_elem(table, &idx);
	return id ? *id : 0;
}

#endif /* LB_SELECT_H */
