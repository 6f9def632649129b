/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_tc_fam.h: the tc datapath of one IP family, written once for both.
 *
 * lb_tc.c includes this file twice, once per family, after defining the
 * LBF_* macros below; everything that differs between IPv4 and IPv6 (the
 * packet, key and entry types, the maps, parsing, address tests, rewrites,
 * route lookups) goes through them, so the decision logic (lb_core's
 * flow::decide order: reverse SNAT, frontend, source ranges, CT, affinity,
 * selection, SNAT/DSR/port remap, counters, drop reasons) exists once and
 * the IPv4 code is what it was before IPv6 (same types, same helpers).
 *
 * Per family (all required):
 *   LBF(name)               name##4 or name##6: the functions defined here
 *   LBF_PKT, LBF_ADDR        struct lb_pkt / __be32, struct lb_pkt6 / in6_addr
 *   LBF_KEY, LBF_CT_KEY, LBF_CT_ENTRY, LBF_AFF_KEY, LBF_SNAT_ENTRY,
 *   LBF_BACKEND, LBF_REV_NAT                 the ABI types (lb_abi.h)
 *   LBF_CT_MAP, LBF_BACKENDS_MAP, LBF_AFFINITY_MAP, LBF_SNAT_MAP,
 *   LBF_REV_NAT_MAP                          the maps
 *   LBF_PARSE(skb, p)        lb_parse4 / lb_parse6
 *   LBF_IS_SET(a)            the address is not 0.0.0.0 / ::
 *   LBF_ADDR_NONE            initializer of an LBF_ADDR to 0.0.0.0 / ::
 *   LBF_EQ(a, b)             address equality (by value)
 *   LBF_SNAT_ADDR(cfg, out)  the SNAT address into `out`; false if none
 *   LBF_LOOKUP_FRONTEND(key, cfg, p)
 *   LBF_SRC_RANGE_OK(rev_nat, saddr)
 *   LBF_CHOOSE_BACKEND(...)  lb_choose_backend / lb6_choose_backend
 *   LBF_DSR_APPLIES(cfg, proto, fe_type)
 *   LBF_ROUTE_IS_OURS(skb, saddr, daddr, proto), LBF_FIB_REDIRECT(...)
 *   LBF_SNAT_ALLOC, LBF_SNAT_REFRESH, LBF_SNAT_KEY, LBF_CT_REPLY_INSERT
 *   LBF_CT_TOUCH, LBF_CT_FRESH, LBF_CT_CLOSE
 *   LBF_FLOW_HASH(p, seed)   FlowKey::hash of the packet's 5-tuple
 *   LBF_REWRITE_SRC(skb, p, old, new, old_port, new_port), LBF_REWRITE_DST
 *   LBF_INGRESS_OTHER(skb, cfg)  a packet LBF_PARSE ignores (ICMP errors)
 *   LBF_EGRESS_OTHER(skb)
 *   LBF_HAS_DSR              1 when DSR encapsulation exists for the family
 *   LBF_XLATE(...)           a packet to a LB_SVC_F_NAT46X64 frontend (lb_nat46.h)
 *   LBF_XLATE_REPLY_IS(e), LBF_XLATE_REPLY(skb, p, e, now)
 *                            a SNAT entry of a translated flow, and its reply
 *   LBF_DSR_PROTO            the outer header's protocol (IPIP, IPv6-in-IPv6)
 *   LBF_DSR_FORWARD(skb, node, be_addr, be_port)  encapsulates a DSR
 *                            packet and sends it on (or answers the client
 *                            that it is too big): the tc verdict
 *   LBF_STATE, LBF_STATE_DECL(st)  the ingress program's per-packet state
 *                            (packet, frontend key, CT key and entry,
 *                            affinity key), zeroed: `st` points to it,
 *                            NULL when it cannot be had
 *   LBF_SUBFN                __always_inline, or __noinline for the wider
 *                            IPv6 state (a stack frame of its own)
 */

/* Reverse SNAT + reverse DNAT of a reply from a remote backend, then a
 * redirect towards the client. Returns -1 when the packet is not one. */
