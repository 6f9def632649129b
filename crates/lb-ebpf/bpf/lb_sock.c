/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_sock.c: socket-level load balancing for processes of one cgroup
 * (after Cilium's bpf_sock.c). connect4/connect6 (TCP, connected UDP) and
 * sendmsg4/sendmsg6 (unconnected UDP) rewrite a frontend destination to a
 * backend before the kernel routes the socket, so no packet is ever NATed;
 * recvmsg4/6 and getpeername4/6 show the frontend again, from lb4_sock_rev
 * and lb6_sock_rev.
 *
 * Lookup: the internal scope of two-scope services (the node is the
 * client), then the wildcard NodePort/HostPort entry for loopback and node
 * addresses (lb_config.node_ips, node_ips6). Selection: affinity per
 * service (the node is one client, key address 0.0.0.0 or ::), then Maglev
 * or weighted random. The selector is the socket cookie for UDP, so every
 * datagram of a socket reaches the same backend, and a random number for
 * TCP.
 *
 * Source ranges (loadBalancerSourceRanges) are checked here too, as
 * Cilium's socket LB does for LoadBalancer services: the client is this
 * node, so its source is the address the socket is bound to (sendmsg: the
 * IP_PKTINFO/IPV6_PKTINFO source if any), or, for an unbound socket, whose
 * source the kernel picks only after this hook, the node's first address
 * of the family (lb_config.node_ips[0] or node_ips6[0], the agent's first
 * --node-ip of that family). A source outside the ranges is refused
 * (connect/sendmsg fail with EPERM) and counted as LB_DROP_SOURCE_RANGE.
 *
 * Dual-stack sockets: an AF_INET6 socket that connects to an IPv4-mapped
 * address (::ffff:a.b.c.d) goes through connect6, which translates it with
 * the IPv4 maps and keeps the mapped form (as Cilium's sock6_xlate_v4_in_v6
 * does); recvmsg6 and getpeername6 reverse it from lb4_sock_rev. An
 * unconnected datagram to a mapped address is handed to the IPv4 path by
 * the kernel before sendmsg6 (udpv6_sendmsg), so sendmsg4 translates it
 * (tests/sock.rs shows it); sendmsg6 treats a mapped address like connect6
 * all the same.
 *
 * Both families share one translation (lb_sock_xlate: source check,
 * selection, affinity, reverse entry, counters) over lb_select.h's
 * per-family lookup and selection (lb_lookup_frontend/lb6_lookup_frontend,
 * lb_select_random/lb_select_random6, lb_affinity_backend/6).
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

/* The outcome of a translation. */
enum lb_sock_verdict {
	LB_SOCK_PASS = 0,   /* not a frontend: leave the address alone */
	LB_SOCK_XLATED = 1, /* the address now names a backend */
	LB_SOCK_REFUSE = 2, /* a frontend this socket may not use, or no backend */
};

/* An address of either family (IPv4 in ip4, network order). */
union lb_sock_addr {
	__be32 ip4;
	struct in6_addr ip6;
};

/* What a translation needs about the destination and the client. */
struct lb_sock_req {
	union lb_sock_addr daddr; /* frontend address the application used */
	union lb_sock_addr src;   /* client's source; zero: unbound */
	__be16 dport;
	__u8 proto;
	bool connect; /* connect (a new flow), else sendmsg */
};

/* ---- shared by both families ---- */

/* Counts a refusal by source range. */
static __always_inline void lb_sock_count_source_range(void)
{
	__u32 reason = LB_DROP_SOURCE_RANGE;
	__u64 *n = bpf_map_lookup_elem(&lb_drops, &reason);

	if (n)
		*n += 1;
}

/* True when the request's source may use the frontend `rev_nat` (its source
 * ranges); an unbound socket counts as the family's first node address. */
static __always_inline bool lb_sock_src_ok(bool v6, const struct lb_config *cfg, __u32 rev_nat,
					   const struct lb_sock_req *req)
{
	bool ok = false;

	if (v6) {
		struct lb6_src_range_key rk = { .prefixlen = 32 + 128, .rev_nat_index = rev_nat };

		rk.addr = req->src.ip6;
		if (lb6_addr_is_zero(&rk.addr) && cfg && cfg->node_ip6_count > 0)
			rk.addr = cfg->node_ips6[0];
		ok = !lb6_addr_is_zero(&rk.addr) && bpf_map_lookup_elem(&lb6_src_range, &rk);
	} else {
		struct lb4_src_range_key rk = { .prefixlen = 64, .rev_nat_index = rev_nat };

		rk.addr = req->src.ip4;
		if (!rk.addr && cfg && cfg->node_ip_count > 0)
			rk.addr = cfg->node_ips[0];
		ok = rk.addr && bpf_map_lookup_elem(&lb4_src_range, &rk);
	}
	if (!ok)
		lb_sock_count_source_range();
	return ok;
}

/* The fresh, still selectable affinity backend, or 0. The node is one
 * client: the key's address is zero. */
static __always_inline __u32 lb_sock_affinity_get(bool v6, const struct lb4_key *k4,
						  const struct lb6_key *k6, __u32 rev_nat,
						  __u16 count, __u32 timeout, __u64 now)
{
	struct lb4_affinity_key ak4 = { .rev_nat_index = rev_nat };
	struct lb6_affinity_key ak6 = { .rev_nat_index = rev_nat };

	if (v6)
		return lb_affinity_backend6(&ak6, k6, count, timeout, now);
	return lb_affinity_backend(&ak4, k4, count, timeout, now);
}

/* Records the affinity choice; writes only on change (sendmsg runs for
 * every datagram). */
static __always_inline void lb_sock_affinity_put(bool v6, __u32 rev_nat, __u32 backend_id,
						 __u64 now)
{
	struct lb4_affinity_key ak4 = { .rev_nat_index = rev_nat };
	struct lb6_affinity_key ak6 = { .rev_nat_index = rev_nat };
	void *key = v6 ? (void *)&ak6 : (void *)&ak4;
	struct lb_affinity_val *a;

	a = v6 ? bpf_map_lookup_elem(&lb6_affinity, key) : bpf_map_lookup_elem(&lb4_affinity, key);
	if (!a || a->backend_id != backend_id) {
		struct lb_affinity_val av = { .last_used = now, .backend_id = backend_id };

		if (v6)
			bpf_map_update_elem(&lb6_affinity, key, &av, BPF_ANY);
		else
			bpf_map_update_elem(&lb4_affinity, key, &av, BPF_ANY);
	} else if (a->last_used != now) {
		a->last_used = now;
	}
}

/* Counts a new flow of the backend with counter slot `slot`. */
static __always_inline void lb_sock_count_flow(__u32 slot)
{
	struct lb_svc_stats *st = bpf_map_lookup_elem(&lb_be_stats, &slot);

	if (st)
		st->new_flows += 1;
}

/* Folds an IPv6 address into one host-order word (the Maglev hash input). */
static __always_inline __u32 lb_sock6_fold(const struct in6_addr *a)
{
	return bpf_ntohl(a->in6_u.u6_addr32[0] ^ a->in6_u.u6_addr32[1] ^ a->in6_u.u6_addr32[2] ^
			 a->in6_u.u6_addr32[3]);
}

/* Translates `req` to a backend of its frontend, IPv4 maps (`v6` false) or
 * IPv6 maps; on LB_SOCK_XLATED `be` and `be_port` hold the backend. A
 * frontend without a usable backend is refused (connect fails with EPERM,
 * as the tc path drops), as is a source outside its ranges. */
static __always_inline enum lb_sock_verdict lb_sock_xlate(void *ctx, bool v6,
							  const struct lb_sock_req *req,
							  union lb_sock_addr *be, __be16 *be_port)
{
	struct lb4_key k4 = {};
	struct lb6_key k6 = {};
	struct lb4_service *svc;
	const struct lb_config *cfg;
	__u32 zero = 0, backend_id = 0, timeout, total_weight, selector, rev_nat, be_slot;
	__u16 flags, count;
	__u64 cookie, now = 0;
	bool fresh;

	if (req->proto != IPPROTO_TCP && req->proto != IPPROTO_UDP)
		return LB_SOCK_PASS;
	cfg = bpf_map_lookup_elem(&lb_config, &zero);
	if (v6)
		svc = lb6_lookup_frontend(&k6, cfg, &req->daddr.ip6, req->dport, req->proto, 1);
	else
		svc = lb_lookup_frontend(&k4, cfg, req->daddr.ip4, req->dport, req->proto, 1);
	if (!svc)
		return LB_SOCK_PASS;
	lb_svc_load(svc, &rev_nat, &flags, &count, &timeout, &total_weight);
	if ((flags & LB_SVC_F_SOURCE_RANGES) && !lb_sock_src_ok(v6, cfg, rev_nat, req))
		return LB_SOCK_REFUSE;
	cookie = bpf_get_socket_cookie(ctx);
	selector = req->proto == IPPROTO_UDP ? (__u32)(cookie ^ (cookie >> 32)) :
					       bpf_get_prandom_u32();

	if (flags & LB_SVC_F_AFFINITY) {
		now = lb_now_secs();
		backend_id = lb_sock_affinity_get(v6, &k4, &k6, rev_nat, count, timeout, now);
	}
	if (!backend_id) {
		if (flags & LB_SVC_F_MAGLEV) {
			__u32 a = v6 ? lb_sock6_fold(&req->daddr.ip6) : bpf_ntohl(req->daddr.ip4);

			backend_id = lb_select_maglev(
				cfg, rev_nat,
				lb_jhash2_4words(selector, a, bpf_ntohs(req->dport), req->proto,
						 cfg ? cfg->maglev_seed : 0));
		} else if (v6) {
			backend_id = lb_select_random6(&k6, count, total_weight, flags, selector);
		} else {
			backend_id = lb_select_random(&k4, count, total_weight, flags, selector);
		}
	}
	if (!backend_id)
		return LB_SOCK_REFUSE;

	if (v6) {
		struct lb6_backend *b = bpf_map_lookup_elem(&lb6_backends, &backend_id);
		struct lb6_sock_key sk = { .cookie = cookie };
		struct lb6_sock_val sv = { .rev_nat_index = rev_nat };
		struct lb6_sock_val *old;

		if (!b)
			return LB_SOCK_REFUSE;
		be->ip6 = b->address;
		*be_port = b->port;
		be_slot = b->stats_slot;
		sk.address = b->address;
		sk.port = b->port;
		sv.address = req->daddr.ip6;
		sv.port = req->dport;
		old = bpf_map_lookup_elem(&lb6_sock_rev, &sk);
		fresh = !old || !lb6_addr_eq(&old->address, &sv.address) ||
			old->port != sv.port || old->rev_nat_index != rev_nat;
		if (fresh)
			bpf_map_update_elem(&lb6_sock_rev, &sk, &sv, BPF_ANY);
	} else {
		struct lb4_backend *b = bpf_map_lookup_elem(&lb4_backends, &backend_id);
		struct lb4_sock_key sk = { .cookie = cookie };
		struct lb4_sock_val sv = { .rev_nat_index = rev_nat };
		struct lb4_sock_val *old;

		if (!b)
			return LB_SOCK_REFUSE;
		be->ip4 = b->address;
		*be_port = b->port;
		be_slot = b->stats_slot;
		sk.address = b->address;
		sk.port = b->port;
		sv.address = req->daddr.ip4;
		sv.port = req->dport;
		old = bpf_map_lookup_elem(&lb4_sock_rev, &sk);
		fresh = !old || old->address != sv.address || old->port != sv.port ||
			old->rev_nat_index != rev_nat;
		if (fresh)
			bpf_map_update_elem(&lb4_sock_rev, &sk, &sv, BPF_ANY);
	}
	if (flags & LB_SVC_F_AFFINITY)
		lb_sock_affinity_put(v6, rev_nat, backend_id, now);
	/* A new flow: a connect, or the first datagram of an unconnected socket
	 * to this backend. */
	if (req->connect || fresh)
		lb_sock_count_flow(be_slot);
	return LB_SOCK_XLATED;
}

/* The frontend a socket translated to `addr`:`*port` stands for; rewrites
 * addr and *port and returns true when there is one. A reverse entry whose
 * frontend is gone no longer stands for this backend and is dropped. */
static __always_inline bool lb_sock_rev(void *ctx, bool v6, union lb_sock_addr *addr,
					__be16 *port)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	__u32 rev_nat;

	if (v6) {
		struct lb6_sock_key sk = { .cookie = cookie, .address = addr->ip6, .port = *port };
		struct lb6_sock_val *sv = bpf_map_lookup_elem(&lb6_sock_rev, &sk);

		if (!sv)
			return false;
		rev_nat = sv->rev_nat_index;
		if (!bpf_map_lookup_elem(&lb6_reverse_nat, &rev_nat)) {
			bpf_map_delete_elem(&lb6_sock_rev, &sk);
			return false;
		}
		addr->ip6 = sv->address;
		*port = sv->port;
	} else {
		struct lb4_sock_key sk = { .cookie = cookie, .address = addr->ip4, .port = *port };
		struct lb4_sock_val *sv = bpf_map_lookup_elem(&lb4_sock_rev, &sk);

		if (!sv)
			return false;
		rev_nat = sv->rev_nat_index;
		if (!bpf_map_lookup_elem(&lb4_reverse_nat, &rev_nat)) {
			bpf_map_delete_elem(&lb4_sock_rev, &sk);
			return false;
		}
		addr->ip4 = sv->address;
		*port = sv->port;
	}
	return true;
}

