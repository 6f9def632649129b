//! The IPv6 and dual-stack scenarios: every frontend type over IPv6 (TCP
//! and UDP), SNAT to the node's IPv6 address, Maglev and affinity keyed by
//! IPv6 clients, dual-stack services (one service with an IPv4 and an IPv6
//! frontend, each served by backends of its own family), and IPv6 frames
//! the dataplanes must drop or leave alone.
//!
//! Addresses: clients `fd00:5::C`, ClusterIPs `fd00:96::X`, backends
//! `fd00:1:B::N` (node-local) and `fd00:2:B::N` (on another node), the node
//! [`NODE_IP6`] next to the IPv4 [`super::scenarios::NODE_IP`].

use std::collections::BTreeSet;
use std::net::SocketAddr;

use lb_core::{
    BackendParams, DropReason, FrontendType, L4Proto, LbAlgorithm, SessionAffinity, Verdict,
};

use super::scenarios::{service, NODE, NODE_IP};
use super::session::{frame, sa, tcp, udp, Session};

/// The node's IPv6 address in the IPv6 scenarios.
pub const NODE_IP6: &str = "fd00:1::10";

const FOUR6: [&str; 4] = [
    "[fd00:1:1::1]:80",
    "[fd00:1:1::2]:80",
    "[fd00:1:1::3]:80",
    "[fd00:1:1::4]:80",
];

/// `[fd00:5::C]:PORT`.
fn client(c: u16, port: u16) -> String {
    format!("[fd00:5::{c:x}]:{port}")
}

/// TCP to `dsts` and UDP to `dsts_udp` from four IPv6 clients: each flow
/// reaches one of `backends`, stays there, and its reply is reverse-NATed;
/// a reply nobody asked for passes.
fn tcp_and_udp6(s: &mut Session, dsts: &[&str], dsts_udp: &[&str], backends: &[&str]) {
    let want: BTreeSet<SocketAddr> = backends.iter().map(|b| sa(b)).collect();
    for (i, dst) in dsts.iter().chain(dsts_udp).enumerate() {
        let is_udp = i >= dsts.len();
        for c in 0..4u16 {
            let src = client(2 + c, 40000 + i as u16);
            let f = if is_udp {
                udp(&src, dst)
            } else {
                tcp(&src, dst)
            };
            let b = s.roundtrip(&f);
            assert!(b.is_some_and(|b| want.contains(&b)), "{dst}: {b:?}");
            assert_eq!(s.roundtrip(&f), b, "{dst}: established flow moved");
        }
    }
    s.stray_reply(&tcp(backends[0], "[fd00:5::99]:1"));
}

/// ClusterIP over IPv6, TCP and UDP; another port of the ClusterIP and an
/// IPv4 flow to a port of the same number are not frontends.
pub fn cluster_ip_v6(s: &mut Session) {
    s.program(&[
        service(
            "default/web",
            &[("[fd00:96::10]:80", FrontendType::ClusterIp)],
            &FOUR6,
        ),
        service(
            "default/dns",
            &[("[fd00:96::53]:53/UDP", FrontendType::ClusterIp)],
            &["[fd00:1:1::1]:5353/UDP", "[fd00:1:1::2]:5353/UDP"],
        ),
    ]);
    tcp_and_udp6(s, &["[fd00:96::10]:80"], &[], &FOUR6);
    tcp_and_udp6(
        s,
        &[],
        &["[fd00:96::53]:53"],
        &["[fd00:1:1::1]:5353", "[fd00:1:1::2]:5353"],
    );
    let sent = s.send(&tcp(&client(2, 40000), "[fd00:96::10]:81"));
    assert_eq!(sent.verdict, Verdict::Pass);
    let sent = s.send(&tcp("192.168.5.2:40000", "10.96.0.10:80"));
    assert_eq!(sent.verdict, Verdict::Pass);
}

