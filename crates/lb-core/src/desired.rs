//! The validated, expanded desired state: [`NodeConfig`] plus services in,
//! [`DesiredState`] (one [`DesiredFrontend`] per programmable frontend) out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::ops::RangeInclusive;

use crate::{
    BackendParams, BackendState, ConfigError, FrontendKey, FrontendParams, FrontendType, L3n4Addr,
    LbAlgorithm, LbMode, MaglevConfig, Scope, Service, ServiceName, TrafficPolicy,
};

/// What the node contributes to the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NodeConfig {
    /// This node's name, compared with backends' `node_name` for traffic policy Local.
    pub node_name: String,
    /// The node addresses NodePort and HostPort frontends expand onto.
    pub node_ips: Vec<IpAddr>,
    /// Valid NodePort numbers.
    pub nodeport_range: RangeInclusive<u16>,
    /// The default backend-selection algorithm.
    pub algorithm: LbAlgorithm,
    /// Maglev table size and seed.
    pub maglev: MaglevConfig,
    /// The most backends one frontend may have (the dataplane's slot limit).
    pub max_backends_per_frontend: usize,
    /// How flows to remote backends leave the node (SNAT, DSR or hybrid).
    pub mode: LbMode,
    /// This node's topology zone (`topology.kubernetes.io/zone`), for
    /// topology-aware routing ([`crate::topology`]); `None` turns it off.
    pub zone: Option<String>,
    /// NAT46/64 ([`crate::nat46x64`]): a frontend whose service has no
    /// backend of the frontend's family uses the backends of the other
    /// family, translated. Off by default, as in Cilium; needs a node
    /// address of each family.
    #[cfg_attr(feature = "serde", serde(default))]
    pub nat46x64: bool,
}

impl NodeConfig {
    /// Kubernetes' default NodePort range.
    pub const DEFAULT_NODEPORT_RANGE: RangeInclusive<u16> = 30000..=32767;

    /// A node with the default NodePort range, random selection and Cilium's
    /// default Maglev parameters.
    pub fn new(node_name: impl Into<String>, node_ips: Vec<IpAddr>) -> Self {
        NodeConfig {
            node_name: node_name.into(),
            node_ips,
            nodeport_range: Self::DEFAULT_NODEPORT_RANGE,
            algorithm: LbAlgorithm::Random,
            maglev: MaglevConfig::default(),
            max_backends_per_frontend: 65_535,
            mode: LbMode::Snat,
            zone: None,
            nat46x64: false,
        }
    }

    /// True when `addr` is one of this node's addresses or a loopback address:
    /// the addresses a wildcard NodePort or HostPort frontend answers on.
    pub fn is_local_addr(&self, addr: IpAddr) -> bool {
        addr.is_loopback() || self.node_ips.contains(&addr)
    }

    /// The node address of the same family as `like`, used as the SNAT source.
    pub fn node_ip_like(&self, like: IpAddr) -> Option<IpAddr> {
        self.node_ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv4() == like.is_ipv4())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if *self.nodeport_range.start() == 0 || self.nodeport_range.is_empty() {
            return Err(ConfigError::InvalidNodePortRange {
                range: self.nodeport_range.clone(),
            });
        }
        let has = |v4: bool| self.node_ips.iter().any(|ip| ip.is_ipv4() == v4);
        if self.nat46x64 && !(has(true) && has(false)) {
            return Err(ConfigError::Nat46x64NeedsDualStackNode);
        }
        Ok(())
    }
}

/// One backend of a desired frontend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DesiredBackend {
    /// Address, port and protocol.
    pub addr: L3n4Addr,
    /// State for this frontend.
    pub state: BackendState,
    /// Relative weight.
    pub weight: u16,
}

/// Node placement of a backend address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendPlacement {
    /// True when the backend runs on this node.
    pub local: bool,
    /// Its topology zone.
    pub zone: Option<String>,
}

impl BackendPlacement {
    /// Combines two declarations of the same backend address (by different
    /// services) independently of their order: local if either says so, and
    /// the smallest zone named.
    pub fn merge(&self, other: &BackendPlacement) -> BackendPlacement {
        let zone = match (&self.zone, &other.zone) {
            (Some(a), Some(b)) => Some(a.min(b).clone()),
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        BackendPlacement {
            local: self.local || other.local,
            zone,
        }
    }
}

/// One programmable frontend, before identifiers are assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredFrontend {
    /// Kind.
    pub kind: FrontendType,
    /// Owning service.
    pub service: ServiceName,
    /// Backends, sorted: selectable ones first (see [`DesiredFrontend::selectable`]).
    pub backends: Vec<DesiredBackend>,
    /// How many leading backends take new flows.
    pub selectable: usize,
    /// Selection algorithm.
    pub algorithm: LbAlgorithm,
    /// ClientIP affinity timeout.
    pub affinity_timeout: Option<u32>,
    /// Allowed client prefixes (LoadBalancer frontends only); empty allows all.
    pub source_ranges: Vec<ipnet::IpNet>,
    /// Only node-local backends (traffic policy Local).
    pub local_only: bool,
    /// The service has an internal-scope entry beside the external one.
    pub two_scopes: bool,
}

