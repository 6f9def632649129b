//! IPv6 direct server return at XDP (`bpf/lb_xdp.c`, `lb_xdp_dsr6_encap`):
//! the IPv6 flows the mode sends with DSR are wrapped in IPv6-in-IPv6 by
//! lb_xdp itself, in the very bytes the tc program writes (`bpf/lb_dsr6.h`,
//! the outer header built by `bpf/lb_dsr6_hdr.h` for both), with the same
//! decision, CT entries (flagged `CT_F_DSR`) and counters.
//!
//! Packet level (`BPF_PROG_TEST_RUN` in the node namespace of lb-testkit's
//! routed [`DsrTopology`], IPv6 addressing, the router's neighbour
//! resolved): new and established DSR flows (also established by tc) leave
//! XDP exactly as tc sends them and as lb-core's `flow::decide` says;
//! hybrid mode encapsulates TCP and SNATs UDP; a packet that would not fit
//! the route once encapsulated is passed to tc untouched, with the chosen
//! backend in the metadata and nothing committed, and tc answers it with
//! ICMPv6 Packet Too Big.
//!
//! End to end: native and generic XDP on the node's veth, real TCP (small
//! and 64 KiB echoes) and UDP clients through an IPv6 LoadBalancer VIP and
//! the node's IPv6 NodePorts, the DSR backend side (`bpf/lb_dsr_backend.c`)
//! decapsulating on the backends; every client packet is forwarded at XDP
//! (tc handles none), and the replies bypass the node. The client link's
//! MTU is 1460 there so every client packet fits the 1500-byte links once
//! encapsulated; at the topology's 1480 a full-sized packet goes to tc and
//! gets Packet Too Big ([`too_big_packets_go_to_tc_for_packet_too_big`]).
//! The client's veth has transmit checksum offload off, so its frames carry
//! complete checksums, as frames from a wire do.
//!
//! Privileged (root). Bounded: each end-to-end test makes a few dozen
//! requests with 10 s socket timeouts.

mod common;
#[path = "common/xdp_rig.rs"]
mod xdp_rig;

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;
use lb_core::*;
use lb_ebpf::abi::{DropReason, CT_F_DSR, CT_F_SNAT, CT_SERVICE};
use lb_ebpf::dsr::BackendSide;
use lb_ebpf::xdp::{self, XdpLoaded, XdpMode, XdpStats};
use lb_ebpf::{EbpfDataplane, LoadOptions, Loaded, MapCapacity};
use lb_testkit::dsr_topology::{DsrTopology, Host, CLIENT6, VIP6};
use lb_testkit::{tcp_request, BpffsGuard, EchoServer};
use xdp_rig::XdpRig;

const TIMEOUT: Duration = Duration::from_secs(10);
/// TC_ACT_REDIRECT.
const TC_ACT_REDIRECT: u32 = 7;
/// The outer IPv6 header's length.
const OUTER: usize = 40;

/// The router's address on `host`'s IPv6 link (`...::1`).
fn router6(host: &Host) -> Ipv6Addr {
    let mut s = host.v6.segments();
    s[7] = 1;
    Ipv6Addr::from(s)
}

/// XDP cannot resolve a neighbour: the node's next hop (the router) is
/// resolved up front.
fn resolve_router(node: &Host) {
    node.ns
        .add_neighbor(
            &node.link.name,
            IpAddr::from(router6(node)),
            node.router_link.mac,
        )
        .unwrap();
}

fn node_config(node: &Host, mode: LbMode) -> NodeConfig {
    let mut cfg = NodeConfig::new("node-1", vec![node.v4.into(), node.v6.into()]);
    cfg.mode = mode;
    cfg.maglev = MaglevConfig::new(251, 4242).unwrap();
    cfg
}

fn backends6(topo: &DsrTopology) -> Vec<IpAddr> {
    topo.backends.iter().map(|b| b.v6.into()).collect()
}

