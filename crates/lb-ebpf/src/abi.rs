//! `#[repr(C)]` mirrors of `bpf/lb_abi.h`: map keys, values, flags and names.
//!
//! The C header is the definition; `tests/abi.rs` checks every struct here
//! against the BTF of the built object (size and each field's offset).
//! Fields named like `__be*` in C hold network byte order here too.

/// Name of the services map (frontend entries and backend slots).
pub const MAP_SERVICES: &str = "lb4_services";
/// Name of the backends map.
pub const MAP_BACKENDS: &str = "lb4_backends";
/// Name of the reverse-NAT map.
pub const MAP_REV_NAT: &str = "lb4_reverse_nat";
/// Name of the connection-tracking map.
pub const MAP_CT: &str = "lb4_ct";
/// Name of the session-affinity map.
pub const MAP_AFFINITY: &str = "lb4_affinity";
/// Name of the Maglev outer map (service id -> inner array of backend ids).
pub const MAP_MAGLEV: &str = "lb4_maglev";
/// Name of the source-range LPM trie.
pub const MAP_SRC_RANGE: &str = "lb4_src_range";
/// Name of the configuration array.
pub const MAP_CONFIG: &str = "lb_config";
/// Name of the per-CPU drop counters.
pub const MAP_DROPS: &str = "lb_drops";
/// Name of the per-CPU per-service counters (an array indexed by the
/// frontend's counter slot, [`Lb4Service::stats_slot`]).
pub const MAP_SVC_STATS: &str = "lb_svc_stats";
/// Name of the per-CPU per-backend counters (an array indexed by the
/// backend's counter slot, [`Lb4Backend::stats_slot`]).
pub const MAP_BE_STATS: &str = "lb_be_stats";
/// Name of the userspace-only frontend metadata map (service names).
pub const MAP_SVC_META: &str = "lb_svc_meta";
/// Name of the userspace-only backend metadata map (zones).
pub const MAP_BE_META: &str = "lb_be_meta";
/// Name of the socket-LB reverse translation map.
pub const MAP_SOCK_REV: &str = "lb4_sock_rev";
/// Name of the SNAT reverse-entry map.
pub const MAP_SNAT: &str = "lb4_snat";
/// Name of the attached-devices map (ifindex -> 1).
pub const MAP_DEVICES: &str = "lb_devices";
/// Name of the IPv6 services map (value: [`Lb4Service`], shared layout).
pub const MAP_SERVICES6: &str = "lb6_services";
/// Name of the IPv6 backends map.
pub const MAP_BACKENDS6: &str = "lb6_backends";
/// Name of the IPv6 reverse-NAT map.
pub const MAP_REV_NAT6: &str = "lb6_reverse_nat";
/// Name of the IPv6 connection-tracking map.
pub const MAP_CT6: &str = "lb6_ct";
/// Name of the IPv6 session-affinity map.
pub const MAP_AFFINITY6: &str = "lb6_affinity";
/// Name of the IPv6 source-range LPM trie.
pub const MAP_SRC_RANGE6: &str = "lb6_src_range";
/// Name of the IPv6 SNAT reverse-entry map.
pub const MAP_SNAT6: &str = "lb6_snat";
/// Name of the IPv6 socket-LB reverse translation map.
pub const MAP_SOCK_REV6: &str = "lb6_sock_rev";
/// Every map of the objects, in pinning order.
pub const ALL_MAPS: [&str; 24] = [
    MAP_SERVICES,
    MAP_BACKENDS,
    MAP_REV_NAT,
    MAP_CT,
    MAP_AFFINITY,
    MAP_MAGLEV,
    MAP_SRC_RANGE,
    MAP_CONFIG,
    MAP_DROPS,
    MAP_SVC_STATS,
    MAP_SVC_META,
    MAP_BE_META,
    MAP_SOCK_REV,
    MAP_SNAT,
    MAP_DEVICES,
    MAP_BE_STATS,
    MAP_SERVICES6,
    MAP_BACKENDS6,
    MAP_REV_NAT6,
    MAP_CT6,
    MAP_AFFINITY6,
    MAP_SRC_RANGE6,
    MAP_SNAT6,
    MAP_SOCK_REV6,
];