/// The whole desired state: validated and expanded, ready for the reconciler.
///
/// ```
/// use lb_core::*;
/// let node = NodeConfig::new("node-1", vec!["192.168.1.10".parse().unwrap()]);
/// let mut svc = Service::new("default/web".parse().unwrap());
/// svc.frontends.push(FrontendParams::new("0.0.0.0:30080".parse().unwrap(), FrontendType::NodePort));
/// svc.backends.push(BackendParams::new("10.0.0.5:8080".parse().unwrap()));
/// let desired = DesiredState::build(&node, &[svc]).unwrap();
/// // One frontend on the node IP, one wildcard.
/// assert_eq!(desired.frontends.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DesiredState {
    /// Every frontend entry to program.
    pub frontends: BTreeMap<FrontendKey, DesiredFrontend>,
    /// Placement of every backend address in use.
    pub backends: BTreeMap<L3n4Addr, BackendPlacement>,
    /// The Maglev parameters the tables are built with.
    pub maglev: MaglevConfig,
}

impl DesiredState {
    /// Validates `services` against `node` and expands them into frontend
    /// entries. On error nothing is returned; the caller's previous state is
    /// untouched.
    pub fn build(node: &NodeConfig, services: &[Service]) -> Result<DesiredState, ConfigError> {
        node.validate()?;
        let mut state = DesiredState {
            maglev: node.maglev,
            ..DesiredState::default()
        };
        let mut owners: BTreeMap<L3n4Addr, &ServiceName> = BTreeMap::new();
        let mut names = BTreeSet::new();
        for svc in services {
            if !names.insert(&svc.name) {
                return Err(ConfigError::DuplicateService {
                    service: svc.name.clone(),
                });
            }
            state.add_service(node, svc, &mut owners)?;
        }
        Ok(state)
    }

    fn add_service<'s>(
        &mut self,
        node: &NodeConfig,
        svc: &'s Service,
        owners: &mut BTreeMap<L3n4Addr, &'s ServiceName>,
    ) -> Result<(), ConfigError> {
        validate_service(node, svc)?;
        for fe in &svc.frontends {
            for addr in expand(node, fe) {
                if let Some(first) = owners.insert(addr, &svc.name) {
                    return Err(ConfigError::DuplicateFrontend {
                        frontend: addr,
                        first: first.clone(),
                        second: svc.name.clone(),
                    });
                }
                self.add_frontend(node, svc, fe, addr)?;
            }
        }
        Ok(())
    }

    fn add_frontend(
        &mut self,
        node: &NodeConfig,
        svc: &Service,
        fe: &FrontendParams,
        addr: L3n4Addr,
    ) -> Result<(), ConfigError> {
        let of_family = |v4: bool| -> Vec<&BackendParams> {
            svc.backends
                .iter()
                .filter(|b| {
                    b.port_name == fe.port_name
                        && b.addr.proto == addr.proto
                        && b.addr.addr.is_ipv4() == v4
                })
                .collect()
        };
        // Backends of the frontend's own family; with NAT46/64 on and none of
        // them, those of the other family (never a mix, see crate::nat46x64).
        let mut matching = of_family(addr.addr.is_ipv4());
        if matching.is_empty() && node.nat46x64 {
            matching = of_family(!addr.addr.is_ipv4());
        }
        let is_local = |b: &BackendParams| b.node_name.as_deref() == Some(node.node_name.as_str());
        // ClusterIP follows the internal policy; the other types follow the
        // external one, and get an internal-scope twin when the two differ.
        let (ext_policy, twin) = if fe.kind.is_external() {
            (
                svc.ext_traffic_policy,
                svc.ext_traffic_policy != svc.int_traffic_policy,
            )
        } else {
            (svc.int_traffic_policy, false)
        };
        let scopes = [
            Some((Scope::External, ext_policy)),
            twin.then_some((Scope::Internal, svc.int_traffic_policy)),
        ];
        for (scope, policy) in scopes.into_iter().flatten() {
            let local_only = policy == TrafficPolicy::Local;
            let chosen: Vec<&BackendParams> = matching
                .iter()
                .copied()
                .filter(|b| !local_only || is_local(b))
                .collect();
            // Topology-aware routing narrows what takes new flows under
            // policy Cluster (kube-proxy leaves Local alone).
            let zone_mask = if local_only {
                None
            } else {
                let at = crate::topology::Locality {
                    node: Some(node.node_name.as_str()),
                    zone: node.zone.as_deref(),
                };
                crate::topology::topology_filter(&chosen, at, svc.traffic_distribution)
                    .map(|(_, mask)| mask)
            };
            let (backends, selectable) = order_backends(&chosen, zone_mask.as_deref());
            if backends.len() > node.max_backends_per_frontend
                || (svc.algorithm.unwrap_or(node.algorithm) == LbAlgorithm::Maglev
                    && selectable > node.maglev.table_size() as usize)
            {
                let max = node
                    .max_backends_per_frontend
                    .min(node.maglev.table_size() as usize);
                return Err(ConfigError::TooManyBackends {
                    service: svc.name.clone(),
                    frontend: addr,
                    count: backends.len(),
                    max,
                });
            }
            for b in &chosen {
                let placement = BackendPlacement {
                    local: is_local(b),
                    zone: b.zone.clone(),
                };
                match self.backends.entry(b.addr) {
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(placement);
                    }
                    std::collections::btree_map::Entry::Occupied(mut o) => {
                        let merged = o.get().merge(&placement);
                        o.insert(merged);
                    }
                }
            }
            self.frontends.insert(
                FrontendKey { addr, scope },
                DesiredFrontend {
                    kind: fe.kind,
                    service: svc.name.clone(),
                    backends,
                    selectable,
                    algorithm: svc.algorithm.unwrap_or(node.algorithm),
                    affinity_timeout: svc.session_affinity.timeout_secs(),
                    source_ranges: if fe.kind == FrontendType::LoadBalancer {
                        svc.source_ranges.clone()
                    } else {
                        Vec::new()
                    },
                    local_only,
                    two_scopes: twin,
                },
            );
        }
        Ok(())
    }
}

