//! The NAT46/64 lab the dataplanes' end-to-end tests share: on a
//! [`Topology`], an IPv4 service served only by IPv6 backends (NAT46) and
//! an IPv6 service served only by IPv4 backends (NAT64), TCP and UDP, with
//! echo servers that report the peer they saw, and the client-side check
//! (every answer came from the node's address of the backend's family,
//! both backends of each family served).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lb_core::{BackendParams, FrontendParams, FrontendType, NodeConfig, Service};

use crate::topology::{VIP_V4, VIP_V6};
use crate::{tcp_request, udp_request, EchoServer, Topology};

/// NodePorts of the lab's services: `nat46` on `0.0.0.0`, `nat64` on `::`.
#[derive(Debug, Clone, Copy)]
pub struct NodePorts {
    /// The NAT46 service's NodePort.
    pub nat46: u16,
    /// The NAT64 service's NodePort.
    pub nat64: u16,
}

/// The lab's node (`node-1`, an address of each family, NAT46/64 on), its
/// two services and the echo servers behind them (kept alive by holding
/// the value).
pub struct Nat46x64Lab {
    /// The node configuration.
    pub node: NodeConfig,
    /// `default/v6only` (IPv4 frontends) and `default/v4only` (IPv6 ones).
    pub services: Vec<Service>,
    /// TCP 8080 and UDP 5353 echo servers of both families per backend.
    pub servers: Vec<EchoServer>,
}

fn fe(addr: String, kind: FrontendType) -> FrontendParams {
    FrontendParams::new(addr.parse().expect("frontend"), kind)
}

impl Nat46x64Lab {
    /// Builds the lab on `topo`: ClusterIPs on the topology's VIPs (TCP 80,
    /// UDP 53 -> 8080, 5353) and, when given, the NodePorts.
    pub fn new(topo: &Topology, node_ports: Option<NodePorts>) -> Self {
        let mut node = NodeConfig::new(
            "node-1",
            vec![IpAddr::V4(topo.node_v4), IpAddr::V6(topo.node_v6)],
        );
        node.nat46x64 = true;
        // NAT46: IPv4 frontends, IPv6 backends only.
        let mut s46 = Service::new("default/v6only".parse().expect("name"));
        s46.frontends = vec![
            fe(format!("{VIP_V4}:80"), FrontendType::ClusterIp),
            fe(format!("{VIP_V4}:53/UDP"), FrontendType::ClusterIp),
        ];
        // NAT64: IPv6 frontends, IPv4 backends only.
        let mut s64 = Service::new("default/v4only".parse().expect("name"));
        s64.frontends = vec![
            fe(format!("[{VIP_V6}]:80"), FrontendType::ClusterIp),
            fe(format!("[{VIP_V6}]:53/UDP"), FrontendType::ClusterIp),
        ];
        if let Some(np) = node_ports {
            s46.frontends
                .push(fe(format!("0.0.0.0:{}", np.nat46), FrontendType::NodePort));
            s64.frontends
                .push(fe(format!("[::]:{}", np.nat64), FrontendType::NodePort));
        }
        let be =
            |addr: String| BackendParams::new(addr.parse().expect("backend")).on_node("node-1");
        let mut servers = Vec::new();
        for b in &topo.backends {
            let tag = format!("backend-{}:", b.index + 1);
            for (svc, ip) in [(&mut s46, IpAddr::V6(b.v6)), (&mut s64, IpAddr::V4(b.v4))] {
                let tcp = SocketAddr::new(ip, 8080);
                servers
                    .push(EchoServer::tcp_with_peer(&b.ns, tcp, tag.as_bytes()).expect("tcp echo"));
                svc.backends.push(be(tcp.to_string()));
                let udp = SocketAddr::new(ip, 5353);
                servers
                    .push(EchoServer::udp_with_peer(&b.ns, udp, tag.as_bytes()).expect("udp echo"));
                svc.backends.push(be(format!("{udp}/UDP")));
            }
        }
        Nat46x64Lab {
            node,
            services: vec![s46, s64],
            servers,
        }
    }
}

