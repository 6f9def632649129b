//! NAT46/64 sizes in the userspace packet path
//! ([`lb_userspace::nat46x64::clamp_mss`], `frag_needed`,
//! `PacketPath::set_link_mtu`): translated SYNs and SYN-ACKs have their
//! MSS clamped for the link MTU, byte for byte as the conformance suite's
//! reference translation; an IPv4 packet over the MTU once translated to
//! IPv6 is answered with ICMP fragmentation needed (DF) or dropped, both
//! counted. Unprivileged, no I/O; a handful of frames.

use std::net::SocketAddr;

use lb_core::nat46x64::clamp_mss;
use lb_core::*;
use lb_testkit::conformance::reference::{mss_option, tcp_mss, translate_mtu, with_tcp_options};
use lb_testkit::{parse, verify_checksums_strict, PacketBuilder, TcpFlags};
use lb_userspace::{Config, Direction, DropKind, Outcome, PacketPath, UserspaceDataplane};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A node with NAT46/64 on, a NAT46 and a NAT64 frontend, and a worker.
fn setup() -> (UserspaceDataplane, PacketPath) {
    let mut node = NodeConfig::new(
        "node-1",
        vec![
            "192.168.1.10".parse().unwrap(),
            "fd00:1::10".parse().unwrap(),
        ],
    );
    node.nat46x64 = true;
    let mut s46 = Service::new("default/v6only".parse().unwrap());
    s46.frontends.push(FrontendParams::new(
        "198.51.100.10:80".parse().unwrap(),
        FrontendType::LoadBalancer,
    ));
    s46.backends
        .push(BackendParams::new("[fd00:200::2]:8080".parse().unwrap()).on_node("node-1"));
    let mut s64 = Service::new("default/v4only".parse().unwrap());
    s64.frontends.push(FrontendParams::new(
        "[2001:db8::10]:80".parse().unwrap(),
        FrontendType::LoadBalancer,
    ));
    s64.backends
        .push(BackendParams::new("10.200.1.2:8080".parse().unwrap()).on_node("node-1"));
    let desired = DesiredState::build(&node, &[s46, s64]).unwrap();
    let mut dp = UserspaceDataplane::new(node, Config::default());
    Reconciler::new().apply(&mut dp, &desired).unwrap();
    let w = dp.worker();
    (dp, w)
}

/// Runs `frame` through `w` in a buffer with room; outcome and output.
fn run(w: &mut PacketPath, frame: &[u8], dir: Direction) -> (Outcome, Vec<u8>) {
    let mut buf = vec![0u8; frame.len() + 64];
    buf[..frame.len()].copy_from_slice(frame);
    let (out, n) = w.process_buf(&mut buf, frame.len(), dir, 0);
    (out, buf[..n].to_vec())
}

fn tcp_with(src: &str, dst: &str, flags: TcpFlags, opts: &[u8]) -> Vec<u8> {
    let f = PacketBuilder::tcp(sa(src), sa(dst))
        .flags(flags)
        .build()
        .unwrap();
    with_tcp_options(&f, opts).unwrap()
}

#[test]
fn translated_syns_and_syn_acks_are_clamped_for_the_link_mtu() {
    for mtu in [1500u32, 1400] {
        let (_dp, mut w) = setup();
        w.set_link_mtu(mtu);
        for (client, fe, be) in [
            (
                "192.168.10.2:40000",
                "198.51.100.10:80",
                "[fd00:200::2]:8080",
            ),
            ("[fd00:10::2]:40000", "[2001:db8::10]:80", "10.200.1.2:8080"),
        ] {
            for (i, opts) in [
                mss_option(8940).to_vec(),
                [&[1u8][..], &mss_option(9000)].concat(),
                mss_option(536).to_vec(),
            ]
            .into_iter()
            .enumerate()
            {
                let c = SocketAddr::new(sa(client).ip(), 40000 + i as u16).to_string();
                let syn = tcp_with(&c, fe, TcpFlags::SYN, &opts);
                let (out, fwd) = run(&mut w, &syn, Direction::ToFrontend);
                assert!(matches!(out, Outcome::Forwarded(_)), "{out:?}");
                verify_checksums_strict(&fwd).expect("checksums");
                let p = parse(&fwd).unwrap();
                let want = translate_mtu(&syn, L4Proto::Tcp, p.src, sa(be), mtu).unwrap();
                assert_eq!(fwd, want, "{fe} {opts:?} MTU {mtu}");
                let mss = tcp_mss(&syn).unwrap();
                let to_v6 = p.dst.is_ipv6();
                assert_eq!(tcp_mss(&fwd), Some(clamp_mss(mss, to_v6, mtu)));
                // The backend's SYN-ACK with the same option.
                let sa_f = tcp_with(
                    &p.dst.to_string(),
                    &p.src.to_string(),
                    TcpFlags::SYN | TcpFlags::ACK,
                    &opts,
                );
                let (out, back) = run(&mut w, &sa_f, Direction::Reply);
                assert!(matches!(out, Outcome::ReverseNated { .. }), "{out:?}");
                verify_checksums_strict(&back).expect("checksums");
                let want = translate_mtu(&sa_f, L4Proto::Tcp, sa(fe), sa(&c), mtu).unwrap();
                assert_eq!(back, want, "SYN-ACK {fe} {opts:?} MTU {mtu}");
                assert_eq!(tcp_mss(&back), Some(clamp_mss(mss, !to_v6, mtu)));
            }
        }
    }
}

