//! IPv6 direct server return end to end: real TCP and UDP sockets in
//! lb-testkit's routed [`DsrTopology`] (IPv6 addressing), the tc programs on
//! the node sending DSR flows to the backends in IPv6-in-IPv6
//! (`bpf/lb_dsr6.h`), the DSR backend side (`bpf/lb_dsr_backend.c`) on the
//! backends decapsulating and answering the client directly. Privileged
//! (root); each test is bounded by 10 s socket timeouts and a few dozen
//! requests.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

mod common;

use common::{svc, web_and_dns_ip, Pins};
use lb_core::*;
use lb_ebpf::dsr::BackendSide;
use lb_ebpf::{EbpfDataplane, LoadOptions, Loaded};
use lb_testkit::dsr_topology::{DsrTopology, Host, VIP6};
use lb_testkit::{tcp_request, BpffsGuard, EchoServer};

const TIMEOUT: Duration = Duration::from_secs(10);
const SEED: u32 = 4242;

fn tag(k: usize) -> Vec<u8> {
    format!("be{k}:").into_bytes()
}

fn who(reply: &[u8]) -> usize {
    let s = String::from_utf8_lossy(reply);
    s.strip_prefix("be")
        .and_then(|r| r.split(':').next())
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("unexpected reply {s:?}"))
}

struct Lb {
    dp: EbpfDataplane,
    _loaded: Loaded,
    _pins: Pins,
    _bpffs: BpffsGuard,
}

/// A node with both its addresses (the IPv6 one is the outer source of
/// its IPv6-in-IPv6 packets).
fn node_config(node: &Host, mode: LbMode) -> NodeConfig {
    let mut cfg = NodeConfig::new("node-1", vec![node.v4.into(), node.v6.into()]);
    cfg.mode = mode;
    cfg.maglev = MaglevConfig::new(251, SEED).unwrap();
    cfg
}

fn start_lb(node: &Host, cfg: &NodeConfig, services: &[Service]) -> Lb {
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

/// Echo servers (TCP 8080, UDP 5353 on the backend's IPv6 address) and the
/// DSR backend side on every backend, taking DSR traffic from every node's
/// IPv6 address.
fn start_backends(topo: &DsrTopology) -> (Vec<EchoServer>, Vec<BackendSide>) {
    let nodes: Vec<Ipv6Addr> = topo.nodes.iter().map(|n| n.v6).collect();
    let mut servers = Vec::new();
    let mut sides = Vec::new();
    for (i, b) in topo.backends.iter().enumerate() {
        servers.push(EchoServer::tcp(&b.ns, SocketAddr::from((b.v6, 8080)), &tag(i + 1)).unwrap());
        servers.push(EchoServer::udp(&b.ns, SocketAddr::from((b.v6, 5353)), &tag(i + 1)).unwrap());
        let dev = b.link.name.clone();
        sides.push(
            b.ns.run_in(|| BackendSide::attach(&dev, &nodes))
                .unwrap()
                .expect("attach the DSR backend side"),
        );
    }
    (servers, sides)
}

/// `web` (TCP) and `dns` (UDP), each on an IPv6 LoadBalancer VIP and a
/// NodePort on `[::]`.
fn services(topo: &DsrTopology) -> Vec<Service> {
    let backends: Vec<IpAddr> = topo.backends.iter().map(|b| b.v6.into()).collect();
    web_and_dns_ip(VIP6.into(), &backends)
}

fn client_udp(topo: &DsrTopology, timeout: Duration) -> UdpSocket {
    let sock = topo
        .client
        .ns
        .run_in(|| UdpSocket::bind(("::", 0)))
        .unwrap()
        .unwrap();
    sock.set_read_timeout(Some(timeout)).unwrap();
    sock
}

/// One UDP request; the reply must come from `dst` itself.
fn udp_req(topo: &DsrTopology, dst: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let sock = client_udp(topo, TIMEOUT);
    sock.send_to(msg, dst).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = sock.recv_from(&mut buf).expect("UDP reply");
    assert_eq!(from, dst, "the reply must come from the frontend");
    buf[..n].to_vec()
}

fn decapsulated(sides: &[BackendSide]) -> u64 {
    sides.iter().map(|s| s.stats().unwrap().decapsulated).sum()
}

fn reversed(sides: &[BackendSide]) -> u64 {
    sides.iter().map(|s| s.stats().unwrap().reversed).sum()
}

/// A counter of the client's `/proc/net/snmp6`.
fn snmp6(topo: &DsrTopology, name: &str) -> u64 {
    let out = topo.client.ns.exec_ok(&["cat", "/proc/net/snmp6"]).unwrap();
    out.lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(name)).then(|| it.next().unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("{name} not in snmp6"))
}

