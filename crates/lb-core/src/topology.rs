//! Topology-aware routing: which of a frontend's backends take new flows on
//! a given node ([`topology_filter`]), after kube-proxy's
//! `pkg/proxy/topology.go` (EndpointSlice node and zone hints) and
//! Kubernetes' `trafficDistribution` (`PreferClose` / `PreferSameZone`,
//! `PreferSameNode`).
//!
//! The rules, for traffic policy Cluster only (Local already keeps traffic
//! on the node; kube-proxy does not filter it by topology either):
//!
//! 1. Only *ready* backends decide (here: [`BackendState::Active`] with a
//!    non-zero weight); terminating and other backends are never filtered,
//!    they keep their established flows and stay the fallback.
//! 2. A backend's hints are its `node_hints` (EndpointSlice
//!    `hints.forNodes`) and `zone_hints` (`hints.forZones`). When no ready
//!    backend has explicit hints of a kind, they are derived the way the
//!    EndpointSlice controller sets them: `PreferSameNode` hints each
//!    backend for its own node and its own zone, `PreferClose` for its own
//!    zone.
//! 3. Same node first: when *every* ready backend has a node hint and at
//!    least one is hinted for this node, only ready backends hinted for this
//!    node take new flows.
//! 4. Otherwise same zone: when the node has a zone, every ready backend has
//!    a zone hint and at least one is hinted for the node's zone, only ready
//!    backends hinted for that zone take new flows.
//! 5. Otherwise every backend stays eligible (kube-proxy's fallbacks: a
//!    missing hint, or no backend for this node or zone, means use all).

use crate::{BackendParams, BackendState};

/// `spec.trafficDistribution` of a Service (and the older
/// `service.kubernetes.io/topology-mode: Auto` annotation, which the agent
/// maps to [`TrafficDistribution::PreferClose`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum TrafficDistribution {
    /// No preference: hints are honoured when every ready backend has them
    /// (as kube-proxy does), but none are derived.
    #[default]
    Default,
    /// Prefer backends in the node's zone (`PreferClose`, and its newer
    /// name `PreferSameZone`): without explicit hints, each backend counts
    /// as hinted for its own zone.
    PreferClose,
    /// Prefer backends on this node, then in its zone (`PreferSameNode`):
    /// without explicit hints, each backend counts as hinted for its own
    /// node and its own zone.
    PreferSameNode,
}

impl TrafficDistribution {
    /// `Default`, `PreferClose` or `PreferSameNode`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TrafficDistribution::Default => "Default",
            TrafficDistribution::PreferClose => "PreferClose",
            TrafficDistribution::PreferSameNode => "PreferSameNode",
        }
    }
}

/// Where the node running the load balancer sits, for [`topology_filter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Locality<'a> {
    /// The node's name (matched against node hints).
    pub node: Option<&'a str>,
    /// The node's zone (`topology.kubernetes.io/zone`).
    pub zone: Option<&'a str>,
}

/// Which hint set [`topology_filter`] applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopologyMode {
    /// Only backends hinted for this node take new flows.
    SameNode,
    /// Only backends hinted for this node's zone take new flows.
    SameZone,
}

fn ready(b: &BackendParams) -> bool {
    b.state == BackendState::Active && b.weight > 0
}

