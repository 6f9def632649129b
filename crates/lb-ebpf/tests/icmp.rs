//! ICMP errors about DNATed flows (PROG_TEST_RUN on the egress program):
//! the client must see them about the frontend, with every checksum valid
//! (outer IP, ICMP, quoted IP and quoted TCP/UDP). Privileged (root).

mod common;

use std::net::IpAddr;

use common::*;
use lb_core::*;
use lb_testkit::packets::ICMP_PORT_UNREACH;
use lb_testkit::{parse, verify_checksums, verify_checksums_strict, IcmpBuilder, PacketBuilder};

const CLIENT: &str = "192.168.5.2:40000";
const VIP_TCP: &str = "10.96.0.10:80";
const BE_TCP: &str = "10.0.1.5:8080";
const VIP_UDP: &str = "10.96.0.11:53";
const BE_UDP: &str = "10.0.1.6:5353";

fn fixture() -> Fixture {
    let mut fx = Fixture::new(MaglevConfig::default());
    fx.apply(&[
        service(
            "default/web",
            &[(VIP_TCP, FrontendType::ClusterIp)],
            &[BE_TCP],
        ),
        service(
            "default/dns",
            &[(&format!("{VIP_UDP}/UDP"), FrontendType::ClusterIp)],
            &[&format!("{BE_UDP}/UDP")],
        ),
    ]);
    // Establish both flows.
    let (_, out) = fx.ingress(&tcp(CLIENT, VIP_TCP));
    assert_eq!(endpoints(&out).1, sa(BE_TCP));
    let (_, out) = fx.ingress(&udp(CLIENT, VIP_UDP));
    assert_eq!(endpoints(&out).1, sa(BE_UDP));
    fx
}

/// The packet as the backend received it (after DNAT), without Ethernet.
fn quoted_tcp() -> Vec<u8> {
    PacketBuilder::tcp(sa(CLIENT), sa(BE_TCP))
        .syn()
        .payload(b"hello")
        .build_ip()
        .unwrap()
}

fn ip_of(s: &str) -> IpAddr {
    sa(s).ip()
}

#[test]
fn frag_needed_from_the_backend_is_about_the_frontend() {
    let mut fx = fixture();
    let err = IcmpBuilder::packet_too_big(ip_of(BE_TCP), ip_of(CLIENT), 1400, &quoted_tcp())
        .build()
        .unwrap();
    verify_checksums_strict(&err).unwrap();
    let (rv, out) = fx.egress(&err);
    assert_eq!(rv, TC_ACT_OK);
    verify_checksums_strict(&out).expect("all checksums after translation");
    let p = parse(&out).unwrap();
    assert_eq!((p.src.ip(), p.dst.ip()), (ip_of(VIP_TCP), ip_of(CLIENT)));
    let icmp = p.icmp.unwrap();
    assert_eq!(icmp.mtu(false), 1400, "the MTU is kept");
    let inner = p.icmp_inner().unwrap().unwrap();
    assert_eq!((inner.src, inner.dst), (sa(CLIENT), sa(VIP_TCP)));
    assert_eq!(inner.payload, b"hello");
}

#[test]
fn errors_from_a_router_keep_their_source_and_truncated_quotes_work() {
    let mut fx = fixture();
    let router: IpAddr = "10.0.1.1".parse().unwrap();
    // Only 8 bytes of TCP quoted: no TCP checksum to fix.
    let err = IcmpBuilder::time_exceeded(router, ip_of(CLIENT), &quoted_tcp())
        .truncate_inner(20 + 8)
        .build()
        .unwrap();
    let (_, out) = fx.egress(&err);
    verify_checksums(&out).expect("checksums after translation");
    let p = parse(&out).unwrap();
    assert_eq!((p.src.ip(), p.dst.ip()), (router, ip_of(CLIENT)));
    let inner = p.icmp_inner().unwrap().unwrap();
    assert_eq!((inner.src, inner.dst), (sa(CLIENT), sa(VIP_TCP)));
}

