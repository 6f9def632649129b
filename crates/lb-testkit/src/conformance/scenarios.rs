//! The scenarios: each takes a [`Session`] and panics on a difference.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use lb_core::{
    BackendParams, BackendState, Capacity, DataplaneError, DropReason, Forward, FrontendParams,
    FrontendType, LbAlgorithm, LbMode, MaglevConfig, NodeConfig, ReconcileError, Service,
    SessionAffinity, TrafficDistribution, TrafficPolicy, Verdict,
};

use super::dut::Setup;
use super::session::{frame, sa, tcp, udp, Session};
use super::Scenario;

/// The node address of the scenarios.
pub const NODE_IP: &str = "192.168.1.10";
/// The node of the scenarios.
pub const NODE: &str = "node-1";
/// The node's zone in [`Scenario::ZoneHints`].
pub const ZONE: &str = "zone-a";

/// The setup `scenario` runs with.
pub fn setup(scenario: Scenario) -> Setup {
    let mut ips = vec![NODE_IP.parse().expect("ip")];
    if scenario.uses_ipv6() {
        ips.push(super::scenarios_v6::NODE_IP6.parse().expect("ip"));
    }
    let mut node = NodeConfig::new(NODE, ips);
    node.maglev = MaglevConfig::new(251, 7).expect("maglev config");
    node.nat46x64 = matches!(
        scenario,
        Scenario::Nat46 | Scenario::Nat64 | Scenario::Nat46x64Icmp
    );
    if scenario == Scenario::ZoneHints {
        node.zone = Some(ZONE.into());
    }
    node.mode = match scenario {
        Scenario::DsrRemoteBackend => LbMode::Dsr,
        Scenario::HybridMode => LbMode::Hybrid,
        _ => LbMode::Snat,
    };
    let capacity = match scenario {
        Scenario::Capacity => Capacity {
            frontends: 64,
            backends: 3,
        },
        _ => Capacity::default(),
    };
    Setup { node, capacity }
}

/// A service with frontends `(addr, type)` and node-local backends.
pub fn service(name: &str, frontends: &[(&str, FrontendType)], backends: &[&str]) -> Service {
    let mut s = Service::new(name.parse().expect("service name"));
    for (a, t) in frontends {
        s.frontends
            .push(FrontendParams::new(a.parse().expect("frontend"), *t));
    }
    for b in backends {
        s.backends
            .push(BackendParams::new(b.parse().expect("backend")).on_node(NODE));
    }
    s
}

fn with_alg(mut s: Service, alg: LbAlgorithm) -> Service {
    s.algorithm = Some(alg);
    s
}

const FOUR: [&str; 4] = ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80", "10.0.1.4:80"];

/// TCP and UDP to `dst` (TCP) and `dst_udp` (UDP): forwarded to `backend`,
/// replies reverse-NATed; then a few more clients.
fn tcp_and_udp(s: &mut Session, dsts: &[&str], dsts_udp: &[&str], backends: &[&str]) {
    let want: BTreeSet<SocketAddr> = backends.iter().map(|b| sa(b)).collect();
    for (i, dst) in dsts.iter().chain(dsts_udp).enumerate() {
        let is_udp = i >= dsts.len();
        for c in 0..4u16 {
            let src = format!("192.168.5.{}:{}", 2 + c, 40000 + i as u16);
            let f = if is_udp {
                udp(&src, dst)
            } else {
                tcp(&src, dst)
            };
            let b = s.roundtrip(&f);
            assert!(b.is_some_and(|b| want.contains(&b)), "{dst}: {b:?}");
            // The same flow again: established.
            assert_eq!(s.roundtrip(&f), b, "{dst}: established flow moved");
        }
    }
    // A reply nobody asked for passes.
    s.stray_reply(&tcp(backends[0], "192.168.5.99:1"));
}

/// ClusterIP, TCP and UDP.
pub fn cluster_ip(s: &mut Session) {
    s.program(&[
        service(
            "default/web",
            &[("10.96.0.10:80", FrontendType::ClusterIp)],
            &FOUR,
        ),
        service(
            "default/dns",
            &[("10.96.0.53:53/UDP", FrontendType::ClusterIp)],
            &["10.0.1.1:5353/UDP", "10.0.1.2:5353/UDP"],
        ),
    ]);
    tcp_and_udp(s, &["10.96.0.10:80"], &[], &FOUR);
    tcp_and_udp(
        s,
        &[],
        &["10.96.0.53:53"],
        &["10.0.1.1:5353", "10.0.1.2:5353"],
    );
    // Another port of the ClusterIP is not a frontend.
    s.send(&tcp("192.168.5.2:40000", "10.96.0.10:81"));
}

/// NodePort on the node IP (the expanded entry), TCP and UDP.
pub fn node_port_node_ip(s: &mut Session) {
    s.program(&[
        service(
            "default/web",
            &[("0.0.0.0:30080", FrontendType::NodePort)],
            &FOUR[..2],
        ),
        service(
            "default/dns",
            &[("0.0.0.0:30053/UDP", FrontendType::NodePort)],
            &["10.0.1.3:5353/UDP"],
        ),
    ]);
    tcp_and_udp(
        s,
        &["192.168.1.10:30080"],
        &["192.168.1.10:30053"],
        &["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:5353"],
    );
}

