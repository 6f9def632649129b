//! Backends: where a service's traffic goes ([`BackendParams`], [`Backend`])
//! and their lifecycle ([`BackendState`]).

use std::fmt;

use crate::{BackendId, L3n4Addr};

/// The lifecycle state of a backend, after Cilium's `BackendState`.
///
/// Legal transitions (see [`BackendState::can_transition_to`]):
///
/// ```text
///   Active <-> Quarantined      (health checking)
///   Active <-> Maintenance      (operator)
///   Active/Quarantined -> Terminating -> (removed)
/// ```
///
/// Only `Active` backends take new flows, except that a service with no
/// active backend falls back to its `Terminating` ones (Kubernetes'
/// ProxyTerminatingEndpoints). Existing flows keep their backend in every
/// state for as long as the backend exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum BackendState {
    /// Ready and serving: takes new flows.
    #[default]
    Active,
    /// Shutting down but still serving: keeps its flows, takes new ones only
    /// when no backend is active.
    Terminating,
    /// Failed health checks: takes no new flows.
    Quarantined,
    /// Taken out by an operator: takes no new flows.
    Maintenance,
}

impl BackendState {
    /// The lower-case name `cilium service list` prints.
    pub const fn as_str(self) -> &'static str {
        match self {
            BackendState::Active => "active",
            BackendState::Terminating => "terminating",
            BackendState::Quarantined => "quarantined",
            BackendState::Maintenance => "maintenance",
        }
    }

    /// True when moving from `self` to `next` is a legal transition.
    ///
    /// ```
    /// use lb_core::BackendState::*;
    /// assert!(Active.can_transition_to(Terminating));
    /// assert!(!Terminating.can_transition_to(Active));
    /// assert!(!Maintenance.can_transition_to(Quarantined));
    /// ```
    pub const fn can_transition_to(self, next: BackendState) -> bool {
        use BackendState::*;
        matches!(
            (self, next),
            (Active, _)
                | (Quarantined, Active | Quarantined | Terminating)
                | (Maintenance, Active | Maintenance)
                | (Terminating, Terminating)
        )
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backend as a service declares it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BackendParams {
    /// Address, port and protocol the backend listens on.
    pub addr: L3n4Addr,
    /// The service port this backend serves (`""` for an unnamed port).
    pub port_name: String,
    /// Lifecycle state.
    pub state: BackendState,
    /// Relative weight for new flows; 0 takes none. Default [`BackendParams::DEFAULT_WEIGHT`].
    pub weight: u16,
    /// The node the backend runs on, for traffic policy Local.
    pub node_name: Option<String>,
    /// The backend's topology zone.
    pub zone: Option<String>,
    /// The zones this backend should serve (EndpointSlice
    /// `hints.forZones`); empty for none. See [`crate::topology`].
    pub zone_hints: Vec<String>,
    /// The nodes this backend should serve (EndpointSlice
    /// `hints.forNodes`); empty for none. See [`crate::topology`].
    pub node_hints: Vec<String>,
}

impl BackendParams {
    /// The default weight (Cilium's).
    pub const DEFAULT_WEIGHT: u16 = 100;

    /// An active backend with the default weight, for an unnamed port, on no known node.
    pub fn new(addr: L3n4Addr) -> Self {
        BackendParams {
            addr,
            port_name: String::new(),
            state: BackendState::Active,
            weight: Self::DEFAULT_WEIGHT,
            node_name: None,
            zone: None,
            zone_hints: Vec::new(),
            node_hints: Vec::new(),
        }
    }

    /// The same backend for the named service port.
    pub fn with_port_name(mut self, name: impl Into<String>) -> Self {
        self.port_name = name.into();
        self
    }

    /// The same backend in another state.
    pub fn with_state(mut self, state: BackendState) -> Self {
        self.state = state;
        self
    }

    /// The same backend with another weight.
    pub fn with_weight(mut self, weight: u16) -> Self {
        self.weight = weight;
        self
    }

    /// The same backend placed on a node.
    pub fn on_node(mut self, node: impl Into<String>) -> Self {
        self.node_name = Some(node.into());
        self
    }

    /// The same backend in a topology zone.
    pub fn in_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// The same backend hinted for `zones` (EndpointSlice `hints.forZones`).
    pub fn with_zone_hints<S: Into<String>>(mut self, zones: impl IntoIterator<Item = S>) -> Self {
        self.zone_hints = zones.into_iter().map(Into::into).collect();
        self
    }

    /// The same backend hinted for `nodes` (EndpointSlice `hints.forNodes`).
    pub fn with_node_hints<S: Into<String>>(mut self, nodes: impl IntoIterator<Item = S>) -> Self {
        self.node_hints = nodes.into_iter().map(Into::into).collect();
        self
    }
}

/// A programmed backend, shared by every frontend that uses its address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Backend {
    /// The identifier.
    pub id: BackendId,
    /// Address, port and protocol.
    pub addr: L3n4Addr,
    /// True when the backend runs on this node.
    pub local: bool,
    /// The backend's topology zone.
    pub zone: Option<String>,
}
