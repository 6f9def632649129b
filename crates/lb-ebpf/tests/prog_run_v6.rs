//! IPv6 packet-level tests of the tc programs: `BPF_PROG_TEST_RUN` with
//! crafted IPv6 frames, checked against lb-core's `flow::decide` over the
//! same tables. Privileged (root); each test runs a bounded number of
//! single test-runs (well under a second of kernel time each), so the whole
//! file is bounded by program loads (a few seconds per test).
//!
//! The lb6 maps are written here from lb-core's realized tables
//! ([`Programmer6`]), the layout `EbpfDataplane` uses for IPv4, so the
//! datapath is tested on its own; the conformance suite (tests/conformance.rs)
//! runs the same scenarios through `EbpfDataplane::apply`.

mod common;
#[path = "common/v6.rs"]
mod v6;

use std::net::{Ipv6Addr, SocketAddr};

use common::*;
use lb_core::*;
use lb_ebpf::abi::{CT_F_CLOSING, PORTMAP_PORTS};
use v6::Programmer6;

/// The node's IPv6 address in these tests.
const NODE6: &str = "fd00:1::10";

/// A fixture whose node has an IPv4 and the IPv6 address [`NODE6`].
fn fixture6() -> Fixture {
    let mut node = NodeConfig::new("node-1", vec![ip(NODE_IP), ip(NODE6)]);
    node.maglev = MaglevConfig::default();
    Fixture::with_node(node)
}

/// (src, dst) of an IPv6 frame, checking its L4 checksum.
fn ends6(frame: &[u8]) -> (SocketAddr, SocketAddr) {
    lb_testkit::verify_checksums_strict(frame).expect("valid checksums");
    let p = lb_testkit::parse(frame).expect("parse");
    (p.src, p.dst)
}

fn web(frontends: &[(&str, FrontendType)], backends: &[&str]) -> Service {
    service("default/web", frontends, backends)
}

#[test]
fn clusterip_v6_tcp_and_udp_are_dnated_and_replies_reverse_nated() {
    let mut fx = fixture6();
    let mut pr = Programmer6::apply(
        &mut fx.dp,
        &fx.node,
        &[web(
            &[
                ("[fd00:96::10]:80", FrontendType::ClusterIp),
                ("[fd00:96::10]:53/UDP", FrontendType::ClusterIp),
            ],
            &["[fd00:2::5]:8080", "[fd00:2::5]:5353/UDP"],
        )],
    );
    for (frame, be) in [
        (
            tcp("[fd00:5::2]:40000", "[fd00:96::10]:80"),
            "[fd00:2::5]:8080",
        ),
        (
            udp("[fd00:5::2]:40000", "[fd00:96::10]:53"),
            "[fd00:2::5]:5353",
        ),
    ] {
        assert_eq!(
            forwarded_to(&pr.decide(&fx.node, &frame)),
            Some(sa(be)),
            "oracle"
        );
        let (rv, out) = fx.ingress(&frame);
        assert_eq!(rv, TC_ACT_OK);
        assert_eq!(ends6(&out), (sa("[fd00:5::2]:40000"), sa(be)));
        assert_eq!(lb_testkit::parse(&out).unwrap().payload, b"hello");
    }
    let (rv, back) = fx.egress(&tcp("[fd00:2::5]:8080", "[fd00:5::2]:40000"));
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(
        ends6(&back),
        (sa("[fd00:96::10]:80"), sa("[fd00:5::2]:40000"))
    );
    let (_, back) = fx.egress(&udp("[fd00:2::5]:5353", "[fd00:5::2]:40000"));
    assert_eq!(
        ends6(&back),
        (sa("[fd00:96::10]:53"), sa("[fd00:5::2]:40000"))
    );
    // The backend's traffic to another client port is not ours.
    let other = tcp("[fd00:2::5]:8080", "[fd00:5::2]:40001");
    assert_eq!(fx.egress(&other), (TC_ACT_OK, other));
    // Another destination passes untouched.
    let frame = tcp("[fd00:5::2]:40000", "[fd00:96::11]:80");
    assert_eq!(pr.decide(&fx.node, &frame), Verdict::Pass);
    assert_eq!(fx.ingress(&frame), (TC_ACT_OK, frame));
    // IPv4 is untouched by the IPv6 entries and vice versa.
    let frame = tcp("192.168.5.2:40000", "10.96.0.10:80");
    assert_eq!(fx.ingress(&frame), (TC_ACT_OK, frame));
}

