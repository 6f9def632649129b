//! XDP acceleration (`bpf/lb_xdp.c`). Packet level: `BPF_PROG_TEST_RUN`
//! of `lb_xdp` in the node namespace of lb-testkit's routed
//! [`DsrTopology`] (the route to the backends leaves through the attached
//! device and its neighbour is resolved), checked against lb-core's
//! `flow::decide` and against the tc ingress program's output for the same
//! frame, byte for byte. End to end: native (and generic) XDP on the node's
//! veth with real TCP and UDP clients through a LoadBalancer VIP and a
//! NodePort to remote backends in SNAT and DSR modes; the XDP counters show
//! every client packet was forwarded at XDP, none by tc.
//!
//! IPv6: the tests give the topology's links IPv6 addresses of their own
//! ([`add_ipv6`]: `fd00:d5:n::/64` per node, `fd00:d6:k::/64` per backend,
//! `fd00:d5:c::/64` for the client, VIP [`VIP6`] routed via node 1), and
//! check the same at packet level (SNAT forwarded at XDP exactly as tc
//! does, what XDP does not handle passed untouched, drops counted) and end
//! to end with real TCP and UDP clients in native and generic mode (IPv6
//! DSR at XDP: `xdp_dsr6.rs`).
//!
//! The router's end of the node link runs a pass-through XDP program
//! (`lb_xdp_pass`): a veth drops frames sent into it with XDP_TX or
//! XDP_REDIRECT unless its peer has an XDP program (or GRO). The client's
//! veth has transmit checksum offload off (`ethtool -K DEV tx off`), so its
//! frames carry complete TCP/UDP checksums as frames from a wire do;
//! offloaded (CHECKSUM_PARTIAL) frames would reach XDP with the
//! pseudo-header sum only.
//!
//! Privileged (root). Bounded: each end-to-end test makes a few dozen
//! requests with 10 s socket timeouts.

mod common;
#[path = "common/xdp_rig.rs"]
mod xdp_rig;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use common::*;
use lb_core::*;
use lb_ebpf::abi::DropReason;
use lb_ebpf::xdp::{self, XdpLoaded, XdpMode};
use lb_ebpf::{EbpfDataplane, LoadOptions, MapCapacity};
use lb_testkit::dsr_topology::{DsrTopology, Host, VIP};
use lb_testkit::{tcp_request, BpffsGuard, EchoServer};
use xdp_rig::XdpRig;

const TIMEOUT: Duration = Duration::from_secs(10);

/// The node of a one-node [`DsrTopology`] with the tc programs attached to
/// its link and `lb_xdp` loaded (not attached) over the same maps.
type XdpFixture = XdpRig;

impl XdpRig {
    fn new(mode: LbMode) -> Self {
        lb_testkit::require_privileges();
        let topo = DsrTopology::new(1, 2).expect("topology");
        let node = &topo.nodes[0];
        // The route to the backends is via the router: resolve it, so the
        // FIB lookup succeeds without traffic.
        node.ns
            .add_neighbor(
                &node.link.name,
                IpAddr::from(router_addr(node)),
                node.router_link.mac,
            )
            .unwrap();
        add_ipv6(&topo);
        node.ns
            .add_neighbor(
                &node.link.name,
                IpAddr::from(router6(1)),
                node.router_link.mac,
            )
            .unwrap();
        let mut cfg = NodeConfig::new("node-1", vec![node.v4.into(), node6(1).into()]);
        cfg.mode = mode;
        cfg.maglev = MaglevConfig::new(251, 7).unwrap();
        XdpRig::load(topo, cfg)
    }

    /// lb_xdp passes `frame` untouched, with no backend hint.
    fn assert_passed(&mut self, frame: &[u8], what: &str) {
        let (rv, out, meta) = self.xdp(frame);
        assert_eq!(
            (rv, out.as_slice(), meta.len()),
            (XDP_PASS, frame, 0),
            "{what}"
        );
    }

    /// lb_xdp drops `frame` and counts it for `reason`.
    fn assert_dropped(&mut self, frame: &[u8], reason: DropReason, what: &str) {
        let before = self.drops(reason);
        let (rv, _, _) = self.xdp(frame);
        assert_eq!(rv, XDP_DROP, "{what}");
        assert_eq!(self.drops(reason), before + 1, "{reason:?}");
    }

