//! Per-packet cost of the eBPF dataplane's ingress tc program
//! (`lb_tc_ingress`), timed by the kernel with `BPF_PROG_TEST_RUN`, at 10,
//! 1k, 10k and 100k ClusterIP services × 10 backends (random selection).
//! **Privileged** (root): fails loudly without; never attaches anything.
//!
//! Run: `cargo bench -p lb-benches --bench ebpf_packet` (about 6 minutes;
//! programming 100k services, 1.1M services-map entries and 1M backends,
//! takes about a minute). `LB_BENCH_SERVICES=10,1000` restricts the service
//! counts (e.g. to profile one case).
//!
//! The maps are sized for the service count and filled by lb-core's
//! `Reconciler` through `lb_ebpf::EbpfDataplane` (the real layout; the
//! reverse-NAT index is 32 bits, so any count the maps hold works).
//!
//! Every figure is the kernel's own per-run time (`duration` of the test
//! run), so the user/kernel crossing of the syscall is excluded. Two ways:
//!
//! * `*/repeat`: one test run with `repeat = iters`; the kernel reports the
//!   mean over the repeats, so the fixed cost of a test run (timer reads,
//!   bh toggling) is spread over all of them. The program rewrites the
//!   packet in place and the kernel re-runs the rewritten buffer, so the
//!   measured services use a **self backend**: their only backend is the
//!   frontend's own address and port, and the DNATed packet is again a
//!   packet to the frontend with the same tuple.
//!   - `established/repeat`: a tracked flow (frontend lookup, CT hit,
//!     backend lookup, counters, DNAT rewrite with checksum updates; the
//!     reply CT entry only when the coarse second changed, see
//!     `lb_ct_fresh`).
//!   - `first_packet_{random,maglev}/repeat`: a SYN|FIN packet. Its first
//!     run creates the flow already closing; every following run is a new
//!     SYN on the tuple of a closing flow, which the program treats as a
//!     new connection: CT lookup (hit), CT delete, selection, backend
//!     lookup, FIB lookup (the backend is remote), two CT inserts,
//!     counters, DNAT. So this is the first-packet path plus one CT delete
//!     (an upper bound). Checked in setup: every repeat counts a new flow.
//! * `*/single`: `iters` separate test runs of one repeat each, the
//!   kernel-reported time summed; includes the fixed cost of a test run,
//!   which `test_run_overhead/nop/single` (an empty program, `lb_test_nop`
//!   in `bpf/lb_test.c`) measures, to subtract.
//!   - `established/single`: the same tracked flow.
//!   - `first_packet_{random,maglev}/single`: a true first packet, a new
//!     tuple every run (source address and port from a counter), to a
//!     service with 10 real backends (7 in 8 remote). CT is flushed
//!     (untimed) before it fills.
//!
//! The bulk services are random; the Maglev service (M = 16381) is one
//! extra frontend (Maglev tables for 100k services would need 6.5 GB).
//!
//! IPv6 (`ebpf_tc_ingress_v6/{10,10000}_services`, or the counts of
//! `LB_BENCH_SERVICES_V6`): the same cases over IPv6 ClusterIP services
//! (`fd00:96::/64` frontends, `fd00:10::/32` backends, `fd00:7f::/64`
//! measured frontends, `fd00:ac::/64` clients) in the `lb6_*` maps, which
//! the tc program serves from its per-CPU scratch state.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use criterion::{criterion_group, criterion_main, Criterion};
use lb_benches::{node, ServiceSpec};
use lb_core::{
    BackendParams, FrontendKey, FrontendParams, FrontendType, L3n4Addr, L4Proto, LbAlgorithm,
    Scope, Service, ServiceName,
};
use lb_testkit::PacketBuilder;

#[path = "common/ebpf.rs"]
mod ebpf;

