/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_tc.c: tc programs for the client-facing devices (IPv4).
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
 * The decision order is lb_core::flow::decide's; tests/prog_run.rs compares.
 * With XDP acceleration (lb_xdp.c) external flows to remote backends are
 * handled before tc; for a new flow lb_xdp passes up, tc takes the backend
 * it chose (lb_flow.h, struct lb_xdp_meta).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
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

static __always_inline int lb_drop(__u32 reason)
{
	lb_count_drop(reason);
	return TC_ACT_SHOT;
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
	__be32 be_addr, node = 0;
	__be16 be_port, snat_port = 0;
	__u32 rev_nat;
	__u16 flags, count;
	__u64 now = 0;
	bool new_flow = false, snat = false, dsr = false, portmap = false, fresh = false;
	__u8 be_flags, fe_type;
	int rc;

	cfg = bpf_map_lookup_elem(&lb_config, &zero);
	switch (lb_parse4(skb, &p)) {
	case LB_PARSE_OK:
		break;
	case LB_PARSE_MALFORMED:
		return lb_drop(LB_DROP_MALFORMED);
	default:
		/* ICMP errors about a SNATed flow, for the node. */
		rc = lb_icmp_error_snat(skb, cfg);
		if (rc < 0)
			return TC_ACT_OK;
		return rc == TC_ACT_SHOT ? lb_drop(LB_DROP_REWRITE) : rc;
	}
	now = lb_now_secs();
	/* Replies of SNATed flows come back to the node IP. */
	rc = lb_snat_reply(skb, cfg, &p, now);
	if (rc >= 0)
		return rc == TC_ACT_SHOT ? lb_drop(LB_DROP_REWRITE) : rc;
	/* The client-facing device carries external traffic. */
	svc = lb_lookup_frontend(&key, cfg, p.daddr, p.dport, p.proto, 0);
	if (!svc)
		return TC_ACT_OK;
	lb_svc_load(svc, &rev_nat, &flags, &count, &timeout, &total_weight);
	fe_type = svc->fe_type;

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
	/* A new SYN on the tuple of a closed connection starts over. */
	if (ct && ct->rev_nat_index == rev_nat &&
	    !((ct->flags & LB_CT_F_CLOSING) && lb_new_syn(&p))) {
		backend_id = ct->backend_id;
		snat = ct->flags & LB_CT_F_SNAT;
		dsr = ct->flags & LB_CT_F_DSR;
		portmap = ct->flags & LB_CT_F_PORTMAP;
		snat_port = ct->snat_port;
		be = bpf_map_lookup_elem(&lb4_backends, &backend_id);
	}
	if (!be) {
		if (ct)
			bpf_map_delete_elem(&lb4_ct, &ck);
		backend_id = 0;
		snat = false;
		dsr = false;
		portmap = false;
		ak.client = p.saddr;
		ak.rev_nat_index = rev_nat;
		backend_id = lb_choose_backend(cfg, &key, &ak, &p, rev_nat, flags, count, timeout,
					       total_weight, now, lb_xdp_hint(skb, rev_nat));
		if (backend_id)
			be = bpf_map_lookup_elem(&lb4_backends, &backend_id);
		if (!be) {
			lb_count_service(rev_nat, skb->len, false);
			return lb_drop(flags & LB_SVC_F_LOCAL_ONLY ? LB_DROP_NO_LOCAL_BACKEND :
								   LB_DROP_NO_BACKEND);
		}
		new_flow = true;
	}
	be_addr = be->address;
	be_port = be->port;
	be_flags = be->flags;
	node = lb_snat_addr(cfg);

	if (new_flow) {
		struct lb_affinity_val av = { .last_used = now, .backend_id = backend_id };

		/* A remote backend (lb-core's Backend::local is false) under
		 * traffic policy Cluster, reached through one of our devices:
		 * DSR when the mode says so for this flow, else SNAT. */
		if (node && !(be_flags & LB_BE_F_LOCAL) && !(flags & LB_SVC_F_LOCAL_ONLY) &&
		    lb_dsr_applies(cfg, p.proto, fe_type) &&
		    lb_route_is_ours(skb, node, be_addr, IPPROTO_IPIP)) {
			dsr = true;
		} else if (node && !(be_flags & LB_BE_F_LOCAL) && !(flags & LB_SVC_F_LOCAL_ONLY) &&
			   lb_route_is_ours(skb, p.saddr, be_addr, p.proto)) {
			struct lb4_snat_entry rev = {
				.client_addr = p.saddr,
				.frontend_addr = p.daddr,
				.client_port = p.sport,
				.frontend_port = p.dport,
				.rev_nat_index = rev_nat,
				.last_seen = now,
			};

			snat_port = lb_snat_alloc(cfg, node, be_addr, be_port, p.proto, &rev,
						  p.sport);
			if (!snat_port)
				return lb_drop(LB_DROP_SNAT_PORTS);
			snat = true;
		}
		ct_val.backend_id = backend_id;
		ct_val.rev_nat_index = rev_nat;
		ct_val.frontend_addr = p.daddr;
		ct_val.frontend_port = p.dport;
		ct_val.last_seen = now;
		if (lb_closing(&p))
			ct_val.flags |= LB_CT_F_CLOSING;
		if (snat) {
			ct_val.flags |= LB_CT_F_SNAT;
			ct_val.snat_port = snat_port;
		}
		if (dsr)
			ct_val.flags |= LB_CT_F_DSR;
		if (!snat && !dsr) {
			/* The reply entry first: on a reply-tuple clash the
			 * flow gets another port towards the backend. */
			struct ct4_key rk = {
				.saddr = be_addr, .daddr = p.saddr, .sport = be_port,
				.proto = p.proto, .dir = LB_CT_REPLY,
			};
			struct ct4_entry rv = ct_val;

			snat_port = lb_ct_reply_insert(
				&rk, &rv, p.sport,
				lb_flow_hash4(p.saddr, p.daddr, p.sport, p.dport, p.proto,
					      LB_PORTMAP_SEED));
			if (!snat_port)
				return lb_drop(LB_DROP_SNAT_PORTS);
			if (snat_port != p.sport) {
				portmap = true;
				ct_val.flags |= LB_CT_F_PORTMAP;
				ct_val.snat_port = snat_port;
			}
		}
		bpf_map_update_elem(&lb4_ct, &ck, &ct_val, BPF_ANY);
		if (flags & LB_SVC_F_AFFINITY)
			bpf_map_update_elem(&lb4_affinity, &ak, &av, BPF_ANY);
	} else {
		bool closing = lb_closing(&p);

		if (ct) {
			fresh = lb_ct_fresh(ct, now, closing);
			lb_ct_touch(ct, now, closing);
		}
		if (!snat && !dsr && !fresh) {
			/* Keep the reply entry fresh; recreate it if the LRU
			 * evicted it (its lifetime is the flow's). */
			struct ct4_entry *rct;

			ck.saddr = be_addr;
			ck.daddr = p.saddr;
			ck.sport = be_port;
			ck.dport = portmap ? snat_port : p.sport;
			ck.dir = LB_CT_REPLY;
			rct = bpf_map_lookup_elem(&lb4_ct, &ck);
			if (rct) {
				lb_ct_touch(rct, now, closing);
			} else {
				ct_val.backend_id = backend_id;
				ct_val.rev_nat_index = rev_nat;
				ct_val.frontend_addr = p.daddr;
				ct_val.frontend_port = p.dport;
				ct_val.last_seen = now;
				ct_val.flags = closing || (ct && (ct->flags & LB_CT_F_CLOSING)) ?
						       LB_CT_F_CLOSING :
						       0;
				if (portmap) {
					ct_val.flags |= LB_CT_F_PORTMAP;
					ct_val.snat_port = p.sport;
				}
				bpf_map_update_elem(&lb4_ct, &ck, &ct_val, BPF_ANY);
			}
		}
	}
	if (!new_flow && snat && !fresh)
		lb_snat_refresh(&p, be_addr, be_port, node, snat_port, rev_nat, now);
	lb_count_service(rev_nat, skb->len, new_flow);
	lb_count_backend(backend_id, skb->len, new_flow);

	if (dsr) {
		if (lb_dsr_encap(skb, node, be_addr, be_port) < 0)
			return lb_drop(LB_DROP_REWRITE);
		rc = lb_fib_redirect(skb, node, be_addr, IPPROTO_IPIP);
		return rc == LB_FIB_TOO_BIG ? lb_dsr_too_big(skb, node, be_addr) : rc;
	}
	if (lb_rewrite(skb, &p, LB_IP_DADDR_OFF, p.daddr, be_addr, p.l4_off + 2, p.dport,
		       be_port) < 0)
		return lb_drop(LB_DROP_REWRITE);
	if (!snat && !portmap)
		return TC_ACT_OK;
	if (lb_rewrite(skb, &p, LB_IP_SADDR_OFF, p.saddr, snat ? node : p.saddr, p.l4_off, p.sport,
		       snat_port) < 0)
		return lb_drop(LB_DROP_REWRITE);
	if (!snat)
		return TC_ACT_OK;
	rc = lb_fib_redirect(skb, node, be_addr, p.proto);
	return rc == LB_FIB_TOO_BIG ? lb_drop(LB_DROP_FRAG_NEEDED) : rc;
}

