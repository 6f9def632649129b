//! ICMP errors about NAT46/64 flows (`bpf/lb_nat46_icmp.h`), packet level:
//! `BPF_PROG_TEST_RUN` of the tc ingress program with crafted errors about
//! flows the program translated, checked against lb-testkit's reference
//! translation byte for byte, with valid checksums (the quoted TCP/UDP one
//! too when the quote is whole), the MTUs RFC 7915 asks for, the 1280-byte
//! cut of an ICMPv6 error, the drop (and its counter) of an error without
//! an equivalent, and errors that are not about a live translated flow
//! left alone. The program runs in a network namespace of its own whose
//! routes send backends and clients through a veth end listed in
//! `lb_devices` (test runs transmit nothing). Privileged (root); bounded:
//! one program load per test and a few dozen single test runs.

mod common;
#[path = "common/nat46_rig.rs"]
mod nat46_rig;

use std::net::IpAddr;

use common::{ip, sa, service, tcp, udp};
use lb_core::*;
use lb_ebpf::abi::DropReason;
use lb_testkit::conformance::reference_icmp::translate_icmp_error;
use lb_testkit::{IcmpBuilder, PacketBuilder};
use nat46_rig::*;

/// `TC_ACT_SHOT`.
const TC_ACT_SHOT: u32 = 2;

/// Programs loaded in a namespace with routes to backends and clients, and
/// an `EbpfDataplane` with NAT46/64 on.
type Fixture = NatRig;

impl NatRig {
    fn new() -> Self {
        let mut fx = NatRig::load("nat46icmp");
        let mut s46 = service(
            "default/web46",
            &[
                ("10.96.0.46:80", FrontendType::ClusterIp),
                ("10.96.0.46:53/UDP", FrontendType::ClusterIp),
            ],
            &["[fd00:2:1::2]:8080", "[fd00:2:1::2]:5353/UDP"],
        );
        let mut s64 = service(
            "default/web64",
            &[
                ("[fd00:96::64]:80", FrontendType::ClusterIp),
                ("[fd00:96::64]:53/UDP", FrontendType::ClusterIp),
            ],
            &["10.0.2.2:8080", "10.0.2.2:5353/UDP"],
        );
        for b in s46.backends.iter_mut().chain(s64.backends.iter_mut()) {
            *b = b.clone().on_node("node-2");
        }
        fx.apply(&[s46, s64]);
        fx
    }

    /// Sends the client's `frame`; returns the translated packet.
    fn forward(&mut self, frame: &[u8]) -> Vec<u8> {
        let (rv, out) = self.ingress(frame);
        assert_eq!(rv, TC_ACT_REDIRECT, "forwarded");
        out
    }

    /// Sends `err` (about a flow of `client` to `frontend`): it comes out
    /// redirected, as the reference translation, with valid checksums.
    fn translated(&mut self, err: &[u8], client: &str, frontend: &str) -> Vec<u8> {
        let want = translate_icmp_error(err, sa(client), sa(frontend)).expect("reference");
        let (rv, out) = self.ingress(err);
        assert_eq!(rv, TC_ACT_REDIRECT, "redirected to the client");
        assert_eq!(out[14..], want[14..], "reference translation");
        lb_testkit::verify_checksums_strict(&out).expect("valid checksums");
        out
    }

    fn drops(&self) -> u64 {
        self.dp
            .counters()
            .expect("counters")
            .drops_for(DropReason::Nat46x64Icmp)
    }
}

/// Source and destination of the translated packet.
fn ends(frame: &[u8]) -> (IpAddr, IpAddr) {
    let p = lb_testkit::parse(frame).expect("parse");
    (p.src.ip(), p.dst.ip())
}

fn big_udp(src: &str, dst: &str, len: usize) -> Vec<u8> {
    PacketBuilder::udp(sa(src), sa(dst))
        .payload(vec![0x5a; len])
        .build()
        .expect("frame")
}

