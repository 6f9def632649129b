//! The packet path does not allocate in steady state: established flows,
//! replies, traffic that is not ours, bad frames, and new flows while the
//! preallocated flow table has room. Counted with a global allocator.

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

#[test]
fn steady_state_packet_path_does_not_allocate() {
    let node = NodeConfig::new("node-1", vec!["192.168.1.10".parse().unwrap()]);
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
        let vip = if alg == LbAlgorithm::Random {
            "10.96.0.10:80"
        } else {
            "10.96.0.11:80"
        };
        s.frontends.push(FrontendParams::new(
            vip.parse().unwrap(),
            FrontendType::ClusterIp,
        ));
        s.frontends.push(FrontendParams::new(
            format!(
                "0.0.0.0:{}",
                if alg == LbAlgorithm::Random {
                    30080
                } else {
                    30081
                }
            )
            .parse()
            .unwrap(),
            FrontendType::NodePort,
        ));
        for b in 1..=4 {
            s.backends.push(BackendParams::new(
                format!("10.0.1.{b}:8080").parse().unwrap(),
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
        "10.96.0.10:80",
        "10.96.0.11:80",
        "192.168.1.10:30080",
        "127.0.0.1:30081",
    ];
    let frames: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            frame(
                &format!("172.16.{}.{}:{}", i % 7, 1 + i % 200, 2000 + i),
                dsts[i % 4],
            )
        })
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
        let p = lb_testkit::parse(f).unwrap();
        replies.push(frame(
            &format!("{}:{}", fw.backend.addr, fw.backend.port),
            &format!("{}:{}", fw.snat.unwrap_or(p.src.ip()), p.src.port()),
        ));
    }
    let other = frame("172.16.0.1:1000", "10.200.0.1:80");
    let bad = frames[0][..14 + 20 + 4].to_vec();

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