/// The node of a one-node, two-backend [`DsrTopology`] with the tc
/// programs attached to its link and `lb_xdp` loaded (not attached) over
/// the same maps, `web` and `dns` on [`VIP6`] and the `[::]` NodePorts.
type Dsr6Fixture = XdpRig;

impl XdpRig {
    fn new(mode: LbMode) -> Self {
        lb_testkit::require_privileges();
        let topo = DsrTopology::new(1, 2).expect("topology");
        resolve_router(&topo.nodes[0]);
        let cfg = node_config(&topo.nodes[0], mode);
        let backends = backends6(&topo);
        let mut x = XdpRig::load(topo, cfg);
        x.fx.apply(&web_and_dns_ip(VIP6.into(), &backends));
        x
    }

    /// The IPv6 CT entries: (direction, flags).
    fn ct6(&mut self) -> Vec<(u8, u16)> {
        self.fx
            .dp
            .maps()
            .ct6
            .iter()
            .map(|r| {
                let (k, v) = r.unwrap();
                (k.dir, v.flags)
            })
            .collect()
    }

    fn service_packets(&self) -> u64 {
        let c = self.fx.dp.counters().unwrap();
        c.services.values().map(|s| s.packets).sum()
    }
}

/// The client frames: TCP and UDP to [`VIP6`] and to the node's NodePorts,
/// and one with a traffic class and a flow label of its own (the outer
/// header takes the traffic class, not the label). The client port is in
/// the SNAT range, so tc and XDP keep it when they SNAT (hybrid UDP).
fn client_frames(node: &Host) -> Vec<Vec<u8>> {
    let client = SocketAddr::from((CLIENT6, 61500));
    let vip = |port| SocketAddr::from((VIP6, port));
    let np = |port| SocketAddr::from((node.v6, port));
    let tcp = |dst| {
        lb_testkit::PacketBuilder::tcp(client, dst)
            .syn()
            .payload(b"hello")
    };
    let udp = |dst| lb_testkit::PacketBuilder::udp(client, dst).payload(b"hello");
    vec![
        tcp(vip(80)).build().unwrap(),
        tcp(np(30080)).build().unwrap(),
        udp(vip(53)).build().unwrap(),
        udp(np(30053)).build().unwrap(),
        tcp(vip(80)).tos(0xb8).flow_label(0x5_4321).build().unwrap(),
    ]
}

/// Checks an IPv6-in-IPv6 frame lb_xdp sent for `frame` against lb-core's
/// verdict: Ethernet to the next hop, the outer header node -> backend
/// (version 6, the inner traffic class, the backend port in the flow
/// label, payload the inner packet, next header 41, hop limit 64), then the
/// client's packet unchanged.
fn assert_encapsulated(out: &[u8], frame: &[u8], f: &Forward, node: &Host) {
    let Some(Encap::Ip6ip6 {
        outer_src,
        outer_dst,
    }) = f.encap
    else {
        panic!("lb-core: not IPv6-in-IPv6: {f:?}")
    };
    assert_eq!(outer_src, IpAddr::from(node.v6), "lb-core: from the node");
    assert_eq!(outer_dst, f.backend.addr, "lb-core: to the backend");
    assert_eq!(out.len(), frame.len() + OUTER);
    assert_eq!(&out[0..6], &node.router_link.mac[..], "next hop's MAC");
    assert_eq!(&out[6..12], &node.link.mac[..], "the node's MAC");
    assert_eq!(&out[12..14], &[0x86, 0xdd], "IPv6");
    let o = &out[14..14 + OUTER];
    let vtcfl = u32::from_be_bytes(o[0..4].try_into().unwrap());
    let inner_vtcfl = u32::from_be_bytes(frame[14..18].try_into().unwrap());
    assert_eq!(vtcfl >> 28, 6, "version");
    assert_eq!(
        (vtcfl >> 20) & 0xff,
        (inner_vtcfl >> 20) & 0xff,
        "traffic class"
    );
    assert_eq!(vtcfl & 0xf_ffff, u32::from(f.backend.port), "flow label");
    assert_eq!(
        usize::from(u16::from_be_bytes([o[4], o[5]])),
        frame.len() - 14,
        "payload length"
    );
    assert_eq!((o[6], o[7]), (41, 64), "next header, hop limit");
    assert_eq!(&o[8..24], &node.v6.octets(), "outer source");
    let IpAddr::V6(be) = f.backend.addr else {
        panic!("IPv4 backend")
    };
    assert_eq!(&o[24..40], &be.octets(), "outer destination");
    assert_eq!(&out[14 + OUTER..], &frame[14..], "the client's packet");
}