static __always_inline int lb_sock_sys(enum lb_sock_verdict v)
{
	return v == LB_SOCK_REFUSE ? SYS_REJECT : SYS_PROCEED;
}

/* ---- IPv4 hooks ---- */

/* The address the socket is bound to (0 when unbound). */
static __always_inline __be32 lb_sock4_bound(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	return sk ? sk->src_ip4 : 0;
}

static __always_inline int lb_sock4_fwd(struct bpf_sock_addr *ctx, bool connect, __be32 src)
{
	struct lb_sock_req req = {
		.daddr.ip4 = ctx->user_ip4,
		.src.ip4 = src,
		.dport = (__be16)ctx->user_port,
		.proto = (__u8)ctx->protocol,
		.connect = connect,
	};
	union lb_sock_addr be = {};
	__be16 port = 0;
	enum lb_sock_verdict v = lb_sock_xlate(ctx, false, &req, &be, &port);

	if (v == LB_SOCK_XLATED) {
		ctx->user_ip4 = be.ip4;
		ctx->user_port = port;
	}
	return lb_sock_sys(v);
}

static __always_inline void lb_sock4_rev(struct bpf_sock_addr *ctx)
{
	union lb_sock_addr a = { .ip4 = ctx->user_ip4 };
	__be16 port = (__be16)ctx->user_port;

	if (lb_sock_rev(ctx, false, &a, &port)) {
		ctx->user_ip4 = a.ip4;
		ctx->user_port = port;
	}
}

