/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_sock.c: socket-level load balancing for processes of one cgroup
 * (after Cilium's bpf_sock.c). connect4 (TCP, connected UDP) and sendmsg4
 * (unconnected UDP) rewrite a frontend destination to a backend before the
 * kernel routes the socket, so no packet is ever NATed; recvmsg4 and
 * getpeername4 show the frontend again, from lb4_sock_rev.
 *
 * Lookup: the internal scope of two-scope services (the node is the
 * client), then the wildcard NodePort/HostPort entry for loopback and node
 * addresses. Selection: affinity per service (the node is one client, key
 * address 0.0.0.0), then Maglev or weighted random. The selector is the
 * socket cookie for UDP, so every datagram of a socket reaches the same
 * backend, and a random number for TCP.
 *
 * Source ranges (loadBalancerSourceRanges) are checked here too, as
 * Cilium's socket LB does for LoadBalancer services: the client is this
 * node, so its source is the address the socket is bound to (sendmsg4: the
 * IP_PKTINFO source if any), or, for an unbound socket, whose source the
 * kernel picks only after this hook, the node's first address
 * (lb_config.node_ips[0], the agent's first --node-ip). A source outside
 * the ranges is refused (connect/sendmsg fail with EPERM) and counted as
 * LB_DROP_SOURCE_RANGE.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_abi.h"
#include "lb_jhash.h"
#include "lb_select.h"

#define SYS_REJECT 0
#define SYS_PROCEED 1

/* True when `src` may use the frontend `rev_nat` (its source ranges); a
 * refusal is counted. */
static __always_inline bool lb_sock4_src_ok(const struct lb_config *cfg, __u32 rev_nat,
					    __be32 src)
{
	struct lb4_src_range_key rk = { .prefixlen = 64, .rev_nat_index = rev_nat };
	__u32 reason = LB_DROP_SOURCE_RANGE;
	__u64 *n;

	if (!src && cfg && cfg->node_ip_count > 0)
		src = cfg->node_ips[0];
	rk.addr = src;
	if (src && bpf_map_lookup_elem(&lb4_src_range, &rk))
		return true;
	n = bpf_map_lookup_elem(&lb_drops, &reason);
	if (n)
		*n += 1;
	return false;
}

/* Translates ctx's destination when it is a frontend. `src` is the
 * client's source address when known (0: unbound). Returns SYS_REJECT for a
 * frontend without a usable backend (connect fails with EPERM, as the tc
 * path drops) or a source outside its ranges. */
static __always_inline int lb_sock4_xlate(struct bpf_sock_addr *ctx, bool connect, __be32 src)
{
	struct lb4_key key = {};
	struct lb4_affinity_key ak = {};
	struct lb4_sock_key sk = {};
	struct lb4_sock_val sv = {};
	struct lb4_service *svc;
	struct lb4_backend *be;
	const struct lb_config *cfg;
	__u32 zero = 0, backend_id = 0, timeout, total_weight, selector;
	__be32 daddr = ctx->user_ip4;
	__be16 dport = (__be16)ctx->user_port;
	__u32 rev_nat;
	__u16 flags, count;
	__u64 cookie, now = 0;
	__u8 proto = (__u8)ctx->protocol;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return SYS_PROCEED;
	cfg = bpf_map_lookup_elem(&lb_config, &zero);
	svc = lb_lookup_frontend(&key, cfg, daddr, dport, proto, 1);
	if (!svc)
		return SYS_PROCEED;
	lb_svc_load(svc, &rev_nat, &flags, &count, &timeout, &total_weight);
	if ((flags & LB_SVC_F_SOURCE_RANGES) && !lb_sock4_src_ok(cfg, rev_nat, src))
		return SYS_REJECT;
	cookie = bpf_get_socket_cookie(ctx);
	selector = proto == IPPROTO_UDP ? (__u32)(cookie ^ (cookie >> 32)) :
					  bpf_get_prandom_u32();

	if (flags & LB_SVC_F_AFFINITY) {
		now = lb_now_secs();
		ak.rev_nat_index = rev_nat;
		backend_id = lb_affinity_backend(&ak, &key, count, timeout, now);
	}
	if (!backend_id) {
		if (flags & LB_SVC_F_MAGLEV)
			backend_id = lb_select_maglev(
				cfg, rev_nat,
				lb_jhash2_4words(selector, bpf_ntohl(daddr), bpf_ntohs(dport), proto,
						 cfg ? cfg->maglev_seed : 0));
		else
			backend_id = lb_select_random(&key, count, total_weight, flags, selector);
	}
	if (!backend_id)
		return SYS_REJECT;
	be = bpf_map_lookup_elem(&lb4_backends, &backend_id);
	if (!be)
		return SYS_REJECT;
	/* Writes only on change: sendmsg4 runs for every datagram. */
	if (flags & LB_SVC_F_AFFINITY) {
		struct lb_affinity_val *a = bpf_map_lookup_elem(&lb4_affinity, &ak);

		if (!a || a->backend_id != backend_id) {
			struct lb_affinity_val av = { .last_used = now, .backend_id = backend_id };

			bpf_map_update_elem(&lb4_affinity, &ak, &av, BPF_ANY);
		} else if (a->last_used != now) {
			a->last_used = now;
		}
	}
	sk.cookie = cookie;
	sk.address = be->address;
	sk.port = be->port;
	sv.address = daddr;
	sv.port = dport;
	sv.rev_nat_index = rev_nat;
	{
		struct lb4_sock_val *old = bpf_map_lookup_elem(&lb4_sock_rev, &sk);
		bool fresh = !old || old->address != daddr || old->port != dport ||
			     old->rev_nat_index != rev_nat;

		if (fresh)
			bpf_map_update_elem(&lb4_sock_rev, &sk, &sv, BPF_ANY);
		/* A new flow: a connect, or the first datagram of an unconnected
		 * socket to this backend. */
		if (connect || fresh) {
			struct lb_svc_stats *st = bpf_map_lookup_elem(&lb_be_stats, &backend_id);

			if (st)
				st->new_flows += 1;
		}
	}
	ctx->user_ip4 = be->address;
	ctx->user_port = be->port;
	return SYS_PROCEED;
}

/* Shows the frontend instead of the backend a socket was translated to. */
static __always_inline void lb_sock4_rev(struct bpf_sock_addr *ctx)
{
	struct lb4_sock_key sk = {};
	struct lb4_sock_val *sv;
	__u32 rev_nat;

	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.address = ctx->user_ip4;
	sk.port = (__be16)ctx->user_port;
	sv = bpf_map_lookup_elem(&lb4_sock_rev, &sk);
	if (!sv)
		return;
	/* A frontend that is gone no longer stands for this backend. */
	rev_nat = sv->rev_nat_index;
	if (!bpf_map_lookup_elem(&lb4_reverse_nat, &rev_nat)) {
		bpf_map_delete_elem(&lb4_sock_rev, &sk);
		return;
	}
	ctx->user_ip4 = sv->address;
	ctx->user_port = sv->port;
}

/* The address the socket is bound to (0 when unbound). */
static __always_inline __be32 lb_sock4_bound(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	return sk ? sk->src_ip4 : 0;
}

SEC("cgroup/connect4")
int lb_sock_connect4(struct bpf_sock_addr *ctx)
{
	return lb_sock4_xlate(ctx, true, lb_sock4_bound(ctx));
}

SEC("cgroup/sendmsg4")
int lb_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	__be32 src = ctx->msg_src_ip4;

	return lb_sock4_xlate(ctx, false, src ? src : lb_sock4_bound(ctx));
}

SEC("cgroup/recvmsg4")
int lb_sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	lb_sock4_rev(ctx);
	return SYS_PROCEED;
}

SEC("cgroup/getpeername4")
int lb_sock_getpeername4(struct bpf_sock_addr *ctx)
{
	lb_sock4_rev(ctx);
	return SYS_PROCEED;
}

char LICENSE[] SEC("license") = "GPL";