/// DSR and hybrid modes: a new flow, then the same flow established, leave
/// lb_xdp as tc sends them (a fresh flow table), encapsulated as lb-core
/// says; a flow tc established is continued at XDP in the same bytes. CT
/// entries as tc's (client direction only, `CT_F_DSR`); counters once per
/// packet.
#[test]
fn ipv6_dsr_flows_leave_xdp_exactly_as_tc_sends_them() {
    for mode in [LbMode::Dsr, LbMode::Hybrid] {
        let mut x = Dsr6Fixture::new(mode);
        let mut backends = std::collections::BTreeSet::new();
        let frames = client_frames(x.node());
        for frame in &frames {
            let v = x.fx.decide(&flow_key(frame), 0);
            let Verdict::Forward(f) = v else {
                panic!("{mode:?}: {v:?}")
            };
            let udp = lb_testkit::parse(frame).unwrap().proto.number() == 17;
            let dsr = !(mode == LbMode::Hybrid && udp);
            let (rv, out, meta) = x.xdp(frame);
            assert_eq!(rv, XDP_TX, "{mode:?}: out of the arrival device");
            assert!(meta.is_empty());
            if dsr {
                assert_encapsulated(&out, frame, &f, x.node());
                assert_eq!(x.ct6(), vec![(CT_SERVICE, CT_F_DSR)], "{mode:?}");
                assert_eq!(x.fx.dp.maps().snat6.keys().count(), 0);
            } else {
                // Hybrid UDP: SNATed to the node at XDP.
                assert_eq!(f.snat, Some(IpAddr::from(x.node().v6)), "lb-core: SNAT");
                let (src, dst) = endpoints(&out);
                assert_eq!(dst, SocketAddr::new(f.backend.addr, f.backend.port));
                assert_eq!(src, SocketAddr::from((x.node().v6, 61500)));
                assert_eq!(x.ct6(), vec![(CT_SERVICE, CT_F_SNAT)], "{mode:?}");
            }
            backends.insert(f.backend.addr);
            // The tracked flow: the same output again.
            let (rv2, again, _) = x.xdp(frame);
            assert_eq!((rv2, &again), (XDP_TX, &out), "{mode:?}: established");
            // tc, on a fresh flow table, sends the very same frame...
            x.forget_flows();
            let (trv, tc_out) = x.tc(frame);
            assert_eq!(trv, TC_ACT_REDIRECT, "{mode:?}");
            assert_eq!(tc_out, out, "{mode:?}: XDP and tc frames differ");
            // ...and XDP continues the flow tc started, in the same bytes.
            let (rv3, cont, _) = x.xdp(frame);
            assert_eq!((rv3, &cont), (XDP_TX, &out), "{mode:?}: tc's flow at XDP");
            x.forget_flows();
        }
        assert_eq!(backends.len(), 2, "{mode:?}: both backends chosen");
        let n = frames.len() as u64;
        let s = x.stats();
        assert_eq!(s.tx, 3 * n, "{mode:?}: {s:?}");
        assert_eq!((s.redirect, s.pass, s.drop), (0, 0, 0), "{mode:?}: {s:?}");
        // Counted once per packet: 3 at XDP + 1 at tc per frame.
        assert_eq!(x.service_packets(), 4 * n, "{mode:?}");
    }
}

