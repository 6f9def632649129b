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

fn icmp_errors4(s: &mut Session) {
    let mut svc = service(
        "default/web",
        &[
            ("10.96.0.10:80", FrontendType::ClusterIp),
            ("10.96.0.10:53/UDP", FrontendType::ClusterIp),
        ],
        &["10.0.1.1:8080"],
    );
    svc.backends
        .push(BackendParams::new("10.0.1.1:5353/UDP".parse().expect("addr")).on_node(NODE));
    let mut remote = service(
        "default/remote",
        &[
            ("0.0.0.0:30080", FrontendType::NodePort),
            ("0.0.0.0:30053/UDP", FrontendType::NodePort),
        ],
        &[],
    );
    for b in ["10.0.2.5:8080", "10.0.2.5:5353/UDP"] {
        remote
            .backends
            .push(BackendParams::new(b.parse().expect("addr")).on_node("node-2"));
    }
    s.program(&[svc, remote]);
    let vip: IpAddr = "10.96.0.10".parse().expect("ip");
    let node: IpAddr = NODE_IP.parse().expect("ip");
    errors_about(s, &tcp("192.168.5.2:40000", "10.96.0.10:80"), vip);
    errors_about(s, &udp("192.168.5.2:40001", "10.96.0.10:53"), vip);
    errors_about(
        s,
        &tcp("192.168.5.2:40002", &format!("{NODE_IP}:30080")),
        node,
    );
    errors_about(
        s,
        &udp("192.168.5.2:40003", &format!("{NODE_IP}:30053")),
        node,
    );
    // An error about a flow nobody tracks.
    let stray = tcp("192.168.5.9:41000", "10.0.1.1:8080");
    let err = IcmpBuilder::dest_unreachable(
        "10.0.1.1".parse().expect("ip"),
        "192.168.5.9".parse().expect("ip"),
        ICMP_PORT_UNREACH,
        &stray[14..],
    )
    .build()
    .expect("error");
    assert_eq!(
        s.process_reply(&err),
        PacketResult::Accept(err.clone()),
        "{}: an error about an untracked flow changed",
        s.dut_name()
    );
}

/// The IPv6 half of [`icmp_errors`]: ICMPv6 errors about a DNATed flow
/// (ClusterIP, local backend) and a SNATed one (NodePort on `[::]`, remote
/// backend), TCP and UDP.
fn icmp_errors6(s: &mut Session) {
    let mut svc = service(
        "default/web6",
        &[
            ("[fd00:96::10]:80", FrontendType::ClusterIp),
            ("[fd00:96::10]:53/UDP", FrontendType::ClusterIp),
        ],
        &["[fd00:1:1::1]:8080"],
    );
    svc.backends
        .push(BackendParams::new("[fd00:1:1::1]:5353/UDP".parse().expect("addr")).on_node(NODE));
    let mut remote = service(
        "default/remote6",
        &[
            ("[::]:30080", FrontendType::NodePort),
            ("[::]:30053/UDP", FrontendType::NodePort),
        ],
        &[],
    );
    for b in ["[fd00:2:1::5]:8080", "[fd00:2:1::5]:5353/UDP"] {
        remote
            .backends
            .push(BackendParams::new(b.parse().expect("addr")).on_node("node-2"));
    }
    s.program(&[svc, remote]);
    let vip: IpAddr = "fd00:96::10".parse().expect("ip");
    let node: IpAddr = NODE_IP6.parse().expect("ip");
    errors_about(s, &tcp("[fd00:5::2]:40000", "[fd00:96::10]:80"), vip);
    errors_about(s, &udp("[fd00:5::2]:40001", "[fd00:96::10]:53"), vip);
    errors_about(
        s,
        &tcp("[fd00:5::2]:40002", &format!("[{NODE_IP6}]:30080")),
        node,
    );
    errors_about(
        s,
        &udp("[fd00:5::2]:40003", &format!("[{NODE_IP6}]:30053")),
        node,
    );
    let stray = tcp("[fd00:5::9]:41000", "[fd00:1:1::1]:8080");
    let err = IcmpBuilder::dest_unreachable(
        "fd00:1:1::1".parse().expect("ip"),
        "fd00:5::9".parse().expect("ip"),
        ICMPV6_PORT_UNREACH,
        &stray[14..],
    )
    .build()
    .expect("error");
    assert_eq!(
        s.process_reply(&err),
        PacketResult::Accept(err.clone()),
        "{}: an ICMPv6 error about an untracked flow changed",
        s.dut_name()
    );
}
