/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_abi.h: THE definition of every map layout shared by the BPF programs
 * and the Rust loader (src/abi.rs mirrors these structs; tests/abi.rs checks
 * sizes and offsets against this object's BTF). After Cilium's bpf/lib/lb.h.
 *
 * Byte order: fields typed __be* are in network order, everything else in
 * host order. Every struct has explicit padding and is zeroed before use.
 */
#ifndef LB_ABI_H
#define LB_ABI_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>

/* Default capacities; the loader overrides them (EbpfLoader::map_max_entries). */
#define LB_SERVICES_MAX   65536
#define LB_BACKENDS_MAX   65536
#define LB_REV_NAT_MAX    65536
/* Connection tracking (and the SNAT reverse map): Cilium's
 * bpf-ct-global-tcp-max default. A short DNATed TCP connection holds two
 * entries for about 105 s in all (closing grace, TIME_WAIT reservation, gc
 * period: RELIABILITY.md, CT sizing), so this sustains about 5 000 new
 * connections/s from distinct client tuples before the LRU evicts. */
#define LB_CT_MAX         524288
#define LB_AFFINITY_MAX   65536
#define LB_MAGLEV_MAX     1024
#define LB_SRC_RANGE_MAX  16384
#define LB_SOCK_REV_MAX   262144
#define LB_DEVICES_MAX    64
/* Default SNAT source ports: above Linux's default ip_local_port_range
 * (32768-60999), so SNATed flows never take the node's own ephemeral ports. */
#define LB_SNAT_PORT_MIN  61000
#define LB_SNAT_PORT_MAX  65535
#define LB_SNAT_TRIES     16    /* port collisions tolerated per new flow */
#define LB_MAX_NODE_IPS   8
#define LB_SVC_NAME_MAX   128 /* "namespace/name" (Kubernetes: 63 + 1 + 63) */
#define LB_ZONE_MAX       64  /* topology zone label value (Kubernetes: 63) */

/* lb4_service.flags */
#define LB_SVC_F_AFFINITY      (1 << 0) /* ClientIP session affinity */
#define LB_SVC_F_MAGLEV        (1 << 1) /* Maglev selection, else random */
#define LB_SVC_F_LOCAL_ONLY    (1 << 2) /* traffic policy Local */
#define LB_SVC_F_TWO_SCOPES    (1 << 3) /* an internal-scope entry exists */
#define LB_SVC_F_SOURCE_RANGES (1 << 4) /* check lb4_src_range */
#define LB_SVC_F_UNIFORM       (1 << 5) /* all selectable weights equal */
#define LB_SVC_F_NAT46X64      (1 << 6) /* backends of the other family (lb_nat46.h) */

/* lb4_service.fe_type: lb-core's FrontendType in declaration order. */
enum lb_fe_type {
	LB_FE_CLUSTER_IP = 0,
	LB_FE_NODE_PORT = 1,
	LB_FE_LOAD_BALANCER = 2,
	LB_FE_EXTERNAL_IP = 3,
	LB_FE_HOST_PORT = 4,
};

/* lb4_backend.flags */
#define LB_BE_F_LOCAL (1 << 0) /* the backend runs on this node */

/* lb4_service.flags of a backend slot (> 0): lb-core's BackendState in
 * declaration order. Only slots 1..count are selectable; the state lets a
 * restarted agent rebuild the frontend faithfully. */
enum lb_backend_state {
	LB_BE_ACTIVE = 0,
	LB_BE_TERMINATING = 1,
	LB_BE_QUARANTINED = 2,
	LB_BE_MAINTENANCE = 3,
};

/* Indices of lb_drops (per-CPU packet counters per drop reason). */
enum lb_drop_reason {
	LB_DROP_MALFORMED = 0,    /* truncated or invalid IPv4/TCP/UDP header */
	LB_DROP_NO_BACKEND = 1,   /* frontend without a selectable backend */
	LB_DROP_SOURCE_RANGE = 2, /* client outside loadBalancerSourceRanges */
	LB_DROP_REWRITE = 3,      /* a checksum/store helper failed */
	LB_DROP_SNAT_PORTS = 4,   /* no free SNAT source port after LB_SNAT_TRIES */
	LB_DROP_FRAG_NEEDED = 5,  /* SNATed or DSR-encapsulated packet over the route's MTU */
	LB_DROP_NO_LOCAL_BACKEND = 6, /* traffic policy Local, no backend on this node */
	LB_DROP_NAT46X64_ICMP = 7, /* ICMP error about a NAT46/64 flow without an equivalent */
	LB_DROP_MAX = 8,
};

/* Services map key. backend_slot 0 is the frontend entry, 1..total the slots. */
struct lb4_key {
	__be32 address;     /* frontend address (0.0.0.0 = wildcard NodePort/HostPort) */
	__be16 dport;       /* frontend port */
	__u16 backend_slot; /* 0 = frontend entry */
	__u8 proto;         /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 scope;         /* 0 external, 1 internal */
	__u8 pad[2];
};

/* Services map value: slot 0 uses the frontend fields, slots >0 the backend ones. */
struct lb4_service {
	__u32 backend_id;       /* slot > 0: backend */
	__u32 affinity_timeout; /* slot 0: seconds */
	__u32 total_weight;     /* slot 0: sum of the selectable slots' weights */
	__u32 rev_nat_index;    /* slot 0: reverse-NAT id (= service id) */
	__u16 count;            /* slot 0: selectable slots (1..count) */
	__u16 total;            /* slot 0: all slots incl. non-selectable */
	__u16 weight;           /* slot > 0: backend weight */
	__u16 flags;            /* slot 0: LB_SVC_F_*; slot > 0: enum lb_backend_state */
	__u8 fe_type;           /* slot 0: enum lb_fe_type */
	__u8 pad[3];
	__u32 stats_slot;       /* slot 0: the frontend's index in lb_svc_stats */
};

/* Backends map value, keyed by backend id (__u32). */
struct lb4_backend {
	__be32 address;
	__be16 port;
	__u8 proto;
	__u8 flags; /* LB_BE_F_* */
	__u32 stats_slot; /* the backend's index in lb_be_stats */
};

/* Reverse-NAT map value, keyed by rev_nat_index (__u32). */
struct lb4_reverse_nat {
	__be32 address;
	__be16 port;
	__u16 pad;
};

/* ct4_key.dir */
#define LB_CT_SERVICE 0 /* client -> frontend, as the client sent it */
#define LB_CT_REPLY   1 /* backend -> client, as the backend sends it */

/* Connection-tracking key: a flow's 5-tuple in one direction. */
struct ct4_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* LB_CT_* */
	__u8 pad[2];
};