SEC("cgroup/connect4")
int lb_sock_connect4(struct bpf_sock_addr *ctx)
{
	return lb_sock4_fwd(ctx, true, lb_sock4_bound(ctx));
}

SEC("cgroup/sendmsg4")
int lb_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	__be32 src = ctx->msg_src_ip4;

	return lb_sock4_fwd(ctx, false, src ? src : lb_sock4_bound(ctx));
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

/* ---- IPv6 hooks ---- */

/* True for ::ffff:a.b.c.d. */
static __always_inline bool lb_sock6_is_v4_mapped(const struct in6_addr *a)
{
	return !(a->in6_u.u6_addr32[0] | a->in6_u.u6_addr32[1]) &&
	       a->in6_u.u6_addr32[2] == bpf_htonl(0xffff);
}

/* The ctx's destination (user_ip6), read word by word as the verifier wants. */
static __always_inline void lb_sock6_user(const struct bpf_sock_addr *ctx, struct in6_addr *a)
{
	a->in6_u.u6_addr32[0] = ctx->user_ip6[0];
	a->in6_u.u6_addr32[1] = ctx->user_ip6[1];
	a->in6_u.u6_addr32[2] = ctx->user_ip6[2];
	a->in6_u.u6_addr32[3] = ctx->user_ip6[3];
}

