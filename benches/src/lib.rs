//! Shared fixtures for the `lb-core` benchmarks in `benches/benches/` and
//! the allocation test in `benches/tests/`.
//!
//! Everything here is deterministic: the same arguments always produce the
//! same services, addresses, flows and pseudo-random numbers, so two bench
//! runs measure the same work.
//!
//! Address plan (all IPv4, no overlaps, every address unique):
//!
//! | what                | range            | room      |
//! |---------------------|------------------|-----------|
//! | ClusterIPs          | `10.96.0.0/12`   | ~1M       |
//! | pod (backend) IPs   | `10.0.0.0/10`    | ~4M       |
//! | replacement pods    | `10.64.0.0/12`   | ~1M       |
//! | clients             | `172.16.0.0/12`  | ~1M       |
//! | this node           | `192.168.1.10`   |           |

pub mod e2e;
pub mod kubeproxy;

use std::net::{IpAddr, Ipv4Addr};

use lb_core::{
    BackendParams, DesiredState, FlowKey, Frontend, FrontendKey, FrontendParams, FrontendType,
    L3n4Addr, L4Proto, LbAlgorithm, NodeConfig, Reconciler, Scope, Service, ServiceName,
    SessionAffinity, Tables,
};

/// Name of the node the benchmarks run "on".
pub const NODE_NAME: &str = "node-0";
/// How many nodes the backends are spread over (round-robin), so that
/// `1 / NODES` of them are local to [`NODE_NAME`].
pub const NODES: usize = 8;
/// The port every ClusterIP frontend listens on.
pub const SERVICE_PORT: u16 = 80;
/// The port every backend listens on.
pub const BACKEND_PORT: u16 = 8080;
/// The first NodePort handed out (Kubernetes' range starts here).
pub const FIRST_NODE_PORT: u16 = 30000;

const CLUSTER_IP_BASE: u32 = 0x0a60_0000; // 10.96.0.0
const CLUSTER_IP_ROOM: u32 = 1 << 20; // /12
const POD_IP_BASE: u32 = 0x0a00_0000; // 10.0.0.0
const POD_IP_ROOM: u32 = 1 << 22; // /10
const REPLACEMENT_IP_BASE: u32 = 0x0a40_0000; // 10.64.0.0
const CLIENT_IP_BASE: u32 = 0xac10_0000; // 172.16.0.0

/// The node configuration every benchmark uses: [`NODE_NAME`] with the
/// single address `192.168.1.10`, the default NodePort range, random
/// selection by default and Cilium's default Maglev parameters (M = 16381).
pub fn node() -> NodeConfig {
    NodeConfig::new(NODE_NAME, vec![IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10))])
}

/// The ClusterIP of service number `i`: `10.96.0.0 + i + 1`.
pub fn cluster_ip(i: usize) -> IpAddr {
    let i = u32::try_from(i).expect("service index fits u32");
    assert!(i + 1 < CLUSTER_IP_ROOM, "out of ClusterIPs");
    IpAddr::V4(Ipv4Addr::from(CLUSTER_IP_BASE + i + 1))
}

/// The ClusterIP frontend address (`:80/TCP`) of service number `i`.
pub fn cluster_ip_frontend(i: usize) -> L3n4Addr {
    L3n4Addr::new(cluster_ip(i), SERVICE_PORT, L4Proto::Tcp)
}

/// The address of backend `j` of service `i` when every service has
/// `per_service` backends: a unique pod IP in `10.0.0.0/10`, port 8080/TCP.
pub fn backend_addr(i: usize, j: usize, per_service: usize) -> L3n4Addr {
    let n = u32::try_from(i * per_service + j + 1).expect("backend index fits u32");
    assert!(n < POD_IP_ROOM, "out of pod IPs");
    L3n4Addr::new(
        IpAddr::V4(Ipv4Addr::from(POD_IP_BASE + n)),
        BACKEND_PORT,
        L4Proto::Tcp,
    )
}