/* ct4_entry.flags */
#define LB_CT_F_SNAT    (1 << 0) /* the flow is SNATed to node_ips[0]:snat_port */
#define LB_CT_F_CLOSING (1 << 1) /* TCP FIN or RST seen: expires after a short grace */
#define LB_CT_F_DSR     (1 << 2) /* DSR: IPIP to the backend, replies bypass the node */
#define LB_CT_F_PORTMAP (1 << 3) /* the client's port is rewritten towards the backend
				   * (reply tuple clash, lb_ctport.h); snat_port holds
				   * the backend-side port (service entry) or the
				   * client's own port (reply entry) */

/* Connection-tracking value (same for both directions). */
struct ct4_entry {
	__u32 backend_id;
	__u32 rev_nat_index;
	__be32 frontend_addr; /* the address the client used */
	__be16 frontend_port;
	__be16 snat_port;     /* LB_CT_F_SNAT: the node's source port; LB_CT_F_PORTMAP: see there */
	__u16 flags;          /* LB_CT_F_* */
	__u16 pad[3];
	__u64 last_seen;      /* seconds of CLOCK_MONOTONIC_COARSE (userspace gc) */
};

/* SNAT reverse entry, keyed by the reply's ct4_key (backend -> node IP:
 * snat port, dir LB_CT_SERVICE): where the reply goes back to. */
struct lb4_snat_entry {
	__be32 client_addr;
	__be32 frontend_addr;
	__be16 client_port;
	__be16 frontend_port;
	__u32 rev_nat_index;
	__u64 last_seen; /* seconds of CLOCK_MONOTONIC_COARSE (userspace gc) */
};

/* Session-affinity key: client address per frontend. */
struct lb4_affinity_key {
	__be32 client;
	__u32 rev_nat_index;
};

/* Session-affinity value. */
struct lb_affinity_val {
	__u64 last_used; /* seconds of CLOCK_MONOTONIC_COARSE */
	__u32 backend_id;
	__u32 pad;
};

/* Source-range LPM key: prefixlen counts the 32 bits of rev_nat_index + the prefix. */
struct lb4_src_range_key {
	__u32 prefixlen;
	__u32 rev_nat_index;
	__be32 addr;
};

/* lb_config.lb_mode: lb_core::LbMode in declaration order. */
enum lb_mode {
	LB_MODE_SNAT = 0,
	LB_MODE_DSR = 1,
	LB_MODE_HYBRID = 2, /* DSR for TCP, SNAT for UDP */
};

