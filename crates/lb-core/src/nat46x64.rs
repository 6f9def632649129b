//! NAT46/64: a frontend of one IP family served by backends of the other
//! (an IPv4 service in front of IPv6-only pods, or the reverse), after
//! Cilium's "NAT46/64 Support" for services.
//!
//! # Semantics
//!
//! * **Off by default** ([`crate::NodeConfig::nat46x64`]), as in Cilium.
//!   Off, a frontend only ever gets backends of its own family; a frontend
//!   whose service has backends of the other family only has none and
//!   drops new flows ([`crate::DropReason::NoBackend`]). On, the node needs
//!   an address of each family
//!   ([`crate::ConfigError::Nat46x64NeedsDualStackNode`]).
//! * **Which backends**: a frontend uses the backends of its own family
//!   whenever its service has any for that port; only when it has none does
//!   it take the backends of the other family. A frontend never mixes the
//!   two (Cilium refuses a mixed set), so a dual-stack service keeps
//!   serving each family from its own backends.
//! * **The translated flow** ([`Translation::Nat46`] for an IPv4 frontend
//!   with IPv6 backends, [`Translation::Nat64`] for the reverse) leaves the
//!   node entirely in the backend's family: destination the backend,
//!   source the node's address of the backend's family
//!   ([`crate::Forward::snat`]), always, also for node-local backends and
//!   under traffic policy Local: an IPv4 client address has no IPv6 form
//!   the backend could answer without the node (Cilium maps it into
//!   `::ffff:0:0/96` and then SNATs to the node as well), and an IPv6
//!   client address does not fit in IPv4 at all. The client address is
//!   therefore not preserved for translated flows.
//! * **Replies** come back to the node in the backend's family and are
//!   translated back: source the frontend address and port, destination the
//!   client's address and port, exactly the reverse of the client's tuple.
//! * **Modes**: SNAT only. DSR and Hybrid do not apply to translated flows
//!   (the backend could not answer the client directly across families;
//!   Cilium's NAT46/64 is SNAT-only as well): such a flow is SNATed whatever
//!   [`crate::LbMode`] says.
//! * **Packets** (dataplanes): the IP header is translated in the style of
//!   RFC 7915 — TTL and hop limit, TOS and traffic class, protocol and next
//!   header carried over; IPv4 options dropped; the TCP/UDP checksum
//!   recomputed over the new pseudo-header (a zero IPv4 UDP checksum is
//!   computed, since IPv6 requires one).
//! * **Sizes** (dataplanes): an IPv4 packet is 20 bytes longer as IPv6.
//!   A translated TCP SYN or SYN-ACK has its MSS option lowered, never
//!   raised, to [`mss_limit`] of the route the translated packet takes, so
//!   a full segment of the peer fits it (as iptables'
//!   `--clamp-mss-to-pmtu`, the route to the peer stands for the way back
//!   from it): the route's MTU less 60 (IPv6 + TCP headers) when
//!   translated to IPv6, less 40 when translated to IPv4. A dataplane that
//!   cannot learn the route's MTU uses [`DEFAULT_ROUTE_MTU`]. A packet
//!   translated to IPv6 that is over the route's MTU is not sent: with DF
//!   its sender gets ICMP fragmentation needed carrying the route's MTU
//!   less 20 ([`frag_needed_mtu`], RFC 7915 §4); without DF it is dropped
//!   (not fragmented). Both are counted as fragmentation-needed drops.
//!
//! ```
//! use lb_core::Translation;
//! let v4 = "198.51.100.10".parse().unwrap();
//! let v6 = "fd00::2".parse().unwrap();
//! assert_eq!(Translation::between(v4, v6), Translation::Nat46);
//! assert_eq!(Translation::between(v6, v4), Translation::Nat64);
//! assert_eq!(Translation::between(v4, v4), Translation::None);
//! assert_eq!(Translation::Nat46.as_str(), "NAT46");
//! ```

use std::fmt;
use std::net::IpAddr;

/// The route MTU a dataplane assumes when it cannot learn the real one
/// (Ethernet's).
pub const DEFAULT_ROUTE_MTU: u32 = 1500;

/// IPv6 header plus TCP header without options: what a full IPv6 TCP
/// packet carries besides its payload.
const TCP6_OVERHEAD: u32 = 40 + 20;
/// IPv4 header (no options) plus TCP header without options.
const TCP4_OVERHEAD: u32 = 20 + 20;

/// The largest MSS a translated SYN or SYN-ACK may carry when it leaves
/// on a route of `route_mtu` bytes, translated to IPv6 (`to_ipv6`) or to
/// IPv4: the MTU less the headers of a full segment.
///
/// ```
/// use lb_core::nat46x64::{clamp_mss, mss_limit};
/// assert_eq!(mss_limit(true, 1500), 1440);
/// assert_eq!(mss_limit(false, 1500), 1460);
/// // Lowered, never raised.
/// assert_eq!(clamp_mss(8940, true, 1500), 1440);
/// assert_eq!(clamp_mss(1200, true, 1500), 1200);
/// ```
pub const fn mss_limit(to_ipv6: bool, route_mtu: u32) -> u16 {
    let overhead = if to_ipv6 {
        TCP6_OVERHEAD
    } else {
        TCP4_OVERHEAD
    };
    let limit = route_mtu.saturating_sub(overhead);
    if limit > u16::MAX as u32 {
        u16::MAX
    } else {
        limit as u16
    }
}

/// The MSS option a translated SYN or SYN-ACK leaves with: `mss` when it
/// fits [`mss_limit`], else the limit.
pub const fn clamp_mss(mss: u16, to_ipv6: bool, route_mtu: u32) -> u16 {
    let limit = mss_limit(to_ipv6, route_mtu);
    if mss > limit {
        limit
    } else {
        mss
    }
}

/// The MTU an ICMP fragmentation-needed error tells the IPv4 sender of a
/// packet that does not fit an IPv6 route of `route6_mtu` bytes once
/// translated: the IPv4 size that does (the translation adds 20 bytes).
pub const fn frag_needed_mtu(route6_mtu: u32) -> u32 {
    route6_mtu.saturating_sub(20)
}

/// Whether, and which way, a flow crosses IP families between its frontend
/// and its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Translation {
    /// Frontend and backend of one family.
    #[default]
    None,
    /// An IPv4 frontend, an IPv6 backend.
    Nat46,
    /// An IPv6 frontend, an IPv4 backend.
    Nat64,
}

impl Translation {
    /// The translation between a frontend address and a backend address.
    pub const fn between(frontend: IpAddr, backend: IpAddr) -> Self {
        match (frontend.is_ipv4(), backend.is_ipv4()) {
            (true, false) => Translation::Nat46,
            (false, true) => Translation::Nat64,
            _ => Translation::None,
        }
    }

    /// True for [`Translation::Nat46`] and [`Translation::Nat64`].
    pub const fn is_translated(self) -> bool {
        !matches!(self, Translation::None)
    }

    /// `NAT46`, `NAT64` or `none`, as `service list` prints it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Translation::None => "none",
            Translation::Nat46 => "NAT46",
            Translation::Nat64 => "NAT64",
        }
    }
}

impl fmt::Display for Translation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