/// What [`ServiceSpec::build`] generates.
///
/// Every service `default/svc-{i}` has a ClusterIP frontend
/// ([`cluster_ip_frontend`]), optionally a NodePort frontend `0.0.0.0:{30000 + i}`
/// (which [`DesiredState::build`] expands to the node IP plus the wildcard
/// entry, so three frontend entries per service), `backends` active backends
/// with the default weight spread round-robin over [`NODES`] nodes, traffic
/// policy Cluster, and optionally ClientIP session affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Number of services.
    pub services: usize,
    /// Backends per service.
    pub backends: usize,
    /// Selection algorithm of every service.
    pub algorithm: LbAlgorithm,
    /// Also give every service a NodePort frontend (at most 2768 services:
    /// the size of the default NodePort range).
    pub node_port: bool,
    /// ClientIP session affinity with the Kubernetes default timeout.
    pub affinity: bool,
}

impl ServiceSpec {
    /// ClusterIP-only services, no affinity.
    pub fn cluster_ip(services: usize, backends: usize, algorithm: LbAlgorithm) -> Self {
        ServiceSpec {
            services,
            backends,
            algorithm,
            node_port: false,
            affinity: false,
        }
    }

    /// The same services with a NodePort frontend each.
    pub fn with_node_port(mut self) -> Self {
        self.node_port = true;
        self
    }

    /// The same services with ClientIP session affinity.
    pub fn with_affinity(mut self) -> Self {
        self.affinity = true;
        self
    }

    /// Generates the services.
    ///
    /// # Panics
    ///
    /// When NodePorts are asked for and there are more services than ports
    /// in the default NodePort range, or when the address ranges run out.
    pub fn build(&self) -> Vec<Service> {
        let np_room = usize::from(
            NodeConfig::DEFAULT_NODEPORT_RANGE.end() - NodeConfig::DEFAULT_NODEPORT_RANGE.start(),
        ) + 1;
        assert!(
            !self.node_port || self.services <= np_room,
            "{} services do not fit the NodePort range ({np_room} ports)",
            self.services
        );
        (0..self.services)
            .map(|i| {
                let mut svc = Service::new(ServiceName::new("default", format!("svc-{i}")));
                svc.algorithm = Some(self.algorithm);
                svc.frontends.push(FrontendParams::new(
                    cluster_ip_frontend(i),
                    FrontendType::ClusterIp,
                ));
                if self.node_port {
                    let port = FIRST_NODE_PORT + u16::try_from(i).expect("checked above");
                    svc.frontends.push(FrontendParams::new(
                        L3n4Addr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port, L4Proto::Tcp),
                        FrontendType::NodePort,
                    ));
                }
                if self.affinity {
                    svc.session_affinity = SessionAffinity::client_ip();
                }
                svc.backends = (0..self.backends)
                    .map(|j| {
                        BackendParams::new(backend_addr(i, j, self.backends))
                            .on_node(format!("node-{}", (i * self.backends + j) % NODES))
                    })
                    .collect();
                svc
            })
            .collect()
    }
}

/// `n_services` ClusterIP + NodePort services with `n_backends` backends each
/// (see [`ServiceSpec`]). At most 2768 services (the NodePort range); use
/// [`ServiceSpec::cluster_ip`] for more.
pub fn services(n_services: usize, n_backends: usize, algorithm: LbAlgorithm) -> Vec<Service> {
    ServiceSpec::cluster_ip(n_services, n_backends, algorithm)
        .with_node_port()
        .build()
}

/// Replaces backend `backend` of service `service` with a fresh pod at a
/// new address (the next free one in `10.64.0.0/12`, numbered by `serial`):
/// one endpoint change, as when a pod is rescheduled.
pub fn replace_backend(services: &mut [Service], service: usize, backend: usize, serial: u32) {
    let b = &mut services[service].backends[backend];
    b.addr = L3n4Addr::new(
        IpAddr::V4(Ipv4Addr::from(REPLACEMENT_IP_BASE + serial + 1)),
        BACKEND_PORT,
        L4Proto::Tcp,
    );
}

/// Builds the desired state of `services` on [`node`].
///
/// # Panics
///
/// When the services are invalid (the fixtures never are).
pub fn desired(services: &[Service]) -> DesiredState {
    DesiredState::build(&node(), services).expect("valid fixture services")
}

