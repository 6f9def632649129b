//! The DSR lab of `dsr.rs` (IPv4, IPIP) and `dsr6.rs` (IPv6,
//! IPv6-in-IPv6): lb-testkit's routed [`DsrTopology`], echo servers and the
//! DSR backend side on the backends, the tc programs on a node, real
//! client sockets, and the checks both families share. Every socket read
//! is bounded by [`TIMEOUT`] or less. Included with
//! `#[path = "common/dsr_lab.rs"] mod dsr_lab;` next to `mod common;`.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use lb_core::*;
use lb_ebpf::dsr::BackendSide;
use lb_ebpf::{EbpfDataplane, LoadOptions, Loaded};
use lb_testkit::dsr_topology::{DsrTopology, Host, VIP, VIP6};
use lb_testkit::{tcp_request, BpffsGuard, EchoServer};

use crate::common::{svc, web_and_dns_ip, Pins};

/// Per connect/read/write. 5 s timed out once for the 256 KiB NodePort
/// request while the whole workspace suite ran on 2 shared cores.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The Maglev seed of every node.
pub const SEED: u32 = 4242;

/// The address family a DSR test runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fam {
    /// IPv4: [`VIP`], IPIP.
    V4,
    /// IPv6: [`VIP6`], IPv6-in-IPv6.
    V6,
}

impl Fam {
    /// The LoadBalancer VIP.
    pub fn vip(self) -> IpAddr {
        match self {
            Fam::V4 => VIP.into(),
            Fam::V6 => VIP6.into(),
        }
    }

    /// `host`'s address.
    pub fn of(self, host: &Host) -> IpAddr {
        match self {
            Fam::V4 => host.v4.into(),
            Fam::V6 => host.v6.into(),
        }
    }

    /// The addresses node `node` is configured with: its IPv4 one, and for
    /// IPv6 its IPv6 one too (the outer source of its IPv6-in-IPv6 packets).
    pub fn node_ips(self, node: &Host) -> Vec<IpAddr> {
        match self {
            Fam::V4 => vec![node.v4.into()],
            Fam::V6 => vec![node.v4.into(), node.v6.into()],
        }
    }

    /// The family of `addr`.
    pub fn of_addr(addr: IpAddr) -> Fam {
        if addr.is_ipv6() {
            Fam::V6
        } else {
            Fam::V4
        }
    }

    /// The wildcard address.
    pub fn any(self) -> IpAddr {
        match self {
            Fam::V4 => Ipv4Addr::UNSPECIFIED.into(),
            Fam::V6 => Ipv6Addr::UNSPECIFIED.into(),
        }
    }
}

/// The tag backend `k` (1-based) prefixes its echoes with.
pub fn tag(k: usize) -> Vec<u8> {
    format!("be{k}:").into_bytes()
}

/// Which backend sent `reply` (its [`tag`]).
pub fn who(reply: &[u8]) -> usize {
    let s = String::from_utf8_lossy(reply);
    s.strip_prefix("be")
        .and_then(|r| r.split(':').next())
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("unexpected reply {s:?}"))
}

/// One node's load balancer: programs on its link, maps in a private bpffs.
pub struct Lb {
    pub dp: EbpfDataplane,
    _loaded: Loaded,
    _pins: Pins,
    _bpffs: BpffsGuard,
}

/// Node `name` with addresses `ips` in `mode`, Maglev seeded with [`SEED`].
pub fn node_config(name: &str, ips: &[IpAddr], mode: LbMode) -> NodeConfig {
    let mut cfg = NodeConfig::new(name, ips.to_vec());
    cfg.mode = mode;
    cfg.maglev = MaglevConfig::new(251, SEED).unwrap();
    cfg
}

