//! The NAT46/64 scenarios ([`lb_core::nat46x64`]): IPv4 frontends served
//! by IPv6 backends and the reverse, on a node with NAT46/64 on (and once
//! with it off). Every forwarded frame leaves in the backend's family,
//! SNATed to the node's address of that family, and equals the reference
//! translation ([`super::reference::translate`]) byte for byte; every
//! reply comes back translated to the frontend's family.
//!
//! TCP SYNs and SYN-ACKs with an MSS option come out with it clamped
//! ([`lb_core::nat46x64::clamp_mss`]) for a route of
//! [`lb_core::nat46x64::DEFAULT_ROUTE_MTU`] bytes, the MTU of every route
//! the suite's dataplanes translate onto ([`mss_clamped`]).
//!
//! Addresses as in [`super::scenarios_v6`]: IPv4 clients `192.168.5.C`,
//! IPv6 clients `fd00:5::C`, IPv6 backends `fd00:1:1::N` (node-local) and
//! `fd00:2:1::N` (remote), IPv4 backends `10.0.1.N` and `10.0.2.N`.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use lb_core::nat46x64::{clamp_mss, DEFAULT_ROUTE_MTU};
use lb_core::{BackendParams, DropReason, FrontendType, L4Proto, Translation, Verdict};

use super::dut::PacketResult;
use super::reference::{classify, mss_option, tcp_mss, translate, with_tcp_options, Class};
use super::scenarios::{service, NODE_IP};
use super::scenarios_v6::NODE_IP6;
use super::session::{sa, tcp, udp, Session};
use crate::packets::{PacketBuilder, TcpFlags};

/// MSS clamping of translated SYNs and SYN-ACKs: from `client_ip` to
/// `frontend`, SYNs with an MSS option of a jumbo-frame host (lowered),
/// one after a NOP (the value at an odd offset) and a small one (kept);
/// each is forwarded as the reference translation with the MSS clamped
/// for the backend's family, and the backend's SYN-ACK with the same
/// option comes back clamped for the client's family, byte for byte.
pub fn mss_clamped(s: &mut Session, client_ip: &str, frontend: &str) {
    let fe = sa(frontend);
    let cases: [(u16, &[u8]); 3] = [(8940, &[]), (9000, &[1]), (536, &[])];
    for (i, (mss, before)) in cases.into_iter().enumerate() {
        let client = SocketAddr::new(client_ip.parse().expect("ip"), 41100 + i as u16);
        let opts = [before, &mss_option(mss)[..]].concat();
        let syn = with_tcp_options(&tcp(&client.to_string(), frontend), &opts).expect("options");
        // Session::send checks the output against the reference.
        let sent = s.send(&syn);
        let out = sent.out.expect("forwarded");
        let Class::Flow(fwd) = classify(&out) else {
            panic!("{frontend}: not a flow: {out:?}");
        };
        let to_v6 = fwd.dst.is_ipv6();
        assert_eq!(
            tcp_mss(&out),
            Some(clamp_mss(mss, to_v6, DEFAULT_ROUTE_MTU)),
            "{}: SYN's MSS {mss} to {frontend}",
            s.dut_name()
        );
        let syn_ack = PacketBuilder::tcp(
            SocketAddr::new(fwd.dst, fwd.dport),
            SocketAddr::new(fwd.src, fwd.sport),
        )
        .flags(TcpFlags::SYN | TcpFlags::ACK)
        .build()
        .expect("SYN-ACK");
        let syn_ack = with_tcp_options(&syn_ack, &opts).expect("options");
        let want = translate(&syn_ack, L4Proto::Tcp, fe, client).expect("reference");
        assert_eq!(
            tcp_mss(&want),
            Some(clamp_mss(mss, !to_v6, DEFAULT_ROUTE_MTU))
        );
        assert_eq!(
            s.process_reply(&syn_ack),
            PacketResult::Accept(want),
            "{}: SYN-ACK with MSS {mss} from {} not translated back clamped",
            s.dut_name(),
            fwd.dst
        );
    }
}