static __always_inline void lb_sock6_set_user(struct bpf_sock_addr *ctx, const struct in6_addr *a)
{
	ctx->user_ip6[0] = a->in6_u.u6_addr32[0];
	ctx->user_ip6[1] = a->in6_u.u6_addr32[1];
	ctx->user_ip6[2] = a->in6_u.u6_addr32[2];
	ctx->user_ip6[3] = a->in6_u.u6_addr32[3];
}

/* The address the socket is bound to (:: when unbound). */
static __always_inline void lb_sock6_bound(struct bpf_sock_addr *ctx, struct in6_addr *a)
{
	struct bpf_sock *sk = ctx->sk;

	__builtin_memset(a, 0, sizeof(*a));
	if (!sk)
		return;
	a->in6_u.u6_addr32[0] = sk->src_ip6[0];
	a->in6_u.u6_addr32[1] = sk->src_ip6[1];
	a->in6_u.u6_addr32[2] = sk->src_ip6[2];
	a->in6_u.u6_addr32[3] = sk->src_ip6[3];
}

/* connect6/sendmsg6 with source `src`: an IPv4-mapped destination through
 * the IPv4 maps (the backend stays IPv4-mapped), else the IPv6 maps. */
static __always_inline int lb_sock6_fwd(struct bpf_sock_addr *ctx, bool connect,
					const struct in6_addr *src)
{
	struct lb_sock_req req = {
		.dport = (__be16)ctx->user_port,
		.proto = (__u8)ctx->protocol,
		.connect = connect,
	};
	union lb_sock_addr be = {};
	__be16 port = 0;
	enum lb_sock_verdict v;
	bool mapped;

	lb_sock6_user(ctx, &req.daddr.ip6);
	mapped = lb_sock6_is_v4_mapped(&req.daddr.ip6);
	if (mapped) {
		__be32 d4 = req.daddr.ip6.in6_u.u6_addr32[3];

		__builtin_memset(&req.daddr, 0, sizeof(req.daddr));
		req.daddr.ip4 = d4;
		/* A source that is not IPv4-mapped (e.g. ::) counts as unbound. */
		if (lb_sock6_is_v4_mapped(src))
			req.src.ip4 = src->in6_u.u6_addr32[3];
		v = lb_sock_xlate(ctx, false, &req, &be, &port);
	} else {
		req.src.ip6 = *src;
		v = lb_sock_xlate(ctx, true, &req, &be, &port);
	}
	if (v == LB_SOCK_XLATED) {
		if (mapped)
			ctx->user_ip6[3] = be.ip4;
		else
			lb_sock6_set_user(ctx, &be.ip6);
		ctx->user_port = port;
	}
	return lb_sock_sys(v);
}