#[test]
fn udp_port_unreachable_with_and_without_a_checksum() {
    let mut fx = fixture();
    let quoted = PacketBuilder::udp(sa(CLIENT), sa(BE_UDP))
        .payload(b"query")
        .build_ip()
        .unwrap();
    let mut zero = quoted.clone();
    zero[20 + 6..20 + 8].copy_from_slice(&[0, 0]);
    for (q, has_csum) in [(quoted, true), (zero, false)] {
        let err =
            IcmpBuilder::dest_unreachable(ip_of(BE_UDP), ip_of(CLIENT), ICMP_PORT_UNREACH, &q)
                .build()
                .unwrap();
        let (_, out) = fx.egress(&err);
        verify_checksums_strict(&out).expect("all checksums after translation");
        let p = parse(&out).unwrap();
        assert_eq!(p.src.ip(), ip_of(VIP_UDP));
        let inner = p.icmp_inner().unwrap().unwrap();
        assert_eq!((inner.src, inner.dst), (sa(CLIENT), sa(VIP_UDP)));
        let csum = inner.udp.unwrap().checksum;
        assert_eq!(csum != 0, has_csum, "a zero UDP checksum stays zero");
    }
}

#[test]
fn errors_about_untracked_flows_pass_unchanged() {
    let mut fx = fixture();
    let other = PacketBuilder::tcp(sa(CLIENT), sa("10.0.1.5:9999"))
        .syn()
        .build_ip()
        .unwrap();
    let err =
        IcmpBuilder::dest_unreachable(ip_of(BE_TCP), ip_of(CLIENT), ICMP_PORT_UNREACH, &other)
            .build()
            .unwrap();
    let (rv, out) = fx.egress(&err);
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(out, err);
}