const SCALES: [usize; 4] = [10, 1_000, 10_000, 100_000];
const BACKENDS: usize = 10;
/// CT capacity; flushed at [`CT_FLUSH_FLOWS`] flows (two entries each).
const CT_CAPACITY: u32 = 1 << 20;
const CT_FLUSH_FLOWS: u64 = 200_000;
const TC_ACT_OK: u32 = 0;

/// Frontends of the measured services (outside the fixtures' 10.96/12).
const EST_VIP: [u8; 4] = [10, 127, 0, 1];
const FIRST_RANDOM_VIP: [u8; 4] = [10, 127, 0, 2];
const FIRST_MAGLEV_VIP: [u8; 4] = [10, 127, 0, 3];
const MAGLEV10_VIP: [u8; 4] = [10, 127, 0, 4];
const PORT: u16 = 80;

fn addr(ip: [u8; 4], port: u16) -> L3n4Addr {
    L3n4Addr::new(IpAddr::V4(Ipv4Addr::from(ip)), port, L4Proto::Tcp)
}

/// A ClusterIP service on `vip:80` with `backends` (remote: on another node).
fn measured(name: &str, vip: [u8; 4], backends: &[L3n4Addr], alg: LbAlgorithm) -> Service {
    let mut s = Service::new(ServiceName::new("bench", name));
    s.algorithm = Some(alg);
    s.frontends.push(FrontendParams::new(
        addr(vip, PORT),
        FrontendType::ClusterIp,
    ));
    s.backends = backends
        .iter()
        .map(|b| BackendParams::new(*b).on_node("node-1"))
        .collect();
    s
}

fn tcp(src: SocketAddr, dst: SocketAddr, fin: bool) -> Vec<u8> {
    let b = PacketBuilder::tcp(src, dst).syn().payload(b"hello");
    let b = if fin { b.fin() } else { b };
    b.build().expect("frame")
}

fn client(k: u64) -> SocketAddr {
    // 172.16.0.0/12 clients, 50k ports each.
    let ip = 0xac10_0000u32 + 1 + u32::try_from(k / 50_000).expect("fits");
    let port = 10_000 + u16::try_from(k % 50_000).expect("fits");
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)
}

fn vip_sa(vip: [u8; 4]) -> SocketAddr {
    SocketAddr::from((vip, PORT))
}

/// One test run of `frame`, `repeat` times: (return value, kernel mean ns).
fn run(prog: &mut SchedClassifier, frame: &[u8], repeat: u32, out: &mut [u8]) -> (u32, u64) {
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(out),
            repeat,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    (r.return_value, r.duration.as_nanos() as u64)
}

/// `iters` runs as one repeated test run: the kernel's mean, times `iters`.
fn repeated(prog: &mut SchedClassifier, frame: &[u8], iters: u64) -> Duration {
    let mut out = vec![0u8; frame.len() + 256];
    let mut total = 0u64;
    let mut left = iters;
    while left > 0 {
        let n = left.min(u64::from(u32::MAX));
        let (rv, ns) = run(prog, frame, n as u32, &mut out);
        assert_eq!(rv, TC_ACT_OK);
        total += ns * n;
        left -= n;
    }
    Duration::from_nanos(total)
}

/// `iters` single test runs of `frame`, kernel times summed.
fn singles(prog: &mut SchedClassifier, frame: &[u8], iters: u64) -> Duration {
    let mut out = vec![0u8; frame.len() + 256];
    let mut total = 0u64;
    for _ in 0..iters {
        let (rv, ns) = run(prog, frame, 1, &mut out);
        assert_eq!(rv, TC_ACT_OK);
        total += ns;
    }
    Duration::from_nanos(total)
}

/// New flows to `vip`, one single test run each, from client tuples
/// numbered by `next`; CT flushed (untimed) before it fills.
fn first_singles(rig: &mut ebpf::Rig, vip: [u8; 4], next: &mut u64, iters: u64) -> Duration {
    let mut out = vec![0u8; 256];
    let mut total = 0u64;
    for _ in 0..iters {
        if next.is_multiple_of(CT_FLUSH_FLOWS) && *next > 0 {
            flush_ct(rig);
        }
        let frame = tcp(client(*next), vip_sa(vip), false);
        *next += 1;
        let (rv, ns) = run(rig.loaded.ingress(), &frame, 1, &mut out);
        assert_eq!(rv, TC_ACT_OK);
        total += ns;
    }
    Duration::from_nanos(total)
}

