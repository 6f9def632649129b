//! Shared fuzz input: a compact, arbitrary description of services that maps
//! onto lb-core's types, valid or not.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use lb_core::*;

/// One arbitrary service.
#[derive(Debug, Arbitrary)]
pub struct SvcSpec {
    pub name: u8,
    pub frontends: Vec<(u8, u16, u8, u8, bool)>, // (addr byte, port, kind, proto, ipv6)
    pub backends: Vec<(u8, u16, u8, u16, bool, bool)>, // (addr byte, port, state, weight, local, ipv6)
    pub ext_local: bool,
    pub int_local: bool,
    pub affinity: Option<u32>,
    pub maglev: bool,
    pub source_range: Option<(u8, u8)>,
}

/// The address the specs use for `byte` (IPv4: 10.0.byte/64.byte).
pub fn ip(byte: u8, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(byte)))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 0, byte / 64, byte))
    }
}

/// The node every target uses.
pub fn node() -> NodeConfig {
    let mut n = NodeConfig::new("n1", vec![ip(200, false), ip(200, true)]);
    n.maglev = MaglevConfig::new(251, 1).unwrap();
    n
}

impl SvcSpec {
    /// The lb-core service this spec describes (possibly invalid).
    pub fn to_service(&self) -> Service {
        let kinds = [
            FrontendType::ClusterIp,
            FrontendType::NodePort,
            FrontendType::LoadBalancer,
            FrontendType::ExternalIp,
            FrontendType::HostPort,
        ];
        let states = [
            BackendState::Active,
            BackendState::Terminating,
            BackendState::Quarantined,
            BackendState::Maintenance,
        ];
        let mut s = Service::new(ServiceName::new("ns", format!("s{}", self.name % 8)));
        for (a, port, kind, proto, v6) in self.frontends.iter().take(4) {
            let kind = kinds[*kind as usize % kinds.len()];
            let addr = if kind.expands_on_node_ips() && a % 2 == 0 {
                if *v6 {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                } else {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                }
            } else {
                ip(*a, *v6)
            };
            let proto = L4Proto::ALL[*proto as usize % 3];
            s.frontends
                .push(FrontendParams::new(L3n4Addr::new(addr, *port, proto), kind));
        }
        for (a, port, state, weight, local, v6) in self.backends.iter().take(8) {
            let mut b = BackendParams::new(L3n4Addr::new(ip(*a, *v6), *port, L4Proto::Tcp))
                .with_state(states[*state as usize % 4])
                .with_weight(*weight % 4);
            b.node_name = Some(if *local { "n1" } else { "n2" }.into());
            s.backends.push(b);
        }
        if self.ext_local {
            s.ext_traffic_policy = TrafficPolicy::Local;
        }
        if self.int_local {
            s.int_traffic_policy = TrafficPolicy::Local;
        }
        if let Some(t) = self.affinity {
            s.session_affinity = SessionAffinity::ClientIp {
                timeout_secs: t % 100_000,
            };
        }
        if self.maglev {
            s.algorithm = Some(LbAlgorithm::Maglev);
        }
        if let Some((a, len)) = self.source_range {
            if let Ok(net) = ipnet::IpNet::new(ip(a, false), len % 33) {
                s.source_ranges.push(net);
            }
        }
        s
    }
}