/// From the client namespace, 16 rounds of: TCP to the NAT46 ClusterIP
/// (and NodePort), UDP to the NAT46 ClusterIP, the same for NAT64. Panics
/// unless every answer echoes the message and names the node's address of
/// the backend's family as the peer, and both backends of each family
/// served. Bounded: every request has a 5 s timeout.
pub fn check_nat46x64_clients(topo: &Topology, node_ports: Option<NodePorts>) {
    let t = Duration::from_secs(5);
    let node4 = topo.node_v4.to_string();
    let node6 = topo.node_v6.to_string();
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8 answer");
    let mut tcp46 = vec![SocketAddr::from((VIP_V4, 80))];
    let mut tcp64 = vec![SocketAddr::from((VIP_V6, 80))];
    if let Some(np) = node_ports {
        tcp46.push(SocketAddr::from((topo.node_v4, np.nat46)));
        tcp64.push(SocketAddr::from((topo.node_v6, np.nat64)));
    }
    let mut seen46 = BTreeSet::new();
    let mut seen64 = BTreeSet::new();
    // Random selection over two backends: with 16 rounds a family sees
    // only one backend with probability 2^-15 (6 gave 3%).
    for i in 0..16 {
        let msg = format!("ping-{i}");
        for &dst in &tcp46 {
            // NAT46: the IPv6 backend sees the node's IPv6 address.
            let out = text(
                tcp_request(&topo.client, dst, msg.as_bytes(), t)
                    .unwrap_or_else(|e| panic!("TCP NAT46 to {dst}: {e}")),
            );
            assert!(out.ends_with(&msg), "{out}");
            assert!(
                out.contains(&format!("[[{node6}]:")),
                "not from the node's IPv6: {out}"
            );
            seen46.insert(out.split(':').next().unwrap_or_default().to_string());
        }
        let out = text(
            udp_request(&topo.client, SocketAddr::from((VIP_V4, 53)), b"u46", t)
                .expect("UDP NAT46"),
        );
        assert!(
            out.contains(&format!("[[{node6}]:")) && out.ends_with("u46"),
            "{out}"
        );
        for &dst in &tcp64 {
            // NAT64: the IPv4 backend sees the node's IPv4 address.
            let out = text(
                tcp_request(&topo.client, dst, msg.as_bytes(), t)
                    .unwrap_or_else(|e| panic!("TCP NAT64 to {dst}: {e}")),
            );
            assert!(out.ends_with(&msg), "{out}");
            assert!(
                out.contains(&format!("[{node4}:")),
                "not from the node's IPv4: {out}"
            );
            seen64.insert(out.split(':').next().unwrap_or_default().to_string());
        }
        let out = text(
            udp_request(&topo.client, SocketAddr::from((VIP_V6, 53)), b"u64", t)
                .expect("UDP NAT64"),
        );
        assert!(
            out.contains(&format!("[{node4}:")) && out.ends_with("u64"),
            "{out}"
        );
    }
    assert_eq!(seen46.len(), 2, "both IPv6 backends served: {seen46:?}");
    assert_eq!(seen64.len(), 2, "both IPv4 backends served: {seen64:?}");
}

/// The UDP port the lab's backends have no listener on.
pub const CLOSED_PORT: u16 = 5999;
/// The UDP frontend port of [`closed_services`].
pub const CLOSED_FE_PORT: u16 = 54;

/// Two services whose backends do not listen: `default/v6closed` (NAT46,
/// `VIP_V4:54/UDP` -> each backend's IPv6 address, port [`CLOSED_PORT`])
/// and `default/v4closed` (NAT64, `[VIP_V6]:54/UDP` -> their IPv4 ones).
/// A datagram through them gets the backend's port unreachable, which the
/// dataplane must translate to the client's family.
pub fn closed_services(topo: &Topology) -> Vec<Service> {
    let mut s46 = Service::new("default/v6closed".parse().expect("name"));
    s46.frontends = vec![fe(
        format!("{VIP_V4}:{CLOSED_FE_PORT}/UDP"),
        FrontendType::ClusterIp,
    )];
    let mut s64 = Service::new("default/v4closed".parse().expect("name"));
    s64.frontends = vec![fe(
        format!("[{VIP_V6}]:{CLOSED_FE_PORT}/UDP"),
        FrontendType::ClusterIp,
    )];
    for b in &topo.backends {
        for (svc, ip) in [(&mut s46, IpAddr::V6(b.v6)), (&mut s64, IpAddr::V4(b.v4))] {
            let addr = SocketAddr::new(ip, CLOSED_PORT);
            svc.backends.push(
                BackendParams::new(format!("{addr}/UDP").parse().expect("backend"))
                    .on_node("node-1"),
            );
        }
    }
    vec![s46, s64]
}

/// From the client namespace, a connected UDP socket sends to each of
/// [`closed_services`]' frontends (IPv4 to the NAT46 one, IPv6 to the
/// NAT64 one) and must get `ECONNREFUSED`: the backend's ICMPv6 (ICMPv4)
/// port unreachable reached the client as an ICMPv4 (ICMPv6) one about
/// the datagram it sent (the kernel matches the quote to the socket).
/// Bounded: up to 3 datagrams per frontend (a lost error is retried), each
/// with a 3 s timeout.
pub fn check_closed_ports_refused(topo: &Topology) {
    for dst in [
        SocketAddr::from((VIP_V4, CLOSED_FE_PORT)),
        SocketAddr::from((VIP_V6, CLOSED_FE_PORT)),
    ] {
        let any: SocketAddr = if dst.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let sock = topo
            .client
            .run_in(|| std::net::UdpSocket::bind(any))
            .expect("netns")
            .expect("UDP socket");
        sock.connect(dst).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut last = None;
        for i in 0..3 {
            // A pending error of an earlier datagram may fail the send.
            if let Err(e) = sock.send(format!("closed-{i}").as_bytes()) {
                last = Some(e);
                break;
            }
            let mut buf = [0u8; 64];
            match sock.recv(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    last = Some(e);
                    break;
                }
                Err(e) => last = Some(e),
                Ok(n) => panic!("{dst}: an answer from a closed port: {:?}", &buf[..n]),
            }
        }
        let e = last.expect("an error");
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{dst}: no port unreachable reached the client: {e}"
        );
    }
}