    /// `frame`, forwarded by lb_xdp as `out`: sent again (the tracked
    /// flow) it leaves the same, and tc on a fresh flow table produces the
    /// very same frame. Leaves no flow behind.
    fn assert_again_and_as_tc(&mut self, frame: &[u8], out: &[u8], what: &str) {
        let (rv2, again, _) = self.xdp(frame);
        assert_eq!((rv2, again.as_slice()), (XDP_TX, out), "{what}");
        self.forget_flows();
        let (trv, tc_out) = self.tc(frame);
        assert_eq!(trv, 7, "{what}: tc redirects (TC_ACT_REDIRECT)");
        assert_eq!(tc_out, out, "{what}: XDP and tc frames differ");
        self.forget_flows();
    }

    /// A SNATed flow from `client` to `frontend` (`ADDR:PORT`): its reply
    /// is not XDP's (passed untouched), and tc translates it back to the
    /// client, from the frontend.
    fn assert_snat_reply_is_tcs(&mut self, client: &str, frontend: &str) {
        let frame = tcp(client, frontend);
        let (rv, out, _) = self.xdp(&frame);
        assert_eq!(rv, XDP_TX);
        let (src, dst) = endpoints(&out);
        let reply = tcp(&dst.to_string(), &src.to_string());
        self.assert_passed(&reply, "the reply to the SNAT port");
        let (_, back) = self.tc(&reply);
        assert_eq!(endpoints(&back), (sa(frontend), sa(client)));
    }
}

/// `meta` is lb_xdp's hint for tc (`struct lb_xdp_meta`): the magic, the
/// frontend's rev-NAT id and the backend `f` chose.
fn assert_backend_hint(meta: &[u8], f: &Forward) {
    assert_eq!(meta.len(), 12, "struct lb_xdp_meta");
    assert_eq!(&meta[0..4], &0x6c62_7864u32.to_ne_bytes(), "magic");
    assert_eq!(
        u32::from_ne_bytes(meta[4..8].try_into().unwrap()),
        f.rev_nat.0
    );
    assert_eq!(
        u32::from_ne_bytes(meta[8..12].try_into().unwrap()),
        f.backend_id.0
    );
}

/// Turns transmit checksum offload off on the client's device: its
/// frames then carry complete checksums, like frames from a wire, which
/// lb_xdp updates incrementally.
fn full_checksums(topo: &DsrTopology) {
    let st = topo
        .client
        .ns
        .command("ethtool")
        .args(["-K", &topo.client.link.name, "tx", "off"])
        .status()
        .expect("run ethtool");
    assert!(st.success(), "ethtool -K tx off: {st}");
}

fn router_addr(node: &Host) -> std::net::Ipv4Addr {
    let o = node.v4.octets();
    std::net::Ipv4Addr::new(o[0], o[1], o[2], 1)
}

/// The IPv6 VIP: assigned nowhere, the router sends it to node 1.
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xd5ff, 0, 0, 0, 0, 0, 0x10);
/// The client's IPv6 address.
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xd5, 0xc, 0, 0, 0, 0, 2);

/// Node `n`'s (1-based) IPv6 address: `fd00:d5:n::2`.
fn node6(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0xd5, n, 0, 0, 0, 0, 2)
}

/// The router's IPv6 address on node `n`'s link: `fd00:d5:n::1`.
fn router6(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0xd5, n, 0, 0, 0, 0, 1)
}

/// Backend `k`'s (1-based) IPv6 address: `fd00:d6:k::2`.
fn backend6(k: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0xd6, k, 0, 0, 0, 0, 2)
}