static __always_inline int LBF(lb_snat_reply)(struct __sk_buff *skb, const struct lb_config *cfg,
					      const LBF_PKT *p, __u64 now)
{
	LBF_CT_KEY k = {};
	LBF_SNAT_ENTRY *e;
	LBF_REV_NAT *rn;
	LBF_ADDR node = LBF_ADDR_NONE, client, fe_addr;
	__be16 client_port, fe_port;
	__u16 min, max, dport = bpf_ntohs(p->dport);
	__u32 rev_nat;
	int rc;

	lb_snat_range(cfg, &min, &max);
	if (!LBF_SNAT_ADDR(cfg, node) || !LBF_EQ(p->daddr, node) || dport < min || dport > max)
		return -1;
	LBF_SNAT_KEY(&k, p->saddr, p->sport, node, p->dport, p->proto);
	e = bpf_map_lookup_elem(&LBF_SNAT_MAP, &k);
	if (!e)
		return -1;
	if (e->last_seen != now)
		e->last_seen = now;
	/* A translated flow's entry (lb_nat46.h). */
	if (LBF_XLATE_REPLY_IS(e))
		return LBF_XLATE_REPLY(skb, p, e, now);
	client = e->client_addr;
	client_port = e->client_port;
	fe_addr = e->frontend_addr;
	fe_port = e->frontend_port;
	rev_nat = e->rev_nat_index;
	if (p->tcp_flags & (LB_TCP_FIN | LB_TCP_RST)) {
		/* The backend closes: so does the client's CT entry. */
		LBF_CT_KEY ck = {
			.saddr = client, .daddr = fe_addr, .sport = client_port,
			.dport = fe_port, .proto = p->proto, .dir = LB_CT_SERVICE,
		};
		LBF_CT_ENTRY *ct = bpf_map_lookup_elem(&LBF_CT_MAP, &ck);

		if (ct && !(ct->flags & LB_CT_F_CLOSING))
			ct->flags |= LB_CT_F_CLOSING; /* benign race: flags only gain bits */
	}
	rn = bpf_map_lookup_elem(&LBF_REV_NAT_MAP, &rev_nat);
	if (rn && LBF_IS_SET(rn->address)) {
		fe_addr = rn->address;
		fe_port = rn->port;
	}
	if (LBF_REWRITE_DST(skb, p, p->daddr, client, p->dport, client_port) < 0 ||
	    LBF_REWRITE_SRC(skb, p, p->saddr, fe_addr, p->sport, fe_port) < 0)
		return TC_ACT_SHOT;
	/* Too big for the client's route: the stack's forwarding has the
	 * last word (as before the MTU was checked here). */
	rc = LBF_FIB_REDIRECT(skb, fe_addr, client, p->proto);
	return rc == LB_FIB_TOO_BIG ? TC_ACT_OK : rc;
}

/* The SNAT source port of a new flow to a remote backend, recording its
 * reverse entry (0 when every port tried collided). `be_port_rev_nat` packs
 * the backend port (bits 32-47) and the service id (bits 0-31): a BPF
 * function takes five arguments at most. */
static LBF_SUBFN __be16 LBF(lb_snat_new)(const struct lb_config *cfg, const LBF_PKT *p,
					 const LBF_ADDR *node, const LBF_ADDR *be_addr,
					 __u64 be_port_rev_nat)
{
	LBF_SNAT_ENTRY rev = {
		.client_addr = p->saddr,
		.frontend_addr = p->daddr,
		.client_port = p->sport,
		.frontend_port = p->dport,
		.rev_nat_index = (__u32)be_port_rev_nat,
		.last_seen = lb_now_secs(),
	};

	return LBF_SNAT_ALLOC(cfg, *node, *be_addr, (__be16)(be_port_rev_nat >> 32), p->proto,
			      &rev, p->sport);
}