/// NodePort on `[::]`: reached on the node's IPv6 address and through the
/// wildcard (loopback `::1`), TCP and UDP; a non-node IPv6 destination is
/// not covered.
pub fn node_port_v6(s: &mut Session) {
    s.program(&[
        service(
            "default/web",
            &[("[::]:30080", FrontendType::NodePort)],
            &FOUR6[..2],
        ),
        service(
            "default/dns",
            &[("[::]:30053/UDP", FrontendType::NodePort)],
            &["[fd00:1:1::3]:5353/UDP"],
        ),
    ]);
    let node = format!("[{NODE_IP6}]");
    tcp_and_udp6(
        s,
        &[&format!("{node}:30080"), "[::1]:30080"],
        &[&format!("{node}:30053"), "[::1]:30053"],
        &["[fd00:1:1::1]:80", "[fd00:1:1::2]:80", "[fd00:1:1::3]:5353"],
    );
    let sent = s.send(&tcp(&client(2, 42000), "[fd00:1::50]:30080"));
    assert_eq!(sent.verdict, Verdict::Pass);
    // The IPv4 node address has no IPv4 NodePort here.
    let sent = s.send(&tcp("192.168.5.2:42000", &format!("{NODE_IP}:30080")));
    assert_eq!(sent.verdict, Verdict::Pass);
}

/// LoadBalancer ingress IPv6 address, TCP and UDP.
pub fn load_balancer_v6(s: &mut Session) {
    s.program(&[service(
        "default/web",
        &[
            ("[2001:db8:7::7]:80", FrontendType::LoadBalancer),
            ("[2001:db8:7::7]:53/UDP", FrontendType::LoadBalancer),
        ],
        &["[fd00:1:1::5]:8080", "[fd00:1:1::5]:5353/UDP"],
    )]);
    tcp_and_udp6(
        s,
        &["[2001:db8:7::7]:80"],
        &["[2001:db8:7::7]:53"],
        &["[fd00:1:1::5]:8080", "[fd00:1:1::5]:5353"],
    );
}

/// externalIPs over IPv6, TCP and UDP.
pub fn external_ip_v6(s: &mut Session) {
    s.program(&[service(
        "default/web",
        &[
            ("[2001:db8:20::20]:8443", FrontendType::ExternalIp),
            ("[2001:db8:20::20]:53/UDP", FrontendType::ExternalIp),
        ],
        &["[fd00:1:1::6]:8443", "[fd00:1:1::6]:53/UDP"],
    )]);
    tcp_and_udp6(
        s,
        &["[2001:db8:20::20]:8443"],
        &["[2001:db8:20::20]:53"],
        &["[fd00:1:1::6]:8443", "[fd00:1:1::6]:53"],
    );
}

/// HostPort on `[::]`: the node's IPv6 address and the wildcard, TCP and UDP.
pub fn host_port_v6(s: &mut Session) {
    s.program(&[service(
        "default/pod",
        &[
            ("[::]:8081", FrontendType::HostPort),
            ("[::]:8053/UDP", FrontendType::HostPort),
        ],
        &["[fd00:1:1::7]:80", "[fd00:1:1::7]:53/UDP"],
    )]);
    let node = format!("[{NODE_IP6}]");
    tcp_and_udp6(
        s,
        &[&format!("{node}:8081"), "[::1]:8081"],
        &[&format!("{node}:8053")],
        &["[fd00:1:1::7]:80", "[fd00:1:1::7]:53"],
    );
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
    let first: Vec<_> = frames.iter().map(|f| s.roundtrip(f)).collect();
    s.reset_flows();
    let again: Vec<_> = frames.iter().map(|f| s.roundtrip(f)).collect();
    assert_eq!(first, again, "maglev choice changed without CT");
    let spread: BTreeSet<_> = first.iter().flatten().collect();
    assert!(spread.len() > 3, "{spread:?}");
}

