//! The scenarios: each takes a [`Session`] and panics on a difference.
//!
//! The scenarios that are the same in both families (frontend types,
//! affinity, SNAT to remote backends, malformed frames) are written once
//! here, taking a [`Fam`] for the addresses; [`super::scenarios_v6`] runs
//! them with [`Fam::V6`] and adds the IPv6-only ones.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use lb_core::{
    BackendParams, BackendState, Capacity, DataplaneError, DropReason, Forward, FrontendParams,
    FrontendType, LbAlgorithm, LbMode, MaglevConfig, NodeConfig, ReconcileError, Service,
    SessionAffinity, TrafficDistribution, TrafficPolicy, Verdict,
};

use super::dut::Setup;
use super::scenarios_v6::NODE_IP6;
use super::session::{frame, sa, tcp, udp, Sent, Session};
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
        ips.push(NODE_IP6.parse().expect("ip"));
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

/// [`service`] with `String` addresses.
fn service_of(name: &str, frontends: &[(String, FrontendType)], backends: &[String]) -> Service {
    let fes: Vec<(&str, FrontendType)> = frontends.iter().map(|(a, t)| (a.as_str(), *t)).collect();
    service(name, &fes, &strs(backends))
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Backend `addr` (`ADDR:PORT[/UDP]`) on another node, `node-2`.
fn remote(addr: &str) -> BackendParams {
    BackendParams::new(addr.parse().expect("addr")).on_node("node-2")
}

fn with_alg(mut s: Service, alg: LbAlgorithm) -> Service {
    s.algorithm = Some(alg);
    s
}

const FOUR: [&str; 4] = ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80", "10.0.1.4:80"];

/// The address family a scenario written for both runs in: the same
/// services, flows and checks, with each family's addresses (the same
/// digits in both, e.g. ClusterIP `10.96.0.10` and `fd00:96::10`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fam {
    /// Clients `192.168.5.C`, ClusterIPs `10.96.0.X`, node-local backends
    /// `10.0.1.N`, remote ones `10.0.2.N`, the node [`NODE_IP`].
    V4,
    /// Clients `fd00:5::C`, ClusterIPs `fd00:96::X`, node-local backends
    /// `fd00:1:1::N`, remote ones `fd00:2:1::N`, the node [`NODE_IP6`].
    V6,
}

impl Fam {
    /// `v4` or `v6`, by family.
    pub fn pick<T>(self, v4: T, v6: T) -> T {
        match self {
            Fam::V4 => v4,
            Fam::V6 => v6,
        }
    }

    /// `HOST:PORT`, an IPv6 host in brackets; `port` may carry `/UDP`.
    pub fn at(self, host: &str, port: impl std::fmt::Display) -> String {
        match self {
            Fam::V4 => format!("{host}:{port}"),
            Fam::V6 => format!("[{host}]:{port}"),
        }
    }

    /// Client `c` at `port`: `192.168.5.C:PORT` or `[fd00:5::C]:PORT` (C
    /// in hex).
    pub fn client(self, c: u16, port: u16) -> String {
        match self {
            Fam::V4 => format!("192.168.5.{c}:{port}"),
            Fam::V6 => format!("[fd00:5::{c:x}]:{port}"),
        }
    }

    /// The client address no flow uses, `192.168.5.99:1` or
    /// `[fd00:5::99]:1`, for replies nobody asked for.
    fn stray_client(self) -> &'static str {
        self.pick("192.168.5.99:1", "[fd00:5::99]:1")
    }

    /// The node's address, [`NODE_IP`] or [`NODE_IP6`].
    pub fn node(self) -> &'static str {
        self.pick(NODE_IP, NODE_IP6)
    }

    /// The wildcard address, `0.0.0.0` or `::`.
    pub fn any(self) -> &'static str {
        self.pick("0.0.0.0", "::")
    }

    /// Loopback, `127.0.0.1` or `::1`.
    pub fn loopback(self) -> &'static str {
        self.pick("127.0.0.1", "::1")
    }

    /// ClusterIP `x` at `port`: `10.96.0.X` or `fd00:96::X`.
    pub fn cluster_ip(self, x: u16, port: impl std::fmt::Display) -> String {
        self.at(&format!("{}{x}", self.pick("10.96.0.", "fd00:96::")), port)
    }

    /// Node-local backend `n` at `port`: `10.0.1.N` or `fd00:1:1::N`.
    pub fn local(self, n: u16, port: impl std::fmt::Display) -> String {
        self.at(&format!("{}{n}", self.pick("10.0.1.", "fd00:1:1::")), port)
    }

    /// Remote backend `n` at `port`: `10.0.2.N` or `fd00:2:1::N`.
    pub fn remote(self, n: u16, port: impl std::fmt::Display) -> String {
        self.at(&format!("{}{n}", self.pick("10.0.2.", "fd00:2:1::")), port)
    }

    /// Node-local backends `1..=n` on port 80.
    fn locals(self, n: u16) -> Vec<String> {
        (1..=n).map(|i| self.local(i, 80)).collect()
    }
}

