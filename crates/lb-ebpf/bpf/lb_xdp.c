/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_xdp.c: XDP acceleration of external service traffic (IPv4), over the
 * same maps as lb_tc.c.
 *
 * lb_xdp handles a packet to a NodePort, LoadBalancer or ExternalIP
 * frontend whose flow goes to a remote backend through one of our devices,
 * as lb_tc_ingress would: same frontend lookup, source ranges, connection
 * tracking, affinity and selection (lb_flow.h, lb_select.h), SNAT port
 * allocation (lb_snat.h) or DSR decision (lb_dsr.h), and counters. It
 * then DNATs (+ SNATs) or IPIP-encapsulates the frame itself, looks the
 * backend up in the FIB, rewrites the MACs and sends it with XDP_TX (the
 * route leaves through the arrival device) or bpf_redirect (another one).
 *
 * Everything else goes up with XDP_PASS to tc and the stack, untouched:
 * non-IPv4, IP options, fragments, ICMP, replies of SNATed flows (lb_tc.c
 * reverse-translates them), ClusterIP and HostPort frontends, NAT46/64
 * frontends (lb_tc.c translates them, lb_nat46.h), traffic policy Local,
 * flows to local backends or routed elsewhere, and routes without a
 * resolved neighbour. When it chose the backend of a new flow
 * before passing it, it leaves that choice in the frame's metadata
 * (struct lb_xdp_meta) and tc takes it, so selection is done once. Nothing
 * is committed (CT, SNAT, affinity, counters) for a packet it passes.
 *
 * XDP_REDIRECT and XDP_TX to a veth deliver only when the peer end has an
 * XDP program attached (or GRO enabled); see lb_xdp_pass.c.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_abi.h"
#include "lb_jhash.h"
#include "lb_pkt.h"
#include "lb_select.h"
#include "lb_snat.h"
#include "lb_dsr.h"
#include "lb_flow.h"

/* Indices of lb_xdp_stats (per-CPU packet counters of lb_xdp's verdicts). */
enum lb_xdp_stat {
	LB_XDP_STAT_TX = 0,       /* forwarded out of the arrival device */
	LB_XDP_STAT_REDIRECT = 1, /* forwarded out of another device */
	LB_XDP_STAT_PASS = 2,     /* a frontend's packet left to tc */
	LB_XDP_STAT_DROP = 3,     /* dropped (reason counted in lb_drops) */
	LB_XDP_STAT_MAX = 4,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, LB_XDP_STAT_MAX);
} lb_xdp_stats SEC(".maps");

static __always_inline void lb_xdp_count(__u32 stat)
{
	__u64 *n = bpf_map_lookup_elem(&lb_xdp_stats, &stat);

	if (n)
		*n += 1;
}

static __always_inline int lb_xdp_drop(__u32 reason)
{
	lb_count_drop(reason);
	lb_xdp_count(LB_XDP_STAT_DROP);
	return XDP_DROP;
}

/* Passes a frontend's packet to tc, with the backend chosen for a new flow
 * (0: none) in the metadata. */
static __always_inline int lb_xdp_pass(struct xdp_md *ctx, __u32 rev_nat, __u32 backend_id)
{
	struct lb_xdp_meta *m;
	void *data;

	lb_xdp_count(LB_XDP_STAT_PASS);
	if (!backend_id || bpf_xdp_adjust_meta(ctx, -(int)sizeof(*m)) < 0)
		return XDP_PASS;
	m = (void *)(long)ctx->data_meta;
	data = (void *)(long)ctx->data;
	if ((void *)(m + 1) > data)
		return XDP_PASS;
	m->magic = LB_XDP_META_MAGIC;
	m->rev_nat_index = rev_nat;
	m->backend_id = backend_id;
	return XDP_PASS;
}

/* Parses what lb_xdp handles: Ethernet, IPv4 without options, not a
 * fragment, TCP or UDP with a complete header. Anything else (including
 * malformed headers, which tc drops and counts) is not ours. */