/// A TCP SYN from the client to [`VIP6`]:80 whose IPv6 packet is `ip_len`
/// bytes long.
fn sized_frame(ip_len: usize) -> Vec<u8> {
    let build = |n: usize| {
        lb_testkit::PacketBuilder::tcp(
            SocketAddr::from((CLIENT6, 40000)),
            SocketAddr::from((VIP6, 80)),
        )
        .syn()
        .payload(vec![b'p'; n])
        .build()
        .unwrap()
    };
    let headers = build(0).len() - 14;
    let f = build(ip_len - headers);
    assert_eq!(f.len() - 14, ip_len);
    f
}

/// Over the 1500-byte node link, a 1460-byte IPv6 packet still fits once
/// encapsulated (forwarded at XDP); a 1480-byte one does not: lb_xdp passes
/// it to tc untouched, with the chosen backend in the metadata and nothing
/// committed (no CT entry, no counter), and tc answers the client with
/// ICMPv6 Packet Too Big for MTU 1460 from the frontend, counting
/// `FragNeeded`.
#[test]
fn ipv6_dsr_packets_too_big_once_encapsulated_are_passed_to_tc() {
    let mut x = Dsr6Fixture::new(LbMode::Dsr);
    let fits = sized_frame(1460);
    let Verdict::Forward(f) = x.fx.decide(&flow_key(&fits), 0) else {
        panic!()
    };
    let (rv, out, _) = x.xdp(&fits);
    assert_eq!(rv, XDP_TX, "1500 bytes encapsulated: fits");
    assert_encapsulated(&out, &fits, &f, x.node());
    x.forget_flows();
    let packets = x.service_packets();

    let big = sized_frame(1480);
    let (rv, passed, meta) = x.xdp(&big);
    assert_eq!(
        (rv, passed.as_slice()),
        (XDP_PASS, &big[..]),
        "passed untouched"
    );
    assert_eq!(meta.len(), 12, "struct lb_xdp_meta");
    assert_eq!(&meta[0..4], &0x6c62_7864u32.to_ne_bytes(), "magic");
    assert_eq!(
        u32::from_ne_bytes(meta[4..8].try_into().unwrap()),
        f.rev_nat.0
    );
    assert_eq!(
        u32::from_ne_bytes(meta[8..12].try_into().unwrap()),
        f.backend_id.0,
        "the backend lb-core chooses"
    );
    assert!(x.ct6().is_empty(), "nothing committed");
    assert_eq!(x.service_packets(), packets, "not counted at XDP");
    let s = x.stats();
    assert_eq!((s.tx, s.pass, s.drop), (1, 1, 0), "{s:?}");

    // tc: Packet Too Big from the frontend to the client, MTU 1500 - 40.
    let drops = |x: &Dsr6Fixture| {
        x.fx.dp
            .counters()
            .unwrap()
            .drops_for(DropReason::FragNeeded)
    };
    let before = drops(&x);
    let (trv, icmp) = x.tc(&big);
    assert_eq!(trv, TC_ACT_REDIRECT, "sent back out");
    assert_eq!(drops(&x), before + 1, "counted as FragNeeded");
    let ip = &icmp[14..];
    assert_eq!(ip[6], 58, "ICMPv6");
    assert_eq!(&ip[8..24], &VIP6.octets(), "from the frontend");
    assert_eq!(&ip[24..40], &CLIENT6.octets(), "to the client");
    assert_eq!((ip[40], ip[41]), (2, 0), "Packet Too Big");
    assert_eq!(u32::from_be_bytes(ip[44..48].try_into().unwrap()), 1460);
    assert_eq!(&ip[48..88], &big[14..54], "quotes the client's header");
}

fn tag(k: usize) -> Vec<u8> {
    format!("be{k}:").into_bytes()
}

/// A node with lb_xdp attached in front of the tc programs, `web` and `dns`
/// on [`VIP6`] and the `[::]` NodePorts over both backends, which run echo
/// servers and the DSR backend side. Fields drop in order: the programs
/// and pins before the namespaces.
struct Lab {
    dp: EbpfDataplane,
    _xdp: XdpLoaded,
    _loaded: Loaded,
    _pins: Pins,
    _bpffs: BpffsGuard,
    _pass: xdp::PassThrough,
    sides: Vec<BackendSide>,
    _servers: Vec<EchoServer>,
    topo: DsrTopology,
}