/// TCP to `dsts` and UDP to `dsts_udp` from four clients: each flow
/// reaches one of `backends`, stays there, and its reply is reverse-NATed;
/// a reply nobody asked for passes.
fn tcp_and_udp(
    s: &mut Session,
    fam: Fam,
    dsts: &[String],
    dsts_udp: &[String],
    backends: &[String],
) {
    let want: BTreeSet<SocketAddr> = backends.iter().map(|b| sa(b)).collect();
    for (i, dst) in dsts.iter().chain(dsts_udp).enumerate() {
        let is_udp = i >= dsts.len();
        for c in 0..4u16 {
            let src = fam.client(2 + c, 40000 + i as u16);
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
    s.stray_reply(&tcp(&backends[0], fam.stray_client()));
}

/// ClusterIP, TCP and UDP.
pub fn cluster_ip(s: &mut Session) {
    cluster_ip_in(s, Fam::V4);
}

/// [`cluster_ip`] in `fam`: web (four backends) and dns (two) ClusterIPs;
/// another port of the ClusterIP is not a frontend.
pub(super) fn cluster_ip_in(s: &mut Session, fam: Fam) {
    let web = fam.cluster_ip(10, 80);
    let dns = fam.cluster_ip(53, 53);
    let four = fam.locals(4);
    s.program(&[
        service_of(
            "default/web",
            &[(web.clone(), FrontendType::ClusterIp)],
            &four,
        ),
        service_of(
            "default/dns",
            &[(format!("{dns}/UDP"), FrontendType::ClusterIp)],
            &[fam.local(1, "5353/UDP"), fam.local(2, "5353/UDP")],
        ),
    ]);
    tcp_and_udp(s, fam, &[web], &[], &four);
    tcp_and_udp(
        s,
        fam,
        &[],
        &[dns],
        &[fam.local(1, 5353), fam.local(2, 5353)],
    );
    let sent = s.send(&tcp(&fam.client(2, 40000), &fam.cluster_ip(10, 81)));
    assert_eq!(sent.verdict, Verdict::Pass);
}

/// NodePorts (web with `web` backends, dns with one) on the wildcard,
/// reached at each of `hosts`.
pub(super) fn node_port_in(s: &mut Session, fam: Fam, web: u16, hosts: &[&str]) {
    s.program(&[
        service_of(
            "default/web",
            &[(fam.at(fam.any(), 30080), FrontendType::NodePort)],
            &fam.locals(web),
        ),
        service_of(
            "default/dns",
            &[(fam.at(fam.any(), "30053/UDP"), FrontendType::NodePort)],
            &[fam.local(3, "5353/UDP")],
        ),
    ]);
    let mut backends = fam.locals(web);
    backends.push(fam.local(3, 5353));
    tcp_and_udp(
        s,
        fam,
        &hosts.iter().map(|h| fam.at(h, 30080)).collect::<Vec<_>>(),
        &hosts.iter().map(|h| fam.at(h, 30053)).collect::<Vec<_>>(),
        &backends,
    );
}

/// NodePort on the node IP (the expanded entry), TCP and UDP.
pub fn node_port_node_ip(s: &mut Session) {
    node_port_in(s, Fam::V4, 2, &[NODE_IP]);
}

/// NodePort through the wildcard entry (a loopback destination), and a
/// non-node destination that the wildcard does not cover.
pub fn node_port_wildcard(s: &mut Session) {
    node_port_in(s, Fam::V4, 1, &["127.0.0.1"]);
    let sent = s.send(&tcp("192.168.5.2:42000", "192.168.1.50:30080"));
    assert_eq!(sent.verdict, Verdict::Pass);
}

/// One service with a TCP frontend `host:port` and a UDP one `host:53`
/// of type `ty` to node-local backend `n` (TCP port `bport`, UDP
/// `udp_bport`), TCP and UDP.
fn one_frontend_ip(
    s: &mut Session,
    fam: Fam,
    ty: FrontendType,
    (host, port): (&str, u16),
    (n, bport, udp_bport): (u16, u16, u16),
) {
    s.program(&[service_of(
        "default/web",
        &[(fam.at(host, port), ty), (fam.at(host, "53/UDP"), ty)],
        &[
            fam.local(n, bport),
            fam.local(n, format!("{udp_bport}/UDP")),
        ],
    )]);
    tcp_and_udp(
        s,
        fam,
        &[fam.at(host, port)],
        &[fam.at(host, 53)],
        &[fam.local(n, bport), fam.local(n, udp_bport)],
    );
}

/// LoadBalancer ingress IP, TCP and UDP.
pub fn load_balancer(s: &mut Session) {
    load_balancer_in(s, Fam::V4);
}

/// [`load_balancer`] in `fam`: `203.0.113.7` or `2001:db8:7::7`.
pub(super) fn load_balancer_in(s: &mut Session, fam: Fam) {
    let ip = fam.pick("203.0.113.7", "2001:db8:7::7");
    one_frontend_ip(
        s,
        fam,
        FrontendType::LoadBalancer,
        (ip, 80),
        (5, 8080, 5353),
    );
}

/// externalIPs, TCP and UDP.
pub fn external_ip(s: &mut Session) {
    external_ip_in(s, Fam::V4);
}

/// [`external_ip`] in `fam`: `198.51.100.20` or `2001:db8:20::20`.
pub(super) fn external_ip_in(s: &mut Session, fam: Fam) {
    let ip = fam.pick("198.51.100.20", "2001:db8:20::20");
    one_frontend_ip(s, fam, FrontendType::ExternalIp, (ip, 8443), (6, 8443, 53));
}

/// HostPort on the node IP and through the wildcard, TCP and UDP.
pub fn host_port(s: &mut Session) {
    host_port_in(s, Fam::V4);
}

/// [`host_port`] in `fam`.
pub(super) fn host_port_in(s: &mut Session, fam: Fam) {
    s.program(&[service_of(
        "default/pod",
        &[
            (fam.at(fam.any(), 8081), FrontendType::HostPort),
            (fam.at(fam.any(), "8053/UDP"), FrontendType::HostPort),
        ],
        &[fam.local(7, 80), fam.local(7, "53/UDP")],
    )]);
    tcp_and_udp(
        s,
        fam,
        &[fam.at(fam.node(), 8081), fam.at(fam.loopback(), 8081)],
        &[fam.at(fam.node(), 8053)],
        &[fam.local(7, 80), fam.local(7, 53)],
    );
}

/// The ClusterIP `10.96.0.10:80` (or `[fd00:96::10]:80`) of four backends
/// with random selection and ClientIP affinity (30 s).
fn affinity_service(fam: Fam) -> Service {
    let mut svc = with_alg(
        service_of(
            "default/web",
            &[(fam.cluster_ip(10, 80), FrontendType::ClusterIp)],
            &fam.locals(4),
        ),
        LbAlgorithm::Random,
    );
    svc.session_affinity = SessionAffinity::ClientIp { timeout_secs: 30 };
    svc
}

/// ClientIP affinity: every new flow of a client goes where its first went.
pub fn affinity(s: &mut Session) {
    affinity_in(s, Fam::V4);
}

/// [`affinity`] in `fam`.
pub(super) fn affinity_in(s: &mut Session, fam: Fam) {
    s.program(&[affinity_service(fam)]);
    let vip = fam.cluster_ip(10, 80);
    for client in 2..6 {
        let first = s.roundtrip(&tcp(&fam.client(client, 40000), &vip));
        for port in 40001..40020 {
            let b = s.roundtrip(&tcp(&fam.client(client, port), &vip));
            assert_eq!(b, first, "client {client} moved");
        }
    }
}

/// Affinity entries expire after the timeout (needs an injectable clock).
pub fn affinity_timeout(s: &mut Session) {
    s.program(&[affinity_service(Fam::V4)]);
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
    s.program(&[
        with_alg(
            service(
                "default/web",
                &[
                    ("10.96.0.10:80", FrontendType::ClusterIp),
                    ("0.0.0.0:30080", FrontendType::NodePort),
                ],
                &strs(&backends),
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
    assert_maglev_stable(s, &frames);
}

/// `frames` reach the same backends again after the flow state is gone,
/// and more than three of them.
pub(super) fn assert_maglev_stable(s: &mut Session, frames: &[Vec<u8>]) {
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

/// For each algorithm, on fresh flow state: the ClusterIP `10.96.0.10:80`
/// of [`FOUR`] programmed, and one flow to it established; `check` gets the
/// service, the flow and its backend.
fn with_established(s: &mut Session, check: impl Fn(&mut Session, Service, &[u8], SocketAddr)) {
    for alg in [LbAlgorithm::Random, LbAlgorithm::Maglev] {
        s.reset_flows();
        let svc = with_alg(
            service(
                "default/web",
                &[("10.96.0.10:80", FrontendType::ClusterIp)],
                &FOUR,
            ),
            alg,
        );
        s.program(std::slice::from_ref(&svc));
        let established = tcp("192.168.5.2:40000", "10.96.0.10:80");
        let x = s.roundtrip(&established).expect("forwarded");
        check(s, svc, &established, x);
    }
}

/// Graceful termination: a terminating backend keeps its established flows
/// and gets no new ones.
pub fn graceful_termination(s: &mut Session) {
    with_established(s, |s, mut svc, established, x| {
        let alg = svc.algorithm.expect("algorithm");
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
                s.roundtrip(established),
                Some(x),
                "{alg}: established flow moved"
            );
        }
    });
}

/// Backend removal: established flows of a removed backend move, nobody
/// reaches it.
pub fn backend_removal(s: &mut Session) {
    with_established(s, |s, mut svc, established, x| {
        mark(&mut svc, x, None);
        s.program(&[svc.clone()]);
        assert_ne!(s.roundtrip(established), Some(x));
        for port in 42000..42060 {
            assert_ne!(
                s.roundtrip(&tcp(&format!("192.168.5.4:{port}"), "10.96.0.10:80")),
                Some(x)
            );
        }
        // All gone: the frontend drops.
        svc.backends.clear();
        s.program(&[svc]);
        assert_dropped(&s.send(established), DropReason::NoBackend);
    });
}

/// Asserts that `sent` was dropped for `reason`.
pub(super) fn assert_dropped(sent: &Sent, reason: DropReason) {
    assert!(
        matches!(sent.verdict, Verdict::Drop { reason: r, .. } if r == reason),
        "{sent:?}"
    );
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
    assert_dropped(&sent, DropReason::SourceRangeDenied);
}

/// externalTrafficPolicy Local: only node-local backends, client address
/// kept; no local backend drops.
pub fn traffic_policy_local(s: &mut Session) {
    let mut svc = service(
        "default/web",
        &[("203.0.113.7:80", FrontendType::LoadBalancer)],
        &["10.0.1.5:8080"],
    );
    svc.backends.push(remote("10.0.2.5:8080"));
    svc.backends.push(remote("10.0.2.6:8080"));
    svc.ext_traffic_policy = TrafficPolicy::Local;
    let mut remote_only = service(
        "default/far",
        &[("203.0.113.8:80", FrontendType::LoadBalancer)],
        &[],
    );
    remote_only.backends.push(remote("10.0.2.7:8080"));
    remote_only.ext_traffic_policy = TrafficPolicy::Local;
    s.program(&[svc, remote_only]);
    for port in 40000..40030 {
        let b = s.roundtrip(&tcp(&format!("192.168.5.2:{port}"), "203.0.113.7:80"));
        assert_eq!(b, Some(sa("10.0.1.5:8080")));
    }
    let sent = s.send(&tcp("192.168.5.2:40000", "203.0.113.8:80"));
    assert_dropped(&sent, DropReason::NoLocalBackend);
}

/// internalTrafficPolicy Local on a ClusterIP: only the node's backend, the
/// client address kept; no local backend drops (counted as no_local_backend).
/// Traffic policy Cluster on the same backends reaches the remote one too.
pub fn internal_traffic_policy_local(s: &mut Session) {
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
        assert_dropped(&sent, DropReason::NoLocalBackend);
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
    svc.backends.push(remote("10.0.2.5:8080"));
    s.program(&[svc]);
    let flow = tcp("192.168.5.2:40000", "192.168.1.10:30080");
    let outs = forwarded(s, "TCP", std::slice::from_ref(&flow), Some(NODE_IP));
    s.reply(&flow, &outs[0]);
}

/// A service with a NodePort on the wildcard and a ClusterIP (TCP) and a
/// UDP NodePort, served by one remote backend (`10.0.2.5` or `fd00:2:1::5`)
/// per protocol.
pub(super) fn snat_service(fam: Fam) -> Service {
    let mut svc = service_of(
        "default/web",
        &[
            (fam.at(fam.any(), 30080), FrontendType::NodePort),
            (fam.cluster_ip(10, 80), FrontendType::ClusterIp),
            (fam.at(fam.any(), "30053/UDP"), FrontendType::NodePort),
        ],
        &[],
    );
    for b in [fam.remote(5, 8080), fam.remote(5, "5353/UDP")] {
        svc.backends.push(remote(&b));
    }
    svc
}

/// The flows to [`snat_service`]: TCP from clients 2 and 3 to the node's
/// NodePort and from client 2 to the ClusterIP, UDP from clients 2 and 3 to
/// the node's NodePort; all from port 40000 with `same_port`, else from
/// 40000, 40001 and 40002.
pub(super) fn snat_flows(fam: Fam, same_port: bool) -> [(&'static str, Vec<Vec<u8>>); 2] {
    let port = |p: u16| if same_port { 40000 } else { p };
    let node = |p: u16| fam.at(fam.node(), p);
    [
        (
            "TCP",
            vec![
                tcp(&fam.client(2, 40000), &node(30080)),
                tcp(&fam.client(3, port(40001)), &node(30080)),
                tcp(&fam.client(2, port(40002)), &fam.cluster_ip(10, 80)),
            ],
        ),
        (
            "UDP",
            vec![
                udp(&fam.client(2, 40000), &node(30053)),
                udp(&fam.client(3, port(40001)), &node(30053)),
            ],
        ),
    ]
}

/// Sends each of `flows`: forwarded, SNATed to `snat` (or not); returns
/// what left.
pub(super) fn forwarded(
    s: &mut Session,
    proto: &str,
    flows: &[Vec<u8>],
    snat: Option<&str>,
) -> Vec<Vec<u8>> {
    let snat: Option<IpAddr> = snat.map(|a| a.parse().expect("ip"));
    flows
        .iter()
        .map(|f| {
            let sent = s.send(f);
            let Verdict::Forward(fw) = sent.verdict else {
                panic!("{proto}: {sent:?}")
            };
            assert_eq!(fw.snat, snat, "{proto}: SNAT");
            sent.out.expect("forwarded")
        })
        .collect()
}

/// Sends `flows[i]` again for each `i` of `order`: established, it leaves
/// as `outs[i]` did, and the reply to it is still its own.
pub(super) fn resend(
    s: &mut Session,
    proto: &str,
    flows: &[Vec<u8>],
    outs: &[Vec<u8>],
    order: impl IntoIterator<Item = usize>,
) {
    for i in order {
        let again = s.send(&flows[i]);
        assert_eq!(
            again.out.as_ref(),
            Some(&outs[i]),
            "{proto}: flow {i} moved"
        );
        s.reply(&flows[i], &outs[i]);
    }
}

/// The 4-tuple (addresses and ports) of a forwarded frame.
fn tuple_of(o: &[u8]) -> (IpAddr, u16, IpAddr, u16) {
    match super::reference::classify(o) {
        super::reference::Class::Flow(k) => (k.src, k.sport, k.dst, k.dport),
        c => panic!("{c:?}"),
    }
}

/// Two clients with the same source port reach the same remote backend
/// through a NodePort (and the first client, same port, through a ClusterIP
/// of the same backend): all three flows are SNATed to the node IP, so each
/// needs a source port of its own, and each gets its own replies, in any
/// order, also after the others sent again. TCP and UDP.
pub fn snat_port_collision(s: &mut Session) {
    s.program(&[snat_service(Fam::V4)]);
    for (proto, flows) in snat_flows(Fam::V4, true) {
        let n = flows.len();
        let outs = forwarded(s, proto, &flows, Some(NODE_IP));
        let tuples: BTreeSet<_> = outs.iter().map(|o| tuple_of(o)).collect();
        assert_eq!(tuples.len(), n, "{proto}: SNAT tuples shared: {tuples:?}");
        // Replies, newest flow first, then oldest first.
        for i in (0..n).rev().chain(0..n) {
            s.reply(&flows[i], &outs[i]);
        }
        // The flows again: established, same tuples, replies still theirs.
        resend(s, proto, &flows, &outs, 0..n);
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
        // A local backend is not SNATed.
        let outs = forwarded(s, proto, &flows, None);
        let tuples: BTreeSet<_> = outs.iter().map(|o| tuple_of(o)).collect();
        assert_eq!(
            tuples.len(),
            flows.len(),
            "{proto}: reply tuples shared: {tuples:?}"
        );
        // The first flow and the other client keep their ports.
        for i in [0, 2] {
            let (Some(orig), out) = (session_key(&flows[i]), tuple_of(&outs[i])) else {
                unreachable!()
            };
            assert_eq!(out.1, orig.sport, "{proto}: flow {i} needed no other port");
        }
        // Replies, newest flow first, then oldest first, then interleaved.
        for i in [2, 1, 0, 0, 1, 2, 1, 0] {
            s.reply(&flows[i], &outs[i]);
        }
        // The flows again: established, same tuples, replies still theirs.
        resend(s, proto, &flows, &outs, [0, 1, 2, 1, 0]);
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
    malformed_in(s, Fam::V4, |f, u| {
        let mut bad_ihl = f.to_vec();
        bad_ihl[14] = 0x44;
        let mut bad_version = f.to_vec();
        bad_version[14] = 0x65;
        let mut long_ihl = f.to_vec();
        long_ihl[14] = 0x4f;
        let cut_tcp = f[..14 + 20 + 8].to_vec();
        let cut_udp = u[..14 + 20 + 4].to_vec();
        vec![bad_ihl, bad_version, long_ihl, cut_tcp, cut_udp]
    });
    // UDP without payload, and with a zero length field: forwarded.
    udp_without_payload(s, Fam::V4);
    let mut zero_len = frame(
        lb_core::L4Proto::Udp,
        sa("192.168.5.2:40002"),
        sa("10.96.0.10:53"),
    );
    zero_len[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&[0, 0]);
    zero_len[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]); // no checksum
    assert!(s.send(&zero_len).backend().is_some());
}

/// Programs the ClusterIP `10.96.0.10` (or `fd00:96::10`) with TCP port 80
/// and UDP port 53 to backend 1, and sends the frames `bad` makes of a TCP
/// and a UDP frame from client 2 port 40000 to it: each is dropped and
/// counted as malformed. Returns the TCP frame.
pub(super) fn malformed_in(
    s: &mut Session,
    fam: Fam,
    bad: impl FnOnce(&[u8], &[u8]) -> Vec<Vec<u8>>,
) -> Vec<u8> {
    s.program(&[service_of(
        "default/web",
        &[
            (fam.cluster_ip(10, 80), FrontendType::ClusterIp),
            (fam.cluster_ip(10, "53/UDP"), FrontendType::ClusterIp),
        ],
        &[fam.local(1, 80), fam.local(1, "53/UDP")],
    )]);
    let f = tcp(&fam.client(2, 40000), &fam.cluster_ip(10, 80));
    let u = udp(&fam.client(2, 40000), &fam.cluster_ip(10, 53));
    assert_malformed_dropped(s, &bad(&f, &u));
    f
}

/// Each of `bad` is dropped, and counted as malformed where the dataplane
/// counts drops.
fn assert_malformed_dropped(s: &mut Session, bad: &[Vec<u8>]) {
    let before = s.dut.drops();
    for x in bad {
        assert_eq!(s.send(x).out, None, "not dropped: {x:02x?}");
    }
    if let (Some(b), Some(a)) = (before, s.dut.drops()) {
        assert_eq!(
            a.malformed - b.malformed,
            bad.len() as u64,
            "malformed drops counted"
        );
    }
}

/// A UDP datagram without payload from client 2 port 40001 to the
/// ClusterIP's port 53 is forwarded.
pub(super) fn udp_without_payload(s: &mut Session, fam: Fam) {
    let no_payload =
        crate::packets::PacketBuilder::udp(sa(&fam.client(2, 40001)), sa(&fam.cluster_ip(10, 53)))
            .build()
            .expect("frame");
    assert!(s.send(&no_payload).backend().is_some());
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
    // The IPv4 header cut at 14, 15, 26 and 33 bytes.
    let cuts: Vec<Vec<u8>> = [14, 14 + 1, 14 + 12, 14 + 19]
        .iter()
        .map(|&cut| f[..cut].to_vec())
        .collect();
    assert_malformed_dropped(s, &cuts);
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
        svc.backends.push(remote(b));
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
        v6.backends.push(remote(b));
    }
    s.program(&[remote_modes_service(), v6]);
    let node6 = NODE_IP6;
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