static __always_inline bool lb_xdp_parse(struct xdp_md *ctx, struct lb_pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return false;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return false;
	if (ip->version != 4 || ip->ihl != 5)
		return false;
	if (ip->frag_off & bpf_htons(LB_IP_MF | LB_IP_OFFSET))
		return false;
	if ((void *)ip + bpf_ntohs(ip->tot_len) > data_end)
		return false;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->l4_off = ETH_HLEN + sizeof(*ip);
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = (void *)(ip + 1);

		if ((void *)(tcp + 1) > data_end)
			return false;
		p->sport = tcp->source;
		p->dport = tcp->dest;
		p->tcp_flags = ((__u8 *)tcp)[13];
		p->csum_off = p->l4_off + offsetof(struct tcphdr, check);
		return true;
	}
	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = (void *)(ip + 1);

		if ((void *)(udp + 1) > data_end)
			return false;
		p->sport = udp->source;
		p->dport = udp->dest;
		p->csum_off = p->l4_off + offsetof(struct udphdr, check);
		return true;
	}
	return false;
}

static __always_inline __u16 lb_csum_fold(__u32 c)
{
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return (__u16)~c;
}

/* RFC 1624 incremental update of a checksum for a 32-bit field change. */
static __always_inline __u16 lb_csum_upd4(__u16 check, __be32 from, __be32 to)
{
	__u32 c = (~check & 0xffff) + (~from & 0xffff) + ((~from >> 16) & 0xffff) +
		  (to & 0xffff) + (to >> 16);

	return lb_csum_fold(c);
}

/* The same for a 16-bit field. */
static __always_inline __u16 lb_csum_upd2(__u16 check, __be16 from, __be16 to)
{
	__u32 c = (~check & 0xffff) + (~from & 0xffff) + to;

	return lb_csum_fold(c);
}

/* Rewrites the addresses and ports and fixes both checksums
 * incrementally; a zero UDP checksum stays zero. 0 or -1. */
static __always_inline int lb_xdp_nat(struct xdp_md *ctx, __u8 proto, __be32 saddr, __be16 sport,
				      __be32 daddr, __be16 dport)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	__be16 *ports;
	__u16 *csum;
	__u16 c;

	if ((void *)(ip + 1) > data_end)
		return -1;
	if (proto == IPPROTO_TCP) {
		struct tcphdr *tcp = (void *)(ip + 1);

		if ((void *)(tcp + 1) > data_end)
			return -1;
		csum = &tcp->check;
		ports = &tcp->source;
	} else {
		struct udphdr *udp = (void *)(ip + 1);

		if ((void *)(udp + 1) > data_end)
			return -1;
		csum = &udp->check;
		ports = &udp->source;
	}
	c = *csum;
	if (proto == IPPROTO_TCP || c != 0) {
		c = lb_csum_upd4(c, ip->saddr, saddr);
		c = lb_csum_upd4(c, ip->daddr, daddr);
		c = lb_csum_upd2(c, ports[0], sport);
		c = lb_csum_upd2(c, ports[1], dport);
		if (proto == IPPROTO_UDP && c == 0)
			c = 0xffff;
		*csum = c;
	}
	ip->check = lb_csum_upd4(lb_csum_upd4(ip->check, ip->saddr, saddr), ip->daddr, daddr);
	ip->saddr = saddr;
	ip->daddr = daddr;
	ports[0] = sport;
	ports[1] = dport;
	return 0;
}

/* lb_dsr_encap for XDP: an outer IPv4 header node -> be_addr (protocol
 * IPIP, DF, the backend port in its Identification field) in front of the
 * frame's IPv4 header. The MACs are set by lb_xdp_send. 0 or -1. */
static __always_inline int lb_xdp_dsr_encap(struct xdp_md *ctx, __be32 node, __be32 be_addr,
					    __be16 be_port)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *outer, *inner = data + ETH_HLEN;
	struct ethhdr *eth;
	__u16 inner_len, *w;
	__u32 c = 0;
	__u8 tos;

	if ((void *)(inner + 1) > data_end)
		return -1;
	inner_len = bpf_ntohs(inner->tot_len);
	tos = inner->tos;
	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(*outer)) < 0)
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	outer = data + ETH_HLEN;
	if ((void *)(outer + 1) > data_end)
		return -1;
	eth->h_proto = bpf_htons(ETH_P_IP);
	outer->version = 4;
	outer->ihl = 5;
	outer->tos = tos;
	outer->tot_len = bpf_htons(inner_len + sizeof(*outer));
	outer->id = be_port;
	outer->frag_off = bpf_htons(LB_IP_DF);
	outer->ttl = 64;
	outer->protocol = IPPROTO_IPIP;
	outer->check = 0;
	outer->saddr = node;
	outer->daddr = be_addr;
	w = (__u16 *)outer;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*outer) / 2); i++)
		c += w[i];
	outer->check = lb_csum_fold(c);
	return 0;
}