/// Gives every link of `topo` an IPv6 /64 (the host `::2`, the router
/// `::1`, no DAD), IPv6 default routes via the router, IPv6 forwarding on
/// the router and the nodes, and routes [`VIP6`] via node 1.
fn add_ipv6(topo: &DsrTopology) {
    let link = |h: &Host, net: (u16, u16)| {
        let (a, b) = net;
        let host = Ipv6Addr::new(0xfd00, a, b, 0, 0, 0, 0, 2);
        let gw = Ipv6Addr::new(0xfd00, a, b, 0, 0, 0, 0, 1);
        h.ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{host}/64"),
            "dev",
            &h.link.name,
            "nodad",
        ])
        .unwrap();
        topo.router
            .ip(&[
                "-6",
                "addr",
                "add",
                &format!("{gw}/64"),
                "dev",
                &h.router_link.name,
                "nodad",
            ])
            .unwrap();
        // Replaces the topology's own IPv6 default route (same router).
        h.ns.ip(&["-6", "route", "replace", "default", "via", &gw.to_string()])
            .unwrap();
    };
    topo.router
        .set_sysctl("net.ipv6.conf.all.forwarding", "1")
        .unwrap();
    link(&topo.client, (0xd5, 0xc));
    for (i, n) in topo.nodes.iter().enumerate() {
        n.ns.set_sysctl("net.ipv6.conf.all.forwarding", "1")
            .unwrap();
        link(n, (0xd5, i as u16 + 1));
    }
    for (i, b) in topo.backends.iter().enumerate() {
        link(b, (0xd6, i as u16 + 1));
    }
    topo.router
        .ip(&[
            "-6",
            "route",
            "replace",
            &format!("{VIP6}/128"),
            "via",
            &node6(1).to_string(),
        ])
        .unwrap();
}

/// `web` (TCP) and `dns` (UDP) on the LoadBalancer `vip` and NodePorts on
/// the wildcard of its family, with one remote backend `be` each (so
/// selection is deterministic).
fn remote_services_at(vip: IpAddr, be: IpAddr) -> Vec<Service> {
    let any = if vip.is_ipv6() { "[::]" } else { "0.0.0.0" };
    vec![
        svc(
            "default/web",
            &[
                (
                    SocketAddr::new(vip, 80).to_string(),
                    FrontendType::LoadBalancer,
                ),
                (format!("{any}:30080"), FrontendType::NodePort),
            ],
            vec![SocketAddr::new(be, 8080).to_string()],
        ),
        svc(
            "default/dns",
            &[
                (
                    format!("{}/UDP", SocketAddr::new(vip, 53)),
                    FrontendType::LoadBalancer,
                ),
                (format!("{any}:30053/UDP"), FrontendType::NodePort),
            ],
            vec![format!("{}/UDP", SocketAddr::new(be, 5353))],
        ),
    ]
}

/// [`remote_services_at`] [`VIP`], backend 1.
fn remote_services(topo: &DsrTopology) -> Vec<Service> {
    remote_services_at(VIP.into(), topo.backends[0].v4.into())
}