static __always_inline int LBF(lb_tc_ingress)(struct __sk_buff *skb)
{
	LBF_STATE_DECL(st);
	LBF_PKT *p;
	LBF_KEY *key;
	LBF_CT_KEY *ck;
	LBF_CT_ENTRY *ct_val;
	LBF_AFF_KEY *ak;
	struct lb4_service *svc;
	LBF_BACKEND *be = NULL;
	LBF_CT_ENTRY *ct;
	const struct lb_config *cfg;
	__u32 zero = 0, backend_id = 0, timeout, total_weight;
	LBF_ADDR be_addr, node = LBF_ADDR_NONE, new_src;
	__be16 be_port, snat_port = 0;
	__u32 rev_nat;
	__u16 flags, count;
	__u64 now = 0;
	bool new_flow = false, snat = false, dsr = false, portmap = false, fresh = false;
	bool has_node;
	__u8 be_flags;
	int rc;

	if (!st)
		return TC_ACT_OK;
	p = &st->p;
	key = &st->key;
	ck = &st->ck;
	ct_val = &st->ct_val;
	ak = &st->ak;
	cfg = bpf_map_lookup_elem(&lb_config, &zero);
	switch (LBF_PARSE(skb, p)) {
	case LB_PARSE_OK:
		break;
	case LB_PARSE_MALFORMED:
		return lb_drop(LB_DROP_MALFORMED);
	default:
		return LBF_INGRESS_OTHER(skb, cfg);
	}
	now = lb_now_secs();
	/* Replies of SNATed flows come back to the node IP. */
	rc = LBF(lb_snat_reply)(skb, cfg, p, now);
	if (rc >= 0)
		return rc == TC_ACT_SHOT ? lb_drop(LB_DROP_REWRITE) : rc;
	/* The client-facing device carries external traffic. */
	svc = LBF_LOOKUP_FRONTEND(key, cfg, p);
	if (!svc)
		return TC_ACT_OK;
	lb_svc_load(svc, &rev_nat, &flags, &count, &timeout, &total_weight);
	st->svc_slot = svc->stats_slot;

	if ((flags & LB_SVC_F_SOURCE_RANGES) && !LBF_SRC_RANGE_OK(rev_nat, p->saddr))
		return lb_drop(LB_DROP_SOURCE_RANGE);
	/* Backends of the other family: NAT46/64 (lb_nat46.h). */
	if (flags & LB_SVC_F_NAT46X64)
		return LBF_XLATE(skb, cfg, p, key, rev_nat, st->svc_slot, flags, count, timeout,
				 total_weight, now);
	/* Whether a new flow would use DSR, as a flag bit of the program's
	 * own (LB_TC_F_DSR): the frontend type need not stay live. */
	if (LBF_DSR_APPLIES(cfg, p->proto, svc->fe_type))
		flags |= LB_TC_F_DSR;

	/* An established flow keeps its backend while the backend exists. */
	ck->saddr = p->saddr;
	ck->daddr = p->daddr;
	ck->sport = p->sport;
	ck->dport = p->dport;
	ck->proto = p->proto;
	ck->dir = LB_CT_SERVICE;
	ct = bpf_map_lookup_elem(&LBF_CT_MAP, ck);
	/* A new SYN on the tuple of a closed connection starts over. */
	if (ct && ct->rev_nat_index == rev_nat &&
	    !((ct->flags & LB_CT_F_CLOSING) && lb_tcp_new_syn(p->tcp_flags))) {
		backend_id = ct->backend_id;
		snat = ct->flags & LB_CT_F_SNAT;
		dsr = ct->flags & LB_CT_F_DSR;
		portmap = ct->flags & LB_CT_F_PORTMAP;
		snat_port = ct->snat_port;
		be = bpf_map_lookup_elem(&LBF_BACKENDS_MAP, &backend_id);
	}
	if (!be) {
		if (ct)
			bpf_map_delete_elem(&LBF_CT_MAP, ck);
		backend_id = 0;
		snat = false;
		dsr = false;
		portmap = false;
		ak->client = p->saddr;
		ak->rev_nat_index = rev_nat;
		backend_id = LBF_CHOOSE_BACKEND(cfg, key, ak, p, rev_nat, flags, count, timeout,
						total_weight, now, lb_xdp_hint(skb, rev_nat));
		if (backend_id)
			be = bpf_map_lookup_elem(&LBF_BACKENDS_MAP, &backend_id);
		if (!be) {
			lb_count_service_slot(st->svc_slot, skb->len, false);
			return lb_drop(flags & LB_SVC_F_LOCAL_ONLY ? LB_DROP_NO_LOCAL_BACKEND :
								   LB_DROP_NO_BACKEND);
		}
		new_flow = true;
	}
	be_addr = be->address;
	be_port = be->port;
	be_flags = be->flags;
	st->be_slot = be->stats_slot;
	has_node = LBF_SNAT_ADDR(cfg, node);

	if (new_flow) {
		struct lb_affinity_val av = { .last_used = now, .backend_id = backend_id };

		/* A remote backend (lb-core's Backend::local is false) under
		 * traffic policy Cluster, reached through one of our devices:
		 * DSR when the mode says so for this flow, else SNAT. */
		if (has_node && !(be_flags & LB_BE_F_LOCAL) && !(flags & LB_SVC_F_LOCAL_ONLY) &&
		    (flags & LB_TC_F_DSR) &&
		    LBF_ROUTE_IS_OURS(skb, node, be_addr, LBF_DSR_PROTO)) {
			dsr = true;
		} else if (has_node && !(be_flags & LB_BE_F_LOCAL) &&
			   !(flags & LB_SVC_F_LOCAL_ONLY) &&
			   LBF_ROUTE_IS_OURS(skb, p->saddr, be_addr, p->proto)) {
			snat_port = LBF(lb_snat_new)(cfg, p, &node, &be_addr,
						     ((__u64)be_port << 32) | rev_nat);
			if (!snat_port)
				return lb_drop(LB_DROP_SNAT_PORTS);
			snat = true;
		}
		ct_val->backend_id = backend_id;
		ct_val->rev_nat_index = rev_nat;
		ct_val->frontend_addr = p->daddr;
		ct_val->frontend_port = p->dport;
		ct_val->last_seen = now;
		if (lb_tcp_closing(p->tcp_flags))
			ct_val->flags |= LB_CT_F_CLOSING;
		if (snat) {
			ct_val->flags |= LB_CT_F_SNAT;
			ct_val->snat_port = snat_port;
		}
		if (dsr)
			ct_val->flags |= LB_CT_F_DSR;
		if (!snat && !dsr) {
			/* The reply entry first: on a reply-tuple clash the
			 * flow gets another port towards the backend. */
			LBF_CT_KEY rk = {
				.saddr = be_addr, .daddr = p->saddr, .sport = be_port,
				.proto = p->proto, .dir = LB_CT_REPLY,
			};

			/* On a clash the insert gives ct_val LB_CT_F_PORTMAP
			 * and the client's port (the reply entry's view); the
			 * service entry holds the backend-side port instead. */
			snat_port = LBF_CT_REPLY_INSERT(&rk, ct_val, p->sport,
							LBF_FLOW_HASH(p, LB_PORTMAP_SEED));
			if (!snat_port)
				return lb_drop(LB_DROP_SNAT_PORTS);
			if (snat_port != p->sport) {
				portmap = true;
				ct_val->snat_port = snat_port;
			}
		}
		bpf_map_update_elem(&LBF_CT_MAP, ck, ct_val, BPF_ANY);
		if (flags & LB_SVC_F_AFFINITY)
			bpf_map_update_elem(&LBF_AFFINITY_MAP, ak, &av, BPF_ANY);
	} else {
		bool closing = lb_tcp_closing(p->tcp_flags);

		if (ct) {
			fresh = LBF_CT_FRESH(ct, now, closing);
			LBF_CT_TOUCH(ct, now, closing);
		}
		if (!snat && !dsr && !fresh) {
			/* Keep the reply entry fresh; recreate it if the LRU
			 * evicted it (its lifetime is the flow's). */
			LBF_CT_ENTRY *rct;

			ck->saddr = be_addr;
			ck->daddr = p->saddr;
			ck->sport = be_port;
			ck->dport = portmap ? snat_port : p->sport;
			ck->dir = LB_CT_REPLY;
			rct = bpf_map_lookup_elem(&LBF_CT_MAP, ck);
			if (rct) {
				LBF_CT_TOUCH(rct, now, closing);
			} else {
				ct_val->backend_id = backend_id;
				ct_val->rev_nat_index = rev_nat;
				ct_val->frontend_addr = p->daddr;
				ct_val->frontend_port = p->dport;
				ct_val->last_seen = now;
				ct_val->flags = closing || (ct && (ct->flags & LB_CT_F_CLOSING)) ?
						       LB_CT_F_CLOSING :
						       0;
				if (portmap) {
					ct_val->flags |= LB_CT_F_PORTMAP;
					ct_val->snat_port = p->sport;
				}
				bpf_map_update_elem(&LBF_CT_MAP, ck, ct_val, BPF_ANY);
			}
		}
	}
	if (!new_flow && snat && !fresh)
		LBF_SNAT_REFRESH(p, be_addr, be_port, node, snat_port, rev_nat, now);
	lb_count_service_slot(st->svc_slot, skb->len, new_flow);
	lb_count_backend_slot(st->be_slot, skb->len, new_flow);

#if LBF_HAS_DSR
	if (dsr) {
		return LBF_DSR_FORWARD(skb, node, be_addr, be_port);
	}
#endif
	if (LBF_REWRITE_DST(skb, p, p->daddr, be_addr, p->dport, be_port) < 0)
		return lb_drop(LB_DROP_REWRITE);
	if (!snat && !portmap)
		return TC_ACT_OK;
	new_src = snat ? node : p->saddr;
	if (LBF_REWRITE_SRC(skb, p, p->saddr, new_src, p->sport, snat_port) < 0)
		return lb_drop(LB_DROP_REWRITE);
	if (!snat)
		return TC_ACT_OK;
	rc = LBF_FIB_REDIRECT(skb, node, be_addr, p->proto);
	return rc == LB_FIB_TOO_BIG ? lb_drop(LB_DROP_FRAG_NEEDED) : rc;
}

