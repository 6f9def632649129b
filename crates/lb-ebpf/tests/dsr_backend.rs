//! Packet-level tests of the DSR backend side (`bpf/lb_dsr_backend.c`):
//! `BPF_PROG_TEST_RUN` on its ingress and egress programs with crafted IPIP
//! frames (no device, no namespace). Privileged (root); a few dozen test
//! runs.

mod common;

use std::net::Ipv4Addr;

use common::*;
use lb_ebpf::dsr::{BackendSide, BackendStats, PROG_DSR_EGRESS, PROG_DSR_INGRESS};

const NODE1: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const NODE2: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 201, 1, 2);

/// `inner` (an Ethernet frame) inside an outer IPv4 header `src -> BACKEND`
/// (protocol 4, DF) carrying `be_port` in its Identification, as a node's
/// `lb_dsr_encap` builds it.
fn ipip(src: Ipv4Addr, be_port: u16, inner: &[u8]) -> Vec<u8> {
    let ip = &inner[14..];
    let mut outer = [0u8; 20];
    outer[0] = 0x45;
    outer[2..4].copy_from_slice(&((ip.len() + 20) as u16).to_be_bytes());
    outer[4..6].copy_from_slice(&be_port.to_be_bytes());
    outer[6] = 0x40;
    outer[8] = 64;
    outer[9] = 4;
    outer[12..16].copy_from_slice(&src.octets());
    outer[16..20].copy_from_slice(&BACKEND.octets());
    let sum = lb_testkit::internet_checksum(&outer);
    outer[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut f = inner[..14].to_vec();
    f.extend_from_slice(&outer);
    f.extend_from_slice(ip);
    f
}

fn side(nodes: &[Ipv4Addr]) -> BackendSide {
    lb_testkit::require_privileges();
    BackendSide::load(nodes).expect("load the DSR backend side")
}

fn ingress(side: &mut BackendSide, frame: &[u8]) -> (u32, Vec<u8>) {
    run(side.program_mut(PROG_DSR_INGRESS).unwrap(), frame)
}

fn egress(side: &mut BackendSide, frame: &[u8]) -> (u32, Vec<u8>) {
    run(side.program_mut(PROG_DSR_EGRESS).unwrap(), frame)
}

#[test]
fn ipip_from_an_allowed_node_is_decapsulated_and_replies_reverse_translated() {
    let mut s = side(&[NODE1]);
    let syn = tcp("192.168.10.2:40000", "198.51.100.10:80");
    let (rv, out) = ingress(&mut s, &ipip(NODE1, 8080, &syn));
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(
        endpoints(&out),
        (sa("192.168.10.2:40000"), sa("10.201.1.2:8080"))
    );
    assert_eq!(lb_testkit::parse(&out).unwrap().payload, b"hello");

    let (rv, back) = egress(&mut s, &tcp("10.201.1.2:8080", "192.168.10.2:40000"));
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(
        endpoints(&back),
        (sa("198.51.100.10:80"), sa("192.168.10.2:40000"))
    );
    let st = s.stats().unwrap();
    assert_eq!((st.decapsulated, st.reversed, st.unknown_node), (1, 1, 0));
}

#[test]
fn ipip_from_an_unknown_source_is_dropped_counted_and_leaves_no_flow() {
    let mut s = side(&[NODE1]);
    let syn = tcp("192.168.10.2:40001", "198.51.100.10:80");
    let (rv, _) = ingress(&mut s, &ipip(NODE2, 8080, &syn));
    assert_eq!(rv, TC_ACT_SHOT);
    assert_eq!(
        s.stats().unwrap(),
        BackendStats {
            unknown_node: 1,
            ..Default::default()
        }
    );
    // No reply translation was planted: the backend's packet leaves as is.
    let reply = tcp("10.201.1.2:8080", "192.168.10.2:40001");
    let (rv, back) = egress(&mut s, &reply);
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(back, reply);

    // Plain (not IPIP) traffic is not the backend side's business.
    let plain = tcp("10.0.2.2:40000", "10.201.1.2:8080");
    assert_eq!(ingress(&mut s, &plain), (TC_ACT_OK, plain.clone()));
    assert_eq!(s.stats().unwrap().unknown_node, 1);
}

#[test]
fn the_allowlist_can_be_replaced_at_run_time() {
    let mut s = side(&[NODE1]);
    assert_eq!(s.nodes().unwrap().into_iter().collect::<Vec<_>>(), [NODE1]);
    let syn = tcp("192.168.10.2:40002", "198.51.100.10:80");
    assert_eq!(ingress(&mut s, &ipip(NODE2, 8080, &syn)).0, TC_ACT_SHOT);

    s.set_nodes(&[NODE2]).unwrap();
    assert_eq!(s.nodes().unwrap().into_iter().collect::<Vec<_>>(), [NODE2]);
    let (rv, out) = ingress(&mut s, &ipip(NODE2, 8080, &syn));
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(endpoints(&out).1, sa("10.201.1.2:8080"));
    assert_eq!(ingress(&mut s, &ipip(NODE1, 8080, &syn)).0, TC_ACT_SHOT);

    // Too many addresses: refused, the allowlist unchanged.
    let many: Vec<Ipv4Addr> = (0..=lb_ebpf::dsr::DSR_NODES_MAX as u32)
        .map(|i| Ipv4Addr::from(0x0a00_0000 + i))
        .collect();
    assert!(s.set_nodes(&many).is_err());
    assert_eq!(s.nodes().unwrap().into_iter().collect::<Vec<_>>(), [NODE2]);
    let st = s.stats().unwrap();
    assert_eq!((st.decapsulated, st.unknown_node), (1, 2));
}

/// The packet as the backend received it (decapsulated, translated),
/// without Ethernet.
fn delivered_udp(client: &str, backend: &str) -> Vec<u8> {
    lb_testkit::PacketBuilder::udp(sa(client), sa(backend))
        .payload(b"hello")
        .build_ip()
        .unwrap()
}

#[test]
fn icmp_errors_the_backend_sends_about_a_dsr_flow_name_the_frontend() {
    use lb_testkit::{parse, verify_checksums, verify_checksums_strict, IcmpBuilder};
    let mut s = side(&[NODE1]);
    let (client, vip, be) = ("192.168.10.2:40003", "198.51.100.10:53", "10.201.1.2:5353");
    let (rv, _) = ingress(&mut s, &ipip(NODE1, 5353, &udp(client, vip)));
    assert_eq!(rv, TC_ACT_OK);

    // Port unreachable from the backend itself, with the quoted UDP
    // checksum and without (zero: stays zero).
    let quoted = delivered_udp(client, be);
    let mut zero = quoted.clone();
    zero[26..28].copy_from_slice(&[0, 0]);
    for (q, has_csum) in [(quoted.clone(), true), (zero, false)] {
        let err = IcmpBuilder::dest_unreachable(
            sa(be).ip(),
            sa(client).ip(),
            lb_testkit::packets::ICMP_PORT_UNREACH,
            &q,
        )
        .build()
        .unwrap();
        let (rv, out) = egress(&mut s, &err);
        assert_eq!(rv, TC_ACT_OK);
        verify_checksums_strict(&out).expect("all checksums after translation");
        let p = parse(&out).unwrap();
        assert_eq!((p.src.ip(), p.dst.ip()), (sa(vip).ip(), sa(client).ip()));
        let inner = p.icmp_inner().unwrap().unwrap();
        assert_eq!((inner.src, inner.dst), (sa(client), sa(vip)));
        assert_eq!(out[14 + 20 + 8 + 20 + 6..][..2] != [0, 0], has_csum);
    }

    // Fragmentation needed quoting a TCP packet of a DSR flow, and a
    // truncated quote (8 bytes of TCP, no checksum to fix).
    let (tclient, tvip, tbe) = ("192.168.10.2:40004", "198.51.100.10:80", "10.201.1.2:8080");
    ingress(&mut s, &ipip(NODE1, 8080, &tcp(tclient, tvip)));
    let tq = lb_testkit::PacketBuilder::tcp(sa(tclient), sa(tbe))
        .ack()
        .payload(b"data")
        .build_ip()
        .unwrap();
    let err = IcmpBuilder::packet_too_big(sa(tbe).ip(), sa(tclient).ip(), 1400, &tq)
        .build()
        .unwrap();
    let (_, out) = egress(&mut s, &err);
    verify_checksums_strict(&out).expect("all checksums after translation");
    let p = parse(&out).unwrap();
    assert_eq!(p.src.ip(), sa(tvip).ip());
    assert_eq!(p.icmp.unwrap().mtu(false), 1400, "the MTU is kept");
    let inner = p.icmp_inner().unwrap().unwrap();
    assert_eq!((inner.src, inner.dst), (sa(tclient), sa(tvip)));

    let short = IcmpBuilder::packet_too_big(sa(tbe).ip(), sa(tclient).ip(), 1400, &tq)
        .truncate_inner(20 + 8)
        .build()
        .unwrap();
    let (_, out) = egress(&mut s, &short);
    verify_checksums(&out).expect("checksums after translation");
    let inner = parse(&out).unwrap().icmp_inner().unwrap().unwrap();
    assert_eq!(inner.dst, sa(tvip));
    assert_eq!(s.stats().unwrap().icmp_reversed, 4);

    // An error about a flow the backend side does not know passes as is.
    let other = IcmpBuilder::dest_unreachable(
        sa(be).ip(),
        sa(client).ip(),
        lb_testkit::packets::ICMP_PORT_UNREACH,
        &delivered_udp("192.168.10.2:49999", be),
    )
    .build()
    .unwrap();
    assert_eq!(egress(&mut s, &other), (TC_ACT_OK, other.clone()));
    assert_eq!(s.stats().unwrap().icmp_reversed, 4);
}

/// IPv6: an IPv6-in-IPv6 frame from an allowed node (its port in the outer
/// flow label, as `bpf/lb_dsr6.h` builds it) is decapsulated and
/// translated to the backend; the backend's reply and its ICMPv6 port
/// unreachable about the flow leave translated back to the frontend, with
/// valid checksums; the same frame from another source is dropped.
#[test]
fn ip6ip6_from_an_allowed_node_is_decapsulated_and_replies_and_errors_reverse_translated() {
    use lb_testkit::conformance::reference::encap_ip6ip6;
    use std::net::{IpAddr, Ipv6Addr};
    let node6: Ipv6Addr = "fd00:a0:1::2".parse().unwrap();
    let be6: IpAddr = "fd00:c9:1::2".parse().unwrap();
    let mut s = side(&[]);
    s.set_nodes(&[IpAddr::V4(NODE1), IpAddr::V6(node6)])
        .unwrap();
    assert_eq!(s.nodes6().unwrap().into_iter().collect::<Vec<_>>(), [node6]);
    assert_eq!(s.nodes().unwrap().into_iter().collect::<Vec<_>>(), [NODE1]);

    let req = udp("[fd00:10::2]:40000", "[2001:db8:51::10]:53");
    let enc = encap_ip6ip6(&req, node6.into(), be6, 5353).unwrap();
    let (rv, out) = ingress(&mut s, &enc);
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(
        endpoints(&out),
        (sa("[fd00:10::2]:40000"), sa("[fd00:c9:1::2]:5353"))
    );
    lb_testkit::packets::verify_checksums(&out).expect("checksums after decapsulation");

    let (rv, back) = egress(&mut s, &udp("[fd00:c9:1::2]:5353", "[fd00:10::2]:40000"));
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(
        endpoints(&back),
        (sa("[2001:db8:51::10]:53"), sa("[fd00:10::2]:40000"))
    );
    lb_testkit::packets::verify_checksums(&back).expect("reply checksums");

    // The backend's port unreachable about the delivered request.
    let client: IpAddr = "fd00:10::2".parse().unwrap();
    let err = lb_testkit::packets::IcmpBuilder::dest_unreachable(
        be6,
        client,
        lb_testkit::packets::ICMPV6_PORT_UNREACH,
        &out[14..],
    )
    .build()
    .unwrap();
    let want = lb_testkit::packets::IcmpBuilder::dest_unreachable(
        "2001:db8:51::10".parse().unwrap(),
        client,
        lb_testkit::packets::ICMPV6_PORT_UNREACH,
        &req[14..],
    )
    .build()
    .unwrap();
    let (rv, got) = egress(&mut s, &err);
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(got[14..], want[14..], "ICMPv6 error about the frontend");
    let st = s.stats().unwrap();
    assert_eq!(
        (
            st.decapsulated,
            st.reversed,
            st.icmp_reversed,
            st.unknown_node
        ),
        (1, 1, 1, 0)
    );

    // From a source that is not a node: dropped before anything else.
    let other: IpAddr = "fd00:a0:2::2".parse().unwrap();
    let enc = encap_ip6ip6(&req, other, be6, 5353).unwrap();
    assert_eq!(ingress(&mut s, &enc).0, TC_ACT_SHOT);
    assert_eq!(s.stats().unwrap().unknown_node, 1);
}
