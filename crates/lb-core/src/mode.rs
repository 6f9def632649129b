//! Load-balancer modes, as Cilium's `--bpf-lb-mode`: how a flow to a remote
//! backend leaves the node ([`LbMode`]) and the encapsulation a DSR flow
//! carries ([`Encap`]).
//!
//! * [`LbMode::Snat`]: the node rewrites the destination to the backend and
//!   the source to itself; replies come back through the node, which
//!   reverses both rewrites.
//! * [`LbMode::Dsr`] (direct server return): the node leaves the packet as
//!   the client sent it (destination the frontend, source the client) and
//!   wraps it in an outer header to the backend's address: IPv4 (IPIP,
//!   protocol 4, [`Encap::Ipip`]) for an IPv4 flow, IPv6 (IPv6-in-IPv6,
//!   next header 41, [`Encap::Ip6ip6`]) for an IPv6 one. The backend's side decapsulates, translates the frontend
//!   to its own address and port, and translates its replies back, which go
//!   straight to the client: the node keeps no reply state, so a flow may
//!   move to another node running the same services and Maglev seed.
//! * [`LbMode::Hybrid`]: DSR for TCP, SNAT for UDP (Cilium's semantics).
//!
//! As in Cilium, DSR applies only to traffic from outside the node
//! ([`Scope::External`]) to NodePort, LoadBalancer and ExternalIP frontends
//! and a remote backend under traffic policy Cluster; ClusterIP, HostPort,
//! node-local backends and traffic from the node's own pods stay as they
//! are. A flow between IP families (NAT46/64) is always SNATed.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::{FrontendType, L4Proto, Scope};

/// How the node forwards flows to remote backends.
///
/// ```
/// use lb_core::{LbMode, L4Proto};
/// assert_eq!("hybrid".parse::<LbMode>(), Ok(LbMode::Hybrid));
/// assert!(LbMode::Hybrid.dsr_for(L4Proto::Tcp));
/// assert!(!LbMode::Hybrid.dsr_for(L4Proto::Udp));
/// assert_eq!(LbMode::default(), LbMode::Snat);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum LbMode {
    /// Source NAT to the node (replies return through the node).
    #[default]
    Snat,
    /// Direct server return with IPIP (IPv4) or IPv6-in-IPv6 encapsulation.
    Dsr,
    /// DSR for TCP, SNAT for UDP.
    Hybrid,
}

impl LbMode {
    /// The name `--mode` takes and `status` prints (`snat`, `dsr`, `hybrid`).
    pub const fn as_str(self) -> &'static str {
        match self {
            LbMode::Snat => "snat",
            LbMode::Dsr => "dsr",
            LbMode::Hybrid => "hybrid",
        }
    }

    /// True when flows of `proto` use DSR in this mode.
    pub const fn dsr_for(self, proto: L4Proto) -> bool {
        match self {
            LbMode::Snat => false,
            LbMode::Dsr => true,
            LbMode::Hybrid => matches!(proto, L4Proto::Tcp),
        }
    }

    /// True when a flow of `proto` through a frontend of `kind`, seen in
    /// `scope`, uses DSR when its backend is remote: the mode says DSR for
    /// the protocol, the traffic comes from outside the node and the
    /// frontend is a NodePort, LoadBalancer or ExternalIP one.
    pub const fn dsr_applies(self, proto: L4Proto, kind: FrontendType, scope: Scope) -> bool {
        self.dsr_for(proto)
            && matches!(scope, Scope::External)
            && matches!(
                kind,
                FrontendType::NodePort | FrontendType::LoadBalancer | FrontendType::ExternalIp
            )
    }
}

impl fmt::Display for LbMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown mode name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown load-balancer mode {0:?} (expected snat, dsr or hybrid)")]
pub struct UnknownMode(pub String);

impl FromStr for LbMode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "snat" => Ok(LbMode::Snat),
            "dsr" => Ok(LbMode::Dsr),
            "hybrid" => Ok(LbMode::Hybrid),
            _ => Err(UnknownMode(s.to_owned())),
        }
    }
}

/// The encapsulation a forwarded DSR packet leaves the node in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encap {
    /// An outer IPv4 header (protocol 4) around the client's unchanged
    /// packet.
    Ipip {
        /// Outer source: the node address (of the backend's family).
        outer_src: IpAddr,
        /// Outer destination: the backend's address.
        outer_dst: IpAddr,
    },
    /// An outer IPv6 header (next header 41, IPv6-in-IPv6) around the
    /// client's unchanged IPv6 packet, the backend's port in its flow label.
    Ip6ip6 {
        /// Outer source: the node's IPv6 address.
        outer_src: IpAddr,
        /// Outer destination: the backend's IPv6 address.
        outer_dst: IpAddr,
    },
}

impl Encap {
    /// The encapsulation from `outer_src` (the node) to `outer_dst` (the
    /// backend): [`Encap::Ipip`] for IPv4, [`Encap::Ip6ip6`] for IPv6;
    /// `None` when the families differ.
    ///
    /// ```
    /// use lb_core::Encap;
    /// let e = Encap::between("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
    /// assert!(matches!(e, Some(Encap::Ip6ip6 { .. })));
    /// ```
    pub fn between(outer_src: IpAddr, outer_dst: IpAddr) -> Option<Encap> {
        match (outer_src, outer_dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => Some(Encap::Ipip {
                outer_src,
                outer_dst,
            }),
            (IpAddr::V6(_), IpAddr::V6(_)) => Some(Encap::Ip6ip6 {
                outer_src,
                outer_dst,
            }),
            _ => None,
        }
    }

    /// The outer header's `(source, destination)`.
    pub const fn outer(&self) -> (IpAddr, IpAddr) {
        match *self {
            Encap::Ipip {
                outer_src,
                outer_dst,
            }
            | Encap::Ip6ip6 {
                outer_src,
                outer_dst,
            } => (outer_src, outer_dst),
        }
    }
}