static __always_inline int LBF(lb_tc_egress)(struct __sk_buff *skb)
{
	LBF_PKT p = {};
	LBF_CT_KEY ck = {};
	LBF_CT_ENTRY *ct;
	LBF_REV_NAT *rn;
	LBF_ADDR fe_addr;
	__be16 fe_port, cport;
	__u32 rev_nat;
	__u64 now;
	bool closing;

	switch (LBF_PARSE(skb, &p)) {
	case LB_PARSE_OK:
		break;
	case LB_PARSE_MALFORMED:
		return lb_drop(LB_DROP_MALFORMED);
	default:
		return LBF_EGRESS_OTHER(skb);
	}
	ck.saddr = p.saddr;
	ck.daddr = p.daddr;
	ck.sport = p.sport;
	ck.dport = p.dport;
	ck.proto = p.proto;
	ck.dir = LB_CT_REPLY;
	ct = bpf_map_lookup_elem(&LBF_CT_MAP, &ck);
	if (!ct)
		return TC_ACT_OK;
	fe_addr = ct->frontend_addr;
	fe_port = ct->frontend_port;
	rev_nat = ct->rev_nat_index;
	/* The client's own port (lb_ctport.h). */
	cport = ct->flags & LB_CT_F_PORTMAP ? ct->snat_port : p.dport;
	now = lb_now_secs();
	closing = lb_tcp_closing(p.tcp_flags);
	LBF_CT_TOUCH(ct, now, closing);
	if (closing) {
		/* The client's direction closes too. */
		ck.saddr = p.daddr;
		ck.daddr = fe_addr;
		ck.sport = cport;
		ck.dport = fe_port;
		ck.dir = LB_CT_SERVICE;
		LBF_CT_CLOSE(&ck, now);
	}
	/* The reverse-NAT entry names the frontend; a wildcard entry (0.0.0.0,
	 * ::) keeps the node address the client used, stored in the CT entry. */
	rn = bpf_map_lookup_elem(&LBF_REV_NAT_MAP, &rev_nat);
	if (rn && LBF_IS_SET(rn->address)) {
		fe_addr = rn->address;
		fe_port = rn->port;
	}
	if (LBF_REWRITE_SRC(skb, &p, p.saddr, fe_addr, p.sport, fe_port) < 0 ||
	    LBF_REWRITE_DST(skb, &p, p.daddr, p.daddr, p.dport, cport) < 0)
		return lb_drop(LB_DROP_REWRITE);
	return TC_ACT_OK;
}