/// `LB_SVC_F_AFFINITY`: ClientIP session affinity.
pub const SVC_F_AFFINITY: u16 = 1 << 0;
/// `LB_SVC_F_MAGLEV`: Maglev selection (else weighted random).
pub const SVC_F_MAGLEV: u16 = 1 << 1;
/// `LB_SVC_F_LOCAL_ONLY`: traffic policy Local.
pub const SVC_F_LOCAL_ONLY: u16 = 1 << 2;
/// `LB_SVC_F_TWO_SCOPES`: an internal-scope entry exists.
pub const SVC_F_TWO_SCOPES: u16 = 1 << 3;
/// `LB_SVC_F_SOURCE_RANGES`: check the source-range trie.
pub const SVC_F_SOURCE_RANGES: u16 = 1 << 4;
/// `LB_SVC_F_UNIFORM`: all selectable weights are equal (O(1) random pick).
pub const SVC_F_UNIFORM: u16 = 1 << 5;
/// `LB_SVC_F_NAT46X64`: the slots name backends of the other address family
/// (NAT46/64, `bpf/lb_nat46.h`).
pub const SVC_F_NAT46X64: u16 = 1 << 6;

/// `LB_BE_F_LOCAL`: the backend runs on this node ([`Lb4Backend::flags`]).
pub const BE_F_LOCAL: u8 = 1 << 0;

/// `enum lb_backend_state`: a backend slot's state, stored in the slot's
/// [`Lb4Service::flags`] (lb-core `BackendState` order).
pub const BE_STATE_ACTIVE: u16 = 0;
/// `LB_BE_TERMINATING`.
pub const BE_STATE_TERMINATING: u16 = 1;
/// `LB_BE_QUARANTINED`.
pub const BE_STATE_QUARANTINED: u16 = 2;
/// `LB_BE_MAINTENANCE`.
pub const BE_STATE_MAINTENANCE: u16 = 3;

/// `LB_SVC_NAME_MAX`: bytes of [`LbSvcMeta::name`].
pub const SVC_NAME_MAX: usize = 128;
/// `LB_ZONE_MAX`: bytes of [`LbBeMeta::zone`].
pub const ZONE_MAX: usize = 64;

/// `LB_CT_F_SNAT`: the flow is SNATed ([`Ct4Entry::flags`]).
pub const CT_F_SNAT: u16 = 1 << 0;
/// `LB_CT_F_CLOSING`: a TCP FIN or RST was seen ([`Ct4Entry::flags`]).
pub const CT_F_CLOSING: u16 = 1 << 1;
/// `LB_CT_F_DSR`: the flow goes to its backend in IPIP and its replies
/// bypass the node ([`Ct4Entry::flags`]).
pub const CT_F_DSR: u16 = 1 << 2;
/// `LB_CT_F_PORTMAP`: the client's source port is rewritten towards the
/// backend (a reply-tuple clash, `lb_ctport.h`); [`Ct4Entry::snat_port`]
/// holds the backend-side port in the service entry and the client's own
/// port in the reply entry.
pub const CT_F_PORTMAP: u16 = 1 << 3;
/// `LB_PORTMAP_MIN`..=`LB_PORTMAP_MAX` (`lb_ctport.h`): the client ports a
/// remapped flow ([`CT_F_PORTMAP`]) may get, below the ephemeral ranges
/// clients pick from (Linux 32768-60999, IANA 49152-65535).
pub const PORTMAP_PORTS: std::ops::RangeInclusive<u16> = 1024..=32767;
/// `LB_SNAT_PORT_MIN`: default lowest SNAT source port, above Linux's
/// default `net.ipv4.ip_local_port_range` (32768-60999).
pub const SNAT_PORT_MIN: u16 = 61000;
/// `LB_SNAT_PORT_MAX`: default highest SNAT source port.
pub const SNAT_PORT_MAX: u16 = 65535;
/// `LB_DEVICES_MAX`: devices the programs may be attached to.
pub const DEVICES_MAX: u32 = 64;

/// `LB_CT_SERVICE`: a CT key in the client -> frontend direction.
pub const CT_SERVICE: u8 = 0;
/// `LB_CT_REPLY`: a CT key in the backend -> client direction.
pub const CT_REPLY: u8 = 1;

