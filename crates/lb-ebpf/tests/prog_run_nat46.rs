//! NAT46/64 packet-level tests of the tc ingress program
//! (`bpf/lb_nat46.h`): `BPF_PROG_TEST_RUN` with crafted frames, checked
//! against lb-core's `flow::decide` over the same tables and against the
//! conformance suite's reference translation byte for byte. The programs
//! run in a network namespace of their own whose routes send the remote
//! backends through a veth end listed in `lb_devices` (test runs transmit
//! nothing). Privileged (root); bounded: one program load per test and a
//! few dozen single test runs.

mod common;
#[path = "common/nat46_rig.rs"]
mod nat46_rig;

use std::net::{IpAddr, SocketAddr};

use common::{forwarded_to, ip, sa, service, tcp, udp};
use lb_core::*;
use lb_ebpf::abi::{DropReason, CT_F_SNAT, SVC_F_NAT46X64};
use lb_ebpf::EbpfDataplane;
use lb_testkit::conformance::reference::translate;
use nat46_rig::*;

/// Programs loaded in a namespace with routes to the backends, an
/// `EbpfDataplane` with NAT46/64 on, and lb-core's reconciler and flows.
type Nat = NatRig;

impl NatRig {
    fn new() -> Self {
        NatRig::load("nat46-run")
    }

    /// Sends `frame` to its frontend: the oracle's verdict and the
    /// program's output agree (backend, translation, SNAT source), the
    /// output is the reference translation, and the SNAT port is returned.
    fn forward(&mut self, frame: &[u8], proto: L4Proto) -> (SocketAddr, u16) {
        let v = self.decide(frame);
        let Verdict::Forward(fw) = v else {
            panic!("oracle: {v:?}");
        };
        assert!(fw.translation().is_translated());
        let (rv, out) = self.ingress(frame);
        assert_eq!(rv, TC_ACT_REDIRECT, "FIB redirect in the backend's family");
        lb_testkit::verify_checksums_strict(&out).expect("valid checksums");
        let p = lb_testkit::parse(&out).expect("parse");
        let backend = SocketAddr::new(fw.backend.addr, fw.backend.port);
        assert_eq!(Some(p.dst), forwarded_to(&Verdict::Forward(fw)));
        assert_eq!(Some(p.src.ip()), fw.snat, "SNATed to the node");
        assert_eq!(p.payload, b"hello");
        let want = translate(frame, proto, p.src, backend).expect("reference");
        assert_eq!(out, want, "reference translation");
        (backend, p.src.port())
    }

    /// The backend's reply to `node:port` comes back translated from the
    /// frontend to the client (the reference translation).
    fn reply(&mut self, reply: &[u8], proto: L4Proto, client: &str, frontend: &str) {
        let (rv, out) = self.ingress(reply);
        assert_eq!(rv, TC_ACT_REDIRECT, "redirected to the client");
        lb_testkit::verify_checksums_strict(&out).expect("valid checksums");
        let want = translate(reply, proto, sa(frontend), sa(client)).expect("reference");
        assert_eq!(out, want, "reply translated back");
    }
}

fn frame(proto: L4Proto, src: &str, dst: &str) -> Vec<u8> {
    match proto {
        L4Proto::Udp => udp(src, dst),
        _ => tcp(src, dst),
    }
}

fn join(a: IpAddr, port: u16) -> String {
    SocketAddr::new(a, port).to_string()
}

