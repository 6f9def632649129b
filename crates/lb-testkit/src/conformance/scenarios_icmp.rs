//! ICMP errors about load-balanced flows ([`Scenario::IcmpErrors`]).
//!
//! lb-core's model has no ICMP, so the expected frame is built here: an
//! error (port unreachable, fragmentation needed, time exceeded) from the
//! backend or from a router, quoting the packet the dataplane forwarded
//! (DNATed, or SNATed to the node), must come out as the same error about
//! the packet the client sent — quoted source the client, quoted
//! destination the frontend, outer destination the client, an error from
//! the backend itself from the frontend — with every checksum the freshly
//! computed one (outer IPv4, ICMP, quoted IPv4, quoted TCP/UDP when
//! quoted). IPv4, as lb-ebpf's `lb_icmp.h` translates it; compared from
//! the IP header on (the Ethernet header is the kernel's business once a
//! dataplane redirects the error).
//!
//! [`Scenario::IcmpErrors`]: super::Scenario::IcmpErrors

use std::net::IpAddr;

use lb_core::{BackendParams, FrontendType, Verdict};

use super::dut::PacketResult;
use super::scenarios::{service, NODE, NODE_IP};
use super::scenarios_v6::NODE_IP6;
use super::session::{tcp, udp, Session};
use crate::packets::{IcmpBuilder, ICMPV6_PORT_UNREACH, ICMP_PORT_UNREACH};

const ROUTER: &str = "10.0.9.1";
const ROUTER6: &str = "fd00:9::1";

/// Source and destination of an IPv4 or IPv6 frame.
fn ips(frame: &[u8]) -> (IpAddr, IpAddr) {
    if frame[12..14] == [0x86, 0xdd] {
        let s: [u8; 16] = frame[22..38].try_into().expect("16 bytes");
        let d: [u8; 16] = frame[38..54].try_into().expect("16 bytes");
        return (IpAddr::from(s), IpAddr::from(d));
    }
    let s: [u8; 4] = frame[26..30].try_into().expect("4 bytes");
    let d: [u8; 4] = frame[30..34].try_into().expect("4 bytes");
    (IpAddr::from(s), IpAddr::from(d))
}

type Make = fn(IpAddr, IpAddr, &[u8]) -> IcmpBuilder;

const KINDS: [(&str, Make); 3] = [
    ("port unreachable", |s, d, q| {
        let code = if s.is_ipv6() {
            ICMPV6_PORT_UNREACH
        } else {
            ICMP_PORT_UNREACH
        };
        IcmpBuilder::dest_unreachable(s, d, code, q)
    }),
    ("fragmentation needed", |s, d, q| {
        IcmpBuilder::packet_too_big(s, d, 1400, q)
    }),
    ("time exceeded", IcmpBuilder::time_exceeded),
];

/// Sends the client's `client_frame` (expected to be forwarded), then every
/// kind of error about the forwarded packet, from the backend and from a
/// router, with a whole quote and one cut after 8 bytes of L4; checks each
/// translation. `frontend` is the address the client used.
fn errors_about(s: &mut Session, client_frame: &[u8], frontend: IpAddr) {
    let sent = s.send(client_frame);
    let Verdict::Forward(_) = sent.verdict else {
        panic!("not forwarded: {sent:?}")
    };
    let fwd = sent.out.expect("forwarded");
    let (node_side, backend) = ips(&fwd);
    let client = ips(client_frame).0;
    let router: IpAddr = if client.is_ipv6() { ROUTER6 } else { ROUTER }
        .parse()
        .expect("ip");
    // A quote of the IP header and 8 bytes of L4, or the whole packet.
    let short = if client.is_ipv6() { 48 } else { 28 };
    for (name, make) in KINDS {
        for (from, shown) in [(backend, frontend), (router, router)] {
            for cut in [short, usize::MAX] {
                let err = make(from, node_side, &fwd[14..])
                    .truncate_inner(cut)
                    .build()
                    .expect("error");
                let want = make(shown, client, &client_frame[14..])
                    .truncate_inner(cut)
                    .build()
                    .expect("error");
                let what = format!("{name} from {from} (quote cut at {cut})");
                match s.process_reply(&err) {
                    PacketResult::Accept(got) => {
                        assert_eq!(got[14..], want[14..], "{}: {what}", s.dut_name())
                    }
                    other => panic!("{}: {what}: {other:?}", s.dut_name()),
                }
            }
        }
    }
}

