//! Per-packet cost of XDP acceleration against the tc path for the same
//! external flow to a remote backend: `lb_xdp` (`bpf/lb_xdp.c`) and
//! `lb_tc_ingress` (`bpf/lb_tc.c`) over the same maps, each timed by the
//! kernel with `BPF_PROG_TEST_RUN`. **Privileged** (root): fails loudly
//! without; attaches nothing (it runs inside a namespace of its own, whose
//! route to the backend leaves through a veth with a resolved neighbour, so
//! both programs take their forwarding path: FIB lookup, MAC rewrite,
//! XDP_TX or bpf_redirect).
//!
//! Run: `cargo bench -p lb-benches --bench xdp_packet` (about a minute).
//!
//! Every figure is `iters` separate test runs of one repeat each, the
//! kernel-reported time summed (a repeated run would re-run the rewritten
//! frame). It includes the fixed cost of a test run, which differs between
//! the program types: `nop/tc` (`lb_test_nop`) and `nop/xdp`
//! (`lb_xdp_pass`) measure it, to subtract. The tc figure excludes the skb
//! allocation of the test run, the XDP one the xdp_buff setup; neither
//! includes what the kernel does before tc runs on a real device (skb
//! allocation, GRO, the stack's receive path), which XDP skips: these
//! figures are the programs' own cost, a lower bound of XDP's gain.
//!
//! * `established_snat/{tc,xdp}`: a tracked TCP flow through a
//!   LoadBalancer VIP to a remote backend in SNAT mode (CT hit, SNAT
//!   reverse-entry refresh, counters, DNAT + SNAT with checksum updates,
//!   FIB lookup, forward).
//! * `established_dsr/{tc,xdp}`: the same in DSR mode (IPIP encapsulation).
//! * `established_dsr6/{tc,xdp}`: the same over IPv6 (an IPv6 VIP and
//!   backend, IPv6-in-IPv6 encapsulation).
//! * `first_packet_snat/{tc,xdp}`: a new flow every run (client address and
//!   port from a counter): route checks, selection, SNAT port allocation,
//!   CT insert, forward. CT and SNAT are flushed (untimed) at the start of
//!   every batch and every 2000 flows (the SNAT range holds 4536 ports).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use criterion::{criterion_group, criterion_main, Criterion};
use lb_core::{
    BackendParams, DesiredState, FrontendParams, FrontendType, LbMode, NodeConfig, Reconciler,
    Service, ServiceName,
};
use lb_ebpf::xdp::{self, XdpLoaded};
use lb_ebpf::{EbpfDataplane, LoadOptions, Loaded, MapCapacity};
use lb_testkit::{BpffsGuard, NetNs, PacketBuilder};

const DEV: &str = "lbxb0";
const PEER: &str = "lbxb1";
const NODE: Ipv4Addr = Ipv4Addr::new(172, 31, 254, 1);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 31, 254, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const BACKEND: &str = "10.1.0.2:8080";
const TC_ACT_REDIRECT: u32 = 7;
const XDP_TX: u32 = 3;
const FLUSH_EVERY: u64 = 2000;
const NODE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xbe, 0, 0, 0, 0, 0, 1);
const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xbe, 0, 0, 0, 0, 0, 2);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x51, 0, 0, 0, 0, 0x10);
const BACKEND6: &str = "[fd00:1::2]:8080";
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xc1, 0, 0, 0, 0, 0, 2);

/// The programs of one mode, loaded in a private namespace and bpffs.
struct Rig {
    loaded: Loaded,
    xdp: XdpLoaded,
    dp: EbpfDataplane,
    netns: NetNs,
    ifindex: u32,
    _bpffs: BpffsGuard,
}