#[test]
fn nat46_flows_are_translated_to_ipv6_and_replies_back_to_ipv4() {
    let mut fx = Nat::new();
    let mut web = service(
        "default/web",
        &[
            ("10.96.0.46:80", FrontendType::ClusterIp),
            ("10.96.0.46:53/UDP", FrontendType::ClusterIp),
            ("0.0.0.0:30046", FrontendType::NodePort),
        ],
        &["[fd00:2:1::2]:8080", "[fd00:2:1::2]:5353/UDP"],
    );
    web.backends[0] = web.backends[0].clone().on_node("node-2");
    fx.apply(&[web]);
    // The control plane marks the translated frontends.
    for item in fx.dp.maps().services.iter() {
        let (k, v) = item.expect("services");
        if k.backend_slot == 0 {
            assert_ne!(v.flags & SVC_F_NAT46X64, 0, "{k:?}");
        }
    }
    let node6: IpAddr = ip(NODE6);
    let cases = [
        (L4Proto::Tcp, "192.168.5.2:40000", "10.96.0.46:80"),
        (L4Proto::Udp, "192.168.5.2:40001", "10.96.0.46:53"),
        (L4Proto::Tcp, "192.168.5.3:40002", "192.168.1.10:30046"),
    ];
    for (proto, client, fe) in cases {
        let f = frame(proto, client, fe);
        let (backend, port) = fx.forward(&f, proto);
        // Established: the same backend and SNAT port.
        assert_eq!(fx.forward(&f, proto), (backend, port), "{fe}");
        let back = frame(proto, &backend.to_string(), &join(node6, port));
        fx.reply(&back, proto, client, fe);
    }
    let c = fx.dp.counters().expect("counters");
    let svc = c.services.values().map(|s| s.new_flows).sum::<u64>();
    assert_eq!(svc, 3, "three new flows");
    // The client's CT entry (IPv4) records the SNAT.
    let ct: Vec<_> = fx.dp.maps().ct.iter().map(|r| r.expect("ct").1).collect();
    assert_eq!(ct.len(), 3);
    assert!(ct.iter().all(|e| e.flags & CT_F_SNAT != 0));
    // gc keeps live flows' entries.
    let stats = fx.dp.gc(lb_ebpf::now_secs()).expect("gc");
    assert_eq!((stats.ct, stats.snat), (0, 0), "{stats:?}");
}