#[test]
fn icmpv6_errors_about_nat46_flows_reach_the_ipv4_client() {
    let mut fx = Fixture::new();
    let (client, fe) = ("192.168.5.2:40000", "10.96.0.46:80");
    let fwd = fx.forward(&tcp(client, fe));
    let (node, backend) = ends(&fwd);
    let router: IpAddr = ip("fd00:2:9::1");
    // Packet too big from a router: fragmentation needed, MTU − 20.
    let err = IcmpBuilder::packet_too_big(router, node, 1400, &fwd[14..])
        .build()
        .expect("error");
    let out = fx.translated(&err, client, fe);
    assert_eq!(&out[14 + 9], &1, "ICMPv4");
    assert_eq!(&out[34..36], &[3, 4], "fragmentation needed");
    assert_eq!(u16::from_be_bytes([out[40], out[41]]), 1380);
    assert_eq!(&out[26..30], &[10, 96, 0, 46], "from the frontend");
    // Port unreachable from the backend, about a UDP flow (quote cut after
    // 8 bytes of UDP).
    let (uclient, ufe) = ("192.168.5.2:40001", "10.96.0.46:53");
    let ufwd = fx.forward(&udp(uclient, ufe));
    let err = IcmpBuilder::dest_unreachable(backend, node, 4, &ufwd[14..])
        .truncate_inner(48)
        .build()
        .expect("error");
    let out = fx.translated(&err, uclient, ufe);
    assert_eq!(&out[34..36], &[3, 3], "port unreachable");
    assert_eq!(fx.drops(), 0);
    // No ICMPv4 equivalent (source address failed policy): dropped and
    // counted, never passed raw.
    let err = IcmpBuilder::dest_unreachable(backend, node, 5, &fwd[14..])
        .build()
        .expect("error");
    assert_eq!(fx.ingress(&err).0, TC_ACT_SHOT);
    assert_eq!(fx.drops(), 1);
}

#[test]
fn icmpv4_errors_about_nat64_flows_reach_the_ipv6_client() {
    let mut fx = Fixture::new();
    let (client, fe) = ("[fd00:5::2]:40000", "[fd00:96::64]:53");
    // A big datagram: its whole quote does not fit an ICMPv6 error.
    let fwd = fx.forward(&big_udp(client, fe, 1400));
    let (node, backend) = ends(&fwd);
    let router: IpAddr = ip("10.0.9.1");
    // No MTU (a router older than RFC 1191): the plateau below the quoted
    // 1428 bytes is 1006, + 20 is below the IPv6 minimum.
    for (mtu, want) in [(1400u32, 1420u32), (1000, 1280), (0, 1280)] {
        let err = IcmpBuilder::packet_too_big(router, node, mtu, &fwd[14..])
            .build()
            .expect("error");
        let out = fx.translated(&err, client, fe);
        assert_eq!(out.len(), 14 + 1280, "cut to the IPv6 minimum MTU");
        assert_eq!(out[54], 2, "packet too big");
        let got = u32::from_be_bytes(out[58..62].try_into().expect("4 bytes"));
        assert_eq!(got, want, "MTU for {mtu}");
    }
    // TCP, port unreachable from the backend, time exceeded from a router.
    let (tclient, tfe) = ("[fd00:5::3]:40002", "[fd00:96::64]:80");
    let tfwd = fx.forward(&tcp(tclient, tfe));
    let err = IcmpBuilder::dest_unreachable(backend, node, 3, &tfwd[14..])
        .build()
        .expect("error");
    let out = fx.translated(&err, tclient, tfe);
    assert_eq!(&out[54..56], &[1, 4], "port unreachable");
    let fe6: std::net::Ipv6Addr = "fd00:96::64".parse().expect("ip");
    assert_eq!(out[22..38], fe6.octets(), "from the frontend");
    let err = IcmpBuilder::time_exceeded(router, node, &tfwd[14..])
        .truncate_inner(28)
        .build()
        .expect("error");
    let out = fx.translated(&err, tclient, tfe);
    assert_eq!(&out[54..56], &[3, 0], "hop limit exceeded");
    // No ICMPv6 equivalent: dropped and counted.
    let err = IcmpBuilder::dest_unreachable(backend, node, 14, &tfwd[14..])
        .build()
        .expect("error");
    assert_eq!(fx.ingress(&err).0, TC_ACT_SHOT);
    assert_eq!(fx.drops(), 1);
}

#[test]
fn errors_about_gone_or_unknown_flows_are_left_alone() {
    let mut fx = Fixture::new();
    // A NAT64 flow whose real entry is gone (its marker left): the error
    // is not translated and passes untouched.
    let fwd = fx.forward(&tcp("[fd00:5::2]:40000", "[fd00:96::64]:80"));
    let (node, backend) = ends(&fwd);
    let keys: Vec<_> = fx
        .dp
        .maps()
        .snat6
        .keys()
        .map(|k| k.expect("snat6"))
        .collect();
    for k in keys {
        fx.dp.maps().snat6.remove(&k).expect("remove");
    }
    let err = IcmpBuilder::dest_unreachable(backend, node, 3, &fwd[14..])
        .build()
        .expect("error");
    assert_eq!(fx.ingress(&err), (0, err.clone()));
    // An ICMPv6 error quoting a flow nobody tracks.
    let stray = tcp("[fd00:1::10]:61000", "[fd00:2:1::2]:8080");
    let err = IcmpBuilder::dest_unreachable(ip("fd00:2:1::2"), ip(NODE6), 4, &stray[14..])
        .build()
        .expect("error");
    assert_eq!(fx.ingress(&err), (0, err.clone()));
    assert_eq!(fx.drops(), 0);
}