#[test]
fn wildcard_nodeport_v6_answers_on_node_addresses_and_loopback_only() {
    let mut fx = fixture6();
    let mut pr = Programmer6::apply(
        &mut fx.dp,
        &fx.node,
        &[web(
            &[
                ("[::]:30080", FrontendType::NodePort),
                ("[fd00:cafe::7]:80", FrontendType::LoadBalancer),
            ],
            &["[fd00:2::5]:8080"],
        )],
    );
    for (i, dst) in ["[fd00:1::10]:30080", "[::1]:30080", "[fd00:cafe::7]:80"]
        .iter()
        .enumerate()
    {
        let src = format!("[fd00:5::2]:{}", 41000 + i);
        let frame = tcp(&src, dst);
        let verdict = pr.decide(&fx.node, &frame);
        assert_eq!(
            forwarded_to(&verdict),
            Some(sa("[fd00:2::5]:8080")),
            "{dst}"
        );
        let (rv, out) = fx.ingress(&frame);
        assert_eq!(rv, TC_ACT_OK, "{dst}");
        assert_eq!(ends6(&out), (sa(&src), sa("[fd00:2::5]:8080")), "{dst}");
        let (_, back) = fx.egress(&tcp("[fd00:2::5]:8080", &src));
        assert_eq!(ends6(&back), (sa(dst), sa(&src)), "reply of {dst}");
    }
    // Not a node address: the wildcard does not apply.
    let frame = tcp("[fd00:5::2]:42000", "[fd00:1::99]:30080");
    assert_eq!(pr.decide(&fx.node, &frame), Verdict::Pass);
    assert_eq!(fx.ingress(&frame), (TC_ACT_OK, frame));
}

#[test]
fn source_ranges_v6_admit_only_listed_clients() {
    let mut fx = fixture6();
    let mut s = web(
        &[("[fd00:cafe::7]:80", FrontendType::LoadBalancer)],
        &["[fd00:2::5]:8080"],
    );
    s.source_ranges = vec!["fd00:5::/64".parse().unwrap()];
    let mut pr = Programmer6::apply(&mut fx.dp, &fx.node, &[s]);
    let inside = tcp("[fd00:5::2]:40000", "[fd00:cafe::7]:80");
    assert!(forwarded_to(&pr.decide(&fx.node, &inside)).is_some());
    let (rv, out) = fx.ingress(&inside);
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(ends6(&out).1, sa("[fd00:2::5]:8080"));
    let outside = tcp("[fd00:6::2]:40000", "[fd00:cafe::7]:80");
    assert!(matches!(
        pr.decide(&fx.node, &outside),
        Verdict::Drop {
            reason: DropReason::SourceRangeDenied,
            ..
        }
    ));
    assert_eq!(fx.ingress(&outside).0, TC_ACT_SHOT);
    let c = fx.dp.counters().unwrap();
    assert_eq!(c.drops_for(lb_ebpf::abi::DropReason::SourceRange), 1);
}

