//! Frontends: where clients reach a service ([`FrontendType`], [`FrontendParams`])
//! and the programmed form with its identifiers ([`Frontend`]).

use std::fmt;
use std::sync::Arc;

use ipnet::IpNet;

use crate::{BackendId, BackendState, L3n4Addr, LbAlgorithm, Scope, ServiceId, ServiceName};

/// The kind of a frontend, as `cilium service list` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum FrontendType {
    /// The cluster-internal virtual IP.
    ClusterIp,
    /// A port on every node address (and the wildcard address).
    NodePort,
    /// A load balancer's ingress IP (`status.loadBalancer.ingress`).
    LoadBalancer,
    /// An IP from `spec.externalIPs`.
    ExternalIp,
    /// A pod's `hostPort`: a node port that maps to that one pod.
    HostPort,
}

impl FrontendType {
    /// The name `cilium service list` prints.
    pub const fn as_str(self) -> &'static str {
        match self {
            FrontendType::ClusterIp => "ClusterIP",
            FrontendType::NodePort => "NodePort",
            FrontendType::LoadBalancer => "LoadBalancer",
            FrontendType::ExternalIp => "ExternalIPs",
            FrontendType::HostPort => "HostPort",
        }
    }

    /// True for the types reached from outside the cluster, which follow
    /// `externalTrafficPolicy`.
    pub const fn is_external(self) -> bool {
        !matches!(self, FrontendType::ClusterIp)
    }

    /// True for the types whose unspecified address expands onto every node
    /// address plus the wildcard frontend.
    pub const fn expands_on_node_ips(self) -> bool {
        matches!(self, FrontendType::NodePort | FrontendType::HostPort)
    }
}

impl fmt::Display for FrontendType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A frontend as a service declares it.
///
/// For NodePort and HostPort an unspecified address (`0.0.0.0` or `::`)
/// means "every node address of that family, and the wildcard".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FrontendParams {
    /// Address, port and protocol clients use.
    pub addr: L3n4Addr,
    /// The frontend's kind.
    pub kind: FrontendType,
    /// The service port's name; backends with the same port name serve it
    /// (`""` for an unnamed port).
    pub port_name: String,
}

impl FrontendParams {
    /// A frontend with an unnamed port.
    pub fn new(addr: L3n4Addr, kind: FrontendType) -> Self {
        FrontendParams {
            addr,
            kind,
            port_name: String::new(),
        }
    }

    /// The same frontend for the named service port.
    pub fn with_port_name(mut self, name: impl Into<String>) -> Self {
        self.port_name = name.into();
        self
    }
}

/// The key a dataplane looks a frontend up by: address, port, protocol and scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FrontendKey {
    /// Address, port and protocol.
    pub addr: L3n4Addr,
    /// Which scope of a two-scope service this entry serves.
    pub scope: Scope,
}

/// One backend in a frontend's backend list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BackendSlot {
    /// The backend.
    pub id: BackendId,
    /// Its state for this service.
    pub state: BackendState,
    /// Its relative weight (0 takes no new flows).
    pub weight: u16,
}

/// A programmed frontend: the unit a dataplane stores (Cilium's service entry).
#[derive(Debug, Clone, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Frontend {
    /// The frontend's identifier (also its reverse-NAT ID).
    pub id: ServiceId,
    /// The lookup key.
    pub key: FrontendKey,
    /// The kind.
    pub kind: FrontendType,
    /// The owning service.
    pub service: ServiceName,
    /// Backends; the first [`Frontend::selectable`] take new flows, the rest
    /// (terminating, quarantined, maintenance, weight 0) only keep existing ones.
    pub backends: Vec<BackendSlot>,
    /// How many leading entries of `backends` take new flows.
    pub selectable: usize,
    /// The backend-selection algorithm.
    pub algorithm: LbAlgorithm,
    /// ClientIP affinity timeout in seconds, if affinity is on.
    pub affinity_timeout: Option<u32>,
    /// Allowed client prefixes; empty allows everyone.
    pub source_ranges: Vec<IpNet>,
    /// True when this entry only uses node-local backends (traffic policy Local),
    /// which also means the client address is preserved.
    pub local_only: bool,
    /// True when the service has an internal-scope entry beside this one.
    pub two_scopes: bool,
    /// The Maglev lookup table (backend IDs), when the algorithm is Maglev.
    pub maglev: Option<Arc<[BackendId]>>,
}

impl PartialEq for Frontend {
    fn eq(&self, o: &Self) -> bool {
        let same_maglev = match (&self.maglev, &o.maglev) {
            (Some(a), Some(b)) => crate::tables::same_table(a, b),
            (None, None) => true,
            _ => false,
        };
        self.id == o.id
            && self.key == o.key
            && self.kind == o.kind
            && self.selectable == o.selectable
            && self.algorithm == o.algorithm
            && self.affinity_timeout == o.affinity_timeout
            && self.local_only == o.local_only
            && self.two_scopes == o.two_scopes
            && self.backends == o.backends
            && self.source_ranges == o.source_ranges
            && self.service == o.service
            && same_maglev
    }
}

impl Frontend {
    /// The backends that take new flows.
    pub fn selectable_backends(&self) -> &[BackendSlot] {
        &self.backends[..self.selectable.min(self.backends.len())]
    }

    /// True when the entry restricts clients by source prefix.
    pub fn has_source_ranges(&self) -> bool {
        !self.source_ranges.is_empty()
    }
}