#[test]
fn ipv4_packets_over_the_mtu_once_translated_get_fragmentation_needed() {
    let (dp, mut w) = setup();
    w.set_link_mtu(1400);
    let big = |src: &str, dst: &str, ip_len: usize, df: bool| {
        PacketBuilder::tcp(sa(src), sa(dst))
            .ack()
            .seq(777)
            .dont_fragment(df)
            .payload(vec![1u8; ip_len - 40])
            .build()
            .unwrap()
    };
    let client = "192.168.10.2:40000";
    let vip = "198.51.100.10:80";
    // 1380 bytes of IPv4 are 1400 of IPv6: translated.
    let (out, fwd) = run(&mut w, &big(client, vip, 1380, true), Direction::ToFrontend);
    assert!(matches!(out, Outcome::Forwarded(_)), "{out:?}");
    assert_eq!(parse(&fwd).unwrap().ip_total_len, 1400);
    // 1381: answered from the frontend with the IPv4 size that fits.
    let f = big(client, vip, 1381, true);
    let (out, ans) = run(&mut w, &f, Direction::ToFrontend);
    assert_eq!(out, Outcome::Answered(DropKind::FragNeeded));
    verify_checksums_strict(&ans).expect("ICMP checksums");
    let p = parse(&ans).unwrap();
    assert_eq!((p.src.ip(), p.dst.ip()), (sa(vip).ip(), sa(client).ip()));
    let icmp = p.icmp.unwrap();
    assert_eq!((icmp.ty, icmp.code, icmp.mtu(false)), (3, 4, 1380));
    assert_eq!(
        &p.payload[..28],
        &f[14..42],
        "quotes the header and 8 bytes"
    );
    assert_eq!(
        (&ans[..6], &ans[6..12]),
        (&f[6..12], &f[..6]),
        "MACs swapped"
    );
    // Without DF: dropped.
    let (out, _) = run(
        &mut w,
        &big(client, vip, 1381, false),
        Direction::ToFrontend,
    );
    assert_eq!(out, Outcome::Dropped(DropKind::FragNeeded));
    assert_eq!(dp.counters().drops(DropKind::FragNeeded), 2);
    // NAT64 replies grow too: the IPv4 backend is answered from the node.
    let (_, fwd) = run(
        &mut w,
        &tcp_with(
            "[fd00:10::2]:40000",
            "[2001:db8::10]:80",
            TcpFlags::SYN,
            &[],
        ),
        Direction::ToFrontend,
    );
    let p = parse(&fwd).unwrap();
    let reply = big(&p.dst.to_string(), &p.src.to_string(), 1381, true);
    let (out, ans) = run(&mut w, &reply, Direction::Reply);
    assert_eq!(out, Outcome::Answered(DropKind::FragNeeded));
    let a = parse(&ans).unwrap();
    assert_eq!((a.src.ip(), a.dst.ip()), (p.src.ip(), p.dst.ip()));
    assert_eq!(a.icmp.unwrap().mtu(false), 1380);
    assert_eq!(dp.counters().drops(DropKind::FragNeeded), 3);
}