#[test]
fn affinity_v6_pins_a_client_to_one_backend() {
    let mut fx = fixture6();
    let backends: Vec<String> = (1..=4).map(|i| format!("[fd00:2::{i}]:80")).collect();
    let refs: Vec<&str> = backends.iter().map(String::as_str).collect();
    let mut s = web(&[("[fd00:96::10]:80", FrontendType::ClusterIp)], &refs);
    s.algorithm = Some(LbAlgorithm::Random);
    s.session_affinity = SessionAffinity::ClientIp { timeout_secs: 600 };
    let mut plain = service(
        "default/api",
        &[("[fd00:96::11]:80", FrontendType::ClusterIp)],
        &refs,
    );
    plain.algorithm = Some(LbAlgorithm::Random);
    Programmer6::apply(&mut fx.dp, &fx.node, &[s, plain]);
    for client in ["fd00:5::2", "fd00:5::3"] {
        let mut seen = std::collections::BTreeSet::new();
        for port in 40000..40016u16 {
            let frame = tcp(&format!("[{client}]:{port}"), "[fd00:96::10]:80");
            let (rv, out) = fx.ingress(&frame);
            assert_eq!(rv, TC_ACT_OK);
            seen.insert(ends6(&out).1);
        }
        assert_eq!(seen.len(), 1, "{client} went to {seen:?}");
    }
    assert_eq!(fx.dp.maps().affinity6.keys().count(), 2);
    // Without affinity the same 16 flows spread (random selection; all 16
    // on one of 4 backends has probability 4^-15).
    let mut seen = std::collections::BTreeSet::new();
    for port in 40000..40016u16 {
        let frame = tcp(&format!("[fd00:5::2]:{port}"), "[fd00:96::11]:80");
        seen.insert(ends6(&fx.ingress(&frame).1).1);
    }
    assert!(
        seen.len() > 1,
        "random selection used one backend: {seen:?}"
    );
}

#[test]
fn established_v6_flows_keep_their_backend_and_close() {
    let mut fx = fixture6();
    let backends: Vec<String> = (1..=4).map(|i| format!("[fd00:2::{i}]:80")).collect();
    let refs: Vec<&str> = backends.iter().map(String::as_str).collect();
    let mut s = web(&[("[fd00:96::10]:80", FrontendType::ClusterIp)], &refs);
    s.algorithm = Some(LbAlgorithm::Random);
    Programmer6::apply(&mut fx.dp, &fx.node, &[s]);
    let syn = tcp("[fd00:5::2]:40000", "[fd00:96::10]:80");
    let be = ends6(&fx.ingress(&syn).1).1;
    let ack = lb_testkit::PacketBuilder::tcp(sa("[fd00:5::2]:40000"), sa("[fd00:96::10]:80"))
        .ack()
        .payload(b"data")
        .build()
        .unwrap();
    for _ in 0..8 {
        assert_eq!(ends6(&fx.ingress(&ack).1).1, be);
    }
    let ct = fx.dp.maps().ct6.keys().count();
    assert_eq!(ct, 2, "a service and a reply entry");
    // The backend's FIN closes both directions.
    let fin = lb_testkit::PacketBuilder::tcp(be, sa("[fd00:5::2]:40000"))
        .fin()
        .ack()
        .build()
        .unwrap();
    let (_, back) = fx.egress(&fin);
    assert_eq!(ends6(&back).0, sa("[fd00:96::10]:80"));
    let entries: Vec<_> = fx.dp.maps().ct6.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(entries.len(), 2);
    for (k, e) in entries {
        assert_ne!(e.flags & CT_F_CLOSING, 0, "{k:?} not closing");
    }
}