impl Lab {
    fn new(mode: LbMode, xdp_mode: XdpMode, client_link_mtu: u32) -> Lab {
        lb_testkit::require_privileges();
        let topo = DsrTopology::new(1, 2).expect("topology");
        topo.client_full_checksums().expect("ethtool -K tx off");
        topo.set_client_mtu(client_link_mtu).unwrap();
        let node = &topo.nodes[0];
        let mut servers = Vec::new();
        let mut sides = Vec::new();
        for (i, b) in topo.backends.iter().enumerate() {
            servers
                .push(EchoServer::tcp(&b.ns, SocketAddr::from((b.v6, 8080)), &tag(i + 1)).unwrap());
            servers
                .push(EchoServer::udp(&b.ns, SocketAddr::from((b.v6, 5353)), &tag(i + 1)).unwrap());
            let dev = b.link.name.clone();
            sides.push(
                b.ns.run_in(|| BackendSide::attach(&dev, &[node.v6]))
                    .unwrap()
                    .expect("DSR backend side"),
            );
        }
        resolve_router(node);
        // The router's end must run XDP to receive what lb_xdp sends with XDP_TX.
        let peer = node.router_link.name.clone();
        let pass = topo
            .router
            .run_in(|| xdp::attach_pass(&peer))
            .unwrap()
            .expect("pass-through XDP on the router end");
        let cfg = node_config(node, mode);
        let bpffs = BpffsGuard::new().expect("bpffs");
        let pin_dir = bpffs.pin_path("lb");
        let pins = Pins(pin_dir.clone());
        let dev = node.link.name.clone();
        let devs = vec![dev.clone()];
        let (loaded, xdp_loaded) = node
            .ns
            .run_in(|| {
                let l = lb_ebpf::load(&LoadOptions::new(&pin_dir, &[&dev])).expect("load tc");
                let x = xdp::attach(&pin_dir, &devs, xdp_mode, &MapCapacity::default())
                    .expect("attach XDP");
                (l, x)
            })
            .unwrap();
        assert_eq!(xdp_loaded.mode(), xdp_mode);
        let mut dp = EbpfDataplane::open(&pin_dir, &cfg).expect("open dataplane");
        let desired =
            DesiredState::build(&cfg, &web_and_dns_ip(VIP6.into(), &backends6(&topo))).unwrap();
        Reconciler::new()
            .apply(&mut dp, &desired)
            .expect("reconcile");
        Lab {
            dp,
            _xdp: xdp_loaded,
            _loaded: loaded,
            _pins: pins,
            _bpffs: bpffs,
            _pass: pass,
            sides,
            _servers: servers,
            topo,
        }
    }

    fn node(&self) -> &Host {
        &self.topo.nodes[0]
    }

    fn xdp_stats(&self) -> XdpStats {
        xdp::stats(self._pins.0.as_path()).unwrap()
    }

    fn service_packets(&self) -> u64 {
        let c = self.dp.counters().unwrap();
        c.services.values().map(|s| s.packets).sum()
    }

    fn decapsulated(&self) -> u64 {
        self.sides
            .iter()
            .map(|s| s.stats().unwrap().decapsulated)
            .sum()
    }

    /// Packets the node's device received so far.
    fn node_rx(&self) -> u64 {
        DsrTopology::rx_packets(self.node()).unwrap()
    }

    /// TCP echoes (small and 64 KiB) through the VIP and the NodePort;
    /// returns the backends' tags seen.
    fn tcp_round(&self, rounds: usize) -> std::collections::BTreeSet<u8> {
        let big = vec![b'x'; 64 * 1024];
        let mut seen = std::collections::BTreeSet::new();
        for dst in [
            SocketAddr::from((VIP6, 80)),
            SocketAddr::from((self.node().v6, 30080)),
        ] {
            for _ in 0..rounds {
                for msg in [&b"hello"[..], &big[..]] {
                    let r = tcp_request(&self.topo.client.ns, dst, msg, TIMEOUT)
                        .unwrap_or_else(|e| panic!("TCP, {} bytes to {dst}: {e}", msg.len()));
                    assert!(r.ends_with(msg), "{dst}: echo of {} bytes", msg.len());
                    seen.insert(r[2]);
                }
            }
        }
        seen
    }