/// Sends TCP and UDP flows from `clients` (`ADDR` strings) to `dsts`
/// (`ADDR:PORT`, the UDP ones in `dsts_udp`): each is forwarded to one of
/// `backends` with translation `t`, SNATed to `snat`, stays there, and its
/// reply comes back translated. Returns the backends reached.
fn translated_flows(
    s: &mut Session,
    clients: &[&str],
    dsts: &[&str],
    dsts_udp: &[&str],
    backends: &[&str],
    t: Translation,
    snat: &str,
) -> BTreeSet<SocketAddr> {
    let want: BTreeSet<SocketAddr> = backends.iter().map(|b| sa(b)).collect();
    let mut seen = BTreeSet::new();
    for (i, dst) in dsts.iter().chain(dsts_udp).enumerate() {
        let is_udp = i >= dsts.len();
        for (c, ip) in clients.iter().enumerate() {
            let port = 40000 + (i * clients.len() + c) as u16;
            let src = if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            };
            let f = if is_udp {
                udp(&src, dst)
            } else {
                tcp(&src, dst)
            };
            let sent = s.send(&f);
            let Verdict::Forward(fw) = sent.verdict else {
                panic!("{dst}: {sent:?}");
            };
            assert_eq!(fw.translation(), t, "{dst}");
            assert_eq!(fw.snat, Some(snat.parse().expect("ip")), "{dst}");
            let b = sa(&format!("{}", fw.backend.host_port()));
            assert!(want.contains(&b), "{dst}: {b}");
            seen.insert(b);
            s.reply(&f, &sent.out.expect("forwarded"));
            // Established: same backend, same translation.
            assert_eq!(s.roundtrip(&f), Some(b), "{dst}: established flow moved");
        }
    }
    seen
}

