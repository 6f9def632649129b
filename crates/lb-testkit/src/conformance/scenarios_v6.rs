//! The IPv6 and dual-stack scenarios: every frontend type over IPv6 (TCP
//! and UDP), SNAT to the node's IPv6 address, Maglev and affinity keyed by
//! IPv6 clients, dual-stack services (one service with an IPv4 and an IPv6
//! frontend, each served by backends of its own family), and IPv6 frames
//! the dataplanes must drop or leave alone. The ones that are the same as
//! in IPv4 run [`super::scenarios`]' with [`Fam::V6`].
//!
//! Addresses: clients `fd00:5::C`, ClusterIPs `fd00:96::X`, backends
//! `fd00:1:B::N` (node-local) and `fd00:2:B::N` (on another node), the node
//! [`NODE_IP6`] next to the IPv4 [`super::scenarios::NODE_IP`].

use std::collections::BTreeSet;
use std::net::SocketAddr;

use lb_core::{BackendParams, DropReason, FrontendType, L4Proto, LbAlgorithm, Verdict};

use super::scenarios::{
    assert_dropped, assert_maglev_stable, forwarded, malformed_in, resend, service, snat_flows,
    snat_service, udp_without_payload, Fam, NODE, NODE_IP,
};
use super::session::{frame, sa, tcp, udp, Session};

/// The node's IPv6 address in the IPv6 scenarios.
pub const NODE_IP6: &str = "fd00:1::10";

/// `[fd00:5::C]:PORT`.
fn client(c: u16, port: u16) -> String {
    Fam::V6.client(c, port)
}

/// ClusterIP over IPv6, TCP and UDP; another port of the ClusterIP and an
/// IPv4 flow to a port of the same number are not frontends.
pub fn cluster_ip_v6(s: &mut Session) {
    super::scenarios::cluster_ip_in(s, Fam::V6);
    let sent = s.send(&tcp("192.168.5.2:40000", "10.96.0.10:80"));
    assert_eq!(sent.verdict, Verdict::Pass);
}

/// NodePort on `[::]`: reached on the node's IPv6 address and through the
/// wildcard (loopback `::1`), TCP and UDP; a non-node IPv6 destination is
/// not covered.
pub fn node_port_v6(s: &mut Session) {
    super::scenarios::node_port_in(s, Fam::V6, 2, &[NODE_IP6, "::1"]);
    let sent = s.send(&tcp(&client(2, 42000), "[fd00:1::50]:30080"));
    assert_eq!(sent.verdict, Verdict::Pass);
    // The IPv4 node address has no IPv4 NodePort here.
    let sent = s.send(&tcp("192.168.5.2:42000", &format!("{NODE_IP}:30080")));
    assert_eq!(sent.verdict, Verdict::Pass);
}

/// LoadBalancer ingress IPv6 address, TCP and UDP.
pub fn load_balancer_v6(s: &mut Session) {
    super::scenarios::load_balancer_in(s, Fam::V6);
}

/// externalIPs over IPv6, TCP and UDP.
pub fn external_ip_v6(s: &mut Session) {
    super::scenarios::external_ip_in(s, Fam::V6);
}

/// HostPort on `[::]`: the node's IPv6 address and the wildcard, TCP and UDP.
pub fn host_port_v6(s: &mut Session) {
    super::scenarios::host_port_in(s, Fam::V6);
}

/// Maglev over IPv6 5-tuples (the flow hash over four words per address):
/// the same choices as the oracle, stable without connection tracking, spread.
pub fn maglev_v6(s: &mut Session) {
    let backends: Vec<String> = (1..=7).map(|i| format!("[fd00:1:3::{i}]:8080")).collect();
    let refs: Vec<&str> = backends.iter().map(String::as_str).collect();
    let mut svc = service(
        "default/web",
        &[
            ("[fd00:96::10]:80", FrontendType::ClusterIp),
            ("[fd00:96::10]:53/UDP", FrontendType::ClusterIp),
        ],
        &refs,
    );
    for i in 1..=3 {
        svc.backends.push(
            BackendParams::new(format!("[fd00:1:3::{i}]:5353/UDP").parse().expect("addr"))
                .on_node(NODE),
        );
    }
    svc.algorithm = Some(LbAlgorithm::Maglev);
    s.program(&[svc]);
    let frames: Vec<Vec<u8>> = (0..60u16)
        .map(|i| {
            let src = format!("[fd00:5:{:x}::{:x}]:{}", i % 3, 1 + i, 1024 + i * 7);
            if i % 2 == 0 {
                tcp(&src, "[fd00:96::10]:80")
            } else {
                udp(&src, "[fd00:96::10]:53")
            }
        })
        .collect();
    assert_maglev_stable(s, &frames);
}

/// ClientIP affinity keyed by an IPv6 client.
pub fn affinity_v6(s: &mut Session) {
    super::scenarios::affinity_in(s, Fam::V6);
}

