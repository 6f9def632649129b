//! Faithful reproductions of kube-proxy's `iptables` and `nftables` modes,
//! for side-by-side benchmarks against our eBPF dataplane.
//!
//! No kube-proxy binary is installable on the benchmark machine, so this
//! module generates the rule sets kube-proxy would program for the same
//! services, following the structure of kube-proxy's
//! `pkg/proxy/iptables/proxier.go` and `pkg/proxy/nftables/proxier.go`
//! (Kubernetes 1.31 layout):
//!
//! - [`iptables`]: an `iptables-restore` input with the `nat` chains
//!   `KUBE-SERVICES` → `KUBE-SVC-<hash>` → `KUBE-SEP-<hash>` (DNAT), the
//!   `-m statistic --mode random --probability 1/n, 1/(n-1), …` spread,
//!   `KUBE-NODEPORTS` → `KUBE-EXT-<hash>`, `KUBE-MARK-MASQ` and
//!   `KUBE-POSTROUTING` (masquerade), plus kube-proxy's `filter` chains; and
//!   the partial-sync input kube-proxy writes when one service's endpoints
//!   change (`MinimizeIPTablesRestore`, on by default since 1.27).
//! - [`nftables`]: an `nft -f` input for `table ip kube-proxy` with the
//!   `service-ips` / `service-nodeports` verdict maps, per-service chains
//!   with `numgen random mod N vmap`, per-endpoint chains with `dnat`, and
//!   masquerading; and the incremental transaction kube-proxy runs when one
//!   service's endpoints change.
//!
//! The input is lb-core's service model ([`lb_core::Service`]), converted to
//! Kubernetes service ports by [`service_ports`]. Only what kube-proxy does
//! for ClusterIP + NodePort services with `Cluster` traffic policy and no
//! session affinity is reproduced (that is what the benchmarks use); other
//! inputs are refused with [`KubeProxyError`].

pub mod iptables;
pub mod nftables;

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use lb_core::{
    BackendState, FrontendType, L4Proto, Service, ServiceName, SessionAffinity, TrafficPolicy,
};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Why a service cannot be rendered as kube-proxy rules.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KubeProxyError {
    /// A feature the reproduction does not cover.
    #[error("service {service}: {what} is not reproduced")]
    Unsupported {
        /// The service.
        service: ServiceName,
        /// What it uses.
        what: String,
    },
    /// A NodePort frontend without a ClusterIP frontend of the same port name.
    #[error("service {service}: NodePort {port} has no ClusterIP port named {port_name:?}")]
    OrphanNodePort {
        /// The service.
        service: ServiceName,
        /// The node port.
        port: u16,
        /// Its port name.
        port_name: String,
    },
}

/// Node-wide settings kube-proxy takes from its flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `--cluster-cidr`: traffic to a ClusterIP from outside it is masqueraded.
    pub cluster_cidr: String,
    /// The service CIDR (`--service-cluster-ip-range`), for nftables'
    /// "drop traffic to unallocated ClusterIPs" rule.
    pub service_cidr: String,
    /// The node's IPs (nftables' `nodeport-ips` set).
    pub node_ips: Vec<Ipv4Addr>,
    /// `--iptables-masquerade-bit` as a mark (kube-proxy's default `0x4000`).
    pub masquerade_mark: u32,
}

impl ProxyConfig {
    /// The defaults kube-proxy runs with: masquerade bit 14 (`0x4000`).
    pub fn new(cluster_cidr: &str, service_cidr: &str, node_ips: Vec<Ipv4Addr>) -> Self {
        ProxyConfig {
            cluster_cidr: cluster_cidr.to_owned(),
            service_cidr: service_cidr.to_owned(),
            node_ips,
            masquerade_mark: 0x4000,
        }
    }
}

/// One Kubernetes service port (kube-proxy's unit of work): a ClusterIP
/// `ip:port/proto`, an optional NodePort and the ready endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The service.
    pub service: ServiceName,
    /// The port's name (may be empty, as in Kubernetes).
    pub port_name: String,
    /// The protocol.
    pub proto: L4Proto,
    /// The ClusterIP.
    pub cluster_ip: Ipv4Addr,
    /// The service port.
    pub port: u16,
    /// The NodePort, if any.
    pub node_port: Option<u16>,
    /// Ready endpoints in order.
    pub endpoints: Vec<SocketAddrV4>,
}

