//! The services of one end-to-end run: `n` ClusterIP services, NodePorts on
//! an evenly spread subset (at most [`MAX_NODE_PORTS`], the NodePort range
//! being 2768 ports), 10 backends each; the measured *target* service sits
//! in the middle of the list (kube-proxy writes services in Go map order, so
//! the middle is the expected position of any service in iptables' linear
//! `KUBE-SERVICES` chain) and its backends are the real HTTP servers. An
//! extra `iperf` service with one backend (iperf3 needs its control and
//! data connections on the same server) comes last.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use lb_core::{
    BackendParams, FrontendParams, FrontendType, L3n4Addr, L4Proto, Service, ServiceName,
};

/// At most this many services get a NodePort.
pub const MAX_NODE_PORTS: usize = 2000;
/// Backends per (non-target) service.
pub const BACKENDS_PER_SERVICE: usize = 10;
/// The ClusterIP service port.
pub const SERVICE_PORT: u16 = 80;
/// The iperf3 service port (and backend port).
pub const IPERF_PORT: u16 = 5201;
/// First NodePort.
pub const FIRST_NODE_PORT: u16 = 30000;

/// The generated services and where to send traffic.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// All services (the target, the filler services and `iperf`).
    pub services: Vec<Service>,
    /// Index of the target service.
    pub target: usize,
    /// The target's ClusterIP frontend.
    pub cluster_ip: SocketAddrV4,
    /// The target's NodePort.
    pub node_port: u16,
    /// The iperf service's ClusterIP frontend.
    pub iperf: SocketAddrV4,
}

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => unreachable!("fixtures are IPv4"),
    }
}

impl Scenario {
    /// `n` services (n >= 1); the target's backends are `real`, the iperf
    /// service's single backend is `iperf_backend`.
    pub fn new(n: usize, real: &[SocketAddrV4], iperf_backend: SocketAddrV4) -> Self {
        assert!(n >= 1, "at least one service");
        let stride = n.div_ceil(MAX_NODE_PORTS);
        let target = (n / 2) / stride * stride;
        let mut services = Vec::with_capacity(n + 1);
        let mut node_port = 0;
        for i in 0..n {
            let mut svc = Service::new(ServiceName::new("default", format!("svc-{i}")));
            let cip = crate::cluster_ip(i);
            svc.frontends.push(named(FrontendParams::new(
                L3n4Addr::new(cip, SERVICE_PORT, L4Proto::Tcp),
                FrontendType::ClusterIp,
            )));
            if i % stride == 0 {
                let np = FIRST_NODE_PORT + u16::try_from(i / stride).expect("<= 2000 NodePorts");
                if i == target {
                    node_port = np;
                }
                svc.frontends.push(named(FrontendParams::new(
                    L3n4Addr::new(Ipv4Addr::UNSPECIFIED.into(), np, L4Proto::Tcp),
                    FrontendType::NodePort,
                )));
            }
            let backends: Vec<L3n4Addr> = if i == target {
                real.iter()
                    .map(|a| L3n4Addr::new(IpAddr::V4(*a.ip()), a.port(), L4Proto::Tcp))
                    .collect()
            } else {
                (0..BACKENDS_PER_SERVICE)
                    .map(|j| crate::backend_addr(i, j, BACKENDS_PER_SERVICE))
                    .collect()
            };
            for b in backends {
                let mut b = BackendParams::new(b);
                b.port_name = "http".into();
                svc.backends.push(b);
            }
            services.push(svc);
        }
        let iperf_ip = crate::cluster_ip(n);
        let mut iperf = Service::new(ServiceName::new("default", "iperf"));
        iperf.frontends.push(FrontendParams::new(
            L3n4Addr::new(iperf_ip, IPERF_PORT, L4Proto::Tcp),
            FrontendType::ClusterIp,
        ));
        iperf.backends.push(BackendParams::new(L3n4Addr::new(
            IpAddr::V4(*iperf_backend.ip()),
            iperf_backend.port(),
            L4Proto::Tcp,
        )));
        services.push(iperf);
        Scenario {
            target,
            cluster_ip: SocketAddrV4::new(v4(crate::cluster_ip(target)), SERVICE_PORT),
            node_port,
            iperf: SocketAddrV4::new(v4(iperf_ip), IPERF_PORT),
            services,
        }
    }

    /// The target's ClusterIP as a socket address.
    pub fn cluster_ip_addr(&self) -> SocketAddr {
        SocketAddr::V4(self.cluster_ip)
    }
}

fn named(mut fe: FrontendParams) -> FrontendParams {
    fe.port_name = "http".into();
    fe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_in_the_middle_with_a_node_port() {
        let real = ["10.200.1.2:8080".parse().unwrap()];
        let iperf = "10.200.1.2:5201".parse().unwrap();
        for n in [1, 10, 1000, 10_000] {
            let s = Scenario::new(n, &real, iperf);
            assert_eq!(s.services.len(), n + 1);
            assert!(
                s.target <= n / 2 && s.target + 5 > n / 2,
                "{n}: {}",
                s.target
            );
            assert!(s.node_port >= FIRST_NODE_PORT, "{n}");
            let nps = s
                .services
                .iter()
                .filter(|x| x.frontends.iter().any(|f| f.kind == FrontendType::NodePort))
                .count();
            assert!(
                nps <= MAX_NODE_PORTS && nps >= n.min(MAX_NODE_PORTS) / 2,
                "{n}: {nps}"
            );
            let ports = crate::kubeproxy::service_ports(&s.services).unwrap();
            assert_eq!(ports[s.target].endpoints.len(), 1);
            assert_eq!(ports[s.target].node_port, Some(s.node_port));
            lb_core::DesiredState::build(&crate::node(), &s.services).unwrap();
        }
    }
}