/// `LB_MAX_NODE_IPS`: node addresses the configuration holds.
pub const MAX_NODE_IPS: usize = 8;
/// `LB_DROP_MAX`: entries of the drop-counter array.
pub const DROP_MAX: u32 = 8;
/// `BPF_F_INNER_MAP`: inner arrays of any size may go into the Maglev map.
pub const BPF_F_INNER_MAP: u32 = 1 << 12;

/// Drop reasons: indices of the `lb_drops` counters (`enum lb_drop_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DropReason {
    /// A truncated or invalid IPv4/TCP/UDP header.
    Malformed = 0,
    /// A frontend without a selectable backend.
    NoBackend = 1,
    /// A client outside the frontend's source ranges.
    SourceRange = 2,
    /// A checksum or store helper failed.
    Rewrite = 3,
    /// No free SNAT source port for a new flow.
    SnatPorts = 4,
    /// A packet SNATed or encapsulated for DSR (20 bytes more) that is over
    /// the MTU of the route to its backend (and not a GSO packet, which
    /// leaves as segments that fit).
    FragNeeded = 5,
    /// A frontend under traffic policy Local without a selectable backend
    /// on this node (lb-core's `DropReason::NoLocalBackend`).
    NoLocalBackend = 6,
    /// An ICMP error about a NAT46/64 flow that has no equivalent in the
    /// client's family (RFC 7915), dropped rather than passed raw
    /// (`bpf/lb_nat46_icmp.h`).
    Nat46x64Icmp = 7,
}

impl DropReason {
    /// Every reason, in index order.
    pub const ALL: [DropReason; 8] = [
        DropReason::Malformed,
        DropReason::NoBackend,
        DropReason::SourceRange,
        DropReason::Rewrite,
        DropReason::SnatPorts,
        DropReason::FragNeeded,
        DropReason::NoLocalBackend,
        DropReason::Nat46x64Icmp,
    ];
}

/// `struct lb4_key`: services map key; slot 0 is the frontend entry.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Lb4Key {
    /// Frontend address, network order (0 = wildcard).
    pub address: u32,
    /// Frontend port, network order.
    pub dport: u16,
    /// 0 for the frontend entry, 1..=total for backend slots.
    pub backend_slot: u16,
    /// IP protocol number.
    pub proto: u8,
    /// 0 external, 1 internal.
    pub scope: u8,
    /// Zero.
    pub pad: [u8; 2],
}

/// `struct lb4_service`: services map value (frontend entry or backend slot).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lb4Service {
    /// Slot > 0: the backend.
    pub backend_id: u32,
    /// Slot 0: affinity timeout in seconds.
    pub affinity_timeout: u32,
    /// Slot 0: sum of the selectable slots' weights.
    pub total_weight: u32,
    /// Slot 0: reverse-NAT id.
    pub rev_nat_index: u32,
    /// Slot 0: number of selectable slots.
    pub count: u16,
    /// Slot 0: number of slots.
    pub total: u16,
    /// Slot > 0: the backend's weight.
    pub weight: u16,
    /// Slot 0: `SVC_F_*`; slot > 0: the slot's `BE_STATE_*`.
    pub flags: u16,
    /// Slot 0: frontend type (lb-core `FrontendType` order).
    pub fe_type: u8,
    /// Zero.
    pub pad: [u8; 3],
    /// Slot 0: the frontend's counter slot (index of `lb_svc_stats`).
    pub stats_slot: u32,
}

/// `struct lb4_backend`: backends map value.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lb4Backend {
    /// Address, network order.
    pub address: u32,
    /// Port, network order.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// `BE_F_*`.
    pub flags: u8,
    /// The backend's counter slot (index of `lb_be_stats`).
    pub stats_slot: u32,
}

/// `struct lb4_reverse_nat`: reverse-NAT map value.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lb4ReverseNat {
    /// Frontend address, network order.
    pub address: u32,
    /// Frontend port, network order.
    pub port: u16,
    /// Zero.
    pub pad: u16,
}