/// Remote IPv6 backends behind a NodePort and a ClusterIP: clients (each
/// with a source port of its own) are SNATed to the node's IPv6 address and
/// every reply is reverse-NATed to its client. TCP and UDP.
pub fn snat_remote_backend_v6(s: &mut Session) {
    snat_v6(s, false);
}

/// [`snat_remote_backend_v6`] with two clients using one source port: each
/// flow gets a reply tuple of its own.
pub fn snat_port_collision_v6(s: &mut Session) {
    snat_v6(s, true);
}

/// The [`snat_flows`] to the [`snat_service`]: each SNATed to the node's
/// IPv6 address; replies newest flow first; then each flow again.
fn snat_v6(s: &mut Session, same_port: bool) {
    s.program(&[snat_service(Fam::V6)]);
    for (proto, flows) in snat_flows(Fam::V6, same_port) {
        let outs = forwarded(s, proto, &flows, Some(NODE_IP6));
        for i in (0..flows.len()).rev() {
            s.reply(&flows[i], &outs[i]);
        }
        resend(s, proto, &flows, &outs, 0..flows.len());
    }
}

/// A dual-stack service: an IPv4 and an IPv6 ClusterIP and NodePorts on
/// `0.0.0.0` and `[::]`, with backends of both families. Each family's
/// flows reach only that family's backends (never translated across
/// families); with the IPv6 backends gone the IPv6 frontends drop while
/// IPv4 keeps working.
pub fn dual_stack(s: &mut Session) {
    let v4 = ["10.0.1.1:80", "10.0.1.2:80"];
    let v6 = ["[fd00:1:1::1]:80", "[fd00:1:1::2]:80"];
    let frontends = [
        ("10.96.0.10:80", FrontendType::ClusterIp),
        ("[fd00:96::10]:80", FrontendType::ClusterIp),
        ("0.0.0.0:30080", FrontendType::NodePort),
        ("[::]:30080", FrontendType::NodePort),
    ];
    let all: Vec<&str> = v4.iter().chain(&v6).copied().collect();
    let mut svc = service("default/web", &frontends, &all);
    s.program(&[svc.clone()]);
    let node6 = format!("[{NODE_IP6}]:30080");
    let node4 = format!("{NODE_IP}:30080");
    let mut seen: std::collections::BTreeMap<bool, BTreeSet<SocketAddr>> = Default::default();
    for port in 40000..40040u16 {
        for (dst, is6) in [
            ("10.96.0.10:80", false),
            ("[fd00:96::10]:80", true),
            (node4.as_str(), false),
            (node6.as_str(), true),
        ] {
            let src = if is6 {
                client(2 + port % 3, port)
            } else {
                format!("192.168.5.{}:{port}", 2 + port % 3)
            };
            let b = s.roundtrip(&tcp(&src, dst)).expect("forwarded");
            assert_eq!(b.is_ipv6(), is6, "{dst} crossed families to {b}");
            seen.entry(is6).or_default().insert(b);
        }
    }
    assert_eq!(seen[&false], v4.iter().map(|a| sa(a)).collect());
    assert_eq!(seen[&true], v6.iter().map(|a| sa(a)).collect());
    svc.backends.retain(|b| b.addr.addr.is_ipv4());
    s.program(&[svc]);
    let sent = s.send(&tcp(&client(9, 41000), "[fd00:96::10]:80"));
    assert_dropped(&sent, DropReason::NoBackend);
    assert!(s
        .roundtrip(&tcp("192.168.5.9:41000", "10.96.0.10:80"))
        .is_some_and(|b| b.is_ipv4()));
}

/// IPv6 frames that are dropped and counted (fixed header cut short, a
/// version other than 6, a TCP or UDP header cut short) or passed
/// untouched (extension headers, ICMPv6, another destination). A UDP
/// datagram without payload is normal.
pub fn malformed_packets_v6(s: &mut Session) {
    let f = malformed_in(s, Fam::V6, |f, u| {
        let mut bad_version = f.to_vec();
        bad_version[14] = 0x40 | (bad_version[14] & 0x0f);
        let cut_header = f[..14 + 39].to_vec();
        let cut_tcp = f[..14 + 40 + 19].to_vec();
        let cut_udp = u[..14 + 40 + 7].to_vec();
        vec![bad_version, cut_header, cut_tcp, cut_udp]
    });
    // Extension headers (hop-by-hop, fragment, destination options) and
    // other next headers: passed untouched, like the headers that follow.
    for next in [0u8, 44, 60, 58, 132] {
        let mut x = f.clone();
        x[14 + 6] = next;
        let sent = s.send(&x);
        assert_eq!(sent.out.as_deref(), Some(&x[..]), "next header {next}");
    }
    udp_without_payload(s, Fam::V6);
    let other = frame(L4Proto::Tcp, sa(&client(2, 40002)), sa("[fd00:96::11]:80"));
    assert_eq!(s.send(&other).verdict, Verdict::Pass);
}