/* Global configuration, index 0 of lb_config. */
struct lb_config {
	__u32 maglev_seed;       /* FlowKey::hash seed */
	__u32 maglev_table_size; /* M: entries of every Maglev inner array */
	__u32 node_ip_count;     /* valid entries of node_ips */
	__u16 snat_port_min;     /* SNAT source ports (0: LB_SNAT_PORT_MIN) */
	__u16 snat_port_max;     /* (0: LB_SNAT_PORT_MAX) */
	__be32 node_ips[LB_MAX_NODE_IPS]; /* addresses wildcard frontends answer on */
	__u32 lb_mode;           /* enum lb_mode */
	__u32 node_ip6_count;    /* valid entries of node_ips6 */
	struct in6_addr node_ips6[LB_MAX_NODE_IPS]; /* IPv6 node addresses, as node_ips */
};

/* Socket-LB reverse translation key: a socket and the backend it was
 * connected (or sent) to. */
struct lb4_sock_key {
	__u64 cookie;    /* bpf_get_socket_cookie() */
	__be32 address;  /* backend address */
	__be16 port;     /* backend port */
	__u16 pad;
};

/* Socket-LB reverse translation value: what the application asked for. */
struct lb4_sock_val {
	__be32 address;  /* the frontend address the application used */
	__be16 port;     /* the frontend port */
	__u16 pad;
	__u32 rev_nat_index;
};

/* Per-service and per-backend counters: client -> backend packets that
 * matched, their bytes, and new flows (the socket LB counts its translated
 * connections as new flows, with no packets: it sees none). They live in
 * per-CPU arrays indexed by a dense counter slot the control plane
 * allocates per frontend (lb4_service.stats_slot of slot 0) and per backend
 * (lb4_backend/lb6_backend.stats_slot), zeroed when a slot is reused: an
 * array lookup is inlined by the verifier, where a hash lookup by id cost
 * ~30 ns a packet (ids are not dense, so they cannot index an array). */
struct lb_svc_stats {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;
};

/* Userspace-only metadata of a frontend, keyed by rev_nat_index (__u32):
 * what a restarted agent needs that the datapath does not. */
struct lb_svc_meta {
	char name[LB_SVC_NAME_MAX]; /* "namespace/name", NUL-padded */
};

/* Userspace-only metadata of a backend, keyed by backend id (__u32); only
 * backends with a zone have an entry. */
struct lb_be_meta {
	char zone[LB_ZONE_MAX]; /* NUL-padded */
};

/* ---- maps ---- */

/* The maps the control plane writes (services, backends, reverse NAT, the
 * per-CPU counters and the metadata) are preallocated, like Cilium's LB
 * maps: their elements exist from map creation, so an update never
 * allocates. Without preallocation each new element of a per-CPU hash takes
 * its values from the percpu allocator's atomic pool (GFP_NOWAIT), which a
 * burst of updates (a full sync) can run dry before the allocator's
 * background worker repopulates it: bpf_map_update_elem then fails with
 * ENOMEM (see BENCHMARKS.md, "ENOMEM during a full sync"). The LPM trie
 * cannot be preallocated; the dataplane retries an ENOMEM write a bounded
 * number of times. The LRU maps are always preallocated. */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
	__uint(max_entries, LB_SERVICES_MAX);
} lb4_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb4_backend);
	__uint(max_entries, LB_BACKENDS_MAX);
} lb4_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb4_reverse_nat);
	__uint(max_entries, LB_REV_NAT_MAX);
} lb4_reverse_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct4_key);
	__type(value, struct ct4_entry);
	__uint(max_entries, LB_CT_MAX);
} lb4_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_affinity_key);
	__type(value, struct lb_affinity_val);
	__uint(max_entries, LB_AFFINITY_MAX);
} lb4_affinity SEC(".maps");

/* Inner template of lb4_maglev: M backend ids; BPF_F_INNER_MAP lets the
 * inner arrays have any size (the configured M). */
struct lb_maglev_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_INNER_MAP);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u32); /* service id */
	__uint(max_entries, LB_MAGLEV_MAX);
	__array(values, struct lb_maglev_inner);
} lb4_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lb4_src_range_key);
	__type(value, __u8); /* the prefix's position in the frontend's list (saturating) */
	__uint(max_entries, LB_SRC_RANGE_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} lb4_src_range SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct lb_config);
	__uint(max_entries, 1);
} lb_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, LB_DROP_MAX);
} lb_drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32); /* counter slot */
	__type(value, struct lb_svc_stats);
	__uint(max_entries, LB_SERVICES_MAX);
} lb_svc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32); /* counter slot */
	__type(value, struct lb_svc_stats);
	__uint(max_entries, LB_BACKENDS_MAX);
} lb_be_stats SEC(".maps");