#[test]
fn reply_tuple_clash_v6_remaps_the_client_port() {
    let mut fx = fixture6();
    let mut pr = Programmer6::apply(
        &mut fx.dp,
        &fx.node,
        &[
            web(
                &[("[fd00:96::10]:80", FrontendType::ClusterIp)],
                &["[fd00:2::5]:8080"],
            ),
            service(
                "default/api",
                &[("[fd00:96::20]:80", FrontendType::ClusterIp)],
                &["[fd00:2::5]:8080"],
            ),
        ],
    );
    let a = tcp("[fd00:5::2]:40000", "[fd00:96::10]:80");
    let b = tcp("[fd00:5::2]:40000", "[fd00:96::20]:80");
    assert!(forwarded_to(&pr.decide(&fx.node, &a)).is_some());
    let (_, out_a) = fx.ingress(&a);
    let (_, out_b) = fx.ingress(&b);
    let (src_a, dst_a) = ends6(&out_a);
    let (src_b, dst_b) = ends6(&out_b);
    assert_eq!(
        (src_a, dst_a),
        (sa("[fd00:5::2]:40000"), sa("[fd00:2::5]:8080"))
    );
    assert_eq!(dst_b, sa("[fd00:2::5]:8080"));
    assert_eq!(src_b.ip(), src_a.ip());
    assert!(
        PORTMAP_PORTS.contains(&src_b.port()),
        "second flow remapped into the port-map range: {src_b}"
    );
    // Each flow's replies go back to its own frontend and the client's port.
    let (_, back_a) = fx.egress(&tcp("[fd00:2::5]:8080", "[fd00:5::2]:40000"));
    assert_eq!(
        ends6(&back_a),
        (sa("[fd00:96::10]:80"), sa("[fd00:5::2]:40000"))
    );
    let (_, back_b) = fx.egress(&tcp("[fd00:2::5]:8080", &src_b.to_string()));
    assert_eq!(
        ends6(&back_b),
        (sa("[fd00:96::20]:80"), sa("[fd00:5::2]:40000"))
    );
    // The second flow's later packets keep the remapped port.
    let (_, again) = fx.ingress(&b);
    assert_eq!(ends6(&again).0, src_b);
    // ICMPv6 errors (lb_icmp6.h) quoting either flow, from the backend or
    // a router, whole or cut after 8 bytes of TCP, reach the client about
    // its own port and the flow's frontend, every checksum valid.
    let client: std::net::IpAddr = "fd00:5::2".parse().unwrap();
    let be: std::net::IpAddr = "fd00:2::5".parse().unwrap();
    let router: std::net::IpAddr = "fd00:9::1".parse().unwrap();
    for (sent, seen, fe) in [
        (&a, &out_a, "[fd00:96::10]:80"),
        (&b, &out_b, "[fd00:96::20]:80"),
    ] {
        for (from, shown) in [(be, sa(fe).ip()), (router, router)] {
            for cut in [48, usize::MAX] {
                let err = lb_testkit::IcmpBuilder::packet_too_big(from, client, 1400, &seen[14..])
                    .truncate_inner(cut)
                    .build()
                    .unwrap();
                let want =
                    lb_testkit::IcmpBuilder::packet_too_big(shown, client, 1400, &sent[14..])
                        .truncate_inner(cut)
                        .build()
                        .unwrap();
                let (rv, got) = fx.egress(&err);
                assert_eq!(rv, TC_ACT_OK);
                assert_eq!(
                    got[14..],
                    want[14..],
                    "{fe} from {from}, quote cut at {cut}"
                );
            }
        }
    }
}

#[test]
fn malformed_v6_is_dropped_and_extension_headers_are_handled() {
    let mut fx = fixture6();
    Programmer6::apply(
        &mut fx.dp,
        &fx.node,
        &[web(
            &[("[fd00:96::10]:80", FrontendType::ClusterIp)],
            &["[fd00:2::5]:8080"],
        )],
    );
    let f = tcp("[fd00:5::2]:40000", "[fd00:96::10]:80");
    let mut bad_version = f.clone();
    bad_version[14] = 0x40 | (bad_version[14] & 0x0f);
    assert_eq!(fx.ingress(&bad_version).0, TC_ACT_SHOT);
    assert_eq!(fx.ingress(&f[..14 + 40 + 19]).0, TC_ACT_SHOT);
    let c = fx.dp.counters().unwrap();
    assert_eq!(c.drops_for(lb_ebpf::abi::DropReason::Malformed), 2);
    // A fragment header, ICMPv6, SCTP: not ours, untouched.
    for next in [44u8, 58, 132] {
        let mut x = f.clone();
        x[14 + 6] = next;
        assert_eq!(fx.ingress(&x), (TC_ACT_OK, x.clone()), "next header {next}");
    }
    // A hop-by-hop options header (8 bytes of padding) before TCP: skipped.
    let hbh = with_ext_header(&f, 0, &[0x01, 0x04, 0, 0, 0, 0]);
    let (rv, out) = fx.ingress(&hbh);
    assert_eq!(rv, TC_ACT_OK);
    let p = lb_testkit::parse(&strip_ext_header(&out)).unwrap();
    assert_eq!(p.dst, sa("[fd00:2::5]:8080"));
    lb_testkit::verify_checksums_strict(&strip_ext_header(&out)).expect("checksum");
    // A routing header with segments left: the node is not the final
    // destination, untouched.
    let rh = with_ext_header(&f, 43, &[0, 1, 0, 0, 0, 0]);
    assert_eq!(fx.ingress(&rh), (TC_ACT_OK, rh.clone()));
}

