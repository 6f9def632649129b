//! ICMP errors about NAT46/64 flows, translated to the client's family
//! ([`Scenario::Nat46x64Icmp`]).
//!
//! An ICMPv6 error about a NAT46 flow (quoting node IPv6:port -> IPv6
//! backend) must reach the IPv4 client as the ICMPv4 error RFC 7915 maps it
//! to, about the packet the client sent, and an ICMPv4 error about a NAT64
//! flow the IPv6 client as an ICMPv6 one. The expected frame is the
//! reference translation ([`super::reference_icmp::translate_icmp_error`]),
//! itself checked against an error built from scratch about the client's
//! packet as the data path translates it back ([`super::reference::translate`]
//! of the forwarded packet). Errors with no equivalent in the client's
//! family are dropped. Compared from the IP header on (the Ethernet header
//! is the kernel's business once a dataplane redirects the error).
//!
//! [`Scenario::Nat46x64Icmp`]: super::Scenario::Nat46x64Icmp

use std::net::{IpAddr, SocketAddr};

use lb_core::Verdict;

use super::dut::PacketResult;
use super::reference::{classify, translate, Class};
use super::reference_icmp::{map_4to6, map_6to4, translate_icmp_error, MSG_MAX};
use super::scenarios::{service, NODE_IP};
use super::scenarios_v6::NODE_IP6;
use super::session::{sa, tcp, udp, Session};
use crate::packets::{IcmpBuilder, PacketBuilder};

const ROUTER: &str = "10.0.9.1";
const ROUTER6: &str = "fd00:9::1";

/// ICMPv6 errors a NAT46 flow may get: `(name, type, code, rest)`.
const ERRORS6: [(&str, u8, u8, [u8; 4]); 6] = [
    ("port unreachable", 1, 4, [0; 4]),
    ("no route", 1, 0, [0; 4]),
    ("administratively prohibited", 1, 1, [0; 4]),
    ("address unreachable", 1, 3, [0; 4]),
    ("packet too big 1400", 2, 0, [0, 0, 0x05, 0x78]),
    ("hop limit exceeded", 3, 0, [0; 4]),
];

/// ICMPv4 errors a NAT64 flow may get.
const ERRORS4: [(&str, u8, u8, [u8; 4]); 8] = [
    ("port unreachable", 3, 3, [0; 4]),
    ("host unreachable", 3, 1, [0; 4]),
    ("network unreachable", 3, 0, [0; 4]),
    ("communication administratively prohibited", 3, 13, [0; 4]),
    ("protocol unreachable", 3, 2, [0; 4]),
    ("fragmentation needed 1400", 3, 4, [0, 0, 0x05, 0x78]),
    (
        "fragmentation needed 1000 (below the IPv6 minimum)",
        3,
        4,
        [0, 0, 0x03, 0xe8],
    ),
    ("TTL exceeded", 11, 0, [0; 4]),
];

/// A UDP datagram of 1400 bytes of payload.
fn big_udp(src: &str, dst: &str) -> Vec<u8> {
    PacketBuilder::udp(sa(src), sa(dst))
        .payload([0x5a; 1400])
        .build()
        .expect("frame")
}

/// Source and destination of an IPv4 or IPv6 frame.
fn ips(frame: &[u8]) -> (IpAddr, IpAddr) {
    match classify(frame) {
        Class::Flow(k) => (k.src, k.dst),
        other => panic!("not a flow: {other:?}"),
    }
}

/// Sends `client_frame` (expected to be forwarded translated), then every
/// error of `errors` about the forwarded packet, from the backend and from
/// a router, with a quote cut after 8 bytes of L4 and a whole one; checks
/// each translation, and that `untranslatable` (type, code) is dropped.
fn errors_about(
    s: &mut Session,
    client_frame: &[u8],
    errors: &[(&str, u8, u8, [u8; 4])],
    untranslatable: (u8, u8),
) {
    let sent = s.send(client_frame);
    let Verdict::Forward(_) = sent.verdict else {
        panic!("not forwarded: {sent:?}")
    };
    let fwd = sent.out.expect("forwarded");
    let Class::Flow(orig) = classify(client_frame) else {
        panic!("client frame")
    };
    let (client, frontend) = (
        SocketAddr::new(orig.src, orig.sport),
        SocketAddr::new(orig.dst, orig.dport),
    );
    let (node_side, backend) = ips(&fwd);
    let nat46 = backend.is_ipv6();
    let router: IpAddr = if nat46 { ROUTER6 } else { ROUTER }.parse().expect("ip");
    // The client's packet as the data path translates the forwarded one back.
    let back = translate(&fwd, orig.proto, client, frontend).expect("reference translation");
    let (short, short_back) = if nat46 { (48, 28) } else { (28, 48) };
    for &(name, ty, code, rest) in errors {
        for from in [backend, router] {
            for (cut, cut_back) in [(short, short_back), (usize::MAX, usize::MAX)] {
                let err = IcmpBuilder::raw(from, node_side, ty, code, rest, &fwd[14..])
                    .truncate_inner(cut)
                    .build()
                    .expect("error");
                let what = format!("{name} from {from} (quote cut at {cut})");
                let want = translate_icmp_error(&err, client, frontend)
                    .unwrap_or_else(|| panic!("{what}: no reference translation"));
                // The reference against an error built from scratch.
                let quoted_total = u16::from_be_bytes([fwd[16], fwd[17]]);
                let (nty, ncode, nrest) = if nat46 {
                    map_6to4(ty, code, rest)
                } else {
                    map_4to6(ty, code, rest, quoted_total)
                }
                .expect("mapped");
                let built =
                    IcmpBuilder::raw(frontend.ip(), client.ip(), nty, ncode, nrest, &back[14..])
                        .truncate_inner(cut_back.min(MSG_MAX - 8))
                        .build()
                        .expect("error");
                assert_eq!(want[14..], built[14..], "reference: {what}");
                match s.process_reply(&err) {
                    PacketResult::Accept(got) => {
                        assert_eq!(got[14..], want[14..], "{}: {what}", s.dut_name())
                    }
                    other => panic!("{}: {what}: {other:?}", s.dut_name()),
                }
            }
        }
    }
    let (ty, code) = untranslatable;
    let err = IcmpBuilder::raw(backend, node_side, ty, code, [0; 4], &fwd[14..])
        .build()
        .expect("error");
    assert!(translate_icmp_error(&err, client, frontend).is_none());
    assert_eq!(
        s.process_reply(&err),
        PacketResult::Drop,
        "{}: untranslatable error {ty}/{code} about {orig:?}",
        s.dut_name()
    );
}