/// Loads and attaches the tc programs on `node`'s link and programs
/// `services`.
pub fn start_lb(node: &Host, cfg: &NodeConfig, services: &[Service]) -> Lb {
    let bpffs = BpffsGuard::new().expect("bpffs");
    let pin_dir = bpffs.pin_path("lb");
    let pins = Pins(pin_dir.clone());
    let dev = node.link.name.clone();
    let loaded = node
        .ns
        .run_in(|| lb_ebpf::load(&LoadOptions::new(&pin_dir, &[&dev])))
        .unwrap()
        .expect("load and attach");
    let mut dp = EbpfDataplane::open(&pin_dir, cfg).expect("open dataplane");
    let desired = DesiredState::build(cfg, services).unwrap();
    Reconciler::new()
        .apply(&mut dp, &desired)
        .expect("reconcile");
    Lb {
        dp,
        _loaded: loaded,
        _pins: pins,
        _bpffs: bpffs,
    }
}

/// Echo servers (TCP 8080, UDP 5353 on the backend's `fam` address) and
/// the DSR backend side on every backend, taking DSR traffic from every
/// node's `fam` address.
pub fn start_backends(topo: &DsrTopology, fam: Fam) -> (Vec<EchoServer>, Vec<BackendSide>) {
    let nodes: Vec<IpAddr> = topo.nodes.iter().map(|n| fam.of(n)).collect();
    start_backends_for(topo, fam, &nodes)
}

/// Like [`start_backends`], the backend side taking DSR traffic from
/// `nodes` only.
pub fn start_backends_for<A: Into<IpAddr> + Copy>(
    topo: &DsrTopology,
    fam: Fam,
    nodes: &[A],
) -> (Vec<EchoServer>, Vec<BackendSide>) {
    let mut servers = Vec::new();
    let mut sides = Vec::new();
    for (i, b) in topo.backends.iter().enumerate() {
        let ip = fam.of(b);
        servers.push(EchoServer::tcp(&b.ns, SocketAddr::new(ip, 8080), &tag(i + 1)).unwrap());
        servers.push(EchoServer::udp(&b.ns, SocketAddr::new(ip, 5353), &tag(i + 1)).unwrap());
        let dev = b.link.name.clone();
        sides.push(
            b.ns.run_in(|| BackendSide::attach(&dev, nodes))
                .unwrap()
                .expect("attach the DSR backend side"),
        );
    }
    (servers, sides)
}

/// `web` (TCP) and `dns` (UDP), each on the LoadBalancer VIP of `fam` and
/// a NodePort on its wildcard.
pub fn services(topo: &DsrTopology, fam: Fam) -> Vec<Service> {
    let backends: Vec<IpAddr> = topo.backends.iter().map(|b| fam.of(b)).collect();
    web_and_dns_ip(fam.vip(), &backends)
}

/// A UDP socket of the client on port `sport` (0: any) of `fam`'s
/// wildcard, reads bounded by `timeout`.
pub fn client_udp(topo: &DsrTopology, fam: Fam, sport: u16, timeout: Duration) -> UdpSocket {
    let sock = topo
        .client
        .ns
        .run_in(|| UdpSocket::bind(SocketAddr::new(fam.any(), sport)))
        .unwrap()
        .unwrap();
    sock.set_read_timeout(Some(timeout)).unwrap();
    sock
}

/// One UDP request from client port `sport` (0: any); the reply must come
/// from `dst` itself.
pub fn udp_from(topo: &DsrTopology, sport: u16, dst: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let sock = client_udp(topo, Fam::of_addr(dst.ip()), sport, TIMEOUT);
    sock.send_to(msg, dst).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = sock.recv_from(&mut buf).expect("UDP reply");
    assert_eq!(from, dst, "the reply must come from the frontend");
    buf[..n].to_vec()
}

/// Sends `msg` to `dst` from a fresh client socket and asserts that no
/// reply comes within 2 s.
pub fn udp_unanswered(topo: &DsrTopology, dst: SocketAddr, msg: &[u8]) {
    let sock = client_udp(topo, Fam::of_addr(dst.ip()), 0, Duration::from_secs(2));
    sock.send_to(msg, dst).unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "no reply to a dropped request"
    );
}

/// Packets the backend sides decapsulated.
pub fn decapsulated(sides: &[BackendSide]) -> u64 {
    sides.iter().map(|s| s.stats().unwrap().decapsulated).sum()
}

