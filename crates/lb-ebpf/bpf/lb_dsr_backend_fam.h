/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_dsr_backend_fam.h: the per-family part of lb_dsr_backend.c, written
 * once for both families (as lb_tc_fam.h is for the node's tc programs).
 *
 * lb_dsr_backend.c includes this file twice, once per family, after
 * defining the LBD_* macros below; the outer-header checks of ingress
 * (IPIP vs IPv6-in-IPv6) and the ICMP error translation stay per family.
 *
 * Per family (all required):
 *   LBD(name)              name##4 or name##6: the functions defined here
 *   LBD_ATTR               __always_inline (IPv4) or __noinline (IPv6: its
 *                          own stack frame)
 *   LBD_PKT, LBD_ADDR      struct lb_pkt / __be32, struct lb_pkt6 / in6_addr
 *   LBD_KEY, LBD_VAL       struct lb_dsr_key / lb_dsr6_key, _val / 6_val
 *   LBD_FLOWS              lb_dsr_flows / lb_dsr6_flows
 *   LBD_EQ(a, b)           address equality (by value)
 *   LBD_PARSE(skb, p)      lb_parse4 / lb_parse6
 *   LBD_REWRITE(skb, p, addr_off, old, new, port_off, old_port, new_port)
 *                          lb_rewrite / lb_rewrite6 (addresses by value)
 *   LBD_DADDR_OFF, LBD_SADDR_OFF  the IP header's address offsets
 *   LBD_ICMP_ERROR_REV(skb)       the ICMP error translation (egress)
 */

/* The inner packet `p` of a decapsulated DSR packet (client -> frontend)
 * is remembered in both directions and delivered to be_addr:be_port. */
static __always_inline int LBD(lb_dsr_deliver)(struct __sk_buff *skb, const LBD_PKT *p,
					       LBD_ADDR be_addr, __be16 be_port)
{
	LBD_KEY k = {};
	LBD_VAL v = {}, *fwd;

	k.saddr = p->saddr;
	k.daddr = p->daddr;
	k.sport = p->sport;
	k.dport = p->dport;
	k.proto = p->proto;
	k.dir = LB_DSR_FORWARD;
	fwd = bpf_map_lookup_elem(&LBD_FLOWS, &k);
	/* A known flow keeps its port unless a new SYN starts it over (the
	 * IPv4 Identification of later packets may have been renumbered by
	 * segmentation offload). */
	if (fwd && LBD_EQ(fwd->addr, be_addr) &&
	    !((p->tcp_flags & (LB_TCP_SYN | LB_TCP_ACK)) == LB_TCP_SYN))
		be_port = fwd->port;
	else {
		v.addr = be_addr;
		v.port = be_port;
		bpf_map_update_elem(&LBD_FLOWS, &k, &v, BPF_ANY);
	}
	/* The reply direction: refreshed by every packet (LRU). */
	k.saddr = be_addr;
	k.daddr = p->saddr;
	k.sport = be_port;
	k.dport = p->sport;
	k.dir = LB_DSR_REPLY;
	v.addr = p->daddr;
	v.port = p->dport;
	bpf_map_update_elem(&LBD_FLOWS, &k, &v, BPF_ANY);

	if (LBD_REWRITE(skb, p, LBD_DADDR_OFF, p->daddr, be_addr, p->l4_off + 2, p->dport,
			be_port) < 0)
		return lb_dsr_drop();
	lb_dsr_count(LB_DSR_DECAP);
	return TC_ACT_OK;
}

/* lb_dsr_egress for the family: a reply of a remembered flow gets the
 * frontend back as its source; an ICMP error about one, the same reverse
 * translation (LBD_ICMP_ERROR_REV). */
static LBD_ATTR int LBD(lb_dsr_egress)(struct __sk_buff *skb)
{
	LBD_KEY k = {};
	LBD_VAL *v;
	LBD_PKT p = {};
	LBD_ADDR fe_addr;
	__be16 fe_port;

	switch (LBD_PARSE(skb, &p)) {
	case LB_PARSE_OK:
		break;
	case LB_PARSE_IGNORE:
		return LBD_ICMP_ERROR_REV(skb);
	default:
		return TC_ACT_OK;
	}
	k.saddr = p.saddr;
	k.daddr = p.daddr;
	k.sport = p.sport;
	k.dport = p.dport;
	k.proto = p.proto;
	k.dir = LB_DSR_REPLY;
	v = bpf_map_lookup_elem(&LBD_FLOWS, &k);
	if (!v)
		return TC_ACT_OK;
	fe_addr = v->addr;
	fe_port = v->port;
	if (LBD_REWRITE(skb, &p, LBD_SADDR_OFF, p.saddr, fe_addr, p.l4_off, p.sport, fe_port) < 0)
		return TC_ACT_SHOT;
	lb_dsr_count(LB_DSR_REVERSE);
	return TC_ACT_OK;
}