    /// One UDP request of `len` bytes to `dst` with a `timeout`; the reply
    /// (which must come from `dst`), or None.
    fn udp(&self, dst: SocketAddr, len: usize, timeout: Duration) -> Option<Vec<u8>> {
        let sock = self
            .topo
            .client
            .ns
            .run_in(|| UdpSocket::bind("[::]:0"))
            .unwrap()
            .unwrap();
        sock.set_read_timeout(Some(timeout)).unwrap();
        let msg = vec![b'u'; len];
        sock.send_to(&msg, dst).unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = sock.recv_from(&mut buf).ok()?;
        assert_eq!(from, dst, "the reply comes from the frontend");
        assert!(buf[..n].ends_with(&msg), "echo");
        Some(buf[..n].to_vec())
    }

    /// UDP requests through the VIP and the NodePort; the backends' tags.
    fn udp_round(&self, per_frontend: usize) -> std::collections::BTreeSet<u8> {
        let mut seen = std::collections::BTreeSet::new();
        for dst in [
            SocketAddr::from((VIP6, 53)),
            SocketAddr::from((self.node().v6, 30053)),
        ] {
            for i in 0..per_frontend {
                let r = self
                    .udp(dst, 16 + i, TIMEOUT)
                    .unwrap_or_else(|| panic!("UDP to {dst}: no reply"));
                seen.insert(r[2]);
            }
        }
        seen
    }
}

/// DSR mode with lb_xdp in `xdp_mode`: every client packet of real TCP and
/// UDP traffic to the IPv6 VIP and NodePorts is encapsulated at XDP (tc
/// handles none), decapsulated by the backends, and the replies bypass the
/// node (it receives the client's packets only).
fn e2e_dsr6(xdp_mode: XdpMode) {
    let mut lab = Lab::new(LbMode::Dsr, xdp_mode, 1460);
    let rx0 = lab.node_rx();
    let mut seen = lab.tcp_round(4);
    seen.extend(lab.udp_round(8));
    assert_eq!(seen.len(), 2, "{xdp_mode}: both backends served ({seen:?})");
    let s = lab.xdp_stats();
    let packets = lab.service_packets();
    assert!(packets > 50, "{packets}");
    assert_eq!(
        (s.tx, s.redirect, s.pass, s.drop),
        (packets, 0, 0, 0),
        "{xdp_mode}: every IPv6 client packet forwarded at XDP ({s:?})"
    );
    assert!(
        lab.decapsulated() >= packets,
        "{} decapsulated of {packets}",
        lab.decapsulated()
    );
    // The node receives the client's packets only (plus a little neighbour
    // discovery), not the backends' replies: 64 KiB echoes come back in
    // dozens of segments each.
    let rx = lab.node_rx() - rx0;
    println!(
        "{xdp_mode}: {packets} client packets, {} forwarded at XDP, {} decapsulated, node rx {rx}",
        s.forwarded(),
        lab.decapsulated()
    );
    assert!(
        rx >= packets && rx <= packets + 20,
        "{xdp_mode}: node received {rx} packets, {packets} from the client"
    );
    assert_eq!(lab.dp.maps().snat6.keys().count(), 0, "no IPv6 SNAT");
    let ct: Vec<_> = lab.dp.maps().ct6.iter().map(|r| r.unwrap()).collect();
    assert!(!ct.is_empty());
    for (k, v) in ct {
        assert_eq!((k.dir, v.flags & CT_F_DSR), (CT_SERVICE, CT_F_DSR), "{k:?}");
    }
    assert_eq!(lab.dp.maps().ct.keys().count(), 0, "no IPv4 flow");
}

