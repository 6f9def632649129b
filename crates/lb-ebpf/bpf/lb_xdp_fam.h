/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_xdp_fam.h: the XDP program body of one IP family, written once for
 * both (as lb_tc_fam.h is for tc).
 *
 * lb_xdp.c includes this file twice, once per family, after defining the
 * LBX_* macros below; everything that differs between IPv4 and IPv6 goes
 * through them, so the decision logic (lb_tc_fam.h's order, restricted to
 * what XDP forwards itself) exists once and the IPv4 code is what it was
 * before IPv6 (same types, same helpers, its state on the stack).
 *
 * Per family (all required):
 *   LBX(name)               name##4 or name##6: the functions defined here
 *   LBX_PKT, LBX_ADDR        struct lb_pkt / __be32, struct lb_pkt6 / in6_addr
 *   LBX_ADDR_NONE            initializer of an LBX_ADDR to 0.0.0.0 / ::
 *   LBX_KEY, LBX_CT_KEY, LBX_CT_ENTRY, LBX_AFF_KEY, LBX_SNAT_ENTRY,
 *   LBX_BACKEND              the ABI types (lb_abi.h)
 *   LBX_CT_MAP, LBX_BACKENDS_MAP, LBX_AFFINITY_MAP, LBX_SNAT_MAP   the maps
 *   LBX_PARSE(ctx, p)        true for a frame XDP handles (see lb_xdp.c)
 *   LBX_EQ(a, b)             address equality (by value)
 *   LBX_SNAT_ADDR(cfg, out)  the node's SNAT address into `out`; false if none
 *   LBX_LOOKUP_FRONTEND(key, cfg, p)
 *   LBX_SRC_RANGE_OK(rev_nat, saddr)
 *   LBX_CHOOSE_BACKEND(...)  lb_choose_backend / lb6_choose_backend
 *   LBX_HAS_DSR              1 when lb_xdp encapsulates DSR flows of the
 *                            family itself (both families do); 0: they
 *                            are passed to tc
 *   LBX_DSR_PROTO, LBX_DSR_OVERHEAD  the outer header's protocol (IPIP,
 *                            IPv6-in-IPv6) and length (LBX_HAS_DSR only)
 *   LBX_ROUTE_IS_OURS(ctx, saddr, daddr, proto, tot_len)
 *   LBX_FIB(ctx, fib, saddr, daddr, proto, tot_len)  bpf_fib_lookup's verdict
 *   LBX_SNAT_ALLOC, LBX_SNAT_REFRESH, LBX_SNAT_KEY, LBX_CT_TOUCH, LBX_CT_FRESH
 *   LBX_NAT(ctx, proto, saddr, sport, daddr, dport)  the DNAT + SNAT rewrite
 *   LBX_DSR_ENCAP(ctx, node, be_addr, be_port)  (LBX_HAS_DSR only)
 *   LBX_STATE, LBX_STATE_DECL(st)  the per-packet state (packet, frontend
 *                            key, CT key and entry, affinity key, SNAT
 *                            reverse entry, FIB lookup), zeroed: `st`
 *                            points to it, NULL when it cannot be had
 */

