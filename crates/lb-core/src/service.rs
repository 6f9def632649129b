//! The desired-state description of a service: [`Service`] and its policies.

use std::fmt;
use std::str::FromStr;

use ipnet::IpNet;

use crate::{BackendParams, FrontendParams, LbAlgorithm, ParseError, TrafficDistribution};

/// A Kubernetes-style service name, `NAMESPACE/NAME`.
///
/// ```
/// use lb_core::ServiceName;
/// let n: ServiceName = "default/web".parse().unwrap();
/// assert_eq!(n.name, "web");
/// assert_eq!(n.to_string(), "default/web");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ServiceName {
    /// The namespace.
    pub namespace: String,
    /// The name within the namespace.
    pub name: String,
}

impl ServiceName {
    /// Builds a name from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceName {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for ServiceName {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(ServiceName::new(ns, name))
            }
            _ => Err(ParseError::ServiceName(s.to_string())),
        }
    }
}

/// Which backends a traffic scope may use (`externalTrafficPolicy` /
/// `internalTrafficPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum TrafficPolicy {
    /// Every ready backend in the cluster; the client address may be SNATed.
    #[default]
    Cluster,
    /// Only backends on this node; the client address is preserved, and the
    /// traffic is dropped when this node has none.
    Local,
}

/// Kubernetes `sessionAffinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SessionAffinity {
    /// Every new flow is balanced on its own.
    #[default]
    None,
    /// New flows from one client IP go to the backend the previous flow used,
    /// while that happened less than `timeout_secs` ago.
    ClientIp {
        /// Idle time after which the affinity is forgotten (Kubernetes: 1..=86400, default 10800).
        timeout_secs: u32,
    },
}

impl SessionAffinity {
    /// The Kubernetes default ClientIP timeout, 3 hours.
    pub const DEFAULT_TIMEOUT_SECS: u32 = 10_800;

    /// ClientIP affinity with the Kubernetes default timeout.
    pub const fn client_ip() -> Self {
        SessionAffinity::ClientIp {
            timeout_secs: Self::DEFAULT_TIMEOUT_SECS,
        }
    }

    /// The timeout in seconds, if affinity is on.
    pub const fn timeout_secs(self) -> Option<u32> {
        match self {
            SessionAffinity::None => None,
            SessionAffinity::ClientIp { timeout_secs } => Some(timeout_secs),
        }
    }
}

/// One service as its owner describes it: frontends, backends and policies.
///
/// Frontends select backends by port name and protocol, the way a Service
/// port selects EndpointSlice ports. [`crate::DesiredState::build`] validates
/// services and expands them into programmable frontends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Service {
    /// `NAMESPACE/NAME`.
    pub name: ServiceName,
    /// Where clients reach the service.
    pub frontends: Vec<FrontendParams>,
    /// Where the service's traffic goes.
    pub backends: Vec<BackendParams>,
    /// Backends for traffic from outside the cluster (NodePort, LoadBalancer, externalIPs).
    pub ext_traffic_policy: TrafficPolicy,
    /// Backends for traffic from inside the cluster (ClusterIP, and the internal
    /// scope of the other frontend types).
    pub int_traffic_policy: TrafficPolicy,
    /// Session affinity.
    pub session_affinity: SessionAffinity,
    /// `loadBalancerSourceRanges`: when non-empty, LoadBalancer frontends accept
    /// only clients inside these prefixes.
    pub source_ranges: Vec<IpNet>,
    /// Overrides the node's backend-selection algorithm for this service.
    pub algorithm: Option<LbAlgorithm>,
    /// `trafficDistribution` (topology-aware routing, see [`crate::topology`]).
    pub traffic_distribution: TrafficDistribution,
}

impl Service {
    /// A service with no frontends or backends and default policies.
    pub fn new(name: ServiceName) -> Self {
        Service {
            name,
            frontends: Vec::new(),
            backends: Vec::new(),
            ext_traffic_policy: TrafficPolicy::Cluster,
            int_traffic_policy: TrafficPolicy::Cluster,
            session_affinity: SessionAffinity::None,
            source_ranges: Vec::new(),
            algorithm: None,
            traffic_distribution: TrafficDistribution::Default,
        }
    }
}