fn flush_ct(rig: &mut ebpf::Rig) {
    let ct = &mut rig.dp.maps().ct;
    let keys: Vec<_> = ct.keys().collect::<Result<_, _>>().expect("ct keys");
    for k in keys {
        // An entry may be gone already (LRU); that is fine.
        let _ = ct.remove(&k);
    }
}

/// New flows counted for the frontend on `vip`.
fn new_flows(rig: &mut ebpf::Rig, vip: [u8; 4]) -> u64 {
    let id = rig
        .rec
        .current()
        .frontend_by_key(&FrontendKey {
            addr: addr(vip, PORT),
            scope: Scope::External,
        })
        .expect("measured frontend")
        .id
        .0;
    rig.dp
        .service_stats(lb_core::ServiceId(id))
        .expect("reading counters")
        .map_or(0, |s| s.new_flows)
}

fn rig_for(services: usize) -> ebpf::Rig {
    let node = node();
    let mut all = ServiceSpec::cluster_ip(services, BACKENDS, LbAlgorithm::Random).build();
    all.push(measured(
        "established",
        EST_VIP,
        &[addr(EST_VIP, PORT)],
        LbAlgorithm::Random,
    ));
    all.push(measured(
        "first-random",
        FIRST_RANDOM_VIP,
        &[addr(FIRST_RANDOM_VIP, PORT)],
        LbAlgorithm::Random,
    ));
    all.push(measured(
        "first-maglev",
        FIRST_MAGLEV_VIP,
        &[addr(FIRST_MAGLEV_VIP, PORT)],
        LbAlgorithm::Maglev,
    ));
    let ten: Vec<L3n4Addr> = (1..=10).map(|i| addr([10, 127, 1, i], 8080)).collect();
    all.push(measured(
        "maglev10",
        MAGLEV10_VIP,
        &ten,
        LbAlgorithm::Maglev,
    ));
    let mut rig = ebpf::Rig::new(
        ebpf::capacity_for(services, BACKENDS, 16, CT_CAPACITY),
        &node,
    );
    let t = std::time::Instant::now();
    let ops = rig.apply(&node, &all);
    eprintln!(
        "ebpf_packet: programmed {} services x {BACKENDS} (+4 measured): {ops} ops in {:.2?}",
        services,
        t.elapsed()
    );
    // Sanity: the self-backend tricks do what the doc says.
    let est = tcp(client(0), vip_sa(EST_VIP), false);
    let mut out = vec![0u8; 512];
    let (rv, _) = run(rig.loaded.ingress(), &est, 1, &mut out);
    assert_eq!(rv, TC_ACT_OK);
    let p = lb_testkit::parse(&out[..est.len()]).expect("parse");
    assert_eq!(p.dst, vip_sa(EST_VIP), "self backend keeps the tuple");
    let before = new_flows(&mut rig, EST_VIP);
    run(rig.loaded.ingress(), &est, 1000, &mut out);
    assert_eq!(
        new_flows(&mut rig, EST_VIP),
        before,
        "established stays established"
    );
    for vip in [FIRST_RANDOM_VIP, FIRST_MAGLEV_VIP] {
        let f = tcp(client(0), vip_sa(vip), true);
        let before = new_flows(&mut rig, vip);
        run(rig.loaded.ingress(), &f, 1000, &mut out);
        assert_eq!(
            new_flows(&mut rig, vip) - before,
            1000,
            "every repeat of a SYN|FIN is a new flow"
        );
    }
    rig
}

