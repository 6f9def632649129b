//! Cross-checks the hand-written packet builders against `etherparse`
//! (an independent implementation): identical inputs must give identical bytes.

use std::net::{IpAddr, SocketAddr};

use etherparse::{icmpv4, icmpv6, Icmpv4Type, Icmpv6Type, PacketBuilder as Ep, SlicedPacket};
use lb_testkit::packets::{
    parse, verify_checksums_strict, IcmpBuilder, PacketBuilder, ICMPV6_PORT_UNREACH,
    ICMP_PORT_UNREACH,
};

const SMAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
const DMAC: [u8; 6] = [0x02, 0x66, 0x77, 0x88, 0x99, 0xaa];

fn v4(a: IpAddr) -> [u8; 4] {
    match a {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => unreachable!("test uses IPv4 here"),
    }
}

fn v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => unreachable!("test uses IPv6 here"),
    }
}

fn endpoints() -> Vec<(SocketAddr, SocketAddr)> {
    [
        ("10.0.0.1:12345", "10.0.0.2:80"),
        ("192.168.10.2:65535", "198.51.100.10:1"),
        ("[fd00:10::2]:40000", "[fd00:ffff::10]:443"),
        ("[fe80::1]:1", "[2001:db8::ffff]:65000"),
    ]
    .iter()
    .map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap()))
    .collect()
}

fn payloads() -> Vec<Vec<u8>> {
    vec![
        vec![],
        b"x".to_vec(),
        b"hello world".to_vec(),
        (0..=255u8).cycle().take(1001).collect(),
    ]
}

#[test]
fn tcp_matches_etherparse() {
    for (src, dst) in endpoints() {
        for payload in payloads() {
            for ttl in [1u8, 64, 255] {
                let ours = PacketBuilder::tcp(src, dst)
                    .src_mac(SMAC)
                    .dst_mac(DMAC)
                    .ttl(ttl)
                    .syn()
                    .ack()
                    .seq(0xdead_beef)
                    .ack_number(0x0102_0304)
                    .window(4096)
                    .payload(&payload)
                    .build()
                    .unwrap();
                let eth = Ep::ethernet2(SMAC, DMAC);
                let ip = if src.is_ipv4() {
                    eth.ipv4(v4(src.ip()), v4(dst.ip()), ttl)
                } else {
                    eth.ipv6(v6(src.ip()), v6(dst.ip()), ttl)
                };
                let b = ip
                    .tcp(src.port(), dst.port(), 0xdead_beef, 4096)
                    .syn()
                    .ack(0x0102_0304);
                let mut theirs = Vec::new();
                b.write(&mut theirs, &payload).unwrap();
                assert_eq!(ours, theirs, "{src} -> {dst} len {}", payload.len());
                verify_checksums_strict(&ours).unwrap();
            }
        }
    }
}

#[test]
fn udp_matches_etherparse() {
    for (src, dst) in endpoints() {
        for payload in payloads() {
            let ours = PacketBuilder::udp(src, dst)
                .src_mac(SMAC)
                .dst_mac(DMAC)
                .payload(&payload)
                .build()
                .unwrap();
            let eth = Ep::ethernet2(SMAC, DMAC);
            let ip = if src.is_ipv4() {
                eth.ipv4(v4(src.ip()), v4(dst.ip()), 64)
            } else {
                eth.ipv6(v6(src.ip()), v6(dst.ip()), 64)
            };
            let mut theirs = Vec::new();
            ip.udp(src.port(), dst.port())
                .write(&mut theirs, &payload)
                .unwrap();
            assert_eq!(ours, theirs, "{src} -> {dst} len {}", payload.len());

            // etherparse also parses ours the same way we do.
            let sliced = SlicedPacket::from_ethernet(&ours).unwrap();
            let p = parse(&ours).unwrap();
            match sliced.transport {
                Some(etherparse::TransportSlice::Udp(u)) => {
                    assert_eq!(u.source_port(), p.src.port());
                    assert_eq!(u.destination_port(), p.dst.port());
                    assert_eq!(u.payload(), &p.payload[..]);
                }
                other => panic!("unexpected transport {other:?}"),
            }
        }
    }
}

#[test]
fn icmp_errors_match_etherparse() {
    for (src, dst) in endpoints() {
        let inner = PacketBuilder::udp(src, dst)
            .payload(b"quoted")
            .build_ip()
            .unwrap();
        // The error travels back from dst to src.
        let ours = IcmpBuilder::dest_unreachable(
            dst.ip(),
            src.ip(),
            if src.is_ipv4() {
                ICMP_PORT_UNREACH
            } else {
                ICMPV6_PORT_UNREACH
            },
            &inner,
        )
        .src_mac(SMAC)
        .dst_mac(DMAC)
        .dont_fragment(true)
        .build()
        .unwrap();
        let eth = Ep::ethernet2(SMAC, DMAC);
        let mut theirs = Vec::new();
        if src.is_ipv4() {
            eth.ipv4(v4(dst.ip()), v4(src.ip()), 64)
                .icmpv4(Icmpv4Type::DestinationUnreachable(
                    icmpv4::DestUnreachableHeader::Port,
                ))
                .write(&mut theirs, &inner)
                .unwrap();
        } else {
            eth.ipv6(v6(dst.ip()), v6(src.ip()), 64)
                .icmpv6(Icmpv6Type::DestinationUnreachable(
                    icmpv6::DestUnreachableCode::Port,
                ))
                .write(&mut theirs, &inner)
                .unwrap();
        }
        assert_eq!(ours, theirs, "{src} -> {dst}");
        verify_checksums_strict(&ours).unwrap();
        let q = parse(&ours).unwrap().icmp_inner().unwrap().unwrap();
        assert_eq!((q.src, q.dst), (src, dst));
    }
}