/// `struct ct4_key`: a flow's 5-tuple in one direction.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Ct4Key {
    /// Source address, network order.
    pub saddr: u32,
    /// Destination address, network order.
    pub daddr: u32,
    /// Source port, network order.
    pub sport: u16,
    /// Destination port, network order.
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// [`CT_SERVICE`] or [`CT_REPLY`].
    pub dir: u8,
    /// Zero.
    pub pad: [u8; 2],
}

/// `struct ct4_entry`: connection-tracking value.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ct4Entry {
    /// The flow's backend.
    pub backend_id: u32,
    /// The frontend's reverse-NAT id.
    pub rev_nat_index: u32,
    /// Address the client used, network order.
    pub frontend_addr: u32,
    /// Port the client used, network order.
    pub frontend_port: u16,
    /// With [`CT_F_SNAT`]: the node's source port, network order.
    pub snat_port: u16,
    /// `CT_F_*`.
    pub flags: u16,
    /// Zero.
    pub pad: [u16; 3],
    /// Last packet, seconds of `CLOCK_MONOTONIC_COARSE` ([`crate::now_secs`]).
    pub last_seen: u64,
}

/// `struct lb4_snat_entry`: where the reply of a SNATed flow goes back to,
/// keyed by the reply's [`Ct4Key`] (backend -> node IP:SNAT port).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lb4SnatEntry {
    /// Client address, network order.
    pub client_addr: u32,
    /// Frontend address the client used, network order.
    pub frontend_addr: u32,
    /// Client port, network order.
    pub client_port: u16,
    /// Frontend port, network order.
    pub frontend_port: u16,
    /// The frontend's reverse-NAT id.
    pub rev_nat_index: u32,
    /// Last packet, seconds of `CLOCK_MONOTONIC_COARSE` ([`crate::now_secs`]).
    pub last_seen: u64,
}

/// `struct lb4_affinity_key`: client address per frontend.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Lb4AffinityKey {
    /// Client address, network order.
    pub client: u32,
    /// Frontend's reverse-NAT id.
    pub rev_nat_index: u32,
}

/// `struct lb_affinity_val`: the client's last backend.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LbAffinityVal {
    /// Seconds of `CLOCK_MONOTONIC_COARSE` (see [`crate::now_secs`]).
    pub last_used: u64,
    /// The backend.
    pub backend_id: u32,
    /// Zero.
    pub pad: u32,
}

/// `struct lb4_src_range_key`: source-range LPM key (prefixlen counts the
/// 32 bits of `rev_nat_index` plus the address prefix).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lb4SrcRangeKey {
    /// 32 + prefix length.
    pub prefixlen: u32,
    /// Frontend's reverse-NAT id.
    pub rev_nat_index: u32,
    /// Prefix address, network order.
    pub addr: u32,
}

/// `struct lb_config`: index 0 of the configuration array.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LbConfig {
    /// Seed of the Maglev flow hash.
    pub maglev_seed: u32,
    /// `M`, entries of every Maglev table.
    pub maglev_table_size: u32,
    /// Valid entries of `node_ips`.
    pub node_ip_count: u32,
    /// Lowest SNAT source port (0: [`SNAT_PORT_MIN`]).
    pub snat_port_min: u16,
    /// Highest SNAT source port (0: [`SNAT_PORT_MAX`]).
    pub snat_port_max: u16,
    /// Node addresses (network order) wildcard frontends answer on.
    pub node_ips: [u32; MAX_NODE_IPS],
    /// `enum lb_mode`: [`LB_MODE_SNAT`], [`LB_MODE_DSR`] or [`LB_MODE_HYBRID`].
    pub lb_mode: u32,
    /// Valid entries of `node_ips6`.
    pub node_ip6_count: u32,
    /// IPv6 node addresses (network order) wildcard frontends answer on.
    pub node_ips6: [[u8; 16]; MAX_NODE_IPS],
}

/// `LB_MODE_SNAT`: lb_core::LbMode::Snat.
pub const LB_MODE_SNAT: u32 = 0;
/// `LB_MODE_DSR`: lb_core::LbMode::Dsr.
pub const LB_MODE_DSR: u32 = 1;
/// `LB_MODE_HYBRID`: lb_core::LbMode::Hybrid.
pub const LB_MODE_HYBRID: u32 = 2;