/// Replies the backend sides rewrote to come from the frontend.
pub fn reversed(sides: &[BackendSide]) -> u64 {
    sides.iter().map(|s| s.stats().unwrap().reversed).sum()
}

/// Sends `n` UDP requests to `dst` and returns how many packets the node
/// received meanwhile: about `n` when replies bypass it, `2n` when they
/// come back through it.
pub fn node_rx_during_udp(topo: &DsrTopology, node: &Host, dst: SocketAddr, n: u64) -> u64 {
    let before = DsrTopology::rx_packets(node).unwrap();
    for i in 0..n {
        let r = udp_from(topo, 0, dst, format!("q{i}").as_bytes());
        assert!(r.ends_with(format!("q{i}").as_bytes()), "{r:?}");
    }
    DsrTopology::rx_packets(node).unwrap() - before
}

/// The `Tcp: RetransSegs` counter of a namespace (`/proc/net/snmp`).
pub fn tcp_retrans_segs(ns: &lb_testkit::NetNs) -> u64 {
    let out = ns.exec_ok(&["cat", "/proc/net/snmp"]).expect("read snmp");
    let mut tcp = out.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "RetransSegs")
        .expect("RetransSegs");
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// The client's route (with any learned path MTU) to `dst`.
pub fn client_route(topo: &DsrTopology, dst: IpAddr) -> String {
    let dst = dst.to_string();
    let args: &[&str] = match Fam::of_addr(dst.parse().unwrap()) {
        Fam::V4 => &["ip", "route", "get", &dst],
        Fam::V6 => &["ip", "-6", "route", "get", &dst],
    };
    topo.client.ns.exec_ok(args).unwrap()
}

/// The client link (both ends) at MTU 1500, like the node's and the
/// backends' links, so a full-sized client packet no longer fits once
/// encapsulated.
pub fn client_link_1500(topo: &DsrTopology) {
    topo.client
        .ns
        .ip(&["link", "set", "dev", &topo.client.link.name, "mtu", "1500"])
        .unwrap();
    topo.router
        .ip(&[
            "link",
            "set",
            "dev",
            &topo.client.router_link.name,
            "mtu",
            "1500",
        ])
        .unwrap();
}

/// Packets the node dropped as too big once encapsulated (`FragNeeded`).
pub fn too_big(lb: &Lb) -> u64 {
    lb.dp
        .counters()
        .unwrap()
        .drops_for(lb_ebpf::abi::DropReason::FragNeeded)
}