/// ClientIP affinity keyed by an IPv6 client.
pub fn affinity_v6(s: &mut Session) {
    let mut svc = service(
        "default/web",
        &[("[fd00:96::10]:80", FrontendType::ClusterIp)],
        &FOUR6,
    );
    svc.algorithm = Some(LbAlgorithm::Random);
    svc.session_affinity = SessionAffinity::ClientIp { timeout_secs: 30 };
    s.program(&[svc]);
    for c in 2..6 {
        let first = s.roundtrip(&tcp(&client(c, 40000), "[fd00:96::10]:80"));
        for port in 40001..40020 {
            let b = s.roundtrip(&tcp(&client(c, port), "[fd00:96::10]:80"));
            assert_eq!(b, first, "client {c} moved");
        }
    }
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

fn snat_v6(s: &mut Session, same_port: bool) {
    let p2 = if same_port { 40000 } else { 40001 };
    let mut svc = service(
        "default/web",
        &[
            ("[::]:30080", FrontendType::NodePort),
            ("[fd00:96::10]:80", FrontendType::ClusterIp),
            ("[::]:30053/UDP", FrontendType::NodePort),
        ],
        &[],
    );
    for b in ["[fd00:2:1::5]:8080", "[fd00:2:1::5]:5353/UDP"] {
        svc.backends
            .push(BackendParams::new(b.parse().expect("addr")).on_node("node-2"));
    }
    s.program(&[svc]);
    let node = format!("[{NODE_IP6}]");
    let tcp_flows = vec![
        tcp(&client(2, 40000), &format!("{node}:30080")),
        tcp(&client(3, p2), &format!("{node}:30080")),
        tcp(
            &client(2, if same_port { 40000 } else { 40002 }),
            "[fd00:96::10]:80",
        ),
    ];
    let udp_flows = vec![
        udp(&client(2, 40000), &format!("{node}:30053")),
        udp(&client(3, p2), &format!("{node}:30053")),
    ];
    for (proto, flows) in [("TCP", tcp_flows), ("UDP", udp_flows)] {
        let outs: Vec<Vec<u8>> = flows
            .iter()
            .map(|f| {
                let sent = s.send(f);
                let Verdict::Forward(fw) = sent.verdict else {
                    panic!("{proto}: {sent:?}")
                };
                assert_eq!(fw.snat, Some(NODE_IP6.parse().expect("ip")), "{proto}");
                sent.out.expect("forwarded")
            })
            .collect();
        for i in (0..flows.len()).rev() {
            s.reply(&flows[i], &outs[i]);
        }
        for i in 0..flows.len() {
            let again = s.send(&flows[i]);
            assert_eq!(
                again.out.as_ref(),
                Some(&outs[i]),
                "{proto}: flow {i} moved"
            );
            s.reply(&flows[i], &outs[i]);
        }
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
    assert!(
        matches!(
            sent.verdict,
            Verdict::Drop {
                reason: DropReason::NoBackend,
                ..
            }
        ),
        "{sent:?}"
    );
    assert!(s
        .roundtrip(&tcp("192.168.5.9:41000", "10.96.0.10:80"))
        .is_some_and(|b| b.is_ipv4()));
}

/// IPv6 frames that are dropped and counted (fixed header cut short, a
/// version other than 6, a TCP or UDP header cut short) or passed
/// untouched (extension headers, ICMPv6, another destination). A UDP
/// datagram without payload is normal.
pub fn malformed_packets_v6(s: &mut Session) {
    s.program(&[service(
        "default/web",
        &[
            ("[fd00:96::10]:80", FrontendType::ClusterIp),
            ("[fd00:96::10]:53/UDP", FrontendType::ClusterIp),
        ],
        &["[fd00:1:1::1]:80", "[fd00:1:1::1]:53/UDP"],
    )]);
    let before = s.dut.drops();
    let f = tcp(&client(2, 40000), "[fd00:96::10]:80");
    let mut bad_version = f.clone();
    bad_version[14] = 0x40 | (bad_version[14] & 0x0f);
    let cut_header = f[..14 + 39].to_vec();
    let cut_tcp = f[..14 + 40 + 19].to_vec();
    let cut_udp = udp(&client(2, 40000), "[fd00:96::10]:53")[..14 + 40 + 7].to_vec();
    let bad = [bad_version, cut_header, cut_tcp, cut_udp];
    for x in &bad {
        assert_eq!(s.send(x).out, None, "not dropped: {x:02x?}");
    }
    if let (Some(b), Some(a)) = (before, s.dut.drops()) {
        assert_eq!(
            a.malformed - b.malformed,
            bad.len() as u64,
            "malformed drops counted"
        );
    }
    // Extension headers (hop-by-hop, fragment, destination options) and
    // other next headers: passed untouched, like the headers that follow.
    for next in [0u8, 44, 60, 58, 132] {
        let mut x = f.clone();
        x[14 + 6] = next;
        let sent = s.send(&x);
        assert_eq!(sent.out.as_deref(), Some(&x[..]), "next header {next}");
    }
    let no_payload =
        crate::packets::PacketBuilder::udp(sa(&client(2, 40001)), sa("[fd00:96::10]:53"))
            .build()
            .expect("frame");
    assert!(s.send(&no_payload).backend().is_some());
    let other = frame(L4Proto::Tcp, sa(&client(2, 40002)), sa("[fd00:96::11]:80"));
    assert_eq!(s.send(&other).verdict, Verdict::Pass);
}