SEC("classifier")
int lb_tc_egress(struct __sk_buff *skb)
{
	struct lb_pkt p = {};
	struct ct4_key ck = {};
	struct ct4_entry *ct;
	struct lb4_reverse_nat *rn;
	__be32 fe_addr;
	__be16 fe_port, cport;
	__u32 rev_nat;
	__u64 now;
	bool closing;

	switch (lb_parse4(skb, &p)) {
	case LB_PARSE_OK:
		break;
	case LB_PARSE_MALFORMED:
		return lb_drop(LB_DROP_MALFORMED);
	default:
		/* ICMP errors about a DNATed flow, from its backend. */
		if (lb_icmp_error_rev(skb) == TC_ACT_SHOT)
			return lb_drop(LB_DROP_REWRITE);
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
	/* The client's own port (lb_ctport.h). */
	cport = ct->flags & LB_CT_F_PORTMAP ? ct->snat_port : p.dport;
	now = lb_now_secs();
	closing = lb_closing(&p);
	lb_ct_touch(ct, now, closing);
	if (closing) {
		/* The client's direction closes too. */
		ck.saddr = p.daddr;
		ck.daddr = fe_addr;
		ck.sport = cport;
		ck.dport = fe_port;
		ck.dir = LB_CT_SERVICE;
		lb_ct_close(&ck, now);
	}
	/* The reverse-NAT entry names the frontend; a wildcard entry (0.0.0.0)
	 * keeps the node address the client used, stored in the CT entry. */
	rn = bpf_map_lookup_elem(&lb4_reverse_nat, &rev_nat);
	if (rn && rn->address != 0) {
		fe_addr = rn->address;
		fe_port = rn->port;
	}
	if (lb_rewrite(skb, &p, LB_IP_SADDR_OFF, p.saddr, fe_addr, p.l4_off, p.sport,
		       fe_port) < 0 ||
	    lb_rewrite(skb, &p, LB_IP_DADDR_OFF, p.daddr, p.daddr, p.l4_off + 2, p.dport, cport) < 0)
		return lb_drop(LB_DROP_REWRITE);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