/// One kind of hint (node or zone) over a frontend's ready backends.
struct HintSet<'b> {
    /// The backend's explicit hints of this kind.
    explicit: fn(&'b BackendParams) -> &'b [String],
    /// Where the backend itself sits for this kind (node name or zone).
    own: fn(&'b BackendParams) -> Option<&'b str>,
    /// Derive hints from `own` (no ready backend has explicit ones and the
    /// service asks for it).
    derive: bool,
}

impl<'b> HintSet<'b> {
    fn new(
        backends: &[&'b BackendParams],
        explicit: fn(&'b BackendParams) -> &'b [String],
        own: fn(&'b BackendParams) -> Option<&'b str>,
        derivable: bool,
    ) -> Self {
        let any_explicit = backends.iter().any(|b| ready(b) && !explicit(b).is_empty());
        HintSet {
            explicit,
            own,
            derive: derivable && !any_explicit,
        }
    }

    /// Whether `b` is hinted for `place`; `None` when it has no hint.
    fn hinted_for(&self, b: &'b BackendParams, place: &str) -> Option<bool> {
        if self.derive {
            (self.own)(b).map(|own| own == place)
        } else {
            let hints = (self.explicit)(b);
            (!hints.is_empty()).then(|| hints.iter().any(|h| h == place))
        }
    }

    /// The mask for `place` when every ready backend has a hint and one
    /// is hinted for it.
    fn mask(&self, backends: &[&'b BackendParams], place: Option<&str>) -> Option<Vec<bool>> {
        let place = place.filter(|p| !p.is_empty())?;
        let mut any = false;
        for b in backends.iter().filter(|b| ready(b)) {
            // A ready backend without a hint turns this kind off.
            any |= self.hinted_for(b, place)?;
        }
        any.then(|| {
            backends
                .iter()
                .map(|b| !ready(b) || self.hinted_for(b, place) == Some(true))
                .collect()
        })
    }
}

/// Which of `backends` may take new flows on a node at `at`: the mode
/// applied and a mask parallel to `backends`, or `None` when topology does
/// not apply (every backend stays eligible). See the module docs for the
/// rules.
///
/// ```
/// use lb_core::topology::{topology_filter, Locality, TopologyMode, TrafficDistribution};
/// use lb_core::BackendParams;
/// let a = BackendParams::new("10.0.0.1:80".parse().unwrap()).on_node("n1").in_zone("z");
/// let b = BackendParams::new("10.0.0.2:80".parse().unwrap()).on_node("n2").in_zone("z");
/// let at = Locality { node: Some("n1"), zone: Some("z") };
/// assert_eq!(
///     topology_filter(&[&a, &b], at, TrafficDistribution::PreferSameNode),
///     Some((TopologyMode::SameNode, vec![true, false]))
/// );
/// // On a node with no backend of its own: the zone, where both are.
/// let elsewhere = Locality { node: Some("n3"), zone: Some("z") };
/// assert_eq!(
///     topology_filter(&[&a, &b], elsewhere, TrafficDistribution::PreferSameNode),
///     Some((TopologyMode::SameZone, vec![true, true]))
/// );
/// ```
pub fn topology_filter(
    backends: &[&BackendParams],
    at: Locality<'_>,
    distribution: TrafficDistribution,
) -> Option<(TopologyMode, Vec<bool>)> {
    use TrafficDistribution::*;
    let nodes = HintSet::new(
        backends,
        |b| &b.node_hints,
        |b| b.node_name.as_deref(),
        distribution == PreferSameNode,
    );
    if let Some(mask) = nodes.mask(backends, at.node) {
        return Some((TopologyMode::SameNode, mask));
    }
    let zones = HintSet::new(
        backends,
        |b| &b.zone_hints,
        |b| b.zone.as_deref(),
        matches!(distribution, PreferClose | PreferSameNode),
    );
    zones
        .mask(backends, at.zone)
        .map(|mask| (TopologyMode::SameZone, mask))
}

/// Zone hints only: [`topology_filter`] on a node known by its zone alone.
///
/// ```
/// use lb_core::{topology::{zone_filter, TrafficDistribution}, BackendParams};
/// let mut a = BackendParams::new("10.0.0.1:80".parse().unwrap());
/// let mut b = BackendParams::new("10.0.0.2:80".parse().unwrap());
/// a.zone_hints = vec!["zone-a".into()];
/// b.zone_hints = vec!["zone-b".into()];
/// let backends = [&a, &b];
/// assert_eq!(zone_filter(&backends, Some("zone-a"), TrafficDistribution::Default),
///            Some(vec![true, false]));
/// // No backend hinted for zone-c: use all.
/// assert_eq!(zone_filter(&backends, Some("zone-c"), TrafficDistribution::Default), None);
/// ```
pub fn zone_filter(
    backends: &[&BackendParams],
    zone: Option<&str>,
    distribution: TrafficDistribution,
) -> Option<Vec<bool>> {
    let at = Locality { node: None, zone };
    topology_filter(backends, at, distribution).map(|(_, mask)| mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(last: u8, zone: Option<&str>, hints: &[&str]) -> BackendParams {
        let mut b = BackendParams::new(format!("10.0.0.{last}:80").parse().unwrap());
        b.zone = zone.map(String::from);
        b.zone_hints = hints.iter().map(|s| s.to_string()).collect();
        b
    }

    #[test]
    fn hints_select_this_zone_and_fall_back_like_kube_proxy() {
        let a = be(1, Some("a"), &["a"]);
        let b = be(2, Some("b"), &["b"]);
        let ab = be(3, Some("b"), &["a", "b"]);
        let none = be(4, Some("a"), &[]);
        let d = TrafficDistribution::Default;
        assert_eq!(
            zone_filter(&[&a, &b, &ab], Some("a"), d),
            Some(vec![true, false, true])
        );
        // Node without a zone, missing hint, no hint for the zone: all.
        assert_eq!(zone_filter(&[&a, &b], None, d), None);
        assert_eq!(zone_filter(&[&a, &b, &none], Some("a"), d), None);
        assert_eq!(zone_filter(&[&a, &b], Some("c"), d), None);
        // Zones alone do nothing without PreferClose.
        let za = be(5, Some("a"), &[]);
        let zb = be(6, Some("b"), &[]);
        assert_eq!(zone_filter(&[&za, &zb], Some("a"), d), None);
    }

    #[test]
    fn prefer_close_derives_hints_from_zones() {
        let p = TrafficDistribution::PreferClose;
        let za = be(1, Some("a"), &[]);
        let zb = be(2, Some("b"), &[]);
        let nz = be(3, None, &[]);
        assert_eq!(
            zone_filter(&[&za, &zb], Some("a"), p),
            Some(vec![true, false])
        );
        assert_eq!(zone_filter(&[&za, &zb], Some("c"), p), None);
        assert_eq!(zone_filter(&[&za, &zb, &nz], Some("a"), p), None);
        // Explicit hints win over zones.
        let hinted = be(4, Some("a"), &["b"]);
        let hinted_b = be(5, Some("b"), &["b"]);
        assert_eq!(
            zone_filter(&[&hinted, &hinted_b], Some("b"), p),
            Some(vec![true, true])
        );
    }

    #[test]
    fn only_ready_backends_decide_and_others_are_never_filtered() {
        let a = be(1, Some("a"), &["a"]);
        let term = be(2, Some("b"), &[]).with_state(BackendState::Terminating);
        let zero = be(3, Some("b"), &[]).with_weight(0);
        assert_eq!(
            zone_filter(&[&a, &term, &zero], Some("a"), TrafficDistribution::Default),
            Some(vec![true, true, true])
        );
    }

    fn on(last: u8, node: Option<&str>, zone: Option<&str>) -> BackendParams {
        let mut b = be(last, zone, &[]);
        b.node_name = node.map(String::from);
        b
    }

    #[test]
    fn prefer_same_node_then_zone_then_all() {
        let p = TrafficDistribution::PreferSameNode;
        let n1 = on(1, Some("n1"), Some("a"));
        let n2 = on(2, Some("n2"), Some("a"));
        let n3 = on(3, Some("n3"), Some("b"));
        let at = |node, zone| Locality {
            node: Some(node),
            zone: Some(zone),
        };
        let all = [&n1, &n2, &n3];
        assert_eq!(
            topology_filter(&all, at("n1", "a"), p),
            Some((TopologyMode::SameNode, vec![true, false, false]))
        );
        // No backend on n4: its zone a.
        assert_eq!(
            topology_filter(&all, at("n4", "a"), p),
            Some((TopologyMode::SameZone, vec![true, true, false]))
        );
        // Neither node nor zone has one: all.
        assert_eq!(topology_filter(&all, at("n4", "c"), p), None);
        // A ready backend on an unknown node turns node hints off.
        let nowhere = on(4, None, Some("b"));
        assert_eq!(
            topology_filter(&[&n1, &nowhere], at("n1", "a"), p),
            Some((TopologyMode::SameZone, vec![true, false]))
        );
        // PreferClose derives no node hints.
        assert_eq!(
            topology_filter(&all, at("n1", "a"), TrafficDistribution::PreferClose),
            Some((TopologyMode::SameZone, vec![true, true, false]))
        );
    }

    #[test]
    fn explicit_node_hints_apply_without_a_distribution() {
        let mut a = on(1, Some("n1"), None);
        let mut b = on(2, Some("n2"), None);
        a.node_hints = vec!["n1".into()];
        b.node_hints = vec!["n2".into(), "n1".into()];
        let at = Locality {
            node: Some("n1"),
            zone: None,
        };
        assert_eq!(
            topology_filter(&[&a, &b], at, TrafficDistribution::Default),
            Some((TopologyMode::SameNode, vec![true, true]))
        );
        let at2 = Locality {
            node: Some("n2"),
            zone: None,
        };
        assert_eq!(
            topology_filter(&[&a, &b], at2, TrafficDistribution::Default),
            Some((TopologyMode::SameNode, vec![false, true]))
        );
    }
}