static __always_inline int LBX(lb_xdp)(struct xdp_md *ctx)
{
	LBX_STATE_DECL(st);
	LBX_PKT *p;
	LBX_KEY *key;
	LBX_CT_KEY *ck;
	LBX_CT_ENTRY *ct_val;
	LBX_AFF_KEY *ak;
	struct bpf_fib_lookup *fib;
	struct lb4_service *svc;
	LBX_BACKEND *be = NULL;
	LBX_CT_ENTRY *ct;
	const struct lb_config *cfg;
	__u32 zero = 0, backend_id = 0, timeout, total_weight, len, tot_len;
	LBX_ADDR be_addr, node = LBX_ADDR_NONE;
	__be16 be_port, snat_port = 0;
	__u32 rev_nat;
	__u16 flags, count, min, max;
	__u64 now;
	bool new_flow = false, snat = false, dsr = false;
	__u8 be_flags, fe_type;

	if (!st)
		return XDP_PASS;
	p = &st->p;
	key = &st->key;
	ck = &st->ck;
	ct_val = &st->ct_val;
	ak = &st->ak;
	fib = &st->fib;
	if (!LBX_PARSE(ctx, p))
		return XDP_PASS;
	len = ctx->data_end - ctx->data;
	cfg = bpf_map_lookup_elem(&lb_config, &zero);
	/* Without a node address no backend is reached through SNAT or DSR. */
	if (!LBX_SNAT_ADDR(cfg, node))
		return XDP_PASS;
	/* Replies of SNATed flows: lb_tc_ingress translates them back. */
	lb_snat_range(cfg, &min, &max);
	if (LBX_EQ(p->daddr, node) && bpf_ntohs(p->dport) >= min && bpf_ntohs(p->dport) <= max) {
		/* ck is filled in full below. */
		LBX_SNAT_KEY(ck, p->saddr, p->sport, node, p->dport, p->proto);
		if (bpf_map_lookup_elem(&LBX_SNAT_MAP, ck))
			return XDP_PASS;
	}
	svc = LBX_LOOKUP_FRONTEND(key, cfg, p);
	if (!svc)
		return XDP_PASS;
	lb_svc_load(svc, &rev_nat, &flags, &count, &timeout, &total_weight);
	fe_type = svc->fe_type;
	/* NAT46/64: lb_tc_ingress translates (lb_nat46.h). */
	if (flags & LB_SVC_F_NAT46X64)
		return lb_xdp_pass(ctx, rev_nat, 0);
	if (fe_type != LB_FE_NODE_PORT && fe_type != LB_FE_LOAD_BALANCER &&
	    fe_type != LB_FE_EXTERNAL_IP)
		return lb_xdp_pass(ctx, rev_nat, 0);

	if ((flags & LB_SVC_F_SOURCE_RANGES) && !LBX_SRC_RANGE_OK(rev_nat, p->saddr))
		return lb_xdp_drop(LB_DROP_SOURCE_RANGE);
	/* Traffic policy Local: every backend is local. */
	if (flags & LB_SVC_F_LOCAL_ONLY)
		return lb_xdp_pass(ctx, rev_nat, 0);

	now = lb_now_secs();
	ck->saddr = p->saddr;
	ck->daddr = p->daddr;
	ck->sport = p->sport;
	ck->dport = p->dport;
	ck->proto = p->proto;
	ck->dir = LB_CT_SERVICE;
	ct = bpf_map_lookup_elem(&LBX_CT_MAP, ck);
	if (ct && ct->rev_nat_index == rev_nat &&
	    !((ct->flags & LB_CT_F_CLOSING) && lb_tcp_new_syn(p->tcp_flags))) {
		backend_id = ct->backend_id;
		snat = ct->flags & LB_CT_F_SNAT;
		dsr = ct->flags & LB_CT_F_DSR;
		snat_port = ct->snat_port;
		be = bpf_map_lookup_elem(&LBX_BACKENDS_MAP, &backend_id);
		/* A tracked flow tc forwards without SNAT (or DSR, when XDP
		 * encapsulates the family's DSR flows) stays there. */
		if (be && !snat && !(LBX_HAS_DSR && dsr))
			return lb_xdp_pass(ctx, rev_nat, 0);
	}
	if (!be) {
		snat = false;
		dsr = false;
		ak->client = p->saddr;
		ak->rev_nat_index = rev_nat;
		backend_id = LBX_CHOOSE_BACKEND(cfg, key, ak, p, rev_nat, flags, count, timeout,
						total_weight, now, 0);
		if (!backend_id) {
			lb_count_service(svc, len, false);
			return lb_xdp_drop(LB_DROP_NO_BACKEND);
		}
		be = bpf_map_lookup_elem(&LBX_BACKENDS_MAP, &backend_id);
		/* Not a backend of this family (one being removed, or
		 * written before its frontend's NAT46/64 flag): tc decides,
		 * with the same choice. */
		if (!be)
			return lb_xdp_pass(ctx, rev_nat, backend_id);
		new_flow = true;
	}
	be_addr = be->address;
	be_port = be->port;
	be_flags = be->flags;

	if (new_flow) {
		/* lb_tc_ingress's choice between DSR, SNAT and plain DNAT. */
		if (be_flags & LB_BE_F_LOCAL)
			return lb_xdp_pass(ctx, rev_nat, backend_id);
#if LBX_HAS_DSR
		if (lb_dsr_applies(cfg, p->proto, fe_type) &&
		    LBX_ROUTE_IS_OURS(ctx, node, be_addr, LBX_DSR_PROTO, len - ETH_HLEN))
			dsr = true;
		else
#else
		/* The mode says DSR: tc decides (and encapsulates). */
		if (lb_dsr_applies(cfg, p->proto, fe_type))
			return lb_xdp_pass(ctx, rev_nat, backend_id);
#endif
		if (LBX_ROUTE_IS_OURS(ctx, p->saddr, be_addr, p->proto, len - ETH_HLEN))
			snat = true;
		else
			return lb_xdp_pass(ctx, rev_nat, backend_id);
	}
	/* The frame leaves from the node; without a resolved neighbour tc
	 * sends it (bpf_redirect_neigh) as it would have, and when the
	 * (encapsulated) frame does not fit the route's MTU tc answers the
	 * client (ICMP fragmentation needed / ICMPv6 Packet Too Big). */
#if LBX_HAS_DSR
	tot_len = len - ETH_HLEN + (dsr ? LBX_DSR_OVERHEAD : 0);
	if (LBX_FIB(ctx, fib, node, be_addr, dsr ? LBX_DSR_PROTO : p->proto, tot_len) !=
	    BPF_FIB_LKUP_RET_SUCCESS)
		return lb_xdp_pass(ctx, rev_nat, new_flow ? backend_id : 0);
#else
	tot_len = len - ETH_HLEN;
	if (LBX_FIB(ctx, fib, node, be_addr, p->proto, tot_len) != BPF_FIB_LKUP_RET_SUCCESS)
		return lb_xdp_pass(ctx, rev_nat, new_flow ? backend_id : 0);
#endif

	if (new_flow) {
		struct lb_affinity_val av = { .last_used = now, .backend_id = backend_id };

		if (snat) {
			LBX_SNAT_ENTRY *rev = &st->rev;

			rev->client_addr = p->saddr;
			rev->frontend_addr = p->daddr;
			rev->client_port = p->sport;
			rev->frontend_port = p->dport;
			rev->rev_nat_index = rev_nat;
			rev->last_seen = now;
			snat_port = LBX_SNAT_ALLOC(cfg, node, be_addr, be_port, p->proto, rev,
						   p->sport);
			if (!snat_port)
				return lb_xdp_drop(LB_DROP_SNAT_PORTS);
			ct_val->flags |= LB_CT_F_SNAT;
			ct_val->snat_port = snat_port;
		}
		if (dsr)
			ct_val->flags |= LB_CT_F_DSR;
		if (lb_tcp_closing(p->tcp_flags))
			ct_val->flags |= LB_CT_F_CLOSING;
		ct_val->backend_id = backend_id;
		ct_val->rev_nat_index = rev_nat;
		ct_val->frontend_addr = p->daddr;
		ct_val->frontend_port = p->dport;
		ct_val->last_seen = now;
		bpf_map_update_elem(&LBX_CT_MAP, ck, ct_val, BPF_ANY);
		if (flags & LB_SVC_F_AFFINITY)
			bpf_map_update_elem(&LBX_AFFINITY_MAP, ak, &av, BPF_ANY);
	} else {
		bool closing = lb_tcp_closing(p->tcp_flags), fresh = false;

		if (ct) {
			fresh = LBX_CT_FRESH(ct, now, closing);
			LBX_CT_TOUCH(ct, now, closing);
		}
		if (snat && !fresh)
			LBX_SNAT_REFRESH(p, be_addr, be_port, node, snat_port, rev_nat, now);
	}
	lb_count_service(svc, len, new_flow);
	lb_count_backend(be, len, new_flow);

#if LBX_HAS_DSR
	if (dsr) {
		if (LBX_DSR_ENCAP(ctx, node, be_addr, be_port) < 0)
			return lb_xdp_drop(LB_DROP_REWRITE);
		return lb_xdp_send(ctx, fib);
	}
#endif
	if (LBX_NAT(ctx, p->proto, node, snat_port, be_addr, be_port) < 0)
		return lb_xdp_drop(LB_DROP_REWRITE);
	return lb_xdp_send(ctx, fib);
}