/// NodePort through the wildcard entry (a loopback destination), and a
/// non-node destination that the wildcard does not cover.
pub fn node_port_wildcard(s: &mut Session) {
    s.program(&[
        service(
            "default/web",
            &[("0.0.0.0:30080", FrontendType::NodePort)],
            &FOUR[..1],
        ),
        service(
            "default/dns",
            &[("0.0.0.0:30053/UDP", FrontendType::NodePort)],
            &["10.0.1.3:5353/UDP"],
        ),
    ]);
    tcp_and_udp(
        s,
        &["127.0.0.1:30080"],
        &["127.0.0.1:30053"],
        &["10.0.1.1:80", "10.0.1.3:5353"],
    );
    let sent = s.send(&tcp("192.168.5.2:42000", "192.168.1.50:30080"));
    assert_eq!(sent.verdict, Verdict::Pass);
}

/// LoadBalancer ingress IP, TCP and UDP.
pub fn load_balancer(s: &mut Session) {
    s.program(&[service(
        "default/web",
        &[
            ("203.0.113.7:80", FrontendType::LoadBalancer),
            ("203.0.113.7:53/UDP", FrontendType::LoadBalancer),
        ],
        &["10.0.1.5:8080", "10.0.1.5:5353/UDP"],
    )]);
    tcp_and_udp(
        s,
        &["203.0.113.7:80"],
        &["203.0.113.7:53"],
        &["10.0.1.5:8080", "10.0.1.5:5353"],
    );
}

/// externalIPs, TCP and UDP.
pub fn external_ip(s: &mut Session) {
    s.program(&[service(
        "default/web",
        &[
            ("198.51.100.20:8443", FrontendType::ExternalIp),
            ("198.51.100.20:53/UDP", FrontendType::ExternalIp),
        ],
        &["10.0.1.6:8443", "10.0.1.6:53/UDP"],
    )]);
    tcp_and_udp(
        s,
        &["198.51.100.20:8443"],
        &["198.51.100.20:53"],
        &["10.0.1.6:8443", "10.0.1.6:53"],
    );
}

/// HostPort on the node IP and through the wildcard, TCP and UDP.
pub fn host_port(s: &mut Session) {
    s.program(&[service(
        "default/pod",
        &[
            ("0.0.0.0:8081", FrontendType::HostPort),
            ("0.0.0.0:8053/UDP", FrontendType::HostPort),
        ],
        &["10.0.1.7:80", "10.0.1.7:53/UDP"],
    )]);
    tcp_and_udp(
        s,
        &["192.168.1.10:8081", "127.0.0.1:8081"],
        &["192.168.1.10:8053"],
        &["10.0.1.7:80", "10.0.1.7:53"],
    );
}

/// ClientIP affinity: every new flow of a client goes where its first went.
pub fn affinity(s: &mut Session) {
    let mut svc = with_alg(
        service(
            "default/web",
            &[("10.96.0.10:80", FrontendType::ClusterIp)],
            &FOUR,
        ),
        LbAlgorithm::Random,
    );
    svc.session_affinity = SessionAffinity::ClientIp { timeout_secs: 30 };
    s.program(&[svc]);
    for client in 2..6 {
        let first = s.roundtrip(&tcp(&format!("192.168.5.{client}:40000"), "10.96.0.10:80"));
        for port in 40001..40020 {
            let b = s.roundtrip(&tcp(&format!("192.168.5.{client}:{port}"), "10.96.0.10:80"));
            assert_eq!(b, first, "client {client} moved");
        }
    }
}

/// Affinity entries expire after the timeout (needs an injectable clock).
pub fn affinity_timeout(s: &mut Session) {
    let mut svc = with_alg(
        service(
            "default/web",
            &[("10.96.0.10:80", FrontendType::ClusterIp)],
            &FOUR,
        ),
        LbAlgorithm::Random,
    );
    svc.session_affinity = SessionAffinity::ClientIp { timeout_secs: 30 };
    s.program(&[svc]);
    let mut moved = false;
    for port in 0..40u16 {
        let first = s.roundtrip(&tcp(
            &format!("192.168.6.{}:40000", port + 1),
            "10.96.0.10:80",
        ));
        s.now += 30;
        let same = s.roundtrip(&tcp(
            &format!("192.168.6.{}:40001", port + 1),
            "10.96.0.10:80",
        ));
        assert_eq!(same, first, "entry expired early");
        s.now += 31;
        moved |= s.roundtrip(&tcp(
            &format!("192.168.6.{}:40002", port + 1),
            "10.96.0.10:80",
        )) != first;
    }
    assert!(moved, "no client was rebalanced after expiry");
}