fn bench_overhead(c: &mut Criterion) {
    lb_testkit::require_privileges();
    let mut ebpf = aya::Ebpf::load(lb_ebpf::loader::TEST_OBJECT).expect("load the test object");
    let prog: &mut SchedClassifier = ebpf
        .program_mut("lb_test_nop")
        .expect("lb_test_nop")
        .try_into()
        .expect("classifier");
    prog.load().expect("load lb_test_nop");
    let frame = tcp(client(0), vip_sa(EST_VIP), false);
    let mut g = c.benchmark_group("test_run_overhead");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("nop/repeat", |b| {
        b.iter_custom(|iters| repeated(prog, &frame, iters))
    });
    g.bench_function("nop/single", |b| {
        b.iter_custom(|iters| singles(prog, &frame, iters))
    });
    g.finish();
}

/// `default`, or the counts listed (comma-separated) in the environment
/// variable `var`.
fn scales(var: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(var) {
        Ok(s) => s
            .split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{var}: comma-separated counts"))
            })
            .collect(),
        Err(_) => default.to_vec(),
    }
}

/// The ingress group `name` of one rig: `est`, `first_random` and
/// `first_maglev` repeated, `est` in single runs, and true first packets in
/// single runs through `first(rig, maglev, iters)` (random: a bulk service
/// with 10 backends; Maglev: the 10-backend Maglev service).
fn bench_ingress_group(
    c: &mut Criterion,
    name: String,
    rig: &mut ebpf::Rig,
    [est, first_random, first_maglev]: [&[u8]; 3],
    mut first: impl FnMut(&mut ebpf::Rig, bool, u64) -> Duration,
) {
    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("established/repeat", |b| {
        b.iter_custom(|iters| repeated(rig.loaded.ingress(), est, iters))
    });
    g.bench_function("first_packet_random/repeat", |b| {
        b.iter_custom(|iters| repeated(rig.loaded.ingress(), first_random, iters))
    });
    g.bench_function("first_packet_maglev/repeat", |b| {
        b.iter_custom(|iters| repeated(rig.loaded.ingress(), first_maglev, iters))
    });
    // Single runs cost a syscall each: a shorter budget.
    g.measurement_time(Duration::from_secs(1));
    g.bench_function("established/single", |b| {
        b.iter_custom(|iters| singles(rig.loaded.ingress(), est, iters))
    });
    g.bench_function("first_packet_random/single", |b| {
        b.iter_custom(|iters| first(rig, false, iters))
    });
    g.bench_function("first_packet_maglev/single", |b| {
        b.iter_custom(|iters| first(rig, true, iters))
    });
    g.finish();
}

fn bench_ingress(c: &mut Criterion) {
    for services in scales("LB_BENCH_SERVICES", &SCALES) {
        let mut rig = rig_for(services);
        let est = tcp(client(0), vip_sa(EST_VIP), false);
        let first_random = tcp(client(0), vip_sa(FIRST_RANDOM_VIP), true);
        let first_maglev = tcp(client(0), vip_sa(FIRST_MAGLEV_VIP), true);
        // A bulk service with 10 real backends for the true first packets.
        let bulk_vip = match lb_benches::cluster_ip(services / 2) {
            IpAddr::V4(v) => v.octets(),
            IpAddr::V6(_) => unreachable!("IPv4 fixtures"),
        };
        let mut next = 1u64;
        bench_ingress_group(
            c,
            format!("ebpf_tc_ingress/{services}_services"),
            &mut rig,
            [&est, &first_random, &first_maglev],
            |rig, maglev, iters| {
                let vip = if maglev { MAGLEV10_VIP } else { bulk_vip };
                first_singles(rig, vip, &mut next, iters)
            },
        );
    }
}

// ---- IPv6 ----

/// IPv6 service counts by default (`LB_BENCH_SERVICES_V6` overrides).
const SCALES_V6: [usize; 2] = [10, 10_000];

fn addr6(ip: Ipv6Addr, port: u16) -> L3n4Addr {
    L3n4Addr::new(IpAddr::V6(ip), port, L4Proto::Tcp)
}