/// Sorts a frontend's backends so those that take new flows come first and
/// says how many they are: the active ones with a non-zero weight (and, with
/// a topology `mask` parallel to `chosen`, only those it allows), or, when
/// there are none, the terminating ones (ProxyTerminatingEndpoints).
fn order_backends(
    chosen: &[&BackendParams],
    mask: Option<&[bool]>,
) -> (Vec<DesiredBackend>, usize) {
    let mut all: Vec<(DesiredBackend, bool)> = chosen
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let eligible = mask.and_then(|m| m.get(i).copied()).unwrap_or(true);
            (
                DesiredBackend {
                    addr: b.addr,
                    state: b.state,
                    weight: b.weight,
                },
                eligible,
            )
        })
        .collect();
    // By address; the first declaration of an address wins.
    all.sort_by_key(|(b, _)| b.addr);
    all.dedup_by_key(|(b, _)| b.addr);
    let takes = |(b, eligible): &(DesiredBackend, bool), state: BackendState| {
        *eligible && b.state == state && b.weight > 0
    };
    let fallback = if all.iter().any(|b| takes(b, BackendState::Active)) {
        BackendState::Active
    } else {
        BackendState::Terminating
    };
    // Stable partition: selectable first, each part still by address.
    all.sort_by_key(|b| !takes(b, fallback));
    let selectable = all.iter().take_while(|b| takes(b, fallback)).count();
    (all.into_iter().map(|(b, _)| b).collect(), selectable)
}

/// The frontend addresses a declared frontend stands for.
fn expand(node: &NodeConfig, fe: &FrontendParams) -> Vec<L3n4Addr> {
    if !(fe.kind.expands_on_node_ips() && fe.addr.addr.is_unspecified()) {
        return vec![fe.addr];
    }
    let mut out: Vec<L3n4Addr> = node
        .node_ips
        .iter()
        .filter(|ip| ip.is_ipv4() == fe.addr.addr.is_ipv4())
        .map(|ip| L3n4Addr::new(*ip, fe.addr.port, fe.addr.proto))
        .collect();
    out.push(fe.addr);
    out
}

fn validate_service(node: &NodeConfig, svc: &Service) -> Result<(), ConfigError> {
    let name = || svc.name.clone();
    if svc.frontends.is_empty() {
        return Err(ConfigError::NoFrontends { service: name() });
    }
    if let Some(t) = svc.session_affinity.timeout_secs() {
        if !(1..=86_400).contains(&t) {
            return Err(ConfigError::InvalidAffinityTimeout {
                service: name(),
                seconds: t,
            });
        }
    }
    for fe in &svc.frontends {
        let a = fe.addr;
        if a.port == 0 {
            return Err(ConfigError::PortZero {
                service: name(),
                field: format!("{} frontend {}", fe.kind, a),
            });
        }
        if fe.kind == FrontendType::NodePort && !node.nodeport_range.contains(&a.port) {
            return Err(ConfigError::NodePortOutOfRange {
                service: name(),
                port: a.port,
                range: node.nodeport_range.clone(),
            });
        }
        let reason = if a.addr.is_unspecified() && !fe.kind.expands_on_node_ips() {
            Some("unspecified address")
        } else if a.addr.is_multicast() {
            Some("multicast address")
        } else if a.addr == IpAddr::V4(std::net::Ipv4Addr::BROADCAST) {
            Some("broadcast address")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(ConfigError::InvalidFrontendAddress {
                service: name(),
                frontend: a,
                kind: fe.kind.as_str(),
                reason,
            });
        }
    }
    for b in &svc.backends {
        let reason = if b.addr.port == 0 {
            Some("port 0")
        } else if b.addr.addr.is_unspecified() {
            Some("unspecified address")
        } else if b.addr.addr.is_multicast() {
            Some("multicast address")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(ConfigError::InvalidBackend {
                service: name(),
                backend: b.addr,
                reason,
            });
        }
    }
    Ok(())
}