impl ServicePort {
    /// kube-proxy's `ServicePortName.String()`: `ns/name:port`.
    pub fn name_string(&self) -> String {
        format!("{}:{}", self.service, self.port_name)
    }

    /// The protocol as kube-proxy writes it in rules (`tcp`, `udp`, `sctp`).
    pub fn proto_lower(&self) -> &'static str {
        proto_lower(self.proto)
    }
}

fn proto_lower(p: L4Proto) -> &'static str {
    match p {
        L4Proto::Tcp => "tcp",
        L4Proto::Udp => "udp",
        L4Proto::Sctp => "sctp",
    }
}

/// Converts lb-core services to Kubernetes service ports: one per ClusterIP
/// frontend; a NodePort frontend (on `0.0.0.0` or a node IP, both mean "every
/// node IP" to kube-proxy) joins the ClusterIP port with the same port name
/// and protocol; the endpoints are the active backends with that port name
/// and protocol. Services keep their order, ports their frontend order.
///
/// # Errors
///
/// [`KubeProxyError`] for IPv6, LoadBalancer/ExternalIP/HostPort frontends,
/// `Local` traffic policies, session affinity, source ranges, and NodePorts
/// without a matching ClusterIP port.
pub fn service_ports(services: &[Service]) -> Result<Vec<ServicePort>, KubeProxyError> {
    let mut out = Vec::new();
    for svc in services {
        let unsupported = |what: &str| KubeProxyError::Unsupported {
            service: svc.name.clone(),
            what: what.to_owned(),
        };
        if svc.ext_traffic_policy != TrafficPolicy::Cluster
            || svc.int_traffic_policy != TrafficPolicy::Cluster
        {
            return Err(unsupported("traffic policy Local"));
        }
        if svc.session_affinity != SessionAffinity::None {
            return Err(unsupported("session affinity"));
        }
        if !svc.source_ranges.is_empty() {
            return Err(unsupported("loadBalancerSourceRanges"));
        }
        let first = out.len();
        for fe in &svc.frontends {
            if fe.kind != FrontendType::ClusterIp {
                continue;
            }
            let IpAddr::V4(ip) = fe.addr.addr else {
                return Err(unsupported("IPv6"));
            };
            let endpoints = svc
                .backends
                .iter()
                .filter(|b| {
                    b.state == BackendState::Active
                        && b.port_name == fe.port_name
                        && b.addr.proto == fe.addr.proto
                })
                .map(|b| match b.addr.addr {
                    IpAddr::V4(a) => Ok(SocketAddrV4::new(a, b.addr.port)),
                    IpAddr::V6(_) => Err(unsupported("IPv6")),
                })
                .collect::<Result<_, _>>()?;
            out.push(ServicePort {
                service: svc.name.clone(),
                port_name: fe.port_name.clone(),
                proto: fe.addr.proto,
                cluster_ip: ip,
                port: fe.addr.port,
                node_port: None,
                endpoints,
            });
        }
        for fe in &svc.frontends {
            match fe.kind {
                FrontendType::ClusterIp => {}
                FrontendType::NodePort => {
                    if fe.addr.addr.is_ipv6() {
                        return Err(unsupported("IPv6"));
                    }
                    let sp = out[first..]
                        .iter_mut()
                        .find(|sp| sp.port_name == fe.port_name && sp.proto == fe.addr.proto)
                        .ok_or_else(|| KubeProxyError::OrphanNodePort {
                            service: svc.name.clone(),
                            port: fe.addr.port,
                            port_name: fe.port_name.clone(),
                        })?;
                    // 0.0.0.0:N and nodeIP:N are the same NodePort to kube-proxy.
                    sp.node_port = Some(fe.addr.port);
                }
                other => return Err(unsupported(&format!("{other:?} frontends"))),
            }
        }
    }
    Ok(out)
}

