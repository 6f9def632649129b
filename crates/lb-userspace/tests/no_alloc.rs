//! The packet path does not allocate in steady state: established flows,
//! replies, traffic that is not ours, bad frames, and new flows while the
//! preallocated flow table has room; IPv4 and IPv6 (SNATed to the node's
//! address of the family). Counted with a global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use lb_core::*;
use lb_userspace::rng::FastRng;
use lb_userspace::{Config, Direction, Outcome, UserspaceDataplane};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn frame(src: &str, dst: &str) -> Vec<u8> {
    lb_testkit::PacketBuilder::tcp(src.parse().unwrap(), dst.parse().unwrap())
        .syn()
        .payload(b"hello")
        .build()
        .unwrap()
}

/// Addresses of one family for [`check`].
struct Family {
    node: &'static str,
    vips: [&'static str; 2],
    any: &'static str,
    loopback: &'static str,
    backend: fn(u32) -> String,
    client: fn(usize) -> String,
    other: (&'static str, &'static str),
}

/// One test for both families: the allocation counter is global, so the
/// two must not run in parallel threads.
#[test]
fn steady_state_packet_path_does_not_allocate() {
    check(&IPV4);
    check(&IPV6);
    check_nat46x64();
}

/// NAT46 and NAT64 flows (translated in a buffer with headroom): new and
/// established client packets and the translated replies.
fn check_nat46x64() {
    let mut node = NodeConfig::new(
        "node-1",
        vec![
            "192.168.1.10".parse().unwrap(),
            "fd00:1::10".parse().unwrap(),
        ],
    );
    node.nat46x64 = true;
    let mut s46 = Service::new("default/nat46".parse().unwrap());
    s46.frontends.push(FrontendParams::new(
        "10.96.0.46:80".parse().unwrap(),
        FrontendType::ClusterIp,
    ));
    let mut s64 = Service::new("default/nat64".parse().unwrap());
    s64.frontends.push(FrontendParams::new(
        "[fd00:96::64]:80".parse().unwrap(),
        FrontendType::ClusterIp,
    ));
    for b in 1..=4 {
        s46.backends.push(BackendParams::new(
            format!("[fd00:200::{b}]:8080").parse().unwrap(),
        ));
        s64.backends.push(BackendParams::new(
            format!("10.200.{b}.2:8080").parse().unwrap(),
        ));
    }
    let desired = DesiredState::build(&node, &[s46, s64]).unwrap();
    let config = Config {
        flows: 4096,
        ..Config::default()
    };
    let mut dp = UserspaceDataplane::new(node, config);
    Reconciler::new().apply(&mut dp, &desired).unwrap();
    let mut w = dp.worker_with_rng(FastRng::new(5));
    let frames: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                frame(
                    &format!("192.168.5.{}:{}", 1 + i % 200, 20000 + i),
                    "10.96.0.46:80",
                )
            } else {
                frame(
                    &format!("[fd00:5::{:x}]:{}", 1 + i, 20000 + i),
                    "[fd00:96::64]:80",
                )
            }
        })
        .collect();
    let mut buf = vec![0u8; 512];
    let mut replies = Vec::new();
    for f in &frames[..500] {
        buf[..f.len()].copy_from_slice(f);
        let (out, n) = w.process_buf(&mut buf, f.len(), Direction::ToFrontend, 1);
        let Outcome::Forwarded(fw) = out else {
            panic!("{out:?}")
        };
        assert!(fw.translation().is_translated());
        let q = lb_testkit::parse(&buf[..n]).unwrap();
        replies.push(frame(&q.dst.to_string(), &q.src.to_string()));
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for round in 0..3 {
        for (f, r) in frames[..500].iter().zip(&replies) {
            for (x, dir) in [(f, Direction::ToFrontend), (r, Direction::Reply)] {
                buf[..x.len()].copy_from_slice(x);
                let (out, _) = w.process_buf(&mut buf, x.len(), dir, 2 + round);
                match dir {
                    Direction::ToFrontend => assert!(matches!(out, Outcome::Forwarded(_))),
                    Direction::Reply => assert!(matches!(out, Outcome::ReverseNated { .. })),
                }
            }
        }
    }
    for f in &frames[500..] {
        buf[..f.len()].copy_from_slice(f);
        let (out, _) = w.process_buf(&mut buf, f.len(), Direction::ToFrontend, 9);
        assert!(matches!(out, Outcome::Forwarded(_)));
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(allocs, 0, "the NAT46/64 path allocated {allocs} times");
}

const IPV4: Family = Family {
    node: "192.168.1.10",
    vips: ["10.96.0.10", "10.96.0.11"],
    any: "0.0.0.0",
    loopback: "127.0.0.1",
    backend: |b| format!("10.0.1.{b}"),
    client: |i| format!("172.16.{}.{}:{}", i % 7, 1 + i % 200, 2000 + i),
    other: ("172.16.0.1:1000", "10.200.0.1:80"),
};

const IPV6: Family = Family {
    node: "fd00:1::10",
    vips: ["fd00:96::10", "fd00:96::11"],
    any: "::",
    loopback: "::1",
    backend: |b| format!("fd00:1:1::{b}"),
    client: |i| format!("[fd00:16:{:x}::{:x}]:{}", i % 7, 1 + i % 200, 2000 + i),
    other: ("[fd00:16::1]:1000", "[fd00:200::1]:80"),
};

/// `[ADDR]:PORT` for IPv6, `ADDR:PORT` for IPv4.
fn hp(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

fn check(fam: &Family) {
    let node = NodeConfig::new("node-1", vec![fam.node.parse().unwrap()]);
    let mut services = Vec::new();
    for (name, alg, affinity) in [
        (
            "default/rnd",
            LbAlgorithm::Random,
            SessionAffinity::client_ip(),
        ),
        ("default/mgl", LbAlgorithm::Maglev, SessionAffinity::None),
    ] {
        let mut s = Service::new(name.parse().unwrap());
        let (vip, np) = if alg == LbAlgorithm::Random {
            (fam.vips[0], 30080)
        } else {
            (fam.vips[1], 30081)
        };
        s.frontends.push(FrontendParams::new(
            hp(vip, 80).parse().unwrap(),
            FrontendType::ClusterIp,
        ));
        s.frontends.push(FrontendParams::new(
            hp(fam.any, np).parse().unwrap(),
            FrontendType::NodePort,
        ));
        for b in 1..=4 {
            s.backends.push(BackendParams::new(
                hp(&(fam.backend)(b), 8080).parse().unwrap(),
            ));
        }
        s.algorithm = Some(alg);
        s.session_affinity = affinity;
        services.push(s);
    }
    let desired = DesiredState::build(&node, &services).unwrap();
    let config = Config {
        flows: 4096,
        ..Config::default()
    };
    let mut dp = UserspaceDataplane::new(node, config);
    Reconciler::new().apply(&mut dp, &desired).unwrap();
    let mut w = dp.worker_with_rng(FastRng::new(3));

    let dsts = [
        hp(fam.vips[0], 80),
        hp(fam.vips[1], 80),
        hp(fam.node, 30080),
        hp(fam.loopback, 30081),
    ];
    let frames: Vec<Vec<u8>> = (0..1000)
        .map(|i| frame(&(fam.client)(i), &dsts[i % 4]))
        .collect();
    let mut replies = Vec::new();
    let mut buf = vec![0u8; 256];
    // Warm up: the first packets of the first half of the flows.
    for f in &frames[..500] {
        let b = &mut buf[..f.len()];
        b.copy_from_slice(f);
        let Outcome::Forwarded(fw) = w.process(b, Direction::ToFrontend, 1) else {
            panic!()
        };
        assert!(fw.snat.is_some(), "remote backends: SNAT");
        // The reply to the rewritten frame (backend -> node:SNAT port).
        let q = lb_testkit::parse(b).unwrap();
        replies.push(frame(&q.dst.to_string(), &q.src.to_string()));
    }
    // The replies are the flows' own (reverse SNAT and DNAT).
    let mut r = replies[0].clone();
    assert!(matches!(
        w.process(&mut r, Direction::Reply, 1),
        Outcome::ReverseNated { .. }
    ));
    let other = frame(fam.other.0, fam.other.1);
    let l3 = if fam.node.contains(':') { 40 } else { 20 };
    let bad = frames[0][..14 + l3 + 4].to_vec();

    let before = ALLOCS.load(Ordering::Relaxed);
    assert!(before > 0, "the counting allocator counts");
    for round in 0..3 {
        for (f, r) in frames[..500].iter().zip(&replies) {
            for (x, dir) in [
                (f, Direction::ToFrontend),
                (r, Direction::Reply),
                (&other, Direction::ToFrontend),
                (&bad, Direction::ToFrontend),
            ] {
                let b = &mut buf[..x.len()];
                b.copy_from_slice(x);
                std::hint::black_box(w.process(b, dir, 2 + round));
            }
        }
    }
    // New flows while the table has room.
    for f in &frames[500..] {
        let b = &mut buf[..f.len()];
        b.copy_from_slice(f);
        assert!(matches!(
            w.process(b, Direction::ToFrontend, 9),
            Outcome::Forwarded(_)
        ));
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(allocs, 0, "the packet path allocated {allocs} times");
}