/// Measured IPv6 frontend `k`: `fd00:7f::k`.
fn vip6(k: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x7f, 0, 0, 0, 0, 0, k)
}

/// IPv6 client `k`: `fd00:ac::` + `k / 50k`, 50k ports each.
fn client6(k: u64) -> SocketAddr {
    let host = u16::try_from(k / 50_000 + 1).expect("fits");
    let port = 10_000 + u16::try_from(k % 50_000).expect("fits");
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0xac, 0, 0, 0, 0, 0, host)),
        port,
    )
}

/// `n` IPv6 ClusterIP services (random) with [`BACKENDS`] backends each:
/// frontend `fd00:96::i+1`, backends `fd00:10:i::j+1` on this node.
fn bulk6(n: usize) -> Vec<Service> {
    (0..n)
        .map(|i| {
            let i16 = |x: usize| u16::try_from(x).expect("fits");
            let fe = Ipv6Addr::new(
                0xfd00,
                0x96,
                0,
                0,
                0,
                0,
                i16((i + 1) >> 16),
                i16((i + 1) & 0xffff),
            );
            let backends: Vec<L3n4Addr> = (0..BACKENDS)
                .map(|j| {
                    let be = Ipv6Addr::new(
                        0xfd00,
                        0x10,
                        i16(i >> 16),
                        i16(i & 0xffff),
                        0,
                        0,
                        0,
                        i16(j + 1),
                    );
                    addr6(be, 8080)
                })
                .collect();
            measured6(&format!("s{i}"), fe, &backends, LbAlgorithm::Random)
        })
        .collect()
}

/// [`measured`] over IPv6.
fn measured6(name: &str, vip: Ipv6Addr, backends: &[L3n4Addr], alg: LbAlgorithm) -> Service {
    let mut s = Service::new(ServiceName::new("bench6", name));
    s.algorithm = Some(alg);
    s.frontends.push(FrontendParams::new(
        addr6(vip, PORT),
        FrontendType::ClusterIp,
    ));
    s.backends = backends
        .iter()
        .map(|b| BackendParams::new(*b).on_node("node-1"))
        .collect();
    s
}

/// New flows counted for the IPv6 frontend on `vip`.
fn new_flows6(rig: &mut ebpf::Rig, vip: Ipv6Addr) -> u64 {
    let id = rig
        .rec
        .current()
        .frontend_by_key(&FrontendKey {
            addr: addr6(vip, PORT),
            scope: Scope::External,
        })
        .expect("measured frontend")
        .id
        .0;
    rig.dp
        .service_stats(lb_core::ServiceId(id))
        .expect("reading counters")
        .map_or(0, |s| s.new_flows)
}

fn flush_ct6(rig: &mut ebpf::Rig) {
    let ct = &mut rig.dp.maps().ct6;
    let keys: Vec<_> = ct.keys().collect::<Result<_, _>>().expect("ct6 keys");
    for k in keys {
        let _ = ct.remove(&k);
    }
}

/// [`first_singles`] over IPv6.
fn first_singles6(rig: &mut ebpf::Rig, vip: Ipv6Addr, next: &mut u64, iters: u64) -> Duration {
    let mut out = vec![0u8; 256];
    let mut total = 0u64;
    for _ in 0..iters {
        if next.is_multiple_of(CT_FLUSH_FLOWS) && *next > 0 {
            flush_ct6(rig);
        }
        let frame = tcp(client6(*next), SocketAddr::new(vip.into(), PORT), false);
        *next += 1;
        let (rv, ns) = run(rig.loaded.ingress(), &frame, 1, &mut out);
        assert_eq!(rv, TC_ACT_OK);
        total += ns;
    }
    Duration::from_nanos(total)
}