/// [`super::Scenario::Nat46x64Icmp`]: errors about NAT46 flows (IPv4
/// ClusterIP and NodePort, IPv6 backends) and NAT64 flows (IPv6 ClusterIP
/// and NodePort, IPv4 backends), TCP and UDP.
pub fn nat46x64_icmp(s: &mut Session) {
    let web46 = service(
        "default/web46",
        &[
            ("10.96.0.46:80", lb_core::FrontendType::ClusterIp),
            ("0.0.0.0:30046", lb_core::FrontendType::NodePort),
        ],
        &["[fd00:1:1::1]:8080"],
    );
    let dns46 = service(
        "default/dns46",
        &[("10.96.0.53:53/UDP", lb_core::FrontendType::ClusterIp)],
        &["[fd00:1:1::1]:5353/UDP"],
    );
    let web64 = service(
        "default/web64",
        &[
            ("[fd00:96::64]:80", lb_core::FrontendType::ClusterIp),
            ("[::]:30064", lb_core::FrontendType::NodePort),
        ],
        &["10.0.1.1:8080"],
    );
    let dns64 = service(
        "default/dns64",
        &[("[fd00:96::64]:53/UDP", lb_core::FrontendType::ClusterIp)],
        &["10.0.1.1:5353/UDP"],
    );
    s.program(&[web46, dns46, web64, dns64]);
    let bad6 = (1, 5); // source address failed ingress/egress policy
    let bad4 = (3, 14); // host precedence violation
    errors_about(
        s,
        &tcp("192.168.5.2:40000", "10.96.0.46:80"),
        &ERRORS6,
        bad6,
    );
    errors_about(
        s,
        &udp("192.168.5.2:40001", "10.96.0.53:53"),
        &ERRORS6,
        bad6,
    );
    errors_about(
        s,
        &tcp("192.168.5.3:40002", &format!("{NODE_IP}:30046")),
        &ERRORS6,
        bad6,
    );
    errors_about(
        s,
        &tcp("[fd00:5::2]:40000", "[fd00:96::64]:80"),
        &ERRORS4,
        bad4,
    );
    errors_about(
        s,
        &udp("[fd00:5::2]:40001", "[fd00:96::64]:53"),
        &ERRORS4,
        bad4,
    );
    errors_about(
        s,
        &tcp("[fd00:5::3]:40002", &format!("[{NODE_IP6}]:30064")),
        &ERRORS4,
        bad4,
    );
    // Big datagrams: the whole quote does not fit the translated error
    // (cut to 1280 bytes as IPv6, 1260 as IPv4).
    errors_about(
        s,
        &big_udp("192.168.5.4:40004", "10.96.0.53:53"),
        &ERRORS6,
        bad6,
    );
    errors_about(
        s,
        &big_udp("[fd00:5::4]:40004", "[fd00:96::64]:53"),
        &ERRORS4,
        bad4,
    );
    // Fragmentation needed without an MTU: the plateau below the quoted
    // length, at least the IPv6 minimum.
    let f = tcp("[fd00:5::4]:40003", "[fd00:96::64]:80");
    let sent = s.send(&f);
    let fwd = sent.out.expect("forwarded");
    let (node, be) = ips(&fwd);
    let err = IcmpBuilder::raw(be, node, 3, 4, [0; 4], &fwd[14..])
        .build()
        .expect("error");
    let (client, fe) = ("[fd00:5::4]:40003", "[fd00:96::64]:80");
    let want = translate_icmp_error(&err, client.parse().expect("sa"), fe.parse().expect("sa"))
        .expect("reference");
    // Packet too big (a SYN of 60 bytes: no plateau below; 68 + 20 < 1280).
    assert_eq!(want[14 + 40..14 + 42], [2, 0]);
    assert_eq!(want[14 + 44..14 + 48], 1280u32.to_be_bytes());
    match s.process_reply(&err) {
        PacketResult::Accept(got) => assert_eq!(got[14..], want[14..], "{}", s.dut_name()),
        other => panic!("{}: frag needed without MTU: {other:?}", s.dut_name()),
    }
}