/* A FIB lookup for (saddr -> daddr) as if forwarded from the arrival device. */
static __always_inline long lb_xdp_fib(struct xdp_md *ctx, struct bpf_fib_lookup *fib,
				       __be32 saddr, __be32 daddr, __u8 proto, __u32 tot_len)
{
	fib->family = AF_INET;
	fib->l4_protocol = proto;
	fib->tot_len = (__u16)tot_len;
	fib->ipv4_src = saddr;
	fib->ipv4_dst = daddr;
	fib->ifindex = ctx->ingress_ifindex;
	return bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
}

/* lb_route_is_ours for XDP: the route to daddr leaves through one of our
 * devices (a resolved or unresolved neighbour, as in tc). */
static __always_inline bool lb_xdp_route_is_ours(struct xdp_md *ctx, __be32 saddr, __be32 daddr,
						 __u8 proto, __u32 tot_len)
{
	struct bpf_fib_lookup fib = {};
	long rc = lb_xdp_fib(ctx, &fib, saddr, daddr, proto, tot_len);
	__u32 ifindex;

	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return false;
	ifindex = fib.ifindex;
	return bpf_map_lookup_elem(&lb_devices, &ifindex) != NULL;
}

/* Sets the MACs of the FIB result and sends the frame out of its device. */
static __always_inline int lb_xdp_send(struct xdp_md *ctx, const struct bpf_fib_lookup *fib)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return lb_xdp_drop(LB_DROP_REWRITE);
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	if (fib->ifindex == ctx->ingress_ifindex) {
		lb_xdp_count(LB_XDP_STAT_TX);
		return XDP_TX;
	}
	lb_xdp_count(LB_XDP_STAT_REDIRECT);
	return bpf_redirect(fib->ifindex, 0);
}

