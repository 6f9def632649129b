//! ICMP errors about load-balanced flows through lb-userspace's packet
//! path, at packet level, IPv4 and IPv6: an error from the backend or from
//! a router, quoting the packet the node sent to the backend (DNATed,
//! SNATed, or from a remapped client port), must come out as the error the
//! client would have got from the frontend: byte for byte the error built
//! from scratch about the client's own packet (so every checksum — outer
//! IPv4, ICMP/ICMPv6 with its pseudo-header, quoted IPv4, quoted TCP/UDP —
//! is the freshly computed one). For IPv4 these are the cases of lb-ebpf's
//! `tests/icmp.rs` (`lb_icmp.h`), with the same expectations.

use std::net::{IpAddr, SocketAddr};

use lb_core::*;
use lb_testkit::packets::ICMP_PORT_UNREACH;
use lb_testkit::{IcmpBuilder, PacketBuilder};
use lb_userspace::rng::FastRng;
use lb_userspace::{Config, Direction, Outcome, PacketPath, UserspaceDataplane};

struct Family {
    node: &'static str,
    client: &'static str,
    vip: &'static str,
    backend: &'static str,
    router: &'static str,
}

const V4: Family = Family {
    node: "192.168.1.10",
    client: "192.168.5.2",
    vip: "10.96.0.10",
    backend: "10.0.1.5",
    router: "10.0.9.1",
};

const V6: Family = Family {
    node: "fd00:1::10",
    client: "fd00:5::2",
    vip: "fd00:96::10",
    backend: "fd00:1:1::5",
    router: "fd00:9::1",
};

fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One service: ClusterIP `vip:80` and `vip:53/UDP`, NodePort 30080 (TCP
/// and UDP), one backend (`on` node) with ports 8080 and 5353/UDP.
fn dataplane(f: &Family, on: &str) -> (UserspaceDataplane, PacketPath) {
    let node = NodeConfig::new("node-1", vec![ip(f.node)]);
    let mut svc = Service::new("default/web".parse().unwrap());
    for (fe, ty) in [
        (sa(f.vip, 80).to_string(), FrontendType::ClusterIp),
        (format!("{}/UDP", sa(f.vip, 53)), FrontendType::ClusterIp),
        (sa(f.node, 30080).to_string(), FrontendType::NodePort),
        (format!("{}/UDP", sa(f.node, 30053)), FrontendType::NodePort),
    ] {
        svc.frontends
            .push(FrontendParams::new(fe.parse().unwrap(), ty));
    }
    for b in [
        sa(f.backend, 8080).to_string(),
        format!("{}/UDP", sa(f.backend, 5353)),
    ] {
        svc.backends
            .push(BackendParams::new(b.parse().unwrap()).on_node(on));
    }
    let desired = DesiredState::build(&node, &[svc]).unwrap();
    let mut dp = UserspaceDataplane::new(node, Config::default());
    Reconciler::new().apply(&mut dp, &desired).unwrap();
    let w = dp.worker_with_rng(FastRng::new(3));
    (dp, w)
}

/// Sends the client's `frame` through the path; returns the forwarded frame.
fn forward(w: &mut PacketPath, frame: &[u8]) -> Vec<u8> {
    let mut b = frame.to_vec();
    let out = w.process(&mut b, Direction::ToFrontend, 1);
    assert!(matches!(out, Outcome::Forwarded(_)), "{out:?}");
    b
}

/// The error the path makes of `err` from the backends' side.
fn reply(w: &mut PacketPath, err: &[u8]) -> (Outcome, Vec<u8>) {
    let mut b = err.to_vec();
    let out = w.process(&mut b, Direction::Reply, 1);
    (out, b)
}

/// Source and destination of a frame's IP header.
fn ips(frame: &[u8]) -> (IpAddr, IpAddr) {
    let ip = &frame[14..];
    if ip[0] >> 4 == 4 {
        let a: [u8; 4] = ip[12..16].try_into().unwrap();
        let b: [u8; 4] = ip[16..20].try_into().unwrap();
        (a.into(), b.into())
    } else {
        let a: [u8; 16] = ip[8..24].try_into().unwrap();
        let b: [u8; 16] = ip[24..40].try_into().unwrap();
        (a.into(), b.into())
    }
}

type Make = fn(IpAddr, IpAddr, &[u8]) -> IcmpBuilder;

fn port_unreachable(src: IpAddr, dst: IpAddr, inner: &[u8]) -> IcmpBuilder {
    let code = if src.is_ipv4() { ICMP_PORT_UNREACH } else { 4 };
    IcmpBuilder::dest_unreachable(src, dst, code, inner)
}

fn too_big(src: IpAddr, dst: IpAddr, inner: &[u8]) -> IcmpBuilder {
    IcmpBuilder::packet_too_big(src, dst, 1400, inner)
}

fn time_exceeded(src: IpAddr, dst: IpAddr, inner: &[u8]) -> IcmpBuilder {
    IcmpBuilder::time_exceeded(src, dst, inner)
}

const KINDS: [(&str, Make); 3] = [
    ("port unreachable", port_unreachable),
    ("packet too big / frag needed", too_big),
    ("time exceeded", time_exceeded),
];

/// For every kind of error, from the backend and from a router, full and
/// truncated quotes: the client's frame `client_frame` forwarded, the error
/// about the forwarded packet, translated, equals the error about
/// `client_frame` from `frontend` (backend errors) or the router.
fn check(w: &mut PacketPath, f: &Family, client_frame: &[u8], frontend: IpAddr) {
    let fwd = forward(w, client_frame);
    let (node_side, be) = ips(&fwd);
    for (name, make) in KINDS {
        for (from, shown) in [(ip(f.backend), frontend), (ip(f.router), ip(f.router))] {
            assert_eq!(be, ip(f.backend));
            // 8 bytes of L4 (no TCP checksum quoted) or the whole packet.
            let hl = if be.is_ipv4() { 20 } else { 40 };
            for cut in [hl + 8, usize::MAX] {
                let err = make(from, node_side, &fwd[14..])
                    .truncate_inner(cut)
                    .build()
                    .unwrap();
                let want = make(shown, ips(client_frame).0, &client_frame[14..])
                    .truncate_inner(cut)
                    .build()
                    .unwrap();
                let (out, got) = reply(w, &err);
                assert!(
                    matches!(out, Outcome::ReverseNated { .. }),
                    "{name} from {from}: {out:?}"
                );
                assert_eq!(got, want, "{name} from {from}, quote cut at {cut}");
            }
        }
    }
}

fn client_tcp(f: &Family, to: SocketAddr) -> Vec<u8> {
    PacketBuilder::tcp(sa(f.client, 40000), to)
        .syn()
        .payload(b"hello")
        .build()
        .unwrap()
}

fn client_udp(f: &Family, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    PacketBuilder::udp(sa(f.client, 40001), to)
        .payload(payload)
        .build()
        .unwrap()
}

fn dnat_and_snat(f: &Family) {
    // DNAT only: a ClusterIP with a local backend.
    let (_dp, mut w) = dataplane(f, "node-1");
    check(&mut w, f, &client_tcp(f, sa(f.vip, 80)), ip(f.vip));
    check(&mut w, f, &client_udp(f, sa(f.vip, 53), b"q"), ip(f.vip));
    // SNATed: a NodePort with a remote backend; the error is addressed to
    // the node and quotes node:port -> backend.
    let (_dp, mut w) = dataplane(f, "node-2");
    let np = client_tcp(f, sa(f.node, 30080));
    let fwd = forward(&mut w, &np);
    assert_eq!(ips(&fwd).0, ip(f.node), "SNATed");
    check(&mut w, f, &np, ip(f.node));
    check(
        &mut w,
        f,
        &client_udp(f, sa(f.node, 30053), b"q"),
        ip(f.node),
    );
}

#[test]
fn errors_about_dnated_and_snated_flows_reach_the_client_ipv4() {
    dnat_and_snat(&V4);
}

#[test]
fn errors_about_dnated_and_snated_flows_reach_the_client_ipv6() {
    dnat_and_snat(&V6);
}

/// An IPv4 UDP datagram sent without a checksum: the quote keeps it zero
/// (IPv6 UDP must have one).
#[test]
fn a_zero_udp_checksum_stays_zero() {
    let f = &V4;
    let (_dp, mut w) = dataplane(f, "node-1");
    let mut frame = client_udp(f, sa(f.vip, 53), b"no checksum");
    frame[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    check(&mut w, f, &frame, ip(f.vip));
}

/// lb-ebpf's `errors_about_a_remapped_flow_name_the_clients_own_port`: one
/// client port to the ClusterIP and the NodePort of one local backend;
/// the second flow reaches the backend from another port (its reply tuple
/// was taken), and errors about it name the client's own port again.
#[test]
fn errors_about_a_remapped_flow_name_the_clients_own_port() {
    for f in [&V4, &V6] {
        let (_dp, mut w) = dataplane(f, "node-1");
        let a = client_tcp(f, sa(f.vip, 80));
        let b = client_tcp(f, sa(f.node, 30080));
        let fa = forward(&mut w, &a);
        let fb = forward(&mut w, &b);
        let port = |fr: &[u8]| {
            let l4 = if fr[14] >> 4 == 4 { 34 } else { 54 };
            u16::from_be_bytes([fr[l4], fr[l4 + 1]])
        };
        assert_eq!(port(&fa), 40000);
        assert_ne!(port(&fb), 40000, "the second flow is remapped");
        check(&mut w, f, &b, ip(f.node));
        check(&mut w, f, &a, ip(f.vip));
    }
}

/// Errors about flows the path does not track, echo messages and
/// ICMPv6 neighbour discovery pass untouched.
#[test]
fn other_icmp_passes_untouched() {
    for f in [&V4, &V6] {
        let (_dp, mut w) = dataplane(f, "node-1");
        let stray = PacketBuilder::tcp(sa(f.client, 41000), sa(f.backend, 8080))
            .syn()
            .build_ip()
            .unwrap();
        let err = port_unreachable(ip(f.backend), ip(f.client), &stray)
            .build()
            .unwrap();
        assert_eq!(reply(&mut w, &err), (Outcome::Pass, err.clone()));
        let echo = IcmpBuilder::echo_reply(ip(f.backend), ip(f.client), 1, 1, b"ping")
            .build()
            .unwrap();
        assert_eq!(reply(&mut w, &echo), (Outcome::Pass, echo.clone()));
    }
}