/// `struct lb_svc_stats`: per-service and per-backend counters (one copy
/// per CPU).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LbSvcStats {
    /// Packets that matched the frontend.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// New flows (backend selections).
    pub new_flows: u64,
}

/// `struct lb4_sock_key`: a socket and the backend it was translated to.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Lb4SockKey {
    /// `bpf_get_socket_cookie()`.
    pub cookie: u64,
    /// Backend address, network order.
    pub address: u32,
    /// Backend port, network order.
    pub port: u16,
    /// Zero.
    pub pad: u16,
}

/// `struct lb4_sock_val`: the frontend the application asked for.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lb4SockVal {
    /// Frontend address the application used, network order.
    pub address: u32,
    /// Frontend port, network order.
    pub port: u16,
    /// Zero.
    pub pad: u16,
    /// The frontend's reverse-NAT id.
    pub rev_nat_index: u32,
}

/// `struct lb_svc_meta`: a frontend's service name (userspace only).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LbSvcMeta {
    /// `namespace/name`, NUL-padded.
    pub name: [u8; SVC_NAME_MAX],
}

/// `struct lb_be_meta`: a backend's zone (userspace only).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LbBeMeta {
    /// Zone label value, NUL-padded.
    pub zone: [u8; ZONE_MAX],
}

/// `struct lb6_key`: IPv6 services map key; slot 0 is the frontend entry.
/// The value is an [`Lb4Service`] (the layout is family-independent).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Lb6Key {
    /// Frontend address, network order (`::` = wildcard).
    pub address: [u8; 16],
    /// Frontend port, network order.
    pub dport: u16,
    /// 0 for the frontend entry, 1..=total for backend slots.
    pub backend_slot: u16,
    /// IP protocol number.
    pub proto: u8,
    /// 0 external, 1 internal.
    pub scope: u8,
    /// Zero.
    pub pad: [u8; 2],
}

/// `struct lb6_backend`: IPv6 backends map value.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lb6Backend {
    /// Address, network order.
    pub address: [u8; 16],
    /// Port, network order.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// `BE_F_*`.
    pub flags: u8,
    /// The backend's counter slot (index of `lb_be_stats`).
    pub stats_slot: u32,
}

/// `struct lb6_reverse_nat`: IPv6 reverse-NAT map value.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lb6ReverseNat {
    /// Frontend address, network order.
    pub address: [u8; 16],
    /// Frontend port, network order.
    pub port: u16,
    /// Zero.
    pub pad: u16,
}

/// `struct ct6_key`: an IPv6 flow's 5-tuple in one direction.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Ct6Key {
    /// Source address, network order.
    pub saddr: [u8; 16],
    /// Destination address, network order.
    pub daddr: [u8; 16],
    /// Source port, network order.
    pub sport: u16,
    /// Destination port, network order.
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// [`CT_SERVICE`] or [`CT_REPLY`].
    pub dir: u8,
    /// Zero.
    pub pad: [u8; 2],
}

/// `struct ct6_entry`: IPv6 connection-tracking value (fields as [`Ct4Entry`]).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ct6Entry {
    /// The flow's backend.
    pub backend_id: u32,
    /// The frontend's reverse-NAT id.
    pub rev_nat_index: u32,
    /// Address the client used, network order.
    pub frontend_addr: [u8; 16],
    /// Port the client used, network order.
    pub frontend_port: u16,
    /// With [`CT_F_SNAT`]: the node's source port; with [`CT_F_PORTMAP`]:
    /// as in [`Ct4Entry::snat_port`].
    pub snat_port: u16,
    /// `CT_F_*`.
    pub flags: u16,
    /// Zero.
    pub pad: [u16; 5],
    /// Last packet, seconds of `CLOCK_MONOTONIC_COARSE` ([`crate::now_secs`]).
    pub last_seen: u64,
}