/// A reconciler that has already programmed `services` (plan + commit from
/// empty), as an agent looks after its initial sync.
pub fn programmed(services: &[Service]) -> Reconciler {
    let mut reconciler = Reconciler::new();
    let desired = desired(services);
    let plan = reconciler.plan(&desired).expect("valid fixture services");
    reconciler.commit(plan, &desired);
    reconciler
}

/// The tables programmed for the services of `spec`.
pub fn tables(spec: &ServiceSpec) -> Tables {
    programmed(&spec.build()).current().clone()
}

/// The programmed tables of one ClusterIP service with `n_backends` backends
/// and the given algorithm (plus `with_affinity`), and its frontend entry.
pub fn single_frontend(
    n_backends: usize,
    algorithm: LbAlgorithm,
    with_affinity: bool,
) -> (Tables, Frontend) {
    let mut spec = ServiceSpec::cluster_ip(1, n_backends, algorithm);
    spec.affinity = with_affinity;
    let tables = programmed(&spec.build()).current().clone();
    let fe = frontend_of(&tables, cluster_ip_frontend(0)).clone();
    (tables, fe)
}

/// The external-scope frontend entry for `addr` in `tables`.
///
/// # Panics
///
/// When there is none.
pub fn frontend_of(tables: &Tables, addr: L3n4Addr) -> &Frontend {
    tables
        .frontend_by_key(&FrontendKey {
            addr,
            scope: Scope::External,
        })
        .expect("frontend is programmed")
}

/// Client number `c` (`172.16.0.0 + c + 1`).
pub fn client_ip(c: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(CLIENT_IP_BASE + c + 1))
}

/// A TCP flow from client `client` (source port `sport`) to `frontend`.
pub fn flow(client: u32, sport: u16, frontend: L3n4Addr) -> FlowKey {
    FlowKey {
        src: client_ip(client),
        dst: frontend.addr,
        sport,
        dport: frontend.port,
        proto: frontend.proto,
    }
}

/// A small, fast, deterministic xorshift32 generator for bench inputs
/// (flow hashes, entropy), so inputs vary and branch predictors cannot
/// learn a single fixed path.
#[derive(Debug, Clone)]
pub struct XorShift32(u32);

impl XorShift32 {
    /// A generator from a non-zero seed (0 is replaced by 1).
    pub fn new(seed: u32) -> Self {
        XorShift32(seed.max(1))
    }

    /// The next number.
    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    /// `n` numbers.
    pub fn take(&mut self, n: usize) -> Vec<u32> {
        (0..n).map(|_| self.next_u32()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_valid_and_expand_as_documented() {
        let d = desired(&services(3, 4, LbAlgorithm::Random));
        // ClusterIP + node IP NodePort + wildcard NodePort, per service.
        assert_eq!(d.frontends.len(), 9);
        assert_eq!(d.backends.len(), 12);
        let d = desired(&ServiceSpec::cluster_ip(100, 10, LbAlgorithm::Maglev).build());
        assert_eq!(d.frontends.len(), 100);
        assert_eq!(d.backends.len(), 1000);
    }

    #[test]
    fn one_backend_replacement_is_a_small_plan() {
        let mut svcs = ServiceSpec::cluster_ip(50, 10, LbAlgorithm::Random).build();
        let reconciler = programmed(&svcs);
        assert!(reconciler.plan(&desired(&svcs)).unwrap().ops.is_empty());
        replace_backend(&mut svcs, 7, 3, 0);
        let ops = reconciler.plan(&desired(&svcs)).unwrap().ops;
        // New backend, the frontend, the old backend's removal.
        assert_eq!(ops.len(), 3, "{ops:?}");
    }

    #[test]
    fn single_frontend_has_its_backends() {
        let (_, fe) = single_frontend(10, LbAlgorithm::Maglev, false);
        assert_eq!(fe.selectable_backends().len(), 10);
        assert_eq!(fe.maglev.as_ref().map(|t| t.len()), Some(16381));
    }
}
