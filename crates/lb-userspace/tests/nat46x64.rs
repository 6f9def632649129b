//! NAT46/64 header translation ([`lb_userspace::nat46x64`]) and the packet
//! path around it: property tests over random TCP/UDP frames (valid
//! checksums after translation, fields carried over, the round trip
//! restoring the original segment), the reference translation of the
//! conformance suite as a second opinion, and the counted drop when the
//! caller's buffer has no room.

use std::net::{IpAddr, SocketAddr};

use lb_core::*;
use lb_testkit::conformance::reference;
use lb_testkit::{verify_checksums, PacketBuilder};
use lb_userspace::nat46x64::{translate, Endpoint, XlateError, HEADROOM};
use lb_userspace::packet::{parse, Parsed};
use lb_userspace::{Config, Direction, DropKind, Outcome, UserspaceDataplane};
use proptest::prelude::*;

fn v4() -> impl Strategy<Value = IpAddr> {
    any::<[u8; 4]>().prop_map(IpAddr::from)
}

fn v6() -> impl Strategy<Value = IpAddr> {
    any::<[u8; 16]>().prop_map(IpAddr::from)
}

fn build(udp: bool, src: SocketAddr, dst: SocketAddr, tos: u8, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let b = if udp {
        PacketBuilder::udp(src, dst)
    } else {
        PacketBuilder::tcp(src, dst).syn()
    };
    b.tos(tos).ttl(ttl).payload(payload).build().unwrap()
}

/// Translates `frame` in a buffer with headroom; returns the new frame.
fn xlate(frame: &[u8], src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let Parsed::Ok(info) = parse(frame) else {
        panic!("not a flow frame");
    };
    let mut buf = frame.to_vec();
    buf.resize(frame.len() + HEADROOM, 0);
    let ep = |a: SocketAddr| Endpoint {
        addr: a.ip(),
        port: a.port(),
    };
    let n = translate(&mut buf, frame.len(), &info, ep(src), ep(dst)).unwrap();
    buf.truncate(n);
    buf
}