/// `struct lb6_snat_entry`: where the reply of an IPv6 SNATed flow goes
/// back to, keyed by the reply's [`Ct6Key`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lb6SnatEntry {
    /// Client address, network order.
    pub client_addr: [u8; 16],
    /// Frontend address the client used, network order.
    pub frontend_addr: [u8; 16],
    /// Client port, network order.
    pub client_port: u16,
    /// Frontend port, network order.
    pub frontend_port: u16,
    /// The frontend's reverse-NAT id.
    pub rev_nat_index: u32,
    /// Last packet, seconds of `CLOCK_MONOTONIC_COARSE` ([`crate::now_secs`]).
    pub last_seen: u64,
}

/// `struct lb6_affinity_key`: IPv6 client address per frontend (value:
/// [`LbAffinityVal`]).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Lb6AffinityKey {
    /// Client address, network order.
    pub client: [u8; 16],
    /// Frontend's reverse-NAT id.
    pub rev_nat_index: u32,
}

/// `struct lb6_src_range_key`: IPv6 source-range LPM key (prefixlen counts
/// the 32 bits of `rev_nat_index` plus the address prefix).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lb6SrcRangeKey {
    /// 32 + prefix length.
    pub prefixlen: u32,
    /// Frontend's reverse-NAT id.
    pub rev_nat_index: u32,
    /// Prefix address, network order.
    pub addr: [u8; 16],
}

/// `struct lb6_sock_key`: a socket and the IPv6 backend it was translated to.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Lb6SockKey {
    /// `bpf_get_socket_cookie()`.
    pub cookie: u64,
    /// Backend address, network order.
    pub address: [u8; 16],
    /// Backend port, network order.
    pub port: u16,
    /// Zero.
    pub pad: [u16; 3],
}

/// `struct lb6_sock_val`: the IPv6 frontend the application asked for.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lb6SockVal {
    /// Frontend address the application used, network order.
    pub address: [u8; 16],
    /// Frontend port, network order.
    pub port: u16,
    /// Zero.
    pub pad: u16,
    /// The frontend's reverse-NAT id.
    pub rev_nat_index: u32,
}

/// Fills a NUL-padded byte field; `None` when `s` does not fit (or holds NUL).
fn padded<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() > N || b.contains(&0) {
        return None;
    }
    let mut out = [0u8; N];
    out[..b.len()].copy_from_slice(b);
    Some(out)
}

/// The text of a NUL-padded byte field (lossy on invalid UTF-8).
fn unpadded(b: &[u8]) -> String {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..n]).into_owned()
}

impl LbSvcMeta {
    /// The entry for `name`, or `None` when it does not fit.
    pub fn new(name: &str) -> Option<Self> {
        padded(name).map(|name| LbSvcMeta { name })
    }

    /// The stored name.
    pub fn name(&self) -> String {
        unpadded(&self.name)
    }
}

impl LbBeMeta {
    /// The entry for `zone`, or `None` when it does not fit.
    pub fn new(zone: &str) -> Option<Self> {
        padded(zone).map(|zone| LbBeMeta { zone })
    }

    /// The stored zone.
    pub fn zone(&self) -> String {
        unpadded(&self.zone)
    }
}

macro_rules! pod {
    ($($t:ty = $size:expr),* $(,)?) => {$(
        // SAFETY: repr(C), only integer fields, explicit padding: every bit
        // pattern is valid and there are no implicit padding bytes.
        unsafe impl aya::Pod for $t {}
        const _: () = assert!(std::mem::size_of::<$t>() == $size);
    )*};
}

pod!(
    Lb4Key = 12,
    Lb4Service = 32,
    Lb4Backend = 12,
    Lb4ReverseNat = 8,
    Ct4Key = 16,
    Ct4Entry = 32,
    Lb4AffinityKey = 8,
    LbAffinityVal = 16,
    Lb4SrcRangeKey = 12,
    LbConfig = 184,
    LbSvcStats = 24,
    LbSvcMeta = 128,
    Lb4SockKey = 16,
    Lb4SockVal = 12,
    Lb4SnatEntry = 24,
    LbBeMeta = 64,
    Lb6Key = 24,
    Lb6Backend = 24,
    Lb6ReverseNat = 20,
    Ct6Key = 40,
    Ct6Entry = 48,
    Lb6SnatEntry = 48,
    Lb6AffinityKey = 20,
    Lb6SrcRangeKey = 24,
    Lb6SockKey = 32,
    Lb6SockVal = 24,
);
