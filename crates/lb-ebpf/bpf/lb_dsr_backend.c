/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_dsr_backend.c: the backend side of direct server return (IPv4; IPv6 below), for
 * the device a DSR backend receives its traffic on (src/dsr.rs attaches it).
 *
 * lb_dsr_ingress: an IPIP packet from a node (lb_dsr.h) is decapsulated;
 * its inner packet, still addressed to the frontend the client used, is
 * translated to the backend (the outer destination, and the port the outer
 * Identification field carries for the first packet of the flow) and
 * delivered. The flow is remembered in lb_dsr_flows, in both directions.
 * lb_dsr_egress: a reply of a remembered flow gets the frontend back as its
 * source and leaves straight for the client (the backend's own route), not
 * through the node.
 *
 * Every packet of a flow refreshes its entries, whichever node it came
 * through: a flow that moves to another node keeps its translation.
 *
 * ICMP errors the backend sends about a DSR flow (port unreachable for a
 * UDP port nobody listens on, fragmentation needed, ...) quote the packet
 * as it was delivered (client -> backend:port) and come from the backend:
 * lb_dsr_egress gives them the same reverse translation as the flow's
 * replies (lb_icmp.h's for DNATed flows): the quote's destination and the
 * error's source become the frontend again, so the client's stack matches
 * the error to its socket (LB_DSR_ICMP). Errors about the backend's
 * replies from routers on the way to the client are addressed to the
 * frontend and reach the node, not the backend (not translated here).
 *
 * Only the load-balancing nodes may send DSR traffic: an IPIP packet whose
 * outer source is not in lb_dsr_nodes is dropped and counted
 * (LB_DSR_UNKNOWN_NODE) before anything is decapsulated or remembered, so
 * no other host can inject packets with a forged client source or plant
 * reply translations.
 *
 * IPv6 (lb_dsr6.h on the node): an IPv6-in-IPv6 packet (next header 41)
 * from a node in lb_dsr6_nodes is decapsulated, the backend's port read
 * from the outer flow label, and the flow remembered in lb_dsr6_flows;
 * replies and ICMPv6 errors about the flow (lb_icmp6_quote.h) get the same
 * reverse translation as IPv4's. The counters are shared. What the two
 * families do alike (remembering and delivering a decapsulated flow, the
 * reverse translation of replies) is written once, lb_dsr_backend_fam.h.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_pkt.h"
#include "lb_csum.h"
#include "lb_icmp_quote.h"
#include "lb_icmp6_quote.h"

#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV4
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#endif
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV6
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#endif

#define LB_DSR_FLOWS_MAX 262144
#define LB_DSR_NODES_MAX 1024

/* lb_dsr_key.dir */
#define LB_DSR_FORWARD 0 /* client -> frontend, as the client sent it */
#define LB_DSR_REPLY   1 /* backend -> client, as the backend sends it */

/* A flow's 5-tuple in one direction (the layout of lb_abi.h's ct4_key). */
struct lb_dsr_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* LB_DSR_* */
	__u8 pad[2];
};

/* FORWARD: the backend address and port the frontend becomes;
 * REPLY: the frontend address and port the backend becomes. */
struct lb_dsr_val {
	__be32 addr;
	__be16 port;
	__u16 pad;
};

/* lb_dsr_key for IPv6 (the layout of lb_abi.h's ct6_key). */
struct lb_dsr6_key {
	struct in6_addr saddr;
	struct in6_addr daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* LB_DSR_* */
	__u8 pad[2];
};

/* lb_dsr_val for IPv6. */
struct lb_dsr6_val {
	struct in6_addr addr;
	__be16 port;
	__u16 pad;
};

/* Indices of lb_dsr_stats (per-CPU packet counters). */
enum lb_dsr_stat {
	LB_DSR_DECAP = 0,    /* IPIP packets decapsulated and translated */
	LB_DSR_REVERSE = 1,  /* replies translated back to the frontend */
	LB_DSR_DROPPED = 2,  /* IPIP packets that could not be handled */
	LB_DSR_UNKNOWN_NODE = 3, /* IPIP packets from a source not in lb_dsr_nodes */
	LB_DSR_ICMP = 4,     /* ICMP errors about DSR flows translated back */
	LB_DSR_STATS_MAX = 8,
};

/* The load-balancing nodes' addresses (outer sources) allowed to send
 * DSR traffic; the value is unused (1). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, __u32);
	__uint(max_entries, LB_DSR_NODES_MAX);
} lb_dsr_nodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb_dsr_key);
	__type(value, struct lb_dsr_val);
	__uint(max_entries, LB_DSR_FLOWS_MAX);
} lb_dsr_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, LB_DSR_STATS_MAX);
} lb_dsr_stats SEC(".maps");

/* The nodes' IPv6 addresses allowed to send DSR traffic (value unused, 1). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct in6_addr);
	__type(value, __u32);
	__uint(max_entries, LB_DSR_NODES_MAX);
} lb_dsr6_nodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb_dsr6_key);
	__type(value, struct lb_dsr6_val);
	__uint(max_entries, LB_DSR_FLOWS_MAX);
} lb_dsr6_flows SEC(".maps");

static __always_inline void lb_dsr_count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&lb_dsr_stats, &which);

	if (n)
		*n += 1;
}

static __always_inline int lb_dsr_drop(void)
{
	lb_dsr_count(LB_DSR_DROPPED);
	return TC_ACT_SHOT;
}

/* An ICMP error leaving the backend about a DSR flow: the quote (client ->
 * backend:port, as delivered) gets the frontend back as its destination,
 * with the quoted IP and TCP/UDP checksums, the ICMP checksum and, for an
 * error from the backend itself, the outer source and IP checksum updated.
 * Returns TC_ACT_OK (translated or not ours) or TC_ACT_SHOT (a store
 * failed). */
static __always_inline int lb_dsr_icmp_error_rev(struct __sk_buff *skb)
{
	struct lb_icmp_quote q = {};
	struct lb_dsr_key k = {};
	struct lb_dsr_val *v;
	int rc;

	if (!lb_icmp_quote(skb, &q))
		return TC_ACT_OK;
	/* The flow as the backend answers it: backend:port -> client. */
	k.saddr = q.be_addr;
	k.daddr = q.client;
	k.sport = q.be_port;
	k.dport = q.q_port;
	k.proto = q.proto;
	k.dir = LB_DSR_REPLY;
	v = bpf_map_lookup_elem(&lb_dsr_flows, &k);
	if (!v)
		return TC_ACT_OK;
	rc = lb_icmp_quote_rewrite(skb, &q, v->addr, v->port, q.q_port);
	if (rc == TC_ACT_OK)
		lb_dsr_count(LB_DSR_ICMP);
	return rc;
}

/* lb_dsr_icmp_error_rev for ICMPv6. */
static __always_inline int lb_dsr_icmp6_error_rev(struct __sk_buff *skb)
{
	struct lb_icmp6_quote q = {};
	struct lb_icmp6_xlate x = {};
	struct lb_dsr6_key k = {};
	struct lb_dsr6_val *v;
	int rc;

	if (!lb_icmp6_quote(skb, &q))
		return TC_ACT_OK;
	k.saddr = q.be_addr;
	k.daddr = q.client;
	k.sport = q.be_port;
	k.dport = q.q_port;
	k.proto = q.proto;
	k.dir = LB_DSR_REPLY;
	v = bpf_map_lookup_elem(&lb_dsr6_flows, &k);
	if (!v)
		return TC_ACT_OK;
	x.client = q.client;
	x.cport = q.q_port;
	x.fe_addr = v->addr;
	x.fe_port = v->port;
	rc = lb_icmp6_quote_rewrite(skb, &q, &x);
	if (rc == TC_ACT_OK)
		lb_dsr_count(LB_DSR_ICMP);
	return rc;
}

#define LBD(name) name##4
#define LBD_ATTR __always_inline
#define LBD_PKT struct lb_pkt
#define LBD_ADDR __be32
#define LBD_KEY struct lb_dsr_key
#define LBD_VAL struct lb_dsr_val
#define LBD_FLOWS lb_dsr_flows
#define LBD_EQ(a, b) ((a) == (b))
#define LBD_PARSE lb_parse4
#define LBD_REWRITE lb_rewrite
#define LBD_DADDR_OFF LB_IP_DADDR_OFF
#define LBD_SADDR_OFF LB_IP_SADDR_OFF
#define LBD_ICMP_ERROR_REV lb_dsr_icmp_error_rev
#include "lb_dsr_backend_fam.h"
#undef LBD
#undef LBD_ATTR
#undef LBD_PKT
#undef LBD_ADDR
#undef LBD_KEY
#undef LBD_VAL
#undef LBD_FLOWS
#undef LBD_EQ
#undef LBD_PARSE
#undef LBD_REWRITE
#undef LBD_DADDR_OFF
#undef LBD_SADDR_OFF
#undef LBD_ICMP_ERROR_REV

#define LBD(name) name##6
#define LBD_ATTR __noinline
#define LBD_PKT struct lb_pkt6
#define LBD_ADDR struct in6_addr
#define LBD_KEY struct lb_dsr6_key
#define LBD_VAL struct lb_dsr6_val
#define LBD_FLOWS lb_dsr6_flows
#define LBD_EQ(a, b) lb6_addr_eq(&(a), &(b))
#define LBD_PARSE lb_parse6
#define LBD_REWRITE(skb, p, addr_off, old, new, port_off, old_port, new_port) \
	lb_rewrite6(skb, p, addr_off, &(old), &(new), port_off, old_port, new_port)
#define LBD_DADDR_OFF LB_IP6_DADDR_OFF
#define LBD_SADDR_OFF LB_IP6_SADDR_OFF
#define LBD_ICMP_ERROR_REV lb_dsr_icmp6_error_rev
#include "lb_dsr_backend_fam.h"

/* lb_dsr_ingress for an IPv6-in-IPv6 packet from a node. */
static __noinline int lb_dsr_ingress6(struct __sk_buff *skb)
{
	struct lb_pkt6 p = {};
	struct in6_addr node, be_addr;
	__be32 vtcfl;
	__be16 be_port;
	__u8 next;

	if (bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, nexthdr), &next, 1) < 0 ||
	    next != IPPROTO_IPV6)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, saddr), &node,
			       sizeof(node)) < 0)
		return TC_ACT_OK;
	if (!bpf_map_lookup_elem(&lb_dsr6_nodes, &node)) {
		lb_dsr_count(LB_DSR_UNKNOWN_NODE);
		return TC_ACT_SHOT;
	}
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &vtcfl, sizeof(vtcfl)) < 0 ||
	    (bpf_ntohl(vtcfl) >> 28) != 6 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, daddr), &be_addr,
			       sizeof(be_addr)) < 0)
		return lb_dsr_drop();
	be_port = bpf_htons((__u16)bpf_ntohl(vtcfl));
	if (bpf_skb_adjust_room(skb, -(__s32)sizeof(struct ipv6hdr), BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_DECAP_L3_IPV6) < 0)
		return lb_dsr_drop();
	if (lb_parse6(skb, &p) != LB_PARSE_OK)
		return lb_dsr_drop();

	return lb_dsr_deliver6(skb, &p, be_addr, be_port);
}