/// The client's route (with any learned path MTU) to `dst`.
fn client_route(topo: &DsrTopology, dst: IpAddr) -> String {
    topo.client
        .ns
        .exec_ok(&["ip", "-6", "route", "get", &dst.to_string()])
        .unwrap()
}

/// The client link (both ends) at MTU 1500, like the node's and the
/// backends' links, so a full-sized client packet no longer fits once
/// encapsulated.
fn client_link_1500(topo: &DsrTopology) {
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

/// TCP (small and 256 KiB echoes) and UDP through the IPv6 LoadBalancer VIP
/// and the NodePort on the node's IPv6 address reach the backends in
/// IPv6-in-IPv6; replies come from the frontend and bypass the node, which
/// keeps no SNAT or reply state for them.
#[test]
fn dsr6_tcp_and_udp_reach_remote_backends_and_replies_bypass_the_node() {
    lb_testkit::require_privileges();
    let topo = DsrTopology::new(1, 2).expect("topology");
    let (_servers, sides) = start_backends(&topo);
    let node = &topo.nodes[0];
    let cfg = node_config(node, LbMode::Dsr);
    let mut lb = start_lb(node, &cfg, &services(&topo));

    let big = vec![b'x'; 256 * 1024];
    for dst in [
        SocketAddr::from((VIP6, 80)),
        SocketAddr::from((node.v6, 30080)),
    ] {
        for msg in [&b"hello"[..], &big[..]] {
            let r = tcp_request(&topo.client.ns, dst, msg, TIMEOUT)
                .unwrap_or_else(|e| panic!("DSR TCP, {} bytes to {dst}: {e}", msg.len()));
            assert!((1..=2).contains(&who(&r)), "{dst}");
            assert!(r.ends_with(msg), "{dst}: echo of {} bytes", msg.len());
        }
    }
    assert!(decapsulated(&sides) > 0 && reversed(&sides) > 0);

    for dst in [
        SocketAddr::from((VIP6, 53)),
        SocketAddr::from((node.v6, 30053)),
    ] {
        let r = udp_req(&topo, dst, b"dns?");
        assert!((1..=2).contains(&who(&r)) && r.ends_with(b"dns?"), "{r:?}");
    }

    // Replies bypass the node: it receives the requests only.
    let (d0, r0) = (decapsulated(&sides), reversed(&sides));
    let n = 30;
    let before = DsrTopology::rx_packets(node).unwrap();
    for i in 0..n {
        let r = udp_req(
            &topo,
            SocketAddr::from((VIP6, 53)),
            format!("q{i}").as_bytes(),
        );
        assert!(r.ends_with(format!("q{i}").as_bytes()), "{r:?}");
    }
    let rx = DsrTopology::rx_packets(node).unwrap() - before;
    assert!(
        rx < n + n / 2,
        "node received {rx} packets for {n} requests"
    );
    assert!(decapsulated(&sides) - d0 >= n);
    assert!(reversed(&sides) - r0 >= n);
    assert_eq!(lb.dp.maps().snat6.keys().count(), 0, "no IPv6 SNAT");
    for k in lb.dp.maps().ct6.keys() {
        assert_eq!(k.unwrap().dir, 0, "only client-direction CT entries");
    }
}

/// Over 1500-byte links everywhere, a full-sized IPv6 packet no longer fits
/// once encapsulated: the node counts it as `FragNeeded` and answers the
/// client with ICMPv6 Packet Too Big from the frontend (MTU 1500 - 40), so
/// the client's path MTU to the VIP becomes 1460 and smaller packets get
/// through. Then a large TCP request with the client's segmentation offload
/// off (every full-sized segment a packet of its own) is answered: its
/// first full-sized segments get Packet Too Big and TCP sends smaller ones.
/// Bounded: four UDP requests (2 s timeout for the dropped one) and one
/// 256 KiB echo.
#[test]
fn dsr6_packets_over_the_mtu_after_encapsulation_get_packet_too_big() {
    lb_testkit::require_privileges();
    let topo = DsrTopology::new(1, 1).expect("topology");
    let (_servers, _sides) = start_backends(&topo);
    let node = &topo.nodes[0];
    let lb = start_lb(node, &node_config(node, LbMode::Dsr), &services(&topo));
    client_link_1500(&topo);
    let too_big = || {
        lb.dp
            .counters()
            .unwrap()
            .drops_for(lb_ebpf::abi::DropReason::FragNeeded)
    };
    let dst = SocketAddr::from((VIP6, 53));
    let fits = vec![b'f'; 1400];
    assert!(udp_req(&topo, dst, &fits).ends_with(&fits));
    assert_eq!(too_big(), 0);

    // 1452 bytes of UDP payload: a 1500-byte IPv6 packet, 1540 encapsulated.
    let ptb0 = snmp6(&topo, "Icmp6InPktTooBigs");
    let sock = client_udp(&topo, Duration::from_secs(2));
    sock.send_to(&[b'b'; 1452], dst).unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "no reply to a dropped request"
    );
    assert_eq!(too_big(), 1, "counted once as FragNeeded");
    assert_eq!(
        snmp6(&topo, "Icmp6InPktTooBigs") - ptb0,
        1,
        "the client got Packet Too Big"
    );
    let route = client_route(&topo, VIP6.into());
    assert!(route.contains("mtu 1460"), "path MTU to the VIP: {route}");
    assert!(udp_req(&topo, dst, &fits).ends_with(&fits));

    // TCP to the NodePort (no path MTU learned for it yet), offloads off.
    let dev = topo.client.link.name.clone();
    let ethtool = Command::new("nsenter")
        .arg(format!("--net={}", topo.client.ns.path().display()))
        .args(["ethtool", "-K", &dev, "tso", "off", "gso", "off"])
        .status()
        .expect("run ethtool");
    assert!(ethtool.success(), "ethtool -K {dev} tso off gso off");
    let nodeport = SocketAddr::from((node.v6, 30080));
    assert!(
        !client_route(&topo, node.v6.into()).contains("mtu 1460"),
        "no path MTU to the node yet"
    );
    let big = vec![b'y'; 256 * 1024];
    let r = tcp_request(&topo.client.ns, nodeport, &big, TIMEOUT).expect("large TCP request");
    assert!(r.ends_with(&big), "echo of 256 KiB");
    let route = client_route(&topo, node.v6.into());
    assert!(
        route.contains("mtu 1460"),
        "path MTU to the node after a large request: {route}"
    );
    assert!(too_big() > 1, "the large request hit Packet Too Big");
}

