/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_ctport.h: reply-tuple clashes of DNATed (not SNATed) flows.
 *
 * The reply entry of a DNATed flow is keyed by what the backend sends
 * (backend -> client:port), which does not name the frontend. A client may
 * use one source port towards two frontends at once (Linux picks ephemeral
 * ports per destination), and when both flows land on the same backend
 * their reply tuples are the same: the second flow's entry would steal the
 * first one's replies (reverse-NATed to the wrong frontend, dropped by the
 * client: a stall until the entry expires). Like netfilter's clash
 * resolution, the second flow then gets another source port towards the
 * backend (LB_CT_F_PORTMAP): the ingress program rewrites the client's port
 * to it, the egress program rewrites it back.
 */
#ifndef LB_CTPORT_H
#define LB_CTPORT_H

#include <linux/bpf.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_abi.h"
#include "lb_snat.h"

/* True when reply entry `e` belongs to the flow client:cport -> fe:fe_port
 * (a stale entry of this very tuple, which a new flow on it takes over). */
static __always_inline bool lb_reply_is_flows(const struct ct4_entry *e, __be32 fe,
					      __be16 fe_port, __be16 cport)
{
	if (e->frontend_addr != fe || e->frontend_port != fe_port)
		return false;
	return !(e->flags & LB_CT_F_PORTMAP) || e->snat_port == cport;
}

/* Writes the reply entry `val` of a new DNATed flow from client port
 * `cport`: under `rk` with dport `cport` when that key is free or the
 * flow's own, else under a free port of the SNAT range (then `val` gets
 * LB_CT_F_PORTMAP and snat_port = cport). `rk` has every field but dport
 * set. Returns the port the backend sees, 0 when every try collided. */
static __always_inline __be16 lb_ct_reply_insert(const struct lb_config *cfg, struct ct4_key *rk,
						 struct ct4_entry *val, __be16 cport)
{
	struct ct4_entry *cur;
	__u16 min, max;
	__u32 span;

	rk->dport = cport;
	if (bpf_map_update_elem(&lb4_ct, rk, val, BPF_NOEXIST) == 0)
		return cport;
	cur = bpf_map_lookup_elem(&lb4_ct, rk);
	if (!cur || lb_reply_is_flows(cur, val->frontend_addr, val->frontend_port, cport)) {
		bpf_map_update_elem(&lb4_ct, rk, val, BPF_ANY);
		return cport;
	}
	lb_snat_range(cfg, &min, &max);
	span = (__u32)max - min + 1;
	val->flags |= LB_CT_F_PORTMAP;
	val->snat_port = cport;
	for (int i = 0; i < LB_SNAT_TRIES; i++) {
		__be16 port = bpf_htons(min + bpf_get_prandom_u32() % span);

		rk->dport = port;
		if (bpf_map_update_elem(&lb4_ct, rk, val, BPF_NOEXIST) == 0)
			return port;
	}
	return 0;
}

#endif /* LB_CTPORT_H */