SEC("xdp")
int lb_xdp(struct xdp_md *ctx)
{
	struct lb_pkt p = {};
	struct lb4_key key = {};
	struct ct4_key ck = {};
	struct ct4_entry ct_val = {};
	struct lb4_affinity_key ak = {};
	struct bpf_fib_lookup fib = {};
	struct lb4_service *svc;
	struct lb4_backend *be = NULL;
	struct ct4_entry *ct;
	const struct lb_config *cfg;
	__u32 zero = 0, backend_id = 0, timeout, total_weight, len, tot_len;
	__be32 be_addr, node;
	__be16 be_port, snat_port = 0;
	__u32 rev_nat;
	__u16 flags, count, min, max;
	__u64 now;
	bool new_flow = false, snat = false, dsr = false;
	__u8 be_flags, fe_type;

	if (!lb_xdp_parse(ctx, &p))
		return XDP_PASS;
	len = ctx->data_end - ctx->data;
	cfg = bpf_map_lookup_elem(&lb_config, &zero);
	node = lb_snat_addr(cfg);
	/* Without a node address no backend is reached through SNAT or DSR. */
	if (!node)
		return XDP_PASS;
	/* Replies of SNATed flows: lb_tc_ingress translates them back. */
	lb_snat_range(cfg, &min, &max);
	if (p.daddr == node && bpf_ntohs(p.dport) >= min && bpf_ntohs(p.dport) <= max) {
		struct ct4_key rk = {};

		lb_snat_key(&rk, p.saddr, p.sport, node, p.dport, p.proto);
		if (bpf_map_lookup_elem(&lb4_snat, &rk))
			return XDP_PASS;
	}
	svc = lb_lookup_frontend(&key, cfg, p.daddr, p.dport, p.proto, 0);
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

	if (flags & LB_SVC_F_SOURCE_RANGES) {
		struct lb4_src_range_key rk = {
			.prefixlen = 64, .rev_nat_index = rev_nat, .addr = p.saddr,
		};

		if (!bpf_map_lookup_elem(&lb4_src_range, &rk))
			return lb_xdp_drop(LB_DROP_SOURCE_RANGE);
	}
	/* Traffic policy Local: every backend is local. */
	if (flags & LB_SVC_F_LOCAL_ONLY)
		return lb_xdp_pass(ctx, rev_nat, 0);

	now = lb_now_secs();
	ck.saddr = p.saddr;
	ck.daddr = p.daddr;
	ck.sport = p.sport;
	ck.dport = p.dport;
	ck.proto = p.proto;
	ck.dir = LB_CT_SERVICE;
	ct = bpf_map_lookup_elem(&lb4_ct, &ck);
	if (ct && ct->rev_nat_index == rev_nat &&
	    !((ct->flags & LB_CT_F_CLOSING) && lb_new_syn(&p))) {
		backend_id = ct->backend_id;
		snat = ct->flags & LB_CT_F_SNAT;
		dsr = ct->flags & LB_CT_F_DSR;
		snat_port = ct->snat_port;
		be = bpf_map_lookup_elem(&lb4_backends, &backend_id);
		/* A tracked flow tc forwards without SNAT or DSR stays there. */
		if (be && !snat && !dsr)
			return lb_xdp_pass(ctx, rev_nat, 0);
	}
	if (!be) {
		snat = false;
		dsr = false;
		ak.client = p.saddr;
		ak.rev_nat_index = rev_nat;
		backend_id = lb_choose_backend(cfg, &key, &ak, &p, rev_nat, flags, count, timeout,
					       total_weight, now, 0);
		if (backend_id)
			be = bpf_map_lookup_elem(&lb4_backends, &backend_id);
		if (!be) {
			lb_count_service(rev_nat, len, false);
			return lb_xdp_drop(LB_DROP_NO_BACKEND);
		}
		new_flow = true;
	}
	be_addr = be->address;
	be_port = be->port;
	be_flags = be->flags;

	if (new_flow) {
		/* lb_tc_ingress's choice between DSR, SNAT and plain DNAT. */
		if (be_flags & LB_BE_F_LOCAL)
			return lb_xdp_pass(ctx, rev_nat, backend_id);
		if (lb_dsr_applies(cfg, p.proto, fe_type) &&
		    lb_xdp_route_is_ours(ctx, node, be_addr, IPPROTO_IPIP, len - ETH_HLEN))
			dsr = true;
		else if (lb_xdp_route_is_ours(ctx, p.saddr, be_addr, p.proto, len - ETH_HLEN))
			snat = true;
		else
			return lb_xdp_pass(ctx, rev_nat, backend_id);
	}
	/* The frame leaves from the node; without a resolved neighbour, or
	 * when the (encapsulated) frame does not fit the route's MTU, tc
	 * sends it (bpf_redirect_neigh) as it would have. */
	tot_len = len - ETH_HLEN + (dsr ? sizeof(struct iphdr) : 0);
	if (lb_xdp_fib(ctx, &fib, node, be_addr, dsr ? IPPROTO_IPIP : p.proto, tot_len) !=
	    BPF_FIB_LKUP_RET_SUCCESS)
		return lb_xdp_pass(ctx, rev_nat, new_flow ? backend_id : 0);

	if (new_flow) {
		struct lb_affinity_val av = { .last_used = now, .backend_id = backend_id };

		if (snat) {
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
				return lb_xdp_drop(LB_DROP_SNAT_PORTS);
			ct_val.flags |= LB_CT_F_SNAT;
			ct_val.snat_port = snat_port;
		}
		if (dsr)
			ct_val.flags |= LB_CT_F_DSR;
		if (lb_closing(&p))
			ct_val.flags |= LB_CT_F_CLOSING;
		ct_val.backend_id = backend_id;
		ct_val.rev_nat_index = rev_nat;
		ct_val.frontend_addr = p.daddr;
		ct_val.frontend_port = p.dport;
		ct_val.last_seen = now;
		bpf_map_update_elem(&lb4_ct, &ck, &ct_val, BPF_ANY);
		if (flags & LB_SVC_F_AFFINITY)
			bpf_map_update_elem(&lb4_affinity, &ak, &av, BPF_ANY);
	} else {
		bool closing = lb_closing(&p), fresh = false;

		if (ct) {
			fresh = lb_ct_fresh(ct, now, closing);
			lb_ct_touch(ct, now, closing);
		}
		if (snat && !fresh)
			lb_snat_refresh(&p, be_addr, be_port, node, snat_port, rev_nat, now);
	}
	lb_count_service(rev_nat, len, new_flow);
	lb_count_backend(backend_id, len, new_flow);

	if (dsr) {
		if (lb_xdp_dsr_encap(ctx, node, be_addr, be_port) < 0)
			return lb_xdp_drop(LB_DROP_REWRITE);
	} else if (lb_xdp_nat(ctx, p.proto, node, snat_port, be_addr, be_port) < 0) {
		return lb_xdp_drop(LB_DROP_REWRITE);
	}
	return lb_xdp_send(ctx, &fib);
}

char LICENSE[] SEC("license") = "GPL";
