//! Topology-aware routing: which of a frontend's backends take new flows on
//! a node of a given zone ([`zone_filter`]), after kube-proxy's
//! `pkg/proxy/topology.go` (EndpointSlice zone hints) and Kubernetes'
//! `trafficDistribution: PreferClose`.
//!
//! The rules, for traffic policy Cluster only (Local already keeps traffic
//! on the node; kube-proxy does not zone-filter it either):
//!
//! 1. Only *ready* backends decide (here: [`BackendState::Active`] with a
//!    non-zero weight); terminating and other backends are never filtered,
//!    they keep their established flows and stay the fallback.
//! 2. A backend's hints are its `zone_hints` (EndpointSlice
//!    `hints.forZones`). When no ready backend has hints and the service
//!    asks for [`TrafficDistribution::PreferClose`], each backend is hinted
//!    for its own zone (what the EndpointSlice controller does for
//!    PreferClose), so same-zone backends are preferred.
//! 3. Filtering applies only when the node has a zone, *every* ready backend
//!    has at least one hint, and at least one is hinted for the node's zone.
//!    Otherwise every backend stays eligible (kube-proxy's fallbacks: a
//!    missing hint, or no backend for this zone, means use all).
//! 4. Then only ready backends hinted for the node's zone take new flows.

use crate::{BackendParams, BackendState};

/// `spec.trafficDistribution` of a Service (and the older
/// `service.kubernetes.io/topology-mode: Auto` annotation, which the agent
/// maps to [`TrafficDistribution::PreferClose`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum TrafficDistribution {
    /// No preference: zone hints are honoured when every ready backend has
    /// them (as kube-proxy does), but none are derived.
    #[default]
    Default,
    /// Prefer backends in the node's zone: without explicit hints, each
    /// backend counts as hinted for its own zone.
    PreferClose,
}

impl TrafficDistribution {
    /// `Default` or `PreferClose`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TrafficDistribution::Default => "Default",
            TrafficDistribution::PreferClose => "PreferClose",
        }
    }
}

fn ready(b: &BackendParams) -> bool {
    b.state == BackendState::Active && b.weight > 0
}

/// Which of `backends` may take new flows on a node in `zone`: a mask
/// parallel to `backends`, or `None` when topology does not apply (every
/// backend stays eligible). See the module docs for the rules.
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
    let zone = zone.filter(|z| !z.is_empty())?;
    let explicit = backends
        .iter()
        .any(|b| ready(b) && !b.zone_hints.is_empty());
    let derive = !explicit && distribution == TrafficDistribution::PreferClose;
    let hinted_for = |b: &BackendParams, z: &str| -> Option<bool> {
        if derive {
            b.zone.as_deref().map(|own| own == z)
        } else if b.zone_hints.is_empty() {
            None
        } else {
            Some(b.zone_hints.iter().any(|h| h == z))
        }
    };
    let mut any_for_zone = false;
    for b in backends.iter().filter(|b| ready(b)) {
        // A ready backend without a hint turns topology off.
        any_for_zone |= hinted_for(b, zone)?;
    }
    if !any_for_zone {
        return None;
    }
    Some(
        backends
            .iter()
            .map(|b| !ready(b) || hinted_for(b, zone) == Some(true))
            .collect(),
    )
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
}