/// Maglev: the same 5-tuple always maps to the same backend (also after the
/// flow state is gone), equal to the oracle, and flows spread.
pub fn maglev_stability(s: &mut Session) {
    let backends: Vec<String> = (1..=7).map(|i| format!("10.0.3.{i}:8080")).collect();
    let refs: Vec<&str> = backends.iter().map(String::as_str).collect();
    s.program(&[
        with_alg(
            service(
                "default/web",
                &[
                    ("10.96.0.10:80", FrontendType::ClusterIp),
                    ("0.0.0.0:30080", FrontendType::NodePort),
                ],
                &refs,
            ),
            LbAlgorithm::Maglev,
        ),
        with_alg(
            service(
                "default/dns",
                &[("10.96.0.53:53/UDP", FrontendType::ClusterIp)],
                &["10.0.3.1:5353/UDP", "10.0.3.2:5353/UDP"],
            ),
            LbAlgorithm::Maglev,
        ),
    ]);
    let frames: Vec<Vec<u8>> = (0..60u16)
        .map(|i| {
            let src = format!("172.16.{}.{}:{}", i % 3, 1 + i, 1024 + i * 7);
            match i % 3 {
                0 => tcp(&src, "10.96.0.10:80"),
                1 => tcp(&src, "192.168.1.10:30080"),
                _ => udp(&src, "10.96.0.53:53"),
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

/// Weighted random: weight 0 never chosen, every choice equal to the oracle
/// with the same entropy.
pub fn weighted_random(s: &mut Session) {
    let mut svc = with_alg(
        service(
            "default/web",
            &[("10.96.0.10:80", FrontendType::ClusterIp)],
            &FOUR[..3],
        ),
        LbAlgorithm::Random,
    );
    svc.backends[0].weight = 0;
    svc.backends[1].weight = 10;
    svc.backends[2].weight = 30;
    s.program(&[svc]);
    let mut hits = std::collections::BTreeMap::new();
    for port in 40000..40400 {
        let b = s.roundtrip(&tcp(&format!("192.168.5.2:{port}"), "10.96.0.10:80"));
        *hits.entry(b.expect("forwarded")).or_insert(0u32) += 1;
    }
    assert!(!hits.contains_key(&sa(FOUR[0])), "{hits:?}");
    assert!(hits[&sa(FOUR[2])] > 2 * hits[&sa(FOUR[1])], "{hits:?}");
}

fn mark(svc: &mut Service, backend: SocketAddr, state: Option<BackendState>) {
    match state {
        Some(st) => svc
            .backends
            .iter_mut()
            .filter(|b| b.addr.addr == backend.ip() && b.addr.port == backend.port())
            .for_each(|b| b.state = st),
        None => svc
            .backends
            .retain(|b| !(b.addr.addr == backend.ip() && b.addr.port == backend.port())),
    }
}

/// Graceful termination: a terminating backend keeps its established flows
/// and gets no new ones.
pub fn graceful_termination(s: &mut Session) {
    for alg in [LbAlgorithm::Random, LbAlgorithm::Maglev] {
        s.reset_flows();
        let mut svc = with_alg(
            service(
                "default/web",
                &[("10.96.0.10:80", FrontendType::ClusterIp)],
                &FOUR,
            ),
            alg,
        );
        s.program(&[svc.clone()]);
        let established = tcp("192.168.5.2:40000", "10.96.0.10:80");
        let x = s.roundtrip(&established).expect("forwarded");
        mark(&mut svc, x, Some(BackendState::Terminating));
        s.program(&[svc]);
        for port in 41000..41060 {
            assert_ne!(
                s.roundtrip(&tcp(&format!("192.168.5.3:{port}"), "10.96.0.10:80")),
                Some(x)
            );
        }
        for _ in 0..5 {
            assert_eq!(
                s.roundtrip(&established),
                Some(x),
                "{alg}: established flow moved"
            );
        }
    }
}

/// Backend removal: established flows of a removed backend move, nobody
/// reaches it.
pub fn backend_removal(s: &mut Session) {
    for alg in [LbAlgorithm::Random, LbAlgorithm::Maglev] {
        s.reset_flows();
        let mut svc = with_alg(
            service(
                "default/web",
                &[("10.96.0.10:80", FrontendType::ClusterIp)],
                &FOUR,
            ),
            alg,
        );
        s.program(&[svc.clone()]);
        let established = tcp("192.168.5.2:40000", "10.96.0.10:80");
        let x = s.roundtrip(&established).expect("forwarded");
        mark(&mut svc, x, None);
        s.program(&[svc.clone()]);
        assert_ne!(s.roundtrip(&established), Some(x));
        for port in 42000..42060 {
            assert_ne!(
                s.roundtrip(&tcp(&format!("192.168.5.4:{port}"), "10.96.0.10:80")),
                Some(x)
            );
        }
        // All gone: the frontend drops.
        svc.backends.clear();
        s.program(&[svc]);
        let sent = s.send(&established);
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
    }
}

/// Capacity: a batch that does not fit is refused as a whole.
pub fn capacity(s: &mut Session) {
    let four = service(
        "default/web",
        &[("10.96.0.10:80", FrontendType::ClusterIp)],
        &FOUR,
    );
    match s.apply(&[four]) {
        Err(ReconcileError::Dataplane(DataplaneError::CapacityExceeded {
            capacity: 3,
            needed,
            ..
        })) => {
            assert!(needed >= 4, "needed {needed}");
        }
        other => panic!("{}: expected a capacity error, got {other:?}", s.dut.name()),
    }
    // Nothing was programmed.
    assert_eq!(
        s.send(&tcp("192.168.5.2:40000", "10.96.0.10:80")).verdict,
        Verdict::Pass
    );
    s.program(&[service(
        "default/web",
        &[("10.96.0.10:80", FrontendType::ClusterIp)],
        &FOUR[..3],
    )]);
    assert!(s
        .roundtrip(&tcp("192.168.5.2:40001", "10.96.0.10:80"))
        .is_some());
}

/// loadBalancerSourceRanges: only listed clients get through.
pub fn source_ranges(s: &mut Session) {
    let mut svc = service(
        "default/web",
        &[("203.0.113.7:80", FrontendType::LoadBalancer)],
        &["10.0.1.5:8080"],
    );
    svc.source_ranges = vec![
        "192.168.5.0/24".parse().expect("net"),
        "10.9.9.9/32".parse().expect("net"),
    ];
    s.program(&[svc.clone()]);
    for (src, allowed) in [
        ("192.168.5.2:40000", true),
        ("10.9.9.9:40000", true),
        ("10.9.9.8:40000", false),
        ("192.168.6.2:40000", false),
    ] {
        let sent = s.send(&tcp(src, "203.0.113.7:80"));
        assert_eq!(
            sent.backend().is_some(),
            allowed,
            "{src}: {:?}",
            sent.verdict
        );
    }
    if let Some(d) = s.dut.drops() {
        assert!(d.source_range >= 2, "{d:?}");
    }
    svc.source_ranges.pop();
    s.program(&[svc]);
    let sent = s.send(&tcp("10.9.9.9:40001", "203.0.113.7:80"));
    assert!(matches!(
        sent.verdict,
        Verdict::Drop {
            reason: DropReason::SourceRangeDenied,
            ..
        }
    ));
}

/// externalTrafficPolicy Local: only node-local backends, client address
/// kept; no local backend drops.
pub fn traffic_policy_local(s: &mut Session) {
    let mut svc = service(
        "default/web",
        &[("203.0.113.7:80", FrontendType::LoadBalancer)],
        &["10.0.1.5:8080"],
    );
    svc.backends
        .push(BackendParams::new("10.0.2.5:8080".parse().expect("addr")).on_node("node-2"));
    svc.backends
        .push(BackendParams::new("10.0.2.6:8080".parse().expect("addr")).on_node("node-2"));
    svc.ext_traffic_policy = TrafficPolicy::Local;
    let mut remote_only = service(
        "default/far",
        &[("203.0.113.8:80", FrontendType::LoadBalancer)],
        &[],
    );
    remote_only
        .backends
        .push(BackendParams::new("10.0.2.7:8080".parse().expect("addr")).on_node("node-2"));
    remote_only.ext_traffic_policy = TrafficPolicy::Local;
    s.program(&[svc, remote_only]);
    for port in 40000..40030 {
        let b = s.roundtrip(&tcp(&format!("192.168.5.2:{port}"), "203.0.113.7:80"));
        assert_eq!(b, Some(sa("10.0.1.5:8080")));
    }
    let sent = s.send(&tcp("192.168.5.2:40000", "203.0.113.8:80"));
    assert!(
        matches!(
            sent.verdict,
            Verdict::Drop {
                reason: DropReason::NoLocalBackend,
                ..
            }
        ),
        "{sent:?}"
    );
}

/// internalTrafficPolicy Local on a ClusterIP: only the node's backend, the
/// client address kept; no local backend drops (counted as no_local_backend).
/// Traffic policy Cluster on the same backends reaches the remote one too.
pub fn internal_traffic_policy_local(s: &mut Session) {
    let remote = |a: &str| BackendParams::new(a.parse().expect("addr")).on_node("node-2");
    let mut local = service(
        "default/local",
        &[("10.96.0.10:80", FrontendType::ClusterIp)],
        &["10.0.1.5:8080"],
    );
    local.backends.push(remote("10.0.2.5:8080"));
    local.int_traffic_policy = TrafficPolicy::Local;
    let mut none = service(
        "default/none",
        &[("10.96.0.11:53", FrontendType::ClusterIp)],
        &[],
    );
    none.frontends[0].addr.proto = lb_core::L4Proto::Udp;
    none.backends.push(remote("10.0.2.5:5353/UDP"));
    none.int_traffic_policy = TrafficPolicy::Local;
    let mut cluster = local.clone();
    cluster.name = "default/cluster".parse().expect("name");
    cluster.frontends[0].addr = "10.96.0.12:80".parse().expect("addr");
    cluster.int_traffic_policy = TrafficPolicy::Cluster;
    s.program(&[local, none, cluster]);
    for port in 40000..40040 {
        let src = format!("192.168.5.2:{port}");
        let sent = s.send(&tcp(&src, "10.96.0.10:80"));
        let Verdict::Forward(f) = sent.verdict else {
            panic!("{sent:?}")
        };
        assert_eq!(f.backend.host_port().to_string(), "10.0.1.5:8080");
        assert_eq!(f.snat, None, "client address kept");
    }
    let before = s.dut.drops().map(|d| d.no_local_backend);
    for port in 41000..41003 {
        let sent = s.send(&udp(&format!("192.168.5.2:{port}"), "10.96.0.11:53"));
        assert!(
            matches!(
                sent.verdict,
                Verdict::Drop {
                    reason: DropReason::NoLocalBackend,
                    ..
                }
            ),
            "{sent:?}"
        );
    }
    if let (Some(b), Some(d)) = (before, s.dut.drops()) {
        assert!(d.no_local_backend >= b + 3, "{d:?}");
    }
    let mut seen = BTreeSet::new();
    for port in 42000..42060 {
        seen.insert(s.roundtrip(&tcp(&format!("192.168.5.3:{port}"), "10.96.0.12:80")));
    }
    assert!(seen.contains(&Some(sa("10.0.2.5:8080"))), "{seen:?}");
}

/// Maglev with weights 3:1:0 — the same choices as the oracle, roughly 3:1
/// over many flows, none to the weight-0 backend; TCP and UDP.
pub fn weighted_maglev(s: &mut Session) {
    let mut svc = with_alg(
        service(
            "default/web",
            &[
                ("10.96.0.10:80", FrontendType::ClusterIp),
                ("10.96.0.10:53", FrontendType::ClusterIp),
            ],
            &["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"],
        ),
        LbAlgorithm::Maglev,
    );
    svc.frontends[1].addr.proto = lb_core::L4Proto::Udp;
    for b in ["10.0.1.1:53/UDP", "10.0.1.2:53/UDP", "10.0.1.3:53/UDP"] {
        svc.backends
            .push(BackendParams::new(b.parse().expect("backend")).on_node(NODE));
    }
    for b in &mut svc.backends {
        b.weight = match b.addr.addr.to_string().as_str() {
            "10.0.1.1" => 300,
            "10.0.1.2" => 100,
            _ => 0,
        };
    }
    s.program(&[svc]);
    for (dst, proto_udp) in [("10.96.0.10:80", false), ("10.96.0.10:53", true)] {
        let mut hits: std::collections::BTreeMap<std::net::IpAddr, u32> = Default::default();
        for port in 40000..40400 {
            let src = format!("192.168.5.{}:{port}", 2 + port % 7);
            let f = if proto_udp {
                udp(&src, dst)
            } else {
                tcp(&src, dst)
            };
            let b = s.roundtrip(&f).expect("forwarded");
            *hits.entry(b.ip()).or_default() += 1;
        }
        let get = |a: &str| hits.get(&a.parse().expect("ip")).copied().unwrap_or(0);
        assert_eq!(get("10.0.1.3"), 0, "{dst}: {hits:?}");
        let ratio = f64::from(get("10.0.1.1")) / f64::from(get("10.0.1.2").max(1));
        assert!((2.0..4.5).contains(&ratio), "{dst}: {hits:?}");
    }
}

/// Topology-aware routing on a node in [`ZONE`]: zone hints keep new flows
/// on backends hinted for it; a ready backend without hints turns it off;
/// PreferClose without hints prefers same-zone backends; PreferSameNode
/// prefers this node's backends, and explicit node hints (`forNodes`) win.
pub fn zone_hints(s: &mut Session) {
    let zoned = |a: &str, zone: &str, hints: &[&str]| {
        BackendParams::new(a.parse().expect("addr"))
            .on_node(NODE)
            .in_zone(zone)
            .with_zone_hints(hints.iter().copied())
    };
    let mut hinted = service(
        "default/hinted",
        &[("10.96.0.10:80", FrontendType::ClusterIp)],
        &[],
    );
    hinted.backends = vec![
        zoned("10.0.1.1:80", ZONE, &[ZONE]),
        zoned("10.0.1.2:80", "zone-b", &["zone-b"]),
        zoned("10.0.1.3:80", ZONE, &[ZONE]),
    ];
    let mut close = service(
        "default/close",
        &[("10.96.0.11:80", FrontendType::ClusterIp)],
        &[],
    );
    close.backends = vec![
        zoned("10.0.2.1:80", "zone-b", &[]),
        zoned("10.0.2.2:80", ZONE, &[]),
    ];
    close.traffic_distribution = TrafficDistribution::PreferClose;
    let mut partial = service(
        "default/partial",
        &[("10.96.0.12:80", FrontendType::ClusterIp)],
        &[],
    );
    partial.backends = vec![
        zoned("10.0.3.1:80", ZONE, &[ZONE]),
        zoned("10.0.3.2:80", "zone-b", &[]),
    ];
    let placed = |a: &str, node: &str, zone: &str| {
        BackendParams::new(a.parse().expect("addr"))
            .on_node(node)
            .in_zone(zone)
    };
    let mut same_node = service(
        "default/same-node",
        &[("10.96.0.13:80", FrontendType::ClusterIp)],
        &[],
    );
    same_node.backends = vec![
        placed("10.0.4.1:80", NODE, "zone-b"),
        placed("10.0.4.2:80", "node-2", ZONE),
        placed("10.0.4.3:80", "node-3", ZONE),
    ];
    same_node.traffic_distribution = TrafficDistribution::PreferSameNode;
    let mut node_hinted = service(
        "default/node-hinted",
        &[("10.96.0.14:80", FrontendType::ClusterIp)],
        &[],
    );
    node_hinted.backends = vec![
        placed("10.0.5.1:80", "node-2", ZONE).with_node_hints(["node-2"]),
        placed("10.0.5.2:80", "node-3", ZONE).with_node_hints(["node-3", NODE]),
    ];
    s.program(&[hinted, close, partial, same_node, node_hinted]);
    let mut seen: std::collections::BTreeMap<&str, BTreeSet<SocketAddr>> = Default::default();
    for port in 40000..40080 {
        for dst in [
            "10.96.0.10:80",
            "10.96.0.11:80",
            "10.96.0.12:80",
            "10.96.0.13:80",
            "10.96.0.14:80",
        ] {
            let b = s
                .roundtrip(&tcp(&format!("192.168.5.2:{port}"), dst))
                .expect("forwarded");
            seen.entry(dst).or_default().insert(b);
        }
    }
    let want = |v: &[&str]| v.iter().map(|a| sa(a)).collect::<BTreeSet<_>>();
    assert_eq!(seen["10.96.0.10:80"], want(&["10.0.1.1:80", "10.0.1.3:80"]));
    assert_eq!(seen["10.96.0.11:80"], want(&["10.0.2.2:80"]));
    assert_eq!(seen["10.96.0.12:80"], want(&["10.0.3.1:80", "10.0.3.2:80"]));
    assert_eq!(seen["10.96.0.13:80"], want(&["10.0.4.1:80"]));
    assert_eq!(seen["10.96.0.14:80"], want(&["10.0.5.2:80"]));
}

/// Traffic policy Cluster to a remote backend: the client is SNATed to the
/// node IP and the reply is reverse-NATed back to the client.
pub fn snat_remote_backend(s: &mut Session) {
    let mut svc = service(
        "default/web",
        &[("0.0.0.0:30080", FrontendType::NodePort)],
        &[],
    );
    svc.backends
        .push(BackendParams::new("10.0.2.5:8080".parse().expect("addr")).on_node("node-2"));
    s.program(&[svc]);
    let sent = s.send(&tcp("192.168.5.2:40000", "192.168.1.10:30080"));
    let Verdict::Forward(f) = sent.verdict else {
        panic!("{sent:?}")
    };
    assert_eq!(f.snat, Some(NODE_IP.parse().expect("ip")));
    s.reply(
        &tcp("192.168.5.2:40000", "192.168.1.10:30080"),
        &sent.out.expect("forwarded"),
    );
}

/// Two clients with the same source port reach the same remote backend
/// through a NodePort (and the first client, same port, through a ClusterIP
/// of the same backend): all three flows are SNATed to the node IP, so each
/// needs a source port of its own, and each gets its own replies, in any
/// order, also after the others sent again. TCP and UDP.
pub fn snat_port_collision(s: &mut Session) {
    let mut svc = service(
        "default/web",
        &[
            ("0.0.0.0:30080", FrontendType::NodePort),
            ("10.96.0.10:80", FrontendType::ClusterIp),
            ("0.0.0.0:30053/UDP", FrontendType::NodePort),
        ],
        &[],
    );
    for b in ["10.0.2.5:8080", "10.0.2.5:5353/UDP"] {
        svc.backends
            .push(BackendParams::new(b.parse().expect("addr")).on_node("node-2"));
    }
    s.program(&[svc]);
    let tcp_flows = vec![
        tcp("192.168.5.2:40000", "192.168.1.10:30080"),
        tcp("192.168.5.3:40000", "192.168.1.10:30080"),
        tcp("192.168.5.2:40000", "10.96.0.10:80"),
    ];
    let udp_flows = vec![
        udp("192.168.5.2:40000", "192.168.1.10:30053"),
        udp("192.168.5.3:40000", "192.168.1.10:30053"),
    ];
    for (proto, flows) in [("TCP", tcp_flows), ("UDP", udp_flows)] {
        let n = flows.len();
        let outs: Vec<Vec<u8>> = flows
            .iter()
            .map(|f| {
                let sent = s.send(f);
                let Verdict::Forward(fw) = sent.verdict else {
                    panic!("{sent:?}")
                };
                assert_eq!(fw.snat, Some(NODE_IP.parse().expect("ip")));
                sent.out.expect("forwarded")
            })
            .collect();
        let tuples: BTreeSet<_> = outs
            .iter()
            .map(|o| match super::reference::classify(o) {
                super::reference::Class::Flow(k) => (k.src, k.sport, k.dst, k.dport),
                c => panic!("{c:?}"),
            })
            .collect();
        assert_eq!(tuples.len(), n, "{proto}: SNAT tuples shared: {tuples:?}");
        // Replies, newest flow first, then oldest first.
        for i in (0..n).rev().chain(0..n) {
            s.reply(&flows[i], &outs[i]);
        }
        // The flows again: established, same tuples, replies still theirs.
        for i in 0..n {
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

/// One client port to two frontends (ClusterIP and NodePort) of one
/// node-local backend, TCP and UDP: both flows' reply tuples would be
/// backend → client:port, so the second flow must get another source port
/// towards the backend (lb-ebpf's `lb_ctport.h`, netfilter's clash
/// resolution); each flow's replies, in any order, come back from its own
/// frontend to the client's own port, and established packets keep their
/// tuples. Found by lb-agent's graceful-termination test: with a shared
/// reply tuple the newer flow took the live one's replies (a stall).
pub fn reply_tuple_clash(s: &mut Session) {
    let mut svc = service(
        "default/web",
        &[
            ("10.96.0.10:80", FrontendType::ClusterIp),
            ("0.0.0.0:30080", FrontendType::NodePort),
            ("10.96.0.10:53/UDP", FrontendType::ClusterIp),
            ("0.0.0.0:30053/UDP", FrontendType::NodePort),
        ],
        &["10.0.1.1:8080"],
    );
    svc.backends
        .push(BackendParams::new("10.0.1.1:5353/UDP".parse().expect("addr")).on_node(NODE));
    s.program(&[svc]);
    let node_port = |port: u16| format!("{NODE_IP}:{port}");
    let flows = [
        (
            "TCP",
            vec![
                tcp("192.168.5.2:40000", "10.96.0.10:80"),
                tcp("192.168.5.2:40000", &node_port(30080)),
                // Another client with that port: its own tuple, its port.
                tcp("192.168.5.3:40000", &node_port(30080)),
            ],
        ),
        (
            "UDP",
            vec![
                udp("192.168.5.2:40000", &node_port(30053)),
                udp("192.168.5.2:40000", "10.96.0.10:53"),
                udp("192.168.5.3:40000", "10.96.0.10:53"),
            ],
        ),
    ];
    for (proto, flows) in flows {
        let outs: Vec<Vec<u8>> = flows
            .iter()
            .map(|f| {
                let sent = s.send(f);
                let Verdict::Forward(fw) = sent.verdict else {
                    panic!("{sent:?}")
                };
                assert_eq!(fw.snat, None, "{proto}: a local backend is not SNATed");
                sent.out.expect("forwarded")
            })
            .collect();
        let tuple = |o: &[u8]| match super::reference::classify(o) {
            super::reference::Class::Flow(k) => (k.src, k.sport, k.dst, k.dport),
            c => panic!("{c:?}"),
        };
        let tuples: BTreeSet<_> = outs.iter().map(|o| tuple(o)).collect();
        assert_eq!(
            tuples.len(),
            flows.len(),
            "{proto}: reply tuples shared: {tuples:?}"
        );
        // The first flow and the other client keep their ports.
        for i in [0, 2] {
            let (Some(orig), out) = (session_key(&flows[i]), tuple(&outs[i])) else {
                unreachable!()
            };
            assert_eq!(out.1, orig.sport, "{proto}: flow {i} needed no other port");
        }
        // Replies, newest flow first, then oldest first, then interleaved.
        for i in [2, 1, 0, 0, 1, 2, 1, 0] {
            s.reply(&flows[i], &outs[i]);
        }
        // The flows again: established, same tuples, replies still theirs.
        for i in [0, 1, 2, 1, 0] {
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

fn session_key(f: &[u8]) -> Option<lb_core::FlowKey> {
    match super::reference::classify(f) {
        super::reference::Class::Flow(k) => Some(k),
        _ => None,
    }
}

/// Traffic that is not for a frontend passes untouched.
pub fn unknown_traffic(s: &mut Session) {
    s.program(&[service(
        "default/web",
        &[("10.96.0.10:80", FrontendType::ClusterIp)],
        &FOUR,
    )]);
    let f = tcp("192.168.5.2:40000", "10.96.0.10:80");
    let mut arp = f.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let mut icmp = f.clone();
    icmp[14 + 9] = 1;
    let mut fragment = f.clone();
    fragment[14 + 6] = 0x20;
    let mut sctp = f.clone();
    sctp[14 + 9] = 132;
    let v6 = frame(
        lb_core::L4Proto::Tcp,
        sa("[fd00::1]:40000"),
        sa("[fd00::2]:80"),
    );
    for x in [
        tcp("192.168.5.2:40000", "10.96.0.99:80"),
        arp,
        icmp,
        fragment,
        sctp,
        v6,
    ] {
        let sent = s.send(&x);
        assert_eq!(sent.out.as_deref(), Some(&x[..]));
    }
}

/// Bad packets are dropped (and counted) or passed exactly as the BPF
/// program does; a UDP header with no payload or a zero length field is a
/// normal packet.
pub fn malformed_packets(s: &mut Session) {
    s.program(&[service(
        "default/web",
        &[
            ("10.96.0.10:80", FrontendType::ClusterIp),
            ("10.96.0.10:53/UDP", FrontendType::ClusterIp),
        ],
        &["10.0.1.1:80", "10.0.1.1:53/UDP"],
    )]);
    let before = s.dut.drops();
    let f = tcp("192.168.5.2:40000", "10.96.0.10:80");
    let mut bad_ihl = f.clone();
    bad_ihl[14] = 0x44;
    let mut bad_version = f.clone();
    bad_version[14] = 0x65;
    let mut long_ihl = f.clone();
    long_ihl[14] = 0x4f;
    let cut_tcp = f[..14 + 20 + 8].to_vec();
    let cut_udp = udp("192.168.5.2:40000", "10.96.0.10:53")[..14 + 20 + 4].to_vec();
    let bad = [bad_ihl, bad_version, long_ihl, cut_tcp, cut_udp];
    for x in &bad {
        assert_eq!(s.send(x).out, None);
    }
    if let (Some(b), Some(a)) = (before, s.dut.drops()) {
        assert_eq!(
            a.malformed - b.malformed,
            bad.len() as u64,
            "malformed drops counted"
        );
    }
    // UDP without payload, and with a zero length field: forwarded.
    let empty = lb_core::L4Proto::Udp;
    let no_payload =
        crate::packets::PacketBuilder::udp(sa("192.168.5.2:40001"), sa("10.96.0.10:53"))
            .build()
            .expect("frame");
    assert!(s.send(&no_payload).backend().is_some());
    let mut zero_len = frame(empty, sa("192.168.5.2:40002"), sa("10.96.0.10:53"));
    zero_len[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&[0, 0]);
    zero_len[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]); // no checksum
    assert!(s.send(&zero_len).backend().is_some());
}

/// Frames shorter than an Ethernet header pass; an IPv4 header cut short
/// is dropped and counted.
pub fn short_frames(s: &mut Session) {
    s.program(&[service(
        "default/web",
        &[("10.96.0.10:80", FrontendType::ClusterIp)],
        &FOUR,
    )]);
    let f = tcp("192.168.5.2:40000", "10.96.0.10:80");
    for x in [Vec::new(), vec![0u8; 5], f[..13].to_vec()] {
        assert_eq!(s.send(&x).out.as_deref(), Some(&x[..]));
    }
    let before = s.dut.drops();
    for cut in [14, 14 + 1, 14 + 12, 14 + 19] {
        assert_eq!(s.send(&f[..cut]).out, None, "IPv4 header cut at {cut}");
    }
    if let (Some(b), Some(a)) = (before, s.dut.drops()) {
        assert_eq!(a.malformed - b.malformed, 4, "malformed drops counted");
    }
}

/// A service with NodePort, LoadBalancer, ExternalIP and ClusterIP
/// frontends (TCP and UDP) and one remote backend per protocol.
fn remote_modes_service() -> Service {
    let mut svc = service(
        "default/web",
        &[
            ("0.0.0.0:30080", FrontendType::NodePort),
            ("203.0.113.7:80", FrontendType::LoadBalancer),
            ("198.51.100.7:80", FrontendType::ExternalIp),
            ("10.96.0.10:80", FrontendType::ClusterIp),
            ("203.0.113.7:53/UDP", FrontendType::LoadBalancer),
        ],
        &[],
    );
    for b in ["10.0.2.5:8080", "10.0.2.5:5353/UDP"] {
        svc.backends
            .push(BackendParams::new(b.parse().expect("addr")).on_node("node-2"));
    }
    svc
}

fn encap_of(s: &mut Session, frame: &[u8]) -> (Forward, Vec<u8>) {
    let sent = s.send(frame);
    let Verdict::Forward(f) = sent.verdict else {
        panic!("{sent:?}")
    };
    (f, sent.out.expect("forwarded"))
}

/// DSR mode: external TCP and UDP flows through NodePort, LoadBalancer and
/// ExternalIP frontends to a remote backend leave unchanged inside IPIP
/// (node IP -> backend, the backend port in the Identification field), on
/// every packet of the flow; ClusterIP stays SNAT. IPv6 flows leave inside
/// IPv6-in-IPv6 (node IPv6 -> backend, the port in the flow label).
pub fn dsr_remote_backend(s: &mut Session) {
    let mut v6 = service(
        "default/web6",
        &[
            ("[::]:30080", FrontendType::NodePort),
            ("[2001:db8::7]:80", FrontendType::LoadBalancer),
            ("[fd00:96::10]:80", FrontendType::ClusterIp),
            ("[2001:db8::7]:53/UDP", FrontendType::LoadBalancer),
        ],
        &[],
    );
    for b in ["[fd00:2:1::5]:8080", "[fd00:2:1::5]:5353/UDP"] {
        v6.backends
            .push(BackendParams::new(b.parse().expect("addr")).on_node("node-2"));
    }
    s.program(&[remote_modes_service(), v6]);
    let node6 = super::scenarios_v6::NODE_IP6;
    for (client, fe) in [
        ("[fd00:5::2]:40000", format!("[{node6}]:30080")),
        ("[fd00:5::2]:40001", "[2001:db8::7]:80".to_string()),
    ] {
        for _ in 0..2 {
            let (f, out) = encap_of(s, &tcp(client, &fe));
            assert_eq!(f.snat, None);
            assert!(
                matches!(f.encap, Some(lb_core::Encap::Ip6ip6 { .. })),
                "{fe}: {f:?}"
            );
            assert_eq!(out[14 + 6], 41, "{fe}: IPv6-in-IPv6");
        }
    }
    let (f, _) = encap_of(s, &udp("[fd00:5::2]:40002", "[2001:db8::7]:53"));
    assert!(f.encap.is_some(), "UDP over IPv6: {f:?}");
    let (f, out) = encap_of(s, &tcp("[fd00:5::2]:40003", "[fd00:96::10]:80"));
    assert_eq!((f.snat, f.encap), (Some(node6.parse().expect("ip")), None));
    s.reply(&tcp("[fd00:5::2]:40003", "[fd00:96::10]:80"), &out);

    for (client, fe) in [
        ("192.168.5.2:40000", "192.168.1.10:30080"),
        ("192.168.5.2:40001", "203.0.113.7:80"),
        ("192.168.5.3:40000", "198.51.100.7:80"),
    ] {
        for _ in 0..2 {
            let (f, _) = encap_of(s, &tcp(client, fe));
            assert_eq!(f.snat, None);
            assert!(f.encap.is_some(), "{fe}: {f:?}");
        }
    }
    let (f, _) = encap_of(s, &udp("192.168.5.2:40002", "203.0.113.7:53"));
    assert!(f.encap.is_some(), "UDP: {f:?}");
    let (f, out) = encap_of(s, &tcp("192.168.5.2:40003", "10.96.0.10:80"));
    assert_eq!(
        (f.snat, f.encap),
        (Some(NODE_IP.parse().expect("ip")), None)
    );
    s.reply(&tcp("192.168.5.2:40003", "10.96.0.10:80"), &out);
}

/// Hybrid mode: TCP through the LoadBalancer goes with DSR, UDP is SNATed
/// and its replies return through the node.
pub fn hybrid_mode(s: &mut Session) {
    s.program(&[remote_modes_service()]);
    let (f, _) = encap_of(s, &tcp("192.168.5.2:40000", "203.0.113.7:80"));
    assert!(f.encap.is_some() && f.snat.is_none(), "TCP: {f:?}");
    let (f, out) = encap_of(s, &udp("192.168.5.2:40000", "203.0.113.7:53"));
    assert_eq!(
        (f.snat, f.encap),
        (Some(NODE_IP.parse().expect("ip")), None)
    );
    s.reply(&udp("192.168.5.2:40000", "203.0.113.7:53"), &out);
}