impl Rig {
    fn new(mode: LbMode) -> Rig {
        lb_testkit::require_privileges();
        let netns = NetNs::with_label("xdpbench").expect("netns");
        netns
            .ip(&["link", "add", DEV, "type", "veth", "peer", "name", PEER])
            .expect("veth");
        netns.add_addr(DEV, &format!("{NODE}/24")).expect("address");
        netns.link_up(PEER).expect("up");
        netns.link_up(DEV).expect("up");
        netns
            .add_route(&format!("10.0.0.0/8 via {GATEWAY} dev {DEV}"))
            .expect("route");
        netns
            .set_sysctl("net.ipv4.ip_forward", "1")
            .expect("forwarding");
        netns
            .set_sysctl("net.ipv6.conf.all.forwarding", "1")
            .expect("forwarding");
        netns
            .ip(&[
                "-6",
                "addr",
                "add",
                &format!("{NODE6}/64"),
                "dev",
                DEV,
                "nodad",
            ])
            .expect("IPv6 address");
        netns
            .add_route(&format!("fd00:1::/32 via {GATEWAY6} dev {DEV}"))
            .expect("IPv6 route");
        let peer = netns.link(PEER).expect("peer");
        netns
            .add_neighbor(DEV, IpAddr::V4(GATEWAY), peer.mac)
            .expect("neighbour");
        netns
            .add_neighbor(DEV, IpAddr::V6(GATEWAY6), peer.mac)
            .expect("IPv6 neighbour");
        let ifindex = netns.link(DEV).expect("device").ifindex;
        let bpffs = BpffsGuard::new().expect("bpffs");
        let pin_dir = bpffs.pin_path("lb");
        let loaded = netns
            .run_in(|| lb_ebpf::load(&LoadOptions::new(&pin_dir, &[DEV])))
            .expect("enter netns")
            .expect("load tc");
        let xdp = xdp::load_program(&pin_dir, &MapCapacity::default()).expect("load lb_xdp");
        let mut node = NodeConfig::new("node-1", vec![IpAddr::V4(NODE), IpAddr::V6(NODE6)]);
        node.mode = mode;
        let mut dp = EbpfDataplane::open(&pin_dir, &node).expect("dataplane");
        let mut s = Service::new(ServiceName::new("bench", "web"));
        s.frontends.push(FrontendParams::new(
            format!("{VIP}:80").parse().unwrap(),
            FrontendType::LoadBalancer,
        ));
        s.backends = vec![BackendParams::new(BACKEND.parse().unwrap()).on_node("node-2")];
        let mut s6 = Service::new(ServiceName::new("bench", "web6"));
        s6.frontends.push(FrontendParams::new(
            format!("[{VIP6}]:80").parse().unwrap(),
            FrontendType::LoadBalancer,
        ));
        s6.backends = vec![BackendParams::new(BACKEND6.parse().unwrap()).on_node("node-2")];
        let desired = DesiredState::build(&node, &[s, s6]).expect("services");
        Reconciler::new().apply(&mut dp, &desired).expect("apply");
        Rig {
            loaded,
            xdp,
            dp,
            netns,
            ifindex,
            _bpffs: bpffs,
        }
    }

    fn flush(&mut self) {
        let m = self.dp.maps();
        for k in m.ct.keys().collect::<Vec<_>>() {
            let _ = m.ct.remove(&k.expect("ct key"));
        }
        for k in m.snat.keys().collect::<Vec<_>>() {
            let _ = m.snat.remove(&k.expect("snat key"));
        }
        for k in m.ct6.keys().collect::<Vec<_>>() {
            let _ = m.ct6.remove(&k.expect("ct6 key"));
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Err(e) = lb_ebpf::cleanup(self.loaded.pin_dir()) {
            eprintln!("cleanup: {e}");
        }
    }
}

fn frame(src: SocketAddr) -> Vec<u8> {
    let vip = if src.is_ipv6() {
        IpAddr::V6(VIP6)
    } else {
        IpAddr::V4(VIP)
    };
    PacketBuilder::tcp(src, SocketAddr::new(vip, 80))
        .ack()
        .payload(b"hello")
        .build()
        .expect("frame")
}

fn client(k: u64) -> SocketAddr {
    let ip = 0xac10_0000u32 + 1 + u32::try_from(k / 50_000).expect("fits");
    let port = 10_000 + u16::try_from(k % 50_000).expect("fits");
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)
}

/// One tc test run: (verdict, kernel ns).
fn tc_run(prog: &mut SchedClassifier, frame: &[u8], out: &mut [u8]) -> (u32, u64) {
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(out),
            repeat: 1,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN (tc)");
    (r.return_value, r.duration.as_nanos() as u64)
}