/// One's-complement sum (folded) of big-endian 16-bit words.
fn ones_sum(words: &[u16]) -> u16 {
    let mut s: u32 = words.iter().map(|w| u32::from(*w)).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

#[test]
fn a_quoted_udp_checksum_that_computes_to_zero_is_sent_as_ffff() {
    // A datagram whose checksum, once translated to the frontend, computes
    // to 0: it must be sent as 0xffff (0 means "no checksum").
    let mut fx = fixture();
    let words = |a: IpAddr| match a {
        IpAddr::V4(a) => {
            let o = a.octets();
            [
                u16::from_be_bytes([o[0], o[1]]),
                u16::from_be_bytes([o[2], o[3]]),
            ]
        }
        IpAddr::V6(_) => unreachable!(),
    };
    let (c, v) = (sa(CLIENT), sa(VIP_UDP));
    let len = 8 + 2;
    let mut w = Vec::new();
    w.extend(words(c.ip()));
    w.extend(words(v.ip()));
    w.extend([17, len, c.port(), v.port(), len]);
    // Two payload bytes complete the sum to 0xffff (negative zero).
    let payload = (0xffff - ones_sum(&w)).to_be_bytes();
    w.push(u16::from_be_bytes(payload));
    assert_eq!(ones_sum(&w), 0xffff);
    let quoted = PacketBuilder::udp(sa(CLIENT), sa(BE_UDP))
        .payload(payload)
        .build_ip()
        .unwrap();
    let err =
        IcmpBuilder::dest_unreachable(ip_of(BE_UDP), ip_of(CLIENT), ICMP_PORT_UNREACH, &quoted)
            .build()
            .unwrap();
    let (rv, out) = fx.egress(&err);
    assert_eq!(rv, TC_ACT_OK);
    verify_checksums_strict(&out).expect("all checksums after translation");
    let p = parse(&out).unwrap();
    let inner = p.icmp_inner().unwrap().unwrap();
    assert_eq!((inner.src, inner.dst), (sa(CLIENT), sa(VIP_UDP)));
    assert_eq!(inner.udp.unwrap().checksum, 0xffff);
}

/// One client port to the ClusterIP and the NodePort of one backend: the
/// second flow is remapped to another port towards the backend
/// (`LB_CT_F_PORTMAP`, `lb_ctport.h`), so the backend and routers quote
/// that port. Errors about it (TCP frag-needed and port unreachable, UDP
/// port unreachable with and without a checksum, from the backend or a
/// router, quote whole or cut to 8 bytes) reach the client about its own
/// port and the NodePort; errors about the first flow still name the
/// ClusterIP. Every checksum is checked.
#[test]
fn errors_about_a_remapped_flow_name_the_clients_own_port() {
    let mut fx = Fixture::new(MaglevConfig::default());
    let node_tcp = format!("{NODE_IP}:30080");
    let node_udp = format!("{NODE_IP}:30053");
    fx.apply(&[service(
        "default/web",
        &[
            (VIP_TCP, FrontendType::ClusterIp),
            ("0.0.0.0:30080", FrontendType::NodePort),
            (&format!("{VIP_UDP}/UDP"), FrontendType::ClusterIp),
            ("0.0.0.0:30053/UDP", FrontendType::NodePort),
        ],
        &[BE_TCP, &format!("{BE_TCP}/UDP")],
    )]);
    let be_udp = BE_TCP; // the same address and port, over UDP
    let router: IpAddr = "10.0.1.1".parse().unwrap();
    for (udp_flow, first_fe, second_fe) in [
        (false, VIP_TCP, node_tcp.as_str()),
        (true, VIP_UDP, node_udp.as_str()),
    ] {
        let frame = |dst: &str| {
            if udp_flow {
                udp(CLIENT, dst)
            } else {
                tcp(CLIENT, dst)
            }
        };
        let (_, a) = fx.ingress(&frame(first_fe));
        let (_, b) = fx.ingress(&frame(second_fe));
        let (a_src, a_dst) = endpoints(&a);
        let (b_src, b_dst) = endpoints(&b);
        assert_eq!((a_src, a_dst, b_dst), (sa(CLIENT), sa(BE_TCP), sa(BE_TCP)));
        assert_eq!(b_src.ip(), ip_of(CLIENT));
        assert_ne!(
            b_src.port(),
            sa(CLIENT).port(),
            "the second flow is remapped"
        );
        assert!(
            lb_ebpf::abi::PORTMAP_PORTS.contains(&b_src.port()),
            "{b_src}: below the clients' ephemeral ports"
        );
        for (seen_src, fe) in [(b_src, second_fe), (a_src, first_fe)] {
            let quoted = if udp_flow {
                PacketBuilder::udp(seen_src, sa(be_udp))
                    .payload(b"query")
                    .build_ip()
                    .unwrap()
            } else {
                PacketBuilder::tcp(seen_src, sa(BE_TCP))
                    .syn()
                    .payload(b"hello")
                    .build_ip()
                    .unwrap()
            };
            let mut zero = quoted.clone();
            if udp_flow {
                zero[20 + 6..20 + 8].copy_from_slice(&[0, 0]);
            }
            let errs = [
                IcmpBuilder::dest_unreachable(
                    ip_of(BE_TCP),
                    ip_of(CLIENT),
                    ICMP_PORT_UNREACH,
                    &quoted,
                ),
                IcmpBuilder::packet_too_big(ip_of(BE_TCP), ip_of(CLIENT), 1400, &quoted),
                IcmpBuilder::dest_unreachable(
                    ip_of(BE_TCP),
                    ip_of(CLIENT),
                    ICMP_PORT_UNREACH,
                    &zero,
                ),
                IcmpBuilder::time_exceeded(router, ip_of(CLIENT), &quoted).truncate_inner(20 + 8),
            ];
            for (i, e) in errs.into_iter().enumerate() {
                let err = e.build().unwrap();
                let (rv, out) = fx.egress(&err);
                assert_eq!(rv, TC_ACT_OK);
                if i == 3 {
                    verify_checksums(&out).expect("checksums after translation");
                } else {
                    verify_checksums_strict(&out).expect("all checksums after translation");
                }
                let p = parse(&out).unwrap();
                let from = if i == 3 { router } else { ip_of(fe) };
                assert_eq!((p.src.ip(), p.dst.ip()), (from, ip_of(CLIENT)), "error {i}");
                let inner = p.icmp_inner().unwrap().unwrap();
                assert_eq!(
                    (inner.src, inner.dst),
                    (sa(CLIENT), sa(fe)),
                    "error {i} about {seen_src} -> {fe}"
                );
                if i == 1 {
                    assert_eq!(p.icmp.unwrap().mtu(false), 1400, "the MTU is kept");
                }
            }
        }
    }
}