#[test]
fn nat46_udp_without_checksum_gets_one() {
    let mut fx = Nat::new();
    fx.apply(&[service(
        "default/dns",
        &[("10.96.0.53:53/UDP", FrontendType::ClusterIp)],
        &["[fd00:2:1::2]:5353/UDP"],
    )]);
    for len in [5usize, 300, 1200] {
        let payload = vec![0xa5u8; len];
        let mut f = lb_testkit::PacketBuilder::udp(sa("192.168.5.9:41000"), sa("10.96.0.53:53"))
            .payload(&payload)
            .build()
            .unwrap();
        // No checksum (allowed in IPv4, not in IPv6).
        f[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
        let (rv, out) = fx.ingress(&f);
        assert_eq!(rv, TC_ACT_REDIRECT, "{len}");
        lb_testkit::verify_checksums_strict(&out).expect("IPv6 UDP checksum computed");
        let p = lb_testkit::parse(&out).expect("parse");
        assert_eq!(p.dst, sa("[fd00:2:1::2]:5353"));
        assert_eq!(p.payload, payload);
    }
}

#[test]
fn nat64_flows_are_translated_to_ipv4_and_replies_back_to_ipv6() {
    let mut fx = Nat::new();
    let mut web = service(
        "default/web",
        &[
            ("[fd00:96::64]:80", FrontendType::ClusterIp),
            ("[fd00:96::64]:53/UDP", FrontendType::ClusterIp),
            ("[::]:30064", FrontendType::NodePort),
        ],
        &["10.0.2.2:8080", "10.0.2.2:5353/UDP"],
    );
    web.backends[0] = web.backends[0].clone().on_node("node-2");
    fx.apply(&[web]);
    let node4: IpAddr = ip(NODE4);
    let cases = [
        (L4Proto::Tcp, "[fd00:5::2]:40000", "[fd00:96::64]:80"),
        (L4Proto::Udp, "[fd00:5::2]:40001", "[fd00:96::64]:53"),
        (L4Proto::Tcp, "[fd00:5::3]:40002", "[fd00:1::10]:30064"),
    ];
    for (proto, client, fe) in cases {
        let f = frame(proto, client, fe);
        let (backend, port) = fx.forward(&f, proto);
        assert_eq!(fx.forward(&f, proto), (backend, port), "{fe}");
        let back = frame(proto, &backend.to_string(), &join(node4, port));
        fx.reply(&back, proto, client, fe);
    }
    // A marker per flow in lb4_snat (client 0.0.0.0), the real entries in
    // lb6_snat under the IPv4-mapped reply tuple.
    let markers: Vec<_> = fx
        .dp
        .maps()
        .snat
        .iter()
        .map(|r| r.expect("snat").1)
        .collect();
    assert_eq!(markers.len(), 3);
    assert!(markers.iter().all(|m| m.client_addr == 0));
    let real: Vec<_> = fx
        .dp
        .maps()
        .snat6
        .iter()
        .map(|r| r.expect("snat6"))
        .collect();
    assert_eq!(real.len(), 3);
    for (k, _) in &real {
        assert_eq!(&k.saddr[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
    }
    let stats = fx.dp.gc(lb_ebpf::now_secs()).expect("gc");
    assert_eq!((stats.ct, stats.snat), (0, 0), "{stats:?}");
    // A restarted agent reads the translated frontends back as they were:
    // its first plan rewrites nothing.
    let restored = EbpfDataplane::open(fx.loaded.pin_dir(), &fx.node)
        .expect("reopen")
        .restore()
        .expect("restore");
    assert_eq!(&restored.frontends, &fx.rec.current().frontends);
    assert_eq!(&restored.backends, &fx.rec.current().backends);
    // Once the flows are gone, so are their SNAT entries (after the
    // orphan grace and TIME_WAIT reservation).
    let ct: Vec<_> = fx.dp.maps().ct6.keys().map(|k| k.expect("ct6")).collect();
    for k in ct {
        fx.dp.maps().ct6.remove(&k).expect("remove");
    }
    let stats = fx.dp.gc(lb_ebpf::now_secs() + 3600).expect("gc");
    assert_eq!(stats.snat, 6, "{stats:?}");
}

#[test]
fn stray_replies_pass_and_a_dual_stack_twin_is_not_translated() {
    let mut fx = Nat::new();
    fx.apply(&[
        service(
            "default/web",
            &[("10.96.0.46:80", FrontendType::ClusterIp)],
            &["[fd00:2:1::2]:8080"],
        ),
        service(
            "default/both",
            &[
                ("10.96.0.10:80", FrontendType::ClusterIp),
                ("[fd00:96::10]:80", FrontendType::ClusterIp),
            ],
            &["10.0.2.5:80", "[fd00:2:1::5]:80"],
        ),
    ]);
    // A reply to a node port that no flow owns is not ours.
    let stray = tcp("[fd00:2:1::2]:8080", "[fd00:1::10]:61234");
    assert_eq!(fx.ingress(&stray), (0, stray.clone()));
    let stray4 = tcp("10.0.2.2:8080", "192.168.1.10:61234");
    assert_eq!(fx.ingress(&stray4), (0, stray4.clone()));
    // Each family of a dual-stack service keeps its own backends.
    for (client, fe, be) in [
        ("192.168.5.2:40000", "10.96.0.10:80", "10.0.2.5:80"),
        ("[fd00:5::2]:40000", "[fd00:96::10]:80", "[fd00:2:1::5]:80"),
    ] {
        let f = tcp(client, fe);
        let v = fx.decide(&f);
        assert_eq!(forwarded_to(&v), Some(sa(be)));
        let (_, out) = fx.ingress(&f);
        let p = lb_testkit::parse(&out).expect("parse");
        assert_eq!(p.dst, sa(be), "{fe}");
    }
    let c = fx.dp.counters().expect("counters");
    assert_eq!(c.drops_for(DropReason::Rewrite), 0);
    assert_eq!(c.drops_for(DropReason::NoBackend), 0);
}

/// `frame` (IPv4) with 4 bytes of IP options (three NOPs and an end of
/// options list) after its header, lengths and header checksum fixed.
fn with_ip_options(frame: &[u8]) -> Vec<u8> {
    let mut x = frame[..34].to_vec();
    x[14] = 0x46;
    let total = u16::from_be_bytes([x[16], x[17]]) + 4;
    x[16..18].copy_from_slice(&total.to_be_bytes());
    x.extend_from_slice(&[1, 1, 1, 0]);
    x[24..26].copy_from_slice(&[0, 0]);
    let c = lb_testkit::internet_checksum(&x[14..38]);
    x[24..26].copy_from_slice(&c.to_be_bytes());
    x.extend_from_slice(&frame[34..]);
    x
}

/// `frame` (IPv6) with an 8-byte hop-by-hop options header (padding)
/// between the IPv6 header and the L4 header.
fn with_hop_by_hop(frame: &[u8]) -> Vec<u8> {
    let mut x = frame[..54].to_vec();
    let next = x[20];
    x[20] = 0;
    let len = u16::from_be_bytes([x[18], x[19]]) + 8;
    x[18..20].copy_from_slice(&len.to_be_bytes());
    x.extend_from_slice(&[next, 0, 0x01, 0x04, 0, 0, 0, 0]);
    x.extend_from_slice(&frame[54..]);
    x
}

/// A NAT46 service (`10.96.0.46:80` -> `[fd00:2:1::2]:8080`) and a NAT64
/// one (`[fd00:96::64]:80` -> `10.0.2.2:8080`).
fn one_of_each() -> [Service; 2] {
    [
        service(
            "default/v6only",
            &[("10.96.0.46:80", FrontendType::ClusterIp)],
            &["[fd00:2:1::2]:8080"],
        ),
        service(
            "default/v4only",
            &[("[fd00:96::64]:80", FrontendType::ClusterIp)],
            &["10.0.2.2:8080"],
        ),
    ]
}

/// IPv4 options and IPv6 extension headers are dropped by the
/// translation (RFC 7915); the rest of the packet is as without them.
#[test]
fn ipv4_options_and_ipv6_extension_headers_are_dropped() {
    let mut fx = Nat::new();
    fx.apply(&one_of_each());
    for (plain, odd) in [
        {
            let f = tcp("192.168.5.2:40000", "10.96.0.46:80");
            (f.clone(), with_ip_options(&f))
        },
        {
            let f = tcp("[fd00:5::2]:40000", "[fd00:96::64]:80");
            (f.clone(), with_hop_by_hop(&f))
        },
    ] {
        lb_testkit::verify_checksums_strict(&odd).expect("valid test frame");
        let (rv, out) = fx.ingress(&odd);
        assert_eq!(rv, TC_ACT_REDIRECT);
        lb_testkit::verify_checksums_strict(&out).expect("valid checksums");
        let p = lb_testkit::parse(&out).expect("parse");
        let backend = if p.dst.is_ipv6() {
            sa("[fd00:2:1::2]:8080")
        } else {
            sa("10.0.2.2:8080")
        };
        assert_eq!(p.dst, backend);
        let want = translate(&plain, L4Proto::Tcp, p.src, backend).expect("reference");
        assert_eq!(out, want, "as translated without options/extension headers");
    }
}

/// A SYN (or SYN-ACK, with `ack`) `src` -> `dst` carrying TCP options
/// `opts` and, when `len` > 0, that many bytes of payload.
fn tcp_opts(src: &str, dst: &str, flags: lb_testkit::TcpFlags, opts: &[u8], len: usize) -> Vec<u8> {
    let f = lb_testkit::PacketBuilder::tcp(sa(src), sa(dst))
        .flags(flags)
        .payload(vec![0x5au8; len])
        .build()
        .unwrap();
    lb_testkit::conformance::reference::with_tcp_options(&f, opts).expect("TCP options")
}

fn syn() -> lb_testkit::TcpFlags {
    lb_testkit::TcpFlags::SYN
}

fn syn_ack() -> lb_testkit::TcpFlags {
    lb_testkit::TcpFlags::SYN | lb_testkit::TcpFlags::ACK
}

/// TCP MSS clamping of translated SYNs and SYN-ACKs (lb_core's
/// `nat46x64::clamp_mss`): to the MTU of the route the translated packet
/// takes (here per-host routes of 1400, 1300 and 1450 bytes and the
/// device's 1500) less 60 for IPv6, less 40 for IPv4; never raised; an
/// option after a NOP (odd offset) is clamped with a valid checksum; a
/// packet without SYN is left alone. Every output equals the reference
/// translation for that MTU byte for byte.
#[test]
fn translated_syns_have_their_mss_clamped_to_the_route_mtu() {
    use lb_testkit::conformance::reference::{mss_option, tcp_mss, translate_mtu};
    let mut fx = Nat::new();
    for r in [
        "fd00:2:1::2/128 via fd00:ffff:ffff::2 dev lbn0 mtu lock 1400",
        "192.168.5.2/32 via 172.31.255.2 dev lbn0 mtu lock 1300",
        "10.0.2.2/32 via 172.31.255.2 dev lbn0 mtu lock 1450",
    ] {
        fx.netns.add_route(r).expect("route with an MTU");
    }
    fx.apply(&one_of_each());
    let node4: IpAddr = ip(NODE4);
    let node6: IpAddr = ip(NODE6);
    // (client, frontend, backend, node, client MSS, route MTU to the
    // backend, backend MSS, route MTU to the client)
    let cases = [
        (
            "192.168.5.2:40000",
            "10.96.0.46:80",
            "[fd00:2:1::2]:8080",
            node6,
            1460u16,
            1400u32,
            8940u16,
            1300u32,
        ),
        (
            "[fd00:5::2]:40000",
            "[fd00:96::64]:80",
            "10.0.2.2:8080",
            node4,
            8940,
            1450,
            8960,
            1500,
        ),
    ];
    for (client, fe, be, node, c_mss, be_mtu, b_mss, c_mtu) in cases {
        let syn_f = tcp_opts(client, fe, syn(), &mss_option(c_mss), 0);
        let (rv, out) = fx.ingress(&syn_f);
        assert_eq!(rv, TC_ACT_REDIRECT, "{fe}");
        lb_testkit::verify_checksums_strict(&out).expect("valid checksums");
        let p = lb_testkit::parse(&out).expect("parse");
        let to_v6 = p.dst.is_ipv6();
        assert_eq!(
            tcp_mss(&out),
            Some(lb_core::nat46x64::clamp_mss(c_mss, to_v6, be_mtu)),
            "{fe}: the client's MSS fits the route to the backend"
        );
        let want = translate_mtu(&syn_f, L4Proto::Tcp, p.src, sa(be), be_mtu).expect("reference");
        assert_eq!(out, want, "{fe}: reference translation, MTU {be_mtu}");
        // The backend's SYN-ACK: clamped for the route to the client.
        let port = p.src.port();
        let sa_f = tcp_opts(be, &join(node, port), syn_ack(), &mss_option(b_mss), 0);
        let (rv, back) = fx.ingress(&sa_f);
        assert_eq!(rv, TC_ACT_REDIRECT, "{fe}: SYN-ACK");
        lb_testkit::verify_checksums_strict(&back).expect("valid checksums");
        let want = translate_mtu(&sa_f, L4Proto::Tcp, sa(fe), sa(client), c_mtu).expect("ref");
        assert_eq!(back, want, "{fe}: SYN-ACK, MTU {c_mtu}");
        assert_eq!(
            tcp_mss(&back),
            Some(lb_core::nat46x64::clamp_mss(b_mss, !to_v6, c_mtu))
        );
        // A small MSS is never raised; a NOP first puts the value at an
        // odd offset; a segment without SYN keeps its option.
        for (flags, opts, sport) in [
            (syn(), mss_option(536).to_vec(), 40001u16),
            (syn(), [&[1u8][..], &mss_option(9000)].concat(), 40002),
            (lb_testkit::TcpFlags::ACK, mss_option(9000).to_vec(), 40003),
        ] {
            let c = sa(client);
            let src = SocketAddr::new(c.ip(), sport).to_string();
            let f = tcp_opts(&src, fe, flags, &opts, 0);
            let (rv, out) = fx.ingress(&f);
            assert_eq!(rv, TC_ACT_REDIRECT, "{fe} {opts:?}");
            lb_testkit::verify_checksums_strict(&out).expect("valid checksums");
            let p = lb_testkit::parse(&out).expect("parse");
            let want = translate_mtu(&f, L4Proto::Tcp, p.src, sa(be), be_mtu).expect("ref");
            assert_eq!(out, want, "{fe} {flags:?} {opts:?}");
            let mss = if opts[0] == 1 {
                9000
            } else {
                u16::from_be_bytes([opts[2], opts[3]])
            };
            let expect = if flags.contains(lb_testkit::TcpFlags::SYN) {
                lb_core::nat46x64::clamp_mss(mss, to_v6, be_mtu)
            } else {
                mss
            };
            assert_eq!(tcp_mss(&out), Some(expect), "{fe} {flags:?} {opts:?}");
        }
    }
    let c = fx.dp.counters().expect("counters");
    assert_eq!(c.drops_for(DropReason::Rewrite), 0);
}

/// A non-GSO IPv4 packet that would be over the IPv6 route's MTU once
/// translated: with DF its sender gets ICMP fragmentation needed carrying
/// the route's MTU less 20, from the packet's destination, quoting it
/// (NAT46 requests: the client, from the frontend; NAT64 replies: the IPv4
/// backend, from the node); without DF it is dropped. Both are counted as
/// FragNeeded; a packet that fits is translated.
#[test]
fn ipv4_packets_too_big_once_translated_get_fragmentation_needed() {
    let mut fx = Nat::new();
    fx.netns
        .add_route("fd00:2:1::2/128 via fd00:ffff:ffff::2 dev lbn0 mtu lock 1400")
        .expect("route with an MTU");
    fx.apply(&one_of_each());
    let frag_needed = |fx: &Nat| {
        fx.dp
            .counters()
            .expect("counters")
            .drops_for(DropReason::FragNeeded)
    };
    let big = |src: &str, dst: &str, ip_len: usize, df: bool| {
        let hdr = if src.starts_with('[') { 40 } else { 20 } + 20;
        lb_testkit::PacketBuilder::tcp(sa(src), sa(dst))
            .ack()
            .seq(1000)
            .dont_fragment(df)
            .payload(vec![7u8; ip_len - hdr])
            .build()
            .unwrap()
    };
    // NAT46: 1380 bytes of IPv4 are 1400 of IPv6: they fit.
    let client = "192.168.5.2:40000";
    let (rv, out) = fx.ingress(&big(client, "10.96.0.46:80", 1380, true));
    assert_eq!(rv, TC_ACT_REDIRECT);
    let p = lb_testkit::parse(&out).expect("parse");
    assert_eq!(p.dst, sa("[fd00:2:1::2]:8080"));
    assert_eq!(p.ip_total_len, 1400);
    assert_eq!(frag_needed(&fx), 0);
    // 1381 do not: fragmentation needed, MTU 1380, back to the client.
    let f = big(client, "10.96.0.46:80", 1381, true);
    let (rv, out) = fx.ingress(&f);
    assert_eq!(rv, TC_ACT_REDIRECT, "answered out of the arrival device");
    lb_testkit::verify_checksums(&out).expect("valid ICMP");
    let p = lb_testkit::parse(&out).expect("parse");
    assert_eq!(
        (p.src.ip(), p.dst.ip()),
        (ip("10.96.0.46"), ip("192.168.5.2"))
    );
    let icmp = p.icmp.expect("ICMP");
    assert_eq!((icmp.ty, icmp.code), (3, 4), "fragmentation needed");
    assert_eq!(icmp.mtu(false), 1380);
    let quoted = p.icmp_inner().expect("error").expect("quote");
    assert_eq!((quoted.src, quoted.dst), (sa(client), sa("10.96.0.46:80")));
    assert_eq!(
        &p.payload[24..28],
        &1000u32.to_be_bytes(),
        "the sender's sequence"
    );
    assert_eq!(frag_needed(&fx), 1);
    // Without DF: dropped (not fragmented), counted.
    let (rv, _) = fx.ingress(&big(client, "10.96.0.46:80", 1381, false));
    assert_eq!(rv, 2, "TC_ACT_SHOT");
    assert_eq!(frag_needed(&fx), 2);
    // NAT64 replies: the IPv4 backend's 1500-byte reply is 1520 bytes as
    // IPv6, over the client route's 1500.
    let f = tcp("[fd00:5::2]:40000", "[fd00:96::64]:80");
    let (rv, out) = fx.ingress(&f);
    assert_eq!(rv, TC_ACT_REDIRECT);
    let port = lb_testkit::parse(&out).expect("parse").src.port();
    let node = join(ip(NODE4), port);
    let (rv, out) = fx.ingress(&big("10.0.2.2:8080", &node, 1480, true));
    assert_eq!(rv, TC_ACT_REDIRECT);
    assert_eq!(lb_testkit::parse(&out).expect("parse").ip_total_len, 1500);
    let (rv, out) = fx.ingress(&big("10.0.2.2:8080", &node, 1500, true));
    assert_eq!(rv, TC_ACT_REDIRECT);
    let p = lb_testkit::parse(&out).expect("parse");
    assert_eq!((p.src.ip(), p.dst.ip()), (ip(NODE4), ip("10.0.2.2")));
    let icmp = p.icmp.expect("ICMP");
    assert_eq!((icmp.ty, icmp.code, icmp.mtu(false)), (3, 4, 1480));
    assert_eq!(frag_needed(&fx), 3);
}