/// One XDP test run, arriving on `ifindex`: (verdict, kernel ns).
fn xdp_run(prog: &mut Xdp, frame: &[u8], ifindex: u32, out: &mut [u8]) -> (u32, u64) {
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(out),
            ctx_in: Some(&ctx),
            repeat: 1,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN (xdp)");
    (r.return_value, r.duration.as_nanos() as u64)
}

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Tc,
    Xdp,
}

/// `iters` runs of the frame `make(i)` through `path`, the kernel's times
/// summed; CT and SNAT flushed (untimed) every [`FLUSH_EVERY`] runs when
/// `flush`.
fn runs(
    rig: &mut Rig,
    path: Path,
    iters: u64,
    flush: bool,
    mut make: impl FnMut(u64) -> Vec<u8>,
) -> Duration {
    let mut out = vec![0u8; 2048];
    let mut total = 0u64;
    let ifindex = rig.ifindex;
    for i in 0..iters {
        if flush && i % FLUSH_EVERY == 0 {
            rig.flush();
        }
        let f = make(i);
        let (rv, ns) = match path {
            Path::Tc => {
                let prog = rig.loaded.ingress();
                rig.netns
                    .run_in(|| tc_run(prog, &f, &mut out))
                    .expect("enter netns")
            }
            Path::Xdp => {
                let prog = rig.xdp.program();
                rig.netns
                    .run_in(|| xdp_run(prog, &f, ifindex, &mut out))
                    .expect("enter netns")
            }
        };
        let want = if path == Path::Tc {
            TC_ACT_REDIRECT
        } else {
            XDP_TX
        };
        assert_eq!(rv, want, "the forwarding path (run {i}, flush {flush})");
        total += ns;
    }
    Duration::from_nanos(total)
}

fn bench_nop(c: &mut Criterion) {
    lb_testkit::require_privileges();
    let mut tc = aya::Ebpf::load(lb_ebpf::loader::TEST_OBJECT).expect("test object");
    let tc_nop: &mut SchedClassifier = tc
        .program_mut("lb_test_nop")
        .expect("lb_test_nop")
        .try_into()
        .expect("classifier");
    tc_nop.load().expect("load lb_test_nop");
    let mut x = aya::Ebpf::load(xdp::XDP_PASS_OBJECT).expect("pass object");
    let xdp_nop: &mut Xdp = x
        .program_mut(xdp::PROG_XDP_PASS)
        .expect("lb_xdp_pass")
        .try_into()
        .expect("xdp");
    xdp_nop.load().expect("load lb_xdp_pass");
    let f = frame(client(0));
    let mut out = vec![0u8; 2048];
    let mut g = c.benchmark_group("nop");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("tc", |b| {
        b.iter_custom(|iters| {
            Duration::from_nanos((0..iters).map(|_| tc_run(tc_nop, &f, &mut out).1).sum())
        })
    });
    g.bench_function("xdp", |b| {
        b.iter_custom(|iters| {
            Duration::from_nanos(
                (0..iters)
                    .map(|_| xdp_run(xdp_nop, &f, 1, &mut out).1)
                    .sum(),
            )
        })
    });
    g.finish();
}

fn bench_paths(c: &mut Criterion) {
    let v4 = client(0);
    let v6 = SocketAddr::from((CLIENT6, 40000));
    for (name, mode, first, src) in [
        ("established_snat", LbMode::Snat, false, v4),
        ("established_dsr", LbMode::Dsr, false, v4),
        ("established_dsr6", LbMode::Dsr, false, v6),
        ("first_packet_snat", LbMode::Snat, true, v4),
    ] {
        let mut rig = Rig::new(mode);
        let mut g = c.benchmark_group(name);
        g.sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        for (label, path) in [("tc", Path::Tc), ("xdp", Path::Xdp)] {
            rig.flush();
            let mut next = 0u64;
            g.bench_function(label, |b| {
                b.iter_custom(|iters| {
                    if first {
                        runs(&mut rig, path, iters, true, |_| {
                            next += 1;
                            frame(client(next % 1_000_000))
                        })
                    } else {
                        let f = frame(src);
                        runs(&mut rig, path, iters, false, |_| f.clone())
                    }
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench_nop, bench_paths);
criterion_main!(benches);