SEC("classifier")
int lb_dsr_ingress(struct __sk_buff *skb)
{
	struct lb_pkt p = {};
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *outer;
	__be32 be_addr, node;
	__be16 be_port;

	lb_pull(skb);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return lb_dsr_ingress6(skb);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > data_end || outer->protocol != IPPROTO_IPIP)
		return TC_ACT_OK;
	node = outer->saddr;
	if (!bpf_map_lookup_elem(&lb_dsr_nodes, &node)) {
		lb_dsr_count(LB_DSR_UNKNOWN_NODE);
		return TC_ACT_SHOT;
	}
	if (outer->version != 4 || outer->ihl != 5 ||
	    (outer->frag_off & bpf_htons(LB_IP_MF | LB_IP_OFFSET)))
		return lb_dsr_drop();
	be_addr = outer->daddr;
	be_port = outer->id;
	if (bpf_skb_adjust_room(skb, -(__s32)sizeof(*outer), BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_DECAP_L3_IPV4) < 0)
		return lb_dsr_drop();
	if (lb_parse4(skb, &p) != LB_PARSE_OK)
		return lb_dsr_drop();

	return lb_dsr_deliver4(skb, &p, be_addr, be_port);
}

SEC("classifier")
int lb_dsr_egress(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return lb_dsr_egress6(skb);
	return lb_dsr_egress4(skb);
}

char LICENSE[] SEC("license") = "GPL";