/// `frame` with an 8-byte extension header of type `kind` (its 6 bytes
/// after next-header and length) between the IPv6 header and TCP.
fn with_ext_header(frame: &[u8], kind: u8, rest: &[u8; 6]) -> Vec<u8> {
    let mut x = frame[..54].to_vec();
    let next = x[20];
    x[20] = kind;
    let plen = u16::from_be_bytes([x[18], x[19]]) + 8;
    x[18..20].copy_from_slice(&plen.to_be_bytes());
    x.extend_from_slice(&[next, 0]);
    x.extend_from_slice(rest);
    x.extend_from_slice(&frame[54..]);
    x
}

/// The inverse of [`with_ext_header`].
fn strip_ext_header(frame: &[u8]) -> Vec<u8> {
    let mut x = frame[..54].to_vec();
    x[20] = frame[54];
    let plen = u16::from_be_bytes([x[18], x[19]]) - 8;
    x[18..20].copy_from_slice(&plen.to_be_bytes());
    x.extend_from_slice(&frame[62..]);
    x
}

/// `lb_test_flow_hash` (the C flow hash) equals lb-core's
/// `FlowKey::hash` for 256 random IPv6 5-tuples and seeds.
#[test]
fn c_flow_hash6_equals_lb_core_flow_key_hash() {
    use proptest::prelude::*;
    assert_c_flow_hash_is_lb_cores(
        256,
        any::<[u8; 16]>().prop_map(|a| std::net::IpAddr::from(Ipv6Addr::from(a))),
    );
}

/// Maglev over IPv6 through `EbpfDataplane::apply` (which writes the Maglev
/// tables): the ingress program picks lb-core's backend for every flow.
/// Bounded: 16 cases of at most 16 flows.
mod maglev_v6_agrees_with_lb_core {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn chosen_backend_equals_decide(
            seed in any::<u32>(),
            bes in prop::collection::btree_map(1u16..500, prop_oneof![Just(100u16), 1u16..500], 1..8),
            flows in prop::collection::vec((any::<[u8; 16]>(), 1024u16.., any::<bool>()), 1..16),
        ) {
            let mut node = NodeConfig::new("node-1", vec![ip(NODE_IP), ip(NODE6)]);
            node.maglev = MaglevConfig::new(251, seed).unwrap();
            let mut fx = Fixture::with_node(node);
            let mut tcp_svc = web(
                &[("[fd00:96::10]:80", FrontendType::ClusterIp), ("[::]:30080", FrontendType::NodePort)],
                &[],
            );
            tcp_svc.algorithm = Some(LbAlgorithm::Maglev);
            let mut udp_svc = service("default/dns", &[("[fd00:96::53]:53/UDP", FrontendType::ClusterIp)], &[]);
            udp_svc.algorithm = Some(LbAlgorithm::Maglev);
            for (o, w) in &bes {
                let b = |port: &str| BackendParams::new(format!("[fd00:2::{o:x}]:{port}").parse().unwrap())
                    .with_weight(*w);
                tcp_svc.backends.push(b("8080"));
                udp_svc.backends.push(b("5353/UDP"));
            }
            fx.apply(&[tcp_svc, udp_svc]);
            for (i, (src, sport, is_udp)) in flows.iter().enumerate() {
                let src = SocketAddr::from((Ipv6Addr::from(*src), *sport)).to_string();
                let dst = match (is_udp, i % 2) {
                    (true, _) => "[fd00:96::53]:53",
                    (false, 0) => "[fd00:96::10]:80",
                    (false, _) => "[fd00:1::10]:30080",
                };
                let frame = if *is_udp { udp(&src, dst) } else { tcp(&src, dst) };
                let verdict = fx.decide(&flow_key(&frame), 0);
                let (rv, out) = fx.ingress(&frame);
                prop_assert_eq!(rv, TC_ACT_OK);
                prop_assert_eq!(Some(ends6(&out).1), forwarded_to(&verdict));
            }
        }
    }
}