/// [`super::Scenario::IcmpErrors`]: errors about a DNATed flow (ClusterIP,
/// local backend) and a SNATed one (NodePort, remote backend), TCP and UDP,
/// over IPv4 and IPv6; errors about flows nobody tracks pass untouched.
pub fn icmp_errors(s: &mut Session) {
    icmp_errors4(s);
    icmp_errors6(s);
}

/// The addresses of one family's half of [`icmp_errors`].
struct IcmpCase {
    /// Suffix of the service names (`""` or `"6"`).
    suffix: &'static str,
    /// The ClusterIP.
    vip: &'static str,
    /// The node-local backend.
    local: &'static str,
    /// The remote backend (on `node-2`).
    remote: &'static str,
    /// The family's wildcard for the NodePorts.
    any: &'static str,
    /// The node's address.
    node: &'static str,
    /// The client.
    client: &'static str,
    /// A client nobody tracks.
    stray: &'static str,
    /// The family's port-unreachable code.
    port_unreach: u8,
    /// How the untracked error's assertion names the protocol.
    icmp: &'static str,
}

/// `addr:port` with IPv6 addresses in brackets.
fn sock(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

fn icmp_errors4(s: &mut Session) {
    icmp_errors_for(
        s,
        &IcmpCase {
            suffix: "",
            vip: "10.96.0.10",
            local: "10.0.1.1",
            remote: "10.0.2.5",
            any: "0.0.0.0",
            node: NODE_IP,
            client: "192.168.5.2",
            stray: "192.168.5.9",
            port_unreach: ICMP_PORT_UNREACH,
            icmp: "ICMP",
        },
    );
}

/// The IPv6 half of [`icmp_errors`]: ICMPv6 errors about a DNATed flow
/// (ClusterIP, local backend) and a SNATed one (NodePort on `[::]`, remote
/// backend), TCP and UDP.
fn icmp_errors6(s: &mut Session) {
    icmp_errors_for(
        s,
        &IcmpCase {
            suffix: "6",
            vip: "fd00:96::10",
            local: "fd00:1:1::1",
            remote: "fd00:2:1::5",
            any: "::",
            node: NODE_IP6,
            client: "fd00:5::2",
            stray: "fd00:5::9",
            port_unreach: ICMPV6_PORT_UNREACH,
            icmp: "ICMPv6",
        },
    );
}

/// One family's half of [`icmp_errors`].
fn icmp_errors_for(s: &mut Session, c: &IcmpCase) {
    let (vip80, vip53) = (sock(c.vip, 80), format!("{}/UDP", sock(c.vip, 53)));
    let mut svc = service(
        &format!("default/web{}", c.suffix),
        &[
            (vip80.as_str(), FrontendType::ClusterIp),
            (vip53.as_str(), FrontendType::ClusterIp),
        ],
        &[&sock(c.local, 8080)],
    );
    svc.backends.push(
        BackendParams::new(
            format!("{}/UDP", sock(c.local, 5353))
                .parse()
                .expect("addr"),
        )
        .on_node(NODE),
    );
    let (np80, np53) = (sock(c.any, 30080), format!("{}/UDP", sock(c.any, 30053)));
    let mut remote = service(
        &format!("default/remote{}", c.suffix),
        &[
            (np80.as_str(), FrontendType::NodePort),
            (np53.as_str(), FrontendType::NodePort),
        ],
        &[],
    );
    for b in [
        sock(c.remote, 8080),
        format!("{}/UDP", sock(c.remote, 5353)),
    ] {
        remote
            .backends
            .push(BackendParams::new(b.parse().expect("addr")).on_node("node-2"));
    }
    s.program(&[svc, remote]);
    let vip: IpAddr = c.vip.parse().expect("ip");
    let node: IpAddr = c.node.parse().expect("ip");
    errors_about(s, &tcp(&sock(c.client, 40000), &sock(c.vip, 80)), vip);
    errors_about(s, &udp(&sock(c.client, 40001), &sock(c.vip, 53)), vip);
    errors_about(s, &tcp(&sock(c.client, 40002), &sock(c.node, 30080)), node);
    errors_about(s, &udp(&sock(c.client, 40003), &sock(c.node, 30053)), node);
    // An error about a flow nobody tracks.
    let stray = tcp(&sock(c.stray, 41000), &sock(c.local, 8080));
    let err = IcmpBuilder::dest_unreachable(
        c.local.parse().expect("ip"),
        c.stray.parse().expect("ip"),
        c.port_unreach,
        &stray[14..],
    )
    .build()
    .expect("error");
    assert_eq!(
        s.process_reply(&err),
        PacketResult::Accept(err.clone()),
        "{}: an {} error about an untracked flow changed",
        s.dut_name(),
        c.icmp
    );
}