/// A UDP request through IPv6 DSR to a backend port nobody listens on: the
/// backend's ICMPv6 port unreachable is translated back to the frontend on
/// its way out, so the client's connected socket sees the refusal.
/// Bounded: one request, 5 s read timeout.
#[test]
fn a_backends_icmpv6_port_unreachable_reaches_the_clients_socket_through_dsr() {
    lb_testkit::require_privileges();
    let topo = DsrTopology::new(1, 1).expect("topology");
    let (_servers, sides) = start_backends(&topo);
    let node = &topo.nodes[0];
    let mut void = svc(
        "default/void6",
        &[(format!("[{VIP6}]:54/UDP"), FrontendType::LoadBalancer)],
        vec![format!("[{}]:5454/UDP", topo.backends[0].v6)],
    );
    void.algorithm = Some(LbAlgorithm::Maglev);
    let mut all = services(&topo);
    all.push(void);
    let _lb = start_lb(node, &node_config(node, LbMode::Dsr), &all);

    let sock = client_udp(&topo, Duration::from_secs(5));
    sock.connect(SocketAddr::from((VIP6, 54))).unwrap();
    sock.send(b"anyone?").unwrap();
    let mut buf = [0u8; 64];
    let err = sock.recv(&mut buf).expect_err("no server behind VIP6:54");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(sides[0].stats().unwrap().icmp_reversed, 1);
}

/// Hybrid mode over IPv6: TCP goes in IPv6-in-IPv6, UDP is SNATed to the
/// node's IPv6 address (its replies return through the node). Bounded:
/// five TCP and five UDP requests.
#[test]
fn hybrid6_sends_tcp_with_dsr_and_udp_with_snat() {
    lb_testkit::require_privileges();
    let topo = DsrTopology::new(1, 2).expect("topology");
    let (_servers, sides) = start_backends(&topo);
    let node = &topo.nodes[0];
    let mut lb = start_lb(node, &node_config(node, LbMode::Hybrid), &services(&topo));
    let d0 = decapsulated(&sides);
    for _ in 0..5 {
        let r = tcp_request(&topo.client.ns, SocketAddr::from((VIP6, 80)), b"t", TIMEOUT)
            .expect("hybrid TCP");
        assert!(r.ends_with(b"t"), "{r:?}");
    }
    assert!(decapsulated(&sides) - d0 >= 5, "TCP went through DSR");
    let d1 = decapsulated(&sides);
    for i in 0..5 {
        let msg = format!("u{i}");
        let r = udp_req(&topo, SocketAddr::from((VIP6, 53)), msg.as_bytes());
        assert!(r.ends_with(msg.as_bytes()), "{r:?}");
    }
    assert_eq!(decapsulated(&sides), d1, "UDP is not encapsulated");
    assert!(
        lb.dp.maps().snat6.keys().count() > 0,
        "UDP flows are SNATed"
    );
}