proptest! {
    /// IPv4 -> IPv6 -> IPv4: valid checksums on both hops, TOS/traffic
    /// class and TTL/hop limit carried over, equal to the reference
    /// translation, and back with the original endpoints the L4 segment
    /// is the original's (a zero UDP checksum comes back computed).
    #[test]
    fn v4_v6_round_trip(
        udp: bool,
        (c4, s4) in (v4(), v4()),
        (a6, b6) in (v6(), v6()),
        ports in any::<[u16; 4]>(),
        tos: u8,
        ttl: u8,
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        zero_udp: bool,
    ) {
        let (src, dst) = (SocketAddr::new(c4, ports[0]), SocketAddr::new(s4, ports[1]));
        let mut f4 = build(udp, src, dst, tos, ttl, &payload);
        if udp && zero_udp {
            f4[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
        }
        let (n6s, n6d) = (SocketAddr::new(a6, ports[2]), SocketAddr::new(b6, ports[3]));
        let f6 = xlate(&f4, n6s, n6d);
        prop_assert_eq!(f6.len(), f4.len() + 20);
        prop_assert!(verify_checksums(&f6).is_ok(), "{:?}", verify_checksums(&f6));
        let proto = if udp { L4Proto::Udp } else { L4Proto::Tcp };
        prop_assert_eq!(&f6, &reference::translate(&f4, proto, n6s, n6d).unwrap());
        prop_assert_eq!(f6[14] & 0x0f, tos >> 4);
        prop_assert_eq!(f6[15] >> 4, tos & 0x0f);
        prop_assert_eq!(f6[14 + 7], ttl);
        let Parsed::Ok(i6) = parse(&f6) else { panic!("translated frame does not parse") };
        prop_assert_eq!((i6.src, i6.dst, i6.sport, i6.dport), (a6, b6, ports[2], ports[3]));

        let back = xlate(&f6, src, dst);
        prop_assert!(verify_checksums(&back).is_ok());
        prop_assert_eq!(back.len(), f4.len());
        prop_assert_eq!(back[15], tos);
        prop_assert_eq!(back[14 + 8], ttl);
        let l4 = 14 + 20;
        if udp && zero_udp {
            prop_assert_eq!(&back[l4..l4 + 6], &f4[l4..l4 + 6]);
            prop_assert_eq!(&back[l4 + 8..], &f4[l4 + 8..]);
        } else {
            prop_assert_eq!(&back[l4..], &f4[l4..]);
        }
    }

    /// IPv6 -> IPv4: the frame shrinks by 20 bytes, the IPv4 header is
    /// valid (DF, identification 0), and equals the reference.
    #[test]
    fn v6_to_v4_matches_the_reference(
        udp: bool,
        (a6, b6) in (v6(), v6()),
        (c4, s4) in (v4(), v4()),
        ports in any::<[u16; 4]>(),
        tc: u8,
        hop: u8,
        payload in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let f6 = build(udp, SocketAddr::new(a6, ports[0]), SocketAddr::new(b6, ports[1]), tc, hop, &payload);
        let (s, d) = (SocketAddr::new(c4, ports[2]), SocketAddr::new(s4, ports[3]));
        let f4 = xlate(&f6, s, d);
        prop_assert_eq!(f4.len() + 20, f6.len());
        prop_assert!(verify_checksums(&f4).is_ok(), "{:?}", verify_checksums(&f4));
        let proto = if udp { L4Proto::Udp } else { L4Proto::Tcp };
        prop_assert_eq!(&f4, &reference::translate(&f6, proto, s, d).unwrap());
        prop_assert_eq!(f4[14 + 6], 0x40);
        prop_assert_eq!(f4[15], tc);
        prop_assert_eq!(f4[14 + 8], hop);
    }

    /// IPv6 -> IPv4 of a packet with extension headers the parser skips
    /// (hop-by-hop, destination options, routing with no segments left):
    /// they are dropped, and the result equals the translation of the same
    /// packet without them (and the reference's of the packet with them).
    #[test]
    fn v6_extension_headers_are_dropped(
        udp: bool,
        (a6, b6) in (v6(), v6()),
        (c4, s4) in (v4(), v4()),
        ports in any::<[u16; 4]>(),
        kinds in proptest::collection::vec((prop_oneof![Just(0u8), Just(43), Just(60)], 0u8..3), 1..4),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let plain = build(udp, SocketAddr::new(a6, ports[0]), SocketAddr::new(b6, ports[1]), 0, 64, &payload);
        let mut f6 = plain.clone();
        for (kind, len8) in kinds {
            // An extension header of (len8 + 1) * 8 bytes: next header, length,
            // then zeros (for routing: type 0 byte, segments left 0).
            let mut h = vec![0u8; (usize::from(len8) + 1) * 8];
            h[0] = f6[14 + 6];
            h[1] = len8;
            f6.splice(14 + 40..14 + 40, h.iter().copied());
            f6[14 + 6] = kind;
            let pl = u16::from_be_bytes([f6[18], f6[19]]) + h.len() as u16;
            f6[18..20].copy_from_slice(&pl.to_be_bytes());
        }
        let (s, d) = (SocketAddr::new(c4, ports[2]), SocketAddr::new(s4, ports[3]));
        let f4 = xlate(&f6, s, d);
        prop_assert_eq!(&f4, &xlate(&plain, s, d));
        let proto = if udp { L4Proto::Udp } else { L4Proto::Tcp };
        prop_assert_eq!(&f4, &reference::translate(&f6, proto, s, d).unwrap());
    }
}

#[test]
fn refuses_without_room_or_with_wrong_families() {
    let f4 = build(
        false,
        "192.168.10.2:40000".parse().unwrap(),
        "198.51.100.10:80".parse().unwrap(),
        0,
        64,
        b"x",
    );
    let Parsed::Ok(info) = parse(&f4) else {
        panic!()
    };
    let ep = |s: &str| {
        let a: SocketAddr = s.parse().unwrap();
        Endpoint {
            addr: a.ip(),
            port: a.port(),
        }
    };
    let mut buf = f4.clone();
    let len = buf.len();
    assert_eq!(
        translate(&mut buf, len, &info, ep("[fd00::1]:1"), ep("[fd00::2]:2")),
        Err(XlateError::NoRoom)
    );
    assert_eq!(buf, f4, "untouched on error");
    buf.resize(len + HEADROOM, 0);
    assert_eq!(
        translate(&mut buf, len, &info, ep("10.0.0.1:1"), ep("10.0.0.2:2")),
        Err(XlateError::Family)
    );
    assert_eq!(
        translate(&mut buf, len, &info, ep("10.0.0.1:1"), ep("[fd00::2]:2")),
        Err(XlateError::Family)
    );
}

/// `process_with` on an exact-size frame cannot grow it: the NAT46 packet
/// is dropped and counted; with room (`process_in`) it is translated, and
/// the backend's reply is translated back to the client.
#[test]
fn path_translates_both_ways_and_counts_what_it_cannot() {
    let mut node = NodeConfig::new(
        "node-1",
        vec![
            "192.168.1.10".parse().unwrap(),
            "fd00:1::10".parse().unwrap(),
        ],
    );
    node.nat46x64 = true;
    let mut s = Service::new("default/web".parse().unwrap());
    s.frontends.push(FrontendParams::new(
        "198.51.100.10:80".parse().unwrap(),
        FrontendType::LoadBalancer,
    ));
    s.backends
        .push(BackendParams::new("[fd00:200::2]:8080".parse().unwrap()).on_node("node-1"));
    let desired = DesiredState::build(&node, &[s]).unwrap();
    let mut dp = UserspaceDataplane::new(node, Config::default());
    Reconciler::new().apply(&mut dp, &desired).unwrap();
    let mut w = dp.worker();

    let client: SocketAddr = "192.168.10.2:40000".parse().unwrap();
    let vip: SocketAddr = "198.51.100.10:80".parse().unwrap();
    let f4 = build(false, client, vip, 0, 64, b"ping");
    let mut exact = f4.clone();
    assert_eq!(
        w.process(&mut exact, Direction::ToFrontend, 0),
        Outcome::Dropped(DropKind::Nat46x64)
    );
    assert_eq!(dp.counters().drops(DropKind::Nat46x64), 1);

    let mut buf = vec![0u8; 2048];
    buf[..f4.len()].copy_from_slice(&f4);
    let (out, n) = w.process_buf(&mut buf, f4.len(), Direction::ToFrontend, 0);
    let Outcome::Forwarded(fw) = out else {
        panic!("{out:?}")
    };
    assert_eq!(fw.translation(), Translation::Nat46);
    let fwd = buf[..n].to_vec();
    verify_checksums(&fwd).unwrap();
    let Parsed::Ok(i6) = parse(&fwd) else {
        panic!()
    };
    assert_eq!(i6.src, "fd00:1::10".parse::<IpAddr>().unwrap());
    assert_eq!(i6.dst, "fd00:200::2".parse::<IpAddr>().unwrap());
    assert_eq!(i6.dport, 8080);

    // The backend answers the node's IPv6 address and SNAT port.
    let reply = build(
        false,
        SocketAddr::new(i6.dst, i6.dport),
        SocketAddr::new(i6.src, i6.sport),
        0,
        64,
        b"pong",
    );
    buf[..reply.len()].copy_from_slice(&reply);
    let (out, n) = w.process_buf(&mut buf, reply.len(), Direction::Reply, 0);
    assert!(matches!(out, Outcome::ReverseNated { .. }), "{out:?}");
    let back = &buf[..n];
    verify_checksums(back).unwrap();
    let Parsed::Ok(i4) = parse(back) else {
        panic!()
    };
    assert_eq!(
        (i4.src, i4.sport, i4.dst, i4.dport),
        (vip.ip(), vip.port(), client.ip(), client.port())
    );
}