/// RFC 4648 base32 (standard alphabet, no padding needed for our prefixes)
/// of SHA-256(`input`), as kube-proxy builds its chain-name hashes.
pub(crate) fn sha256_base32(input: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(input.as_bytes());
    let mut out = String::with_capacity(56);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &byte in digest.iter() {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::{BackendParams, FrontendParams, L3n4Addr};

    #[test]
    fn base32_of_sha256_matches_rfc4648() {
        // sha256("") = e3b0c442..., whose RFC 4648 base32 starts like this
        // (checked with `printf '' | sha256sum | xxd -r -p | base32`).
        assert!(
            sha256_base32("").starts_with("4OYMIQUY7QOBJGX36TEJS35ZEQT24QPEMSNZGTFESWMRW6CSXBKQ")
        );
    }

    #[test]
    fn nodeport_joins_its_clusterip_port_and_only_active_backends_count() {
        let mut s = Service::new(ServiceName::new("ns", "web"));
        s.frontends.push(FrontendParams::new(
            "10.96.0.1:80".parse().unwrap(),
            FrontendType::ClusterIp,
        ));
        s.frontends.push(FrontendParams::new(
            "0.0.0.0:30080".parse().unwrap(),
            FrontendType::NodePort,
        ));
        s.backends
            .push(BackendParams::new("10.0.0.1:8080".parse().unwrap()));
        let mut gone = BackendParams::new("10.0.0.2:8080".parse().unwrap());
        gone.state = BackendState::Terminating;
        s.backends.push(gone);
        s.backends.push(BackendParams::new(L3n4Addr::new(
            "10.0.0.3".parse().unwrap(),
            53,
            L4Proto::Udp,
        )));
        let ports = service_ports(&[s]).unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].node_port, Some(30080));
        assert_eq!(ports[0].endpoints, vec!["10.0.0.1:8080".parse().unwrap()]);
        assert_eq!(ports[0].name_string(), "ns/web:");
    }

    #[test]
    fn unsupported_inputs_are_refused() {
        let mut s = Service::new(ServiceName::new("ns", "lb"));
        s.frontends.push(FrontendParams::new(
            "203.0.113.1:80".parse().unwrap(),
            FrontendType::LoadBalancer,
        ));
        assert!(matches!(
            service_ports(&[s]),
            Err(KubeProxyError::Unsupported { .. })
        ));
        let mut s = Service::new(ServiceName::new("ns", "np"));
        s.frontends.push(FrontendParams::new(
            "0.0.0.0:30080".parse().unwrap(),
            FrontendType::NodePort,
        ));
        assert!(matches!(
            service_ports(&[s]),
            Err(KubeProxyError::OrphanNodePort { port: 30080, .. })
        ));
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use lb_core::{BackendParams, FrontendParams};

    /// `default/web` (ClusterIP 10.96.0.10:80 + NodePort 30080, two
    /// endpoints) and `default/dns` (ClusterIP 10.96.0.11:53/TCP, one).
    pub fn two_services() -> (ProxyConfig, Vec<ServicePort>) {
        let mut web = Service::new(ServiceName::new("default", "web"));
        let mut cip =
            FrontendParams::new("10.96.0.10:80".parse().unwrap(), FrontendType::ClusterIp);
        cip.port_name = "http".into();
        let mut np = FrontendParams::new("0.0.0.0:30080".parse().unwrap(), FrontendType::NodePort);
        np.port_name = "http".into();
        web.frontends = vec![cip, np];
        for b in ["10.200.1.2:8080", "10.200.2.2:8080"] {
            let mut b = BackendParams::new(b.parse().unwrap());
            b.port_name = "http".into();
            web.backends.push(b);
        }
        let mut dns = Service::new(ServiceName::new("default", "dns"));
        dns.frontends.push(FrontendParams::new(
            "10.96.0.11:53".parse().unwrap(),
            FrontendType::ClusterIp,
        ));
        dns.backends
            .push(BackendParams::new("10.200.1.2:5353".parse().unwrap()));
        let cfg = ProxyConfig::new(
            "10.0.0.0/8",
            "10.96.0.0/12",
            vec![Ipv4Addr::new(192, 168, 10, 1)],
        );
        (cfg, service_ports(&[web, dns]).unwrap())
    }
}

/// Feeds `input` to `cmd` on standard input (e.g. `iptables-restore
/// --noflush` or `nft -f -`, usually wrapped in `nsenter --net=…`) and
/// fails with its standard error when it exits unsuccessfully.
///
/// # Errors
///
/// The spawn or I/O error, or [`std::io::ErrorKind::Other`] with the
/// command's standard error.
pub fn feed(cmd: &mut std::process::Command, input: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let write = stdin.write_all(input.as_bytes());
    drop(stdin);
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    write
}