/// The client-side frames of the remote services: TCP and UDP (also with a
/// zero UDP checksum) to the VIP and to the NodePort. The client port is in
/// the SNAT range, so tc and XDP both keep it (deterministic output).
fn client_frames(node: &Host) -> Vec<Vec<u8>> {
    let client = format!("{}:61500", lb_testkit::dsr_topology::CLIENT);
    let mut zero = udp(&client, &format!("{VIP}:53"));
    zero[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    vec![
        tcp(&client, &format!("{VIP}:80")),
        tcp(&client, &format!("{}:30080", node.v4)),
        udp(&client, &format!("{VIP}:53")),
        udp(&client, &format!("{}:30053", node.v4)),
        zero,
    ]
}

#[test]
fn remote_backends_are_forwarded_at_xdp_exactly_as_tc_forwards_them() {
    for mode in [LbMode::Snat, LbMode::Dsr] {
        let mut x = XdpFixture::new(mode);
        let services = remote_services(&x.topo);
        x.fx.apply(&services);
        let node_v4 = x.node().v4;
        let router_mac = x.node().router_link.mac;
        for frame in client_frames(x.node()) {
            let v = x.fx.decide(&flow_key(&frame), 0);
            let Verdict::Forward(f) = v else {
                panic!("{mode:?}: {v:?}")
            };
            let (rv, out, meta) = x.xdp(&frame);
            assert_eq!(rv, XDP_TX, "{mode:?}: out of the arrival device");
            assert!(meta.is_empty());
            assert_eq!(&out[0..6], &router_mac[..], "next hop's MAC");
            match mode {
                LbMode::Snat => {
                    assert_eq!(f.snat, Some(IpAddr::from(node_v4)), "lb-core: SNAT");
                    let (src, dst) = endpoints(&out);
                    assert_eq!(dst, SocketAddr::new(f.backend.addr, f.backend.port));
                    assert_eq!(src, SocketAddr::new(node_v4.into(), 61500));
                }
                _ => {
                    assert!(f.encap.is_some(), "lb-core: DSR");
                    // Outer header node -> backend, IPIP; the inner frame as sent.
                    assert_eq!(out[14 + 9], 4, "IPIP");
                    assert_eq!(&out[14 + 12..14 + 16], &node_v4.octets());
                    let IpAddr::V4(be) = f.backend.addr else {
                        panic!()
                    };
                    assert_eq!(&out[14 + 16..14 + 20], &be.octets());
                    assert_eq!(&out[14 + 4..14 + 6], &f.backend.port.to_be_bytes());
                    assert_eq!(&out[14 + 20..], &frame[14..]);
                }
            }
            x.assert_again_and_as_tc(&frame, &out, &format!("{mode:?}"));
        }
        let s = x.stats();
        assert_eq!(s.tx, 10, "{s:?}");
        assert_eq!((s.redirect, s.pass, s.drop), (0, 0, 0), "{s:?}");
        // Counted once per packet, as tc counts (5 frames x 2 XDP + 1 tc).
        let c = x.fx.dp.counters().unwrap();
        let packets: u64 = c.services.values().map(|s| s.packets).sum();
        assert_eq!(packets, 15);
    }
}

#[test]
fn snat_state_written_at_xdp_serves_tc_for_the_replies() {
    let mut x = XdpFixture::new(LbMode::Snat);
    let services = remote_services(&x.topo);
    x.fx.apply(&services);
    let client = format!("{}:40000", lb_testkit::dsr_topology::CLIENT);
    x.assert_snat_reply_is_tcs(&client, &format!("{VIP}:80"));
}

#[test]
fn what_xdp_does_not_handle_is_passed_untouched_with_no_state() {
    let mut x = XdpFixture::new(LbMode::Snat);
    let be = x.topo.backends[0].v4;
    let node_v4 = x.node().v4;
    let mut local = svc(
        "default/local",
        &[(format!("{VIP}:81"), FrontendType::LoadBalancer)],
        vec![],
    );
    local.backends =
        vec![BackendParams::new(format!("{be}:8080").parse().unwrap()).on_node("node-1")];
    let mut policy = svc(
        "default/policy",
        &[("0.0.0.0:30082".into(), FrontendType::NodePort)],
        vec![],
    );
    policy.backends =
        vec![BackendParams::new(format!("{be}:8080").parse().unwrap()).on_node("node-1")];
    policy.ext_traffic_policy = TrafficPolicy::Local;
    let cluster = svc(
        "default/cluster",
        &[("10.96.0.10:80".into(), FrontendType::ClusterIp)],
        vec![format!("{be}:8080")],
    );
    x.fx.apply(&[local, policy, cluster]);
    let client = format!("{}:40000", lb_testkit::dsr_topology::CLIENT);

    // A local backend: passed, with the chosen backend for tc.
    let frame = tcp(&client, &format!("{VIP}:81"));
    let Verdict::Forward(f) = x.fx.decide(&flow_key(&frame), 0) else {
        panic!()
    };
    let (rv, out, meta) = x.xdp(&frame);
    assert_eq!((rv, out.as_slice()), (XDP_PASS, &frame[..]));
    assert_backend_hint(&meta, &f);

    // Traffic policy Local, ClusterIP, not a frontend: passed, no hint.
    for dst in [
        format!("{node_v4}:30082"),
        "10.96.0.10:80".to_string(),
        format!("{VIP}:9999"),
    ] {
        x.assert_passed(&tcp(&client, &dst), &dst);
    }
    // Nothing was committed: no flow, no counters.
    assert_eq!(x.fx.dp.maps().ct.keys().count(), 0);
    let c = x.fx.dp.counters().unwrap();
    assert!(c.services.values().all(|s| s.packets == 0), "{c:?}");
    assert_eq!(x.stats().pass, 3, "frontend packets left to tc");

    // Not handled at XDP at all: IP options, fragments, ICMP, ARP.
    let base = tcp(&client, &format!("{VIP}:81"));
    let mut frag = base.clone();
    frag[14 + 6] = 0x20; // MF
    let mut icmp = base.clone();
    icmp[14 + 9] = 1;
    let mut arp = base.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let mut opts = base[..34].to_vec();
    opts[14] = 0x46; // IHL 6
    opts.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
    opts.extend_from_slice(&base[34..]);
    for (what, frame) in [
        ("fragment", frag),
        ("icmp", icmp),
        ("arp", arp),
        ("options", opts),
    ] {
        x.assert_passed(&frame, what);
    }
    assert_eq!(x.stats().pass, 3);
    assert_eq!(x.stats().forwarded(), 0);
}

#[test]
fn source_ranges_and_missing_backends_drop_and_count_as_in_tc() {
    let mut x = XdpFixture::new(LbMode::Snat);
    let be = x.topo.backends[0].v4;
    let mut ranged = svc(
        "default/ranged",
        &[(format!("{VIP}:80"), FrontendType::LoadBalancer)],
        vec![format!("{be}:8080")],
    );
    ranged.source_ranges = vec!["10.99.0.0/16".parse().unwrap()];
    let empty = svc(
        "default/empty",
        &[(format!("{VIP}:81"), FrontendType::LoadBalancer)],
        vec![],
    );
    x.fx.apply(&[ranged, empty]);
    let client = format!("{}:40000", lb_testkit::dsr_topology::CLIENT);
    for (dst, reason, core) in [
        (
            format!("{VIP}:80"),
            DropReason::SourceRange,
            flow::DropReason::SourceRangeDenied,
        ),
        (
            format!("{VIP}:81"),
            DropReason::NoBackend,
            flow::DropReason::NoBackend,
        ),
    ] {
        let frame = tcp(&client, &dst);
        let v = x.fx.decide(&flow_key(&frame), 0);
        assert!(
            matches!(v, Verdict::Drop { reason, .. } if reason == core),
            "{v:?}"
        );
        x.assert_dropped(&frame, reason, &dst);
    }
    assert_eq!(x.stats().drop, 2);
}

// ---- end to end ----

fn tag(k: usize) -> Vec<u8> {
    format!("be{k}:").into_bytes()
}

/// Runs TCP (small and 64 KiB) and UDP requests through both frontends of
/// a node with `lb_xdp` attached in `xdp_mode` and the load balancer in
/// `mode`; checks that every client packet was forwarded at XDP.
fn backend_v4s(topo: &DsrTopology) -> Vec<std::net::Ipv4Addr> {
    topo.backends.iter().map(|b| b.v4).collect()
}

/// The pass-through XDP program on the router's end of `node`'s link: it
/// must run XDP to receive what lb_xdp sends with XDP_TX.
fn router_pass(topo: &DsrTopology, node: &Host) -> xdp::PassThrough {
    let peer = node.router_link.name.clone();
    topo.router
        .run_in(|| xdp::attach_pass(&peer))
        .unwrap()
        .expect("pass-through XDP on the router end")
}

/// The tc programs and lb_xdp in `xdp_mode` on `node`'s link, over maps
/// pinned in `pin_dir`.
fn load_tc_and_xdp(
    node: &Host,
    pin_dir: &std::path::Path,
    xdp_mode: XdpMode,
) -> (lb_ebpf::Loaded, XdpLoaded) {
    let dev = node.link.name.clone();
    let devs = vec![dev.clone()];
    node.ns
        .run_in(|| {
            let l = lb_ebpf::load(&LoadOptions::new(pin_dir, &[&dev])).expect("load tc");
            let x =
                xdp::attach(pin_dir, &devs, xdp_mode, &MapCapacity::default()).expect("attach XDP");
            (l, x)
        })
        .unwrap()
}

fn e2e(mode: LbMode, xdp_mode: XdpMode) {
    lb_testkit::require_privileges();
    let topo = DsrTopology::new(1, 2).expect("topology");
    full_checksums(&topo);
    let mut servers = Vec::new();
    let mut sides = Vec::new();
    for (i, b) in topo.backends.iter().enumerate() {
        servers.push(EchoServer::tcp(&b.ns, SocketAddr::from((b.v4, 8080)), &tag(i + 1)).unwrap());
        servers.push(EchoServer::udp(&b.ns, SocketAddr::from((b.v4, 5353)), &tag(i + 1)).unwrap());
        if mode != LbMode::Snat {
            let dev = b.link.name.clone();
            sides.push(
                b.ns.run_in(|| lb_ebpf::dsr::BackendSide::attach(&dev, &[topo.nodes[0].v4]))
                    .unwrap()
                    .expect("DSR backend side"),
            );
        }
    }
    let node = &topo.nodes[0];
    let _pass = router_pass(&topo, node);
    let mut cfg = NodeConfig::new("node-1", vec![node.v4.into()]);
    cfg.mode = mode;
    cfg.maglev = MaglevConfig::new(251, 99).unwrap();
    let bpffs = BpffsGuard::new().expect("bpffs");
    let pin_dir = bpffs.pin_path("lb");
    let _pins = Pins(pin_dir.clone());
    let dev = node.link.name.clone();
    let (_loaded, xdp_loaded) = load_tc_and_xdp(node, &pin_dir, xdp_mode);
    assert_eq!(xdp_loaded.mode(), xdp_mode);
    assert_eq!(
        xdp::attachments(&pin_dir).unwrap(),
        vec![(dev.clone(), xdp_mode)]
    );
    let link = node.ns.ip(&["-d", "link", "show", "dev", &dev]).unwrap();
    let want = if xdp_mode == XdpMode::Native {
        "xdp "
    } else {
        "xdpgeneric"
    };
    assert!(link.contains(want), "{want:?} in {link}");
    let mut dp = EbpfDataplane::open(&pin_dir, &cfg).expect("open dataplane");
    let desired = DesiredState::build(&cfg, &web_and_dns(VIP, &backend_v4s(&topo))).unwrap();
    Reconciler::new()
        .apply(&mut dp, &desired)
        .expect("reconcile");

    let (seen, _) = echo_rounds(
        &topo.client.ns,
        &[
            SocketAddr::from((VIP, 80)),
            SocketAddr::from((node.v4, 30080)),
        ],
        &[
            SocketAddr::from((VIP, 53)),
            SocketAddr::from((node.v4, 30053)),
        ],
        &format!("{mode:?}/{xdp_mode}"),
    );
    assert_eq!(seen.len(), 2, "both backends served ({seen:?})");
    let s = xdp::stats(&pin_dir).unwrap();
    let c = dp.counters().unwrap();
    let packets: u64 = c.services.values().map(|s| s.packets).sum();
    assert!(packets > 50, "{packets}");
    assert_eq!(
        s.forwarded(),
        packets,
        "{mode:?}/{xdp_mode}: every client packet forwarded at XDP ({s:?})"
    );
    assert_eq!(s.tx, packets, "out of the arrival device");
    if mode != LbMode::Snat {
        let decap: u64 = sides.iter().map(|s| s.stats().unwrap().decapsulated).sum();
        assert!(decap >= packets, "{decap} decapsulated of {packets}");
    } else {
        assert!(dp.maps().snat.keys().count() > 0);
    }
    // Detaching leaves tc alone, which keeps serving.
    node.ns.run_in(|| xdp::detach(&pin_dir).unwrap()).unwrap();
    assert!(xdp::attachments(&pin_dir).unwrap().is_empty());
    let r = tcp_request(&topo.client.ns, SocketAddr::from((VIP, 80)), b"tc", TIMEOUT)
        .expect("through tc after detach");
    assert!(r.ends_with(b"tc"));
    assert_eq!(xdp::stats(&pin_dir).unwrap(), s, "XDP no longer runs");
}

#[test]
fn native_xdp_snat_end_to_end() {
    e2e(LbMode::Snat, XdpMode::Native);
}

#[test]
fn native_xdp_dsr_end_to_end() {
    e2e(LbMode::Dsr, XdpMode::Native);
}

#[test]
fn generic_xdp_snat_end_to_end() {
    e2e(LbMode::Snat, XdpMode::Generic);
}

// ---- IPv6 ----

/// [`remote_services`] over IPv6: `web` and `dns` on [`VIP6`] and on the
/// `[::]` NodePorts, one remote backend each.
fn remote_services6() -> Vec<Service> {
    remote_services_at(VIP6.into(), backend6(1).into())
}

/// The IPv6 client frames of [`remote_services6`], from a client port in
/// the SNAT range (kept by tc and XDP alike).
fn client_frames6() -> Vec<Vec<u8>> {
    let client = format!("[{CLIENT6}]:61500");
    let node = node6(1);
    vec![
        tcp(&client, &format!("[{VIP6}]:80")),
        tcp(&client, &format!("[{node}]:30080")),
        udp(&client, &format!("[{VIP6}]:53")),
        udp(&client, &format!("[{node}]:30053")),
    ]
}

#[test]
fn ipv6_remote_backends_are_forwarded_at_xdp_exactly_as_tc_forwards_them() {
    let mut x = XdpFixture::new(LbMode::Snat);
    x.fx.apply(&remote_services6());
    let router_mac = x.node().router_link.mac;
    for frame in client_frames6() {
        let v = x.fx.decide(&flow_key(&frame), 0);
        let Verdict::Forward(f) = v else {
            panic!("{v:?}")
        };
        assert_eq!(f.snat, Some(IpAddr::from(node6(1))), "lb-core: SNAT");
        let (rv, out, meta) = x.xdp(&frame);
        assert_eq!(rv, XDP_TX, "out of the arrival device");
        assert!(meta.is_empty());
        assert_eq!(&out[0..6], &router_mac[..], "next hop's MAC");
        lb_testkit::verify_checksums_strict(&out).expect("valid checksums");
        let (src, dst) = endpoints(&out);
        assert_eq!(dst, SocketAddr::new(f.backend.addr, f.backend.port));
        assert_eq!(src, SocketAddr::new(node6(1).into(), 61500));
        assert_eq!(lb_testkit::parse(&out).unwrap().payload, b"hello");
        x.assert_again_and_as_tc(&frame, &out, "IPv6");
    }
    let s = x.stats();
    assert_eq!(s.tx, 8, "{s:?}");
    assert_eq!((s.redirect, s.pass, s.drop), (0, 0, 0), "{s:?}");
    let c = x.fx.dp.counters().unwrap();
    let packets: u64 = c.services.values().map(|s| s.packets).sum();
    assert_eq!(packets, 12, "4 frames x 2 at XDP + 1 at tc");

    // The SNATed flow's reply is tc's: passed untouched, then translated.
    let client = format!("[{CLIENT6}]:40000");
    x.assert_snat_reply_is_tcs(&client, &format!("[{VIP6}]:80"));
}

#[test]
fn ipv6_what_xdp_does_not_handle_is_passed_and_drops_are_counted() {
    let mut x = XdpFixture::new(LbMode::Snat);
    let be = backend6(1);
    let mut local = svc(
        "default/local",
        &[(format!("[{VIP6}]:81"), FrontendType::LoadBalancer)],
        vec![],
    );
    local.backends =
        vec![BackendParams::new(format!("[{be}]:8080").parse().unwrap()).on_node("node-1")];
    let cluster = svc(
        "default/cluster",
        &[("[fd00:96::10]:80".into(), FrontendType::ClusterIp)],
        vec![format!("[{be}]:8080")],
    );
    let mut ranged = svc(
        "default/ranged",
        &[(format!("[{VIP6}]:82"), FrontendType::LoadBalancer)],
        vec![format!("[{be}]:8080")],
    );
    ranged.source_ranges = vec!["fd00:99::/64".parse().unwrap()];
    let empty = svc(
        "default/empty",
        &[(format!("[{VIP6}]:83"), FrontendType::LoadBalancer)],
        vec![],
    );
    x.fx.apply(&[local, cluster, ranged, empty]);
    let client = format!("[{CLIENT6}]:40000");

    // A local backend: passed with the chosen backend for tc.
    let frame = tcp(&client, &format!("[{VIP6}]:81"));
    let Verdict::Forward(f) = x.fx.decide(&flow_key(&frame), 0) else {
        panic!()
    };
    let (rv, out, meta) = x.xdp(&frame);
    assert_eq!((rv, out.as_slice()), (XDP_PASS, &frame[..]));
    assert_backend_hint(&meta, &f);
    // ClusterIP, not a frontend: passed, no hint.
    for dst in ["[fd00:96::10]:80".to_string(), format!("[{VIP6}]:9999")] {
        x.assert_passed(&tcp(&client, &dst), &dst);
    }
    // Extension headers, ICMPv6: not XDP's.
    let base = tcp(&client, &format!("[{VIP6}]:82"));
    let mut hbh = base[..54].to_vec();
    hbh[20] = 0; // next header: hop-by-hop options
    let plen = u16::from_be_bytes([base[18], base[19]]) + 8;
    hbh[18..20].copy_from_slice(&plen.to_be_bytes());
    hbh.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // -> TCP, PadN
    hbh.extend_from_slice(&base[54..]);
    let mut icmp6 = base.clone();
    icmp6[20] = 58;
    for (what, frame) in [("hop-by-hop", hbh), ("icmpv6", icmp6)] {
        x.assert_passed(&frame, what);
    }
    assert_eq!(x.fx.dp.maps().ct6.keys().count(), 0, "nothing committed");
    // Source ranges and a frontend without backends: dropped, counted.
    for (port, reason) in [(82, DropReason::SourceRange), (83, DropReason::NoBackend)] {
        let frame = tcp(&client, &format!("[{VIP6}]:{port}"));
        assert!(matches!(
            x.fx.decide(&flow_key(&frame), 0),
            Verdict::Drop { .. }
        ));
        x.assert_dropped(&frame, reason, &port.to_string());
    }
    let s = x.stats();
    assert_eq!(
        (s.pass, s.drop, s.forwarded()),
        (2, 2, 0),
        "local and ClusterIP: {s:?}"
    );
}

/// [`e2e`] over IPv6 in SNAT mode: real TCP (small and 64 KiB) and UDP
/// clients through [`VIP6`] and the node's IPv6 NodePort; every client
/// packet is forwarded at XDP (`XDP_TX`), the replies come back through
/// tc's reverse SNAT.
fn e2e6(xdp_mode: XdpMode) {
    lb_testkit::require_privileges();
    let topo = DsrTopology::new(1, 2).expect("topology");
    add_ipv6(&topo);
    full_checksums(&topo);
    let backends: Vec<IpAddr> = (1..=2).map(|k| backend6(k).into()).collect();
    let mut servers = Vec::new();
    for (i, b) in topo.backends.iter().enumerate() {
        let a = backends[i];
        servers.push(EchoServer::tcp(&b.ns, SocketAddr::new(a, 8080), &tag(i + 1)).unwrap());
        servers.push(EchoServer::udp(&b.ns, SocketAddr::new(a, 5353), &tag(i + 1)).unwrap());
    }
    let node = &topo.nodes[0];
    // XDP cannot resolve a neighbour: the router's is resolved up front.
    node.ns
        .add_neighbor(
            &node.link.name,
            IpAddr::from(router6(1)),
            node.router_link.mac,
        )
        .unwrap();
    let _pass = router_pass(&topo, node);
    let mut cfg = NodeConfig::new("node-1", vec![node.v4.into(), node6(1).into()]);
    cfg.maglev = MaglevConfig::new(251, 99).unwrap();
    let bpffs = BpffsGuard::new().expect("bpffs");
    let pin_dir = bpffs.pin_path("lb");
    let _pins = Pins(pin_dir.clone());
    let (_loaded, _xdp) = load_tc_and_xdp(node, &pin_dir, xdp_mode);
    let mut dp = EbpfDataplane::open(&pin_dir, &cfg).expect("open dataplane");
    let desired = DesiredState::build(&cfg, &web_and_dns_ip(VIP6.into(), &backends)).unwrap();
    Reconciler::new()
        .apply(&mut dp, &desired)
        .expect("reconcile");

    let vip = IpAddr::from(VIP6);
    let node_ip = IpAddr::from(node6(1));
    let (tcp_seen, udp_seen) = echo_rounds(
        &topo.client.ns,
        &[SocketAddr::new(vip, 80), SocketAddr::new(node_ip, 30080)],
        &[SocketAddr::new(vip, 53), SocketAddr::new(node_ip, 30053)],
        &xdp_mode.to_string(),
    );
    let seen: std::collections::BTreeSet<u8> = tcp_seen.union(&udp_seen).copied().collect();
    assert_eq!(seen.len(), 2, "both backends served ({seen:?})");
    let s = xdp::stats(&pin_dir).unwrap();
    let c = dp.counters().unwrap();
    let packets: u64 = c.services.values().map(|s| s.packets).sum();
    assert!(packets > 50, "{packets}");
    assert_eq!(
        (s.tx, s.redirect, s.pass, s.drop),
        (packets, 0, 0, 0),
        "{xdp_mode}: every IPv6 client packet forwarded at XDP ({s:?})"
    );
    assert!(dp.maps().snat6.keys().count() > 0, "SNATed to the node");
    assert_eq!(dp.maps().ct.keys().count(), 0, "no IPv4 flow");
}

#[test]
fn native_xdp_ipv6_snat_end_to_end() {
    e2e6(XdpMode::Native);
}

#[test]
fn generic_xdp_ipv6_snat_end_to_end() {
    e2e6(XdpMode::Generic);
}