/// TCP (small and 256 KiB echoes) and UDP through the LoadBalancer VIP of
/// `fam` and the NodePort on the node's `fam` address reach the backends
/// encapsulated; replies come from the frontend and bypass the node (it
/// receives about one packet per request). With `max_retrans`, the client
/// retransmitted at most that many TCP segments for the echoes. Then
/// `no_reply_state` checks the node's maps. Bounded: four TCP and 32 UDP
/// requests.
pub fn tcp_and_udp_reach_remote_backends_and_replies_bypass_the_node(
    fam: Fam,
    max_retrans: Option<u64>,
    no_reply_state: impl FnOnce(&mut EbpfDataplane),
) {
    lb_testkit::require_privileges();
    let topo = DsrTopology::new(1, 2).expect("topology");
    let (_servers, sides) = start_backends(&topo, fam);
    let node = &topo.nodes[0];
    let cfg = node_config("node-1", &fam.node_ips(node), LbMode::Dsr);
    let mut lb = start_lb(node, &cfg, &services(&topo, fam));

    // TCP through the LoadBalancer VIP and the NodePort, small and large
    // (the client link's MTU leaves room for the outer header).
    let big = vec![b'x'; 256 * 1024];
    let retrans0 = tcp_retrans_segs(&topo.client.ns);
    for dst in [
        SocketAddr::new(fam.vip(), 80),
        SocketAddr::new(fam.of(node), 30080),
    ] {
        for msg in [&b"hello"[..], &big[..]] {
            let t0 = std::time::Instant::now();
            let r = tcp_request(&topo.client.ns, dst, msg, TIMEOUT)
                .unwrap_or_else(|e| panic!("DSR TCP, {} bytes to {dst}: {e}", msg.len()));
            eprintln!("{dst}: {} bytes in {:?}", msg.len(), t0.elapsed());
            assert!((1..=2).contains(&who(&r)), "{dst}");
            assert!(r.ends_with(msg), "{dst}: echo of {} bytes", msg.len());
        }
    }
    let retrans = tcp_retrans_segs(&topo.client.ns) - retrans0;
    eprintln!("client retransmitted {retrans} TCP segments");
    if let Some(max) = max_retrans {
        assert!(
            retrans <= max,
            "{retrans} retransmitted segments: packets are lost on the way"
        );
    }
    assert!(decapsulated(&sides) > 0 && reversed(&sides) > 0);

    // UDP through both frontends; replies come from the frontend.
    for dst in [
        SocketAddr::new(fam.vip(), 53),
        SocketAddr::new(fam.of(node), 30053),
    ] {
        let r = udp_from(&topo, 0, dst, b"dns?");
        assert!((1..=2).contains(&who(&r)) && r.ends_with(b"dns?"), "{r:?}");
    }

    // Replies bypass the node: it receives the requests only.
    let (d0, r0) = (decapsulated(&sides), reversed(&sides));
    let n = 30;
    let rx = node_rx_during_udp(&topo, node, SocketAddr::new(fam.vip(), 53), n);
    assert!(
        rx < n + n / 2,
        "node received {rx} packets for {n} requests"
    );
    assert!(decapsulated(&sides) - d0 >= n);
    assert!(reversed(&sides) - r0 >= n);
    // And the node holds no reply state.
    no_reply_state(&mut lb.dp);
}

/// Five TCP requests to the VIP of `fam` go through DSR (decapsulated on
/// the backends).
pub fn tcp_goes_through_dsr(topo: &DsrTopology, fam: Fam, sides: &[BackendSide]) {
    let d0 = decapsulated(sides);
    for _ in 0..5 {
        let r = tcp_request(
            &topo.client.ns,
            SocketAddr::new(fam.vip(), 80),
            b"t",
            TIMEOUT,
        )
        .expect("hybrid TCP");
        assert!(r.ends_with(b"t"), "{r:?}");
    }
    assert!(decapsulated(sides) - d0 >= 5, "TCP went through DSR");
}

/// A UDP request through DSR (service `name`, VIP port 54) to a backend
/// port nobody listens on: the backend's ICMP or ICMPv6 port unreachable is
/// translated back to the frontend on its way out, so the client's
/// connected socket sees the refusal (without the translation the error
/// names the backend and the socket just times out). Bounded: one request,
/// 5 s read timeout.
pub fn a_backends_port_unreachable_reaches_the_clients_socket(fam: Fam, name: &str) {
    lb_testkit::require_privileges();
    let topo = DsrTopology::new(1, 1).expect("topology");
    let (_servers, sides) = start_backends(&topo, fam);
    let node = &topo.nodes[0];
    let mut void = svc(
        name,
        &[(
            format!("{}/UDP", SocketAddr::new(fam.vip(), 54)),
            FrontendType::LoadBalancer,
        )],
        vec![format!(
            "{}/UDP",
            SocketAddr::new(fam.of(&topo.backends[0]), 5454)
        )],
    );
    void.algorithm = Some(LbAlgorithm::Maglev);
    let mut all = services(&topo, fam);
    all.push(void);
    let _lb = start_lb(
        node,
        &node_config("node-1", &fam.node_ips(node), LbMode::Dsr),
        &all,
    );

    let sock = client_udp(&topo, fam, 0, Duration::from_secs(5));
    sock.connect(SocketAddr::new(fam.vip(), 54)).unwrap();
    sock.send(b"anyone?").unwrap();
    let mut buf = [0u8; 64];
    let err = sock.recv(&mut buf).expect_err("no server behind VIP:54");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(sides[0].stats().unwrap().icmp_reversed, 1);
}