/// The IPv6 rig: `services` bulk IPv6 services plus the measured ones
/// (self backends for the repeated cases, 10 real backends for Maglev).
fn rig_for6(services: usize) -> ebpf::Rig {
    let mut node = node();
    node.node_ips.push("fd00:1::10".parse().expect("addr"));
    let mut all = bulk6(services);
    let (est, first_random, first_maglev, maglev10) = (vip6(1), vip6(2), vip6(3), vip6(4));
    for (name, vip, alg) in [
        ("established", est, LbAlgorithm::Random),
        ("first-random", first_random, LbAlgorithm::Random),
        ("first-maglev", first_maglev, LbAlgorithm::Maglev),
    ] {
        all.push(measured6(name, vip, &[addr6(vip, PORT)], alg));
    }
    let ten: Vec<L3n4Addr> = (1..=10)
        .map(|i| addr6(Ipv6Addr::new(0xfd00, 0x7f, 1, 0, 0, 0, 0, i), 8080))
        .collect();
    all.push(measured6("maglev10", maglev10, &ten, LbAlgorithm::Maglev));
    let mut rig = ebpf::Rig::new(
        ebpf::capacity_for(services, BACKENDS, 16, CT_CAPACITY),
        &node,
    );
    let t = std::time::Instant::now();
    let ops = rig.apply(&node, &all);
    eprintln!(
        "ebpf_packet: programmed {services} IPv6 services x {BACKENDS} (+4 measured): {ops} ops in {:.2?}",
        t.elapsed()
    );
    // Sanity, as for IPv4: the self backend keeps the tuple, established
    // stays established, every repeat of a SYN|FIN is a new flow.
    let frame = tcp(client6(0), SocketAddr::new(est.into(), PORT), false);
    let mut out = vec![0u8; 512];
    let (rv, _) = run(rig.loaded.ingress(), &frame, 1, &mut out);
    assert_eq!(rv, TC_ACT_OK);
    let p = lb_testkit::parse(&out[..frame.len()]).expect("parse");
    assert_eq!(p.dst, SocketAddr::new(est.into(), PORT));
    let before = new_flows6(&mut rig, est);
    run(rig.loaded.ingress(), &frame, 1000, &mut out);
    assert_eq!(new_flows6(&mut rig, est), before, "established");
    for vip in [first_random, first_maglev] {
        let f = tcp(client6(0), SocketAddr::new(vip.into(), PORT), true);
        let before = new_flows6(&mut rig, vip);
        run(rig.loaded.ingress(), &f, 1000, &mut out);
        assert_eq!(new_flows6(&mut rig, vip) - before, 1000, "new flows");
    }
    let bulk = SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 1)),
        PORT,
    );
    let (rv, _) = run(
        rig.loaded.ingress(),
        &tcp(client6(0), bulk, false),
        1,
        &mut out,
    );
    assert_eq!(rv, TC_ACT_OK);
    let p = lb_testkit::parse(&out[..frame.len()]).expect("parse");
    assert_ne!(p.dst, bulk, "a bulk IPv6 service is DNATed");
    rig
}

fn bench_ingress_v6(c: &mut Criterion) {
    for services in scales("LB_BENCH_SERVICES_V6", &SCALES_V6) {
        let mut rig = rig_for6(services);
        let sa6 = |vip: Ipv6Addr| SocketAddr::new(vip.into(), PORT);
        let est = tcp(client6(0), sa6(vip6(1)), false);
        let first_random = tcp(client6(0), sa6(vip6(2)), true);
        let first_maglev = tcp(client6(0), sa6(vip6(3)), true);
        let bulk_vip = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 1 + (services / 2) as u16);
        let mut next = 1u64;
        bench_ingress_group(
            c,
            format!("ebpf_tc_ingress_v6/{services}_services"),
            &mut rig,
            [&est, &first_random, &first_maglev],
            |rig, maglev, iters| {
                let vip = if maglev { vip6(4) } else { bulk_vip };
                first_singles6(rig, vip, &mut next, iters)
            },
        );
    }
}

criterion_group!(benches, bench_overhead, bench_ingress, bench_ingress_v6);
criterion_main!(benches);