/* SNAT reverse entries (LRU), see struct lb4_snat_entry. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct4_key);
	__type(value, struct lb4_snat_entry);
	__uint(max_entries, LB_CT_MAX);
} lb4_snat SEC(".maps");

/* The devices the programs are attached to (ifindex -> 1): a remote
 * backend is one whose route leaves through one of them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u8);
	__uint(max_entries, LB_DEVICES_MAX);
} lb_devices SEC(".maps");

/* Socket LB: reverse translation for getpeername/recvmsg (LRU). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_sock_key);
	__type(value, struct lb4_sock_val);
	__uint(max_entries, LB_SOCK_REV_MAX);
} lb4_sock_rev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb_svc_meta);
	__uint(max_entries, LB_SERVICES_MAX);
} lb_svc_meta SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb_be_meta);
	__uint(max_entries, LB_BACKENDS_MAX);
} lb_be_meta SEC(".maps");

/* ---- IPv6 (after Cilium's lb6_* maps) ----
 *
 * IPv6 frontends, backends and flows live in maps of their own with the
 * same semantics as the IPv4 ones above; only the addresses are wider. The
 * services map value (struct lb4_service), the affinity value, the counters,
 * the metadata and the Maglev tables are family-independent and shared:
 * service and backend ids are unique across both families (lb-core
 * allocates them from one space), so a backend id is in lb4_backends or in
 * lb6_backends, never both. */

/* IPv6 services map key (value: struct lb4_service). */
struct lb6_key {
	struct in6_addr address; /* frontend address (:: = wildcard NodePort/HostPort) */
	__be16 dport;
	__u16 backend_slot;      /* 0 = frontend entry */
	__u8 proto;
	__u8 scope;              /* 0 external, 1 internal */
	__u8 pad[2];
};

/* IPv6 backends map value, keyed by backend id (__u32). */
struct lb6_backend {
	struct in6_addr address;
	__be16 port;
	__u8 proto;
	__u8 flags; /* LB_BE_F_* */
	__u32 stats_slot; /* the backend's index in lb_be_stats */
};

/* IPv6 reverse-NAT map value, keyed by rev_nat_index (__u32). */
struct lb6_reverse_nat {
	struct in6_addr address;
	__be16 port;
	__u16 pad;
};

/* IPv6 connection-tracking key (dir: LB_CT_*). */
struct ct6_key {
	struct in6_addr saddr;
	struct in6_addr daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u8 pad[2];
};

/* IPv6 connection-tracking value (flags: LB_CT_F_*, as struct ct4_entry). */
struct ct6_entry {
	__u32 backend_id;
	__u32 rev_nat_index;
	struct in6_addr frontend_addr; /* the address the client used */
	__be16 frontend_port;
	__be16 snat_port;
	__u16 flags;
	__u16 pad[5];
	__u64 last_seen;
};

/* IPv6 SNAT reverse entry, keyed by the reply's struct ct6_key. */
struct lb6_snat_entry {
	struct in6_addr client_addr;
	struct in6_addr frontend_addr;
	__be16 client_port;
	__be16 frontend_port;
	__u32 rev_nat_index;
	__u64 last_seen;
};

/* IPv6 session-affinity key (value: struct lb_affinity_val). */
struct lb6_affinity_key {
	struct in6_addr client;
	__u32 rev_nat_index;
};

/* IPv6 source-range LPM key: prefixlen counts the 32 bits of rev_nat_index + the prefix. */
struct lb6_src_range_key {
	__u32 prefixlen;
	__u32 rev_nat_index;
	struct in6_addr addr;
};

/* IPv6 socket-LB reverse translation key. */
struct lb6_sock_key {
	__u64 cookie;            /* bpf_get_socket_cookie() */
	struct in6_addr address; /* backend address */
	__be16 port;             /* backend port */
	__u16 pad[3];
};

/* IPv6 socket-LB reverse translation value. */
struct lb6_sock_val {
	struct in6_addr address; /* the frontend address the application used */
	__be16 port;
	__u16 pad;
	__u32 rev_nat_index;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb6_key);
	__type(value, struct lb4_service);
	__uint(max_entries, LB_SERVICES_MAX);
} lb6_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb6_backend);
	__uint(max_entries, LB_BACKENDS_MAX);
} lb6_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb6_reverse_nat);
	__uint(max_entries, LB_REV_NAT_MAX);
} lb6_reverse_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct6_key);
	__type(value, struct ct6_entry);
	__uint(max_entries, LB_CT_MAX);
} lb6_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb6_affinity_key);
	__type(value, struct lb_affinity_val);
	__uint(max_entries, LB_AFFINITY_MAX);
} lb6_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lb6_src_range_key);
	__type(value, __u8);
	__uint(max_entries, LB_SRC_RANGE_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} lb6_src_range SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct6_key);
	__type(value, struct lb6_snat_entry);
	__uint(max_entries, LB_CT_MAX);
} lb6_snat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb6_sock_key);
	__type(value, struct lb6_sock_val);
	__uint(max_entries, LB_SOCK_REV_MAX);
} lb6_sock_rev SEC(".maps");

#endif /* LB_ABI_H */
