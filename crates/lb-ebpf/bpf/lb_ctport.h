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
#include "lb_jhash.h"
#include "lb_pkt.h"
#include "lb_snat.h" /* LB_ADDR4_EQ, LB_ADDR6_EQ */

/* The ports a remapped flow may get, on the client's address. Below the
 * ephemeral ports clients pick themselves (Linux 32768-60999, the IANA
 * range 49152-65535 of Windows and macOS): the load balancer does not track
 * a client's direct connections to a pod, so a remapped port the client
 * also used for a direct connection to the same pod and port would mix
 * the two (the backend sees one 4-tuple; its replies to the direct one are
 * reverse-NATed). Outside the client's range, the client's own flows (LB or
 * direct) never take a remapped tuple and remaps never take theirs. Still
 * wide: a closed flow's reply entry reserves its tuple through the
 * backend's TIME_WAIT (gc.rs, CtTimeouts::time_wait), so one client and
 * one backend can remap at most this many flows per TIME_WAIT.
 * RELIABILITY.md lists the clients this does not cover. */
#define LB_PORTMAP_MIN 1024
#define LB_PORTMAP_MAX 32767
#define LB_PORTMAP_TRIES 32
/* Seed of the probe sequence's hash (any constant: the sequence only has
 * to be the same for every connection of one client flow). */
#define LB_PORTMAP_SEED 0x7a3c51e9u

/* LB_DEFINE_CTPORT defines for one family (key and entry types, CT map,
 * address equality by value):
 *
 * lb_reply_is_flows<sfx>: true when reply entry `e`, under a key with
 * client port `key_port`, belongs to the flow client:cport -> fe:fe_port
 * (an entry of an earlier connection of this very client tuple, which a new
 * one takes over).
 *
 * lb_ct_reply_insert<sfx>: writes the reply entry `val` of a new DNATed
 * flow from client port `cport`: under `rk` with dport `cport` when that key
 * is free or the flow's own (a reconnect from the same client tuple: its SYN
 * is newer than what the backend saw), else under the first port of the
 * flow's probe sequence in the LB_PORTMAP range that is free or already the
 * flow's own (then `val` gets LB_CT_F_PORTMAP and snat_port = cport). The
 * sequence is a hash of the client flow (`hash`), so a reconnect from the
 * same client tuple finds the port it had, and the reserved ports stay
 * about one per client flow and backend. `rk` has every field but dport
 * set. Returns the port the backend sees, 0 when every try collided. */
#define LB_DEFINE_CTPORT(sfx, addr_t, ct_key_t, ct_entry_t, ct_map, eq)                        \
	static __always_inline bool lb_reply_is_flows##sfx(const ct_entry_t *e,               \
							   __be16 key_port, addr_t fe,         \
							   __be16 fe_port, __be16 cport)       \
	{                                                                                      \
		if (!eq(e->frontend_addr, fe) || e->frontend_port != fe_port)                  \
			return false;                                                          \
		if (e->flags & LB_CT_F_PORTMAP)                                                \
			return e->snat_port == cport;                                          \
		return key_port == cport;                                                      \
	}                                                                                      \
                                                                                               \
	static __always_inline __be16 lb_ct_reply_insert##sfx(ct_key_t *rk, ct_entry_t *val,  \
							      __be16 cport, __u32 hash)        \
	{                                                                                      \
		const __u32 span = LB_PORTMAP_MAX - LB_PORTMAP_MIN + 1;                        \
		__u32 at = hash % span, step = (hash >> 16) | 1;                               \
		ct_entry_t *cur;                                                               \
                                                                                               \
		rk->dport = cport;                                                             \
		if (bpf_map_update_elem(&ct_map, rk, val, BPF_NOEXIST) == 0)                   \
			return cport;                                                          \
		cur = bpf_map_lookup_elem(&ct_map, rk);                                        \
		if (!cur || lb_reply_is_flows##sfx(cur, rk->dport, val->frontend_addr,         \
						   val->frontend_port, cport)) {               \
			bpf_map_update_elem(&ct_map, rk, val, BPF_ANY);                        \
			return cport;                                                          \
		}                                                                              \
		val->flags |= LB_CT_F_PORTMAP;                                                 \
		val->snat_port = cport;                                                        \
		for (int i = 0; i < LB_PORTMAP_TRIES; i++) {                                   \
			__be16 port = bpf_htons(LB_PORTMAP_MIN + at);                          \
                                                                                               \
			rk->dport = port;                                                      \
			if (bpf_map_update_elem(&ct_map, rk, val, BPF_NOEXIST) == 0)           \
				return port;                                                   \
			cur = bpf_map_lookup_elem(&ct_map, rk);                                \
			if (cur &&                                                             \
			    lb_reply_is_flows##sfx(cur, rk->dport, val->frontend_addr,         \
						   val->frontend_port, cport) &&               \
			    bpf_map_update_elem(&ct_map, rk, val, BPF_ANY) == 0)               \
				return port;                                                   \
			at = (at + step) % span;                                               \
		}                                                                              \
		return 0;                                                                      \
	}

LB_DEFINE_CTPORT(, __be32, struct ct4_key, struct ct4_entry, lb4_ct, LB_ADDR4_EQ)
LB_DEFINE_CTPORT(6, struct in6_addr, struct ct6_key, struct ct6_entry, lb6_ct, LB_ADDR6_EQ)

#endif /* LB_CTPORT_H */