static __always_inline void lb_sock6_rev(struct bpf_sock_addr *ctx)
{
	union lb_sock_addr a = {};
	__be16 port = (__be16)ctx->user_port;
	struct in6_addr user;

	lb_sock6_user(ctx, &user);
	if (lb_sock6_is_v4_mapped(&user)) {
		a.ip4 = user.in6_u.u6_addr32[3];
		if (!lb_sock_rev(ctx, false, &a, &port))
			return;
		ctx->user_ip6[3] = a.ip4;
	} else {
		a.ip6 = user;
		if (!lb_sock_rev(ctx, true, &a, &port))
			return;
		lb_sock6_set_user(ctx, &a.ip6);
	}
	ctx->user_port = port;
}

SEC("cgroup/connect6")
int lb_sock_connect6(struct bpf_sock_addr *ctx)
{
	struct in6_addr src;

	lb_sock6_bound(ctx, &src);
	return lb_sock6_fwd(ctx, true, &src);
}

SEC("cgroup/sendmsg6")
int lb_sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct in6_addr src;

	src.in6_u.u6_addr32[0] = ctx->msg_src_ip6[0];
	src.in6_u.u6_addr32[1] = ctx->msg_src_ip6[1];
	src.in6_u.u6_addr32[2] = ctx->msg_src_ip6[2];
	src.in6_u.u6_addr32[3] = ctx->msg_src_ip6[3];
	if (lb6_addr_is_zero(&src))
		lb_sock6_bound(ctx, &src);
	return lb_sock6_fwd(ctx, false, &src);
}

SEC("cgroup/recvmsg6")
int lb_sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	lb_sock6_rev(ctx);
	return SYS_PROCEED;
}

SEC("cgroup/getpeername6")
int lb_sock_getpeername6(struct bpf_sock_addr *ctx)
{
	lb_sock6_rev(ctx);
	return SYS_PROCEED;
}

char LICENSE[] SEC("license") = "GPL";