/// NAT46: an IPv4 ClusterIP (TCP and UDP), an IPv4 LoadBalancer IP and a
/// NodePort on `0.0.0.0` (node IPv4 address and wildcard) of a service
/// whose backends are all IPv6, local and remote. Every flow is translated
/// to IPv6 from the node's IPv6 address; a UDP datagram without a checksum
/// gets one; a dual-stack twin with an IPv6 frontend reaches the same
/// backends untranslated.
pub fn nat46(s: &mut Session) {
    let backends = ["[fd00:1:1::1]:8080", "[fd00:2:1::2]:8080"];
    let mut svc = service(
        "default/web",
        &[
            ("10.96.0.46:80", FrontendType::ClusterIp),
            ("203.0.113.46:80", FrontendType::LoadBalancer),
            ("0.0.0.0:30046", FrontendType::NodePort),
            ("[fd00:96::46]:80", FrontendType::ClusterIp),
        ],
        &[backends[0]],
    );
    svc.backends
        .push(BackendParams::new(backends[1].parse().expect("addr")).on_node("node-2"));
    let mut dns = service(
        "default/dns",
        &[("10.96.0.53:53/UDP", FrontendType::ClusterIp)],
        &["[fd00:1:1::1]:5353/UDP"],
    );
    dns.backends.push(
        BackendParams::new("[fd00:2:1::2]:5353/UDP".parse().expect("addr")).on_node("node-2"),
    );
    s.program(&[svc, dns]);
    let node4 = format!("{NODE_IP}:30046");
    let clients = ["192.168.5.2", "192.168.5.3", "192.168.5.4"];
    let seen = translated_flows(
        s,
        &clients,
        &[
            "10.96.0.46:80",
            "203.0.113.46:80",
            &node4,
            "127.0.0.1:30046",
        ],
        &[],
        &backends,
        Translation::Nat46,
        NODE_IP6,
    );
    assert_eq!(seen.len(), 2, "both backends used: {seen:?}");
    translated_flows(
        s,
        &clients,
        &[],
        &["10.96.0.53:53"],
        &["[fd00:1:1::1]:5353", "[fd00:2:1::2]:5353"],
        Translation::Nat46,
        NODE_IP6,
    );
    // An IPv4 UDP datagram without a checksum: IPv6 needs one.
    let mut f = udp("192.168.5.9:41000", "10.96.0.53:53");
    f[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let sent = s.send(&f);
    assert!(sent.backend().is_some_and(|b| b.is_ipv6()), "{sent:?}");
    // The IPv6 frontend of the same service: same backends, no translation.
    let sent = s.send(&tcp("[fd00:5::2]:41001", "[fd00:96::46]:80"));
    let Verdict::Forward(fw) = sent.verdict else {
        panic!("{sent:?}");
    };
    assert_eq!(fw.translation(), Translation::None);
    // Another port of the ClusterIP is not a frontend.
    let sent = s.send(&tcp("192.168.5.2:41002", "10.96.0.46:81"));
    assert_eq!(sent.verdict, Verdict::Pass);
    mss_clamped(s, "192.168.5.20", "10.96.0.46:80");
}

/// NAT64: an IPv6 ClusterIP (TCP and UDP), an IPv6 externalIP and a
/// NodePort on `[::]` of a service whose backends are all IPv4; a
/// dual-stack service with backends of both families keeps each family on
/// its own backends.
pub fn nat64(s: &mut Session) {
    let backends = ["10.0.1.1:8080", "10.0.2.2:8080"];
    let mut svc = service(
        "default/web",
        &[
            ("[fd00:96::64]:80", FrontendType::ClusterIp),
            ("[fd00:96::64]:53/UDP", FrontendType::ClusterIp),
            ("[2001:db8::64]:80", FrontendType::ExternalIp),
            ("[::]:30064", FrontendType::NodePort),
        ],
        &[backends[0], "10.0.1.1:5353/UDP"],
    );
    svc.backends
        .push(BackendParams::new(backends[1].parse().expect("addr")).on_node("node-2"));
    let both = service(
        "default/both",
        &[
            ("10.96.0.10:80", FrontendType::ClusterIp),
            ("[fd00:96::10]:80", FrontendType::ClusterIp),
        ],
        &["10.0.1.5:80", "[fd00:1:1::5]:80"],
    );
    s.program(&[svc, both]);
    let node6 = format!("[{NODE_IP6}]:30064");
    let clients = ["fd00:5::2", "fd00:5::3", "fd00:5::4"];
    let seen = translated_flows(
        s,
        &clients,
        &[
            "[fd00:96::64]:80",
            "[2001:db8::64]:80",
            &node6,
            "[::1]:30064",
        ],
        &["[fd00:96::64]:53"],
        &[backends[0], backends[1], "10.0.1.1:5353"],
        Translation::Nat64,
        NODE_IP,
    );
    assert!(seen.contains(&sa(backends[0])) && seen.contains(&sa(backends[1])));
    for (src, dst, v6) in [
        ("192.168.5.2:42000", "10.96.0.10:80", false),
        ("[fd00:5::2]:42000", "[fd00:96::10]:80", true),
    ] {
        let b = s.roundtrip(&tcp(src, dst)).expect("forwarded");
        assert_eq!(b.is_ipv6(), v6, "{dst} crossed families to {b}");
    }
    mss_clamped(s, "fd00:5::20", "[fd00:96::64]:80");
}

/// NAT46/64 off (the default): an IPv4 frontend whose backends are all
/// IPv6 has no backend, and its flows are dropped as such; the IPv6
/// frontend of the same service works.
pub fn nat46x64_off(s: &mut Session) {
    s.program(&[service(
        "default/web",
        &[
            ("10.96.0.46:80", FrontendType::ClusterIp),
            ("[fd00:96::46]:80", FrontendType::ClusterIp),
        ],
        &["[fd00:1:1::1]:8080"],
    )]);
    let sent = s.send(&tcp("192.168.5.2:40000", "10.96.0.46:80"));
    assert!(
        matches!(
            sent.verdict,
            Verdict::Drop {
                reason: DropReason::NoBackend,
                ..
            }
        ),
        "{sent:?}"
    );
    assert!(s
        .roundtrip(&tcp("[fd00:5::2]:40000", "[fd00:96::46]:80"))
        .is_some_and(|b| b.is_ipv6()));
}