#[test]
fn native_xdp_ipv6_dsr_end_to_end() {
    e2e_dsr6(XdpMode::Native);
}

#[test]
fn generic_xdp_ipv6_dsr_end_to_end() {
    e2e_dsr6(XdpMode::Generic);
}

/// Hybrid mode, native XDP: IPv6 TCP is encapsulated at XDP and its replies
/// bypass the node; UDP is SNATed at XDP (its replies return through tc's
/// reverse SNAT). Every client packet is forwarded at XDP.
#[test]
fn native_xdp_ipv6_hybrid_end_to_end() {
    let mut lab = Lab::new(LbMode::Hybrid, XdpMode::Native, 1460);
    let (rx0, d0) = (lab.node_rx(), lab.decapsulated());
    let seen = lab.tcp_round(2);
    assert_eq!(seen.len(), 2, "both backends served TCP ({seen:?})");
    let tcp_packets = lab.service_packets();
    assert!(
        lab.decapsulated() - d0 >= tcp_packets,
        "TCP in IPv6-in-IPv6"
    );
    let rx = lab.node_rx() - rx0;
    assert!(
        rx <= tcp_packets + 20,
        "TCP replies bypass the node: it received {rx} for {tcp_packets}"
    );
    let d1 = lab.decapsulated();
    lab.udp_round(8);
    assert_eq!(lab.decapsulated(), d1, "UDP is not encapsulated");
    assert!(lab.dp.maps().snat6.keys().count() > 0, "UDP is SNATed");
    let packets = lab.service_packets();
    let s = lab.xdp_stats();
    assert_eq!(
        (s.tx, s.redirect, s.pass, s.drop),
        (packets, 0, 0, 0),
        "every IPv6 client packet forwarded at XDP ({s:?})"
    );
}

/// Native XDP, DSR mode, the topology's client MTU (1480): a full-sized
/// IPv6 packet (1480 bytes, 1520 encapsulated) does not fit the 1500-byte
/// route to the backend, so lb_xdp passes it and tc answers the client with
/// Packet Too Big (MTU 1460), counted as `FragNeeded`; after that the
/// client's packets fit and are forwarded at XDP. Bounded: three UDP
/// requests (2 s timeout for the dropped one).
#[test]
fn too_big_packets_go_to_tc_for_packet_too_big() {
    let lab = Lab::new(
        LbMode::Dsr,
        XdpMode::Native,
        lb_testkit::dsr_topology::CLIENT_MTU,
    );
    let dst = SocketAddr::from((VIP6, 53));
    assert!(lab.udp(dst, 1400, TIMEOUT).is_some());
    let s0 = lab.xdp_stats();
    assert_eq!((s0.tx, s0.pass), (1, 0), "{s0:?}");
    let frag_needed = || lab.dp.counters().unwrap().drops_for(DropReason::FragNeeded);
    assert_eq!(frag_needed(), 0);
    let ptb0 = lab.topo.client_snmp6("Icmp6InPktTooBigs").unwrap();
    // 1432 bytes of UDP payload: a 1480-byte IPv6 packet.
    assert!(
        lab.udp(dst, 1432, Duration::from_secs(2)).is_none(),
        "dropped"
    );
    let s1 = lab.xdp_stats();
    assert_eq!((s1.tx, s1.pass), (1, 1), "passed to tc: {s1:?}");
    assert_eq!(frag_needed(), 1, "tc counted it");
    assert_eq!(
        lab.topo.client_snmp6("Icmp6InPktTooBigs").unwrap() - ptb0,
        1,
        "the client got Packet Too Big"
    );
    let route = lab
        .topo
        .client
        .ns
        .exec_ok(&["ip", "-6", "route", "get", &VIP6.to_string()])
        .unwrap();
    assert!(route.contains("mtu 1460"), "path MTU to the VIP: {route}");
    assert!(lab.udp(dst, 1400, TIMEOUT).is_some());
    let s2 = lab.xdp_stats();
    assert_eq!((s2.tx, s2.pass), (2, 1), "at XDP again: {s2:?}");
}
