//! Packets per second per core through the in-place packet path (one
//! worker thread, frames in memory: parse, decide, rewrite, checksums).
//!
//! `cargo run --release -p lb-userspace --example pps [-- SECONDS_PER_CASE]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use lb_core::*;
use lb_userspace::rng::FastRng;
use lb_userspace::{Direction, Outcome, UserspaceDataplane};

const FLOWS: usize = 4096;

fn frame(src: String, dst: &str) -> Vec<u8> {
    lb_testkit::PacketBuilder::tcp(src.parse().unwrap(), dst.parse().unwrap())
        .ack()
        .payload([0u8; 18])
        .build()
        .unwrap()
}

/// Runs `frames` through `f` round-robin for `secs`; returns packets/s.
fn measure(frames: &[Vec<u8>], secs: f64, mut f: impl FnMut(&mut [u8]) -> Outcome) -> f64 {
    let mut buf = vec![0u8; 2048];
    let mut n = 0u64;
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    while start.elapsed() < limit {
        for fr in frames {
            let b = &mut buf[..fr.len()];
            b.copy_from_slice(fr);
            black_box(f(b));
        }
        n += frames.len() as u64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let mut node = NodeConfig::new("node-1", vec!["192.168.1.10".parse().unwrap()]);
    node.maglev = MaglevConfig::new(16381, 7).unwrap();
    for alg in [LbAlgorithm::Random, LbAlgorithm::Maglev] {
        let mut services = Vec::new();
        for s in 0..100u32 {
            let mut svc = Service::new(format!("default/svc{s}").parse().unwrap());
            svc.frontends.push(FrontendParams::new(
                format!("10.96.{}.{}:80", s / 250, s % 250 + 1)
                    .parse()
                    .unwrap(),
                FrontendType::ClusterIp,
            ));
            for b in 1..=10 {
                svc.backends.push(
                    BackendParams::new(format!("10.1.{s}.{b}:8080").parse().unwrap())
                        .on_node("node-1"),
                );
            }
            svc.algorithm = Some(alg);
            services.push(svc);
        }
        let desired = DesiredState::build(&node, &services).unwrap();
        let mut dp = UserspaceDataplane::new(node.clone(), Default::default());
        Reconciler::new().apply(&mut dp, &desired).unwrap();
        let mut w = dp.worker_with_rng(FastRng::new(1));

        let frames: Vec<Vec<u8>> = (0..FLOWS)
            .map(|i| {
                frame(
                    format!("172.16.{}.{}:{}", i / 250 % 250, i % 250 + 1, 10000 + i),
                    "10.96.0.7:80",
                )
            })
            .collect();
        // First packets: every flow is new (flows forgotten between rounds).
        let mut seen = 0usize;
        let first = measure(&frames, secs, |b| {
            seen += 1;
            if seen.is_multiple_of(FLOWS) {
                w.reset_flows();
            }
            w.process(b, Direction::ToFrontend, 0)
        });
        // Established: the flows are tracked.
        let mut replies = Vec::new();
        for f in &frames {
            let mut b = f.clone();
            let Outcome::Forwarded(fw) = w.process(&mut b, Direction::ToFrontend, 0) else {
                panic!("not forwarded");
            };
            let p = lb_testkit::parse(f).unwrap();
            replies.push(frame(
                format!("{}:{}", fw.backend.addr, fw.backend.port),
                &p.src.to_string(),
            ));
        }
        let est = measure(&frames, secs, |b| w.process(b, Direction::ToFrontend, 0));
        let rev = measure(&replies, secs, |b| w.process(b, Direction::Reply, 0));
        // Not ours: parse and frontend lookup only.
        let other: Vec<Vec<u8>> = frames
            .iter()
            .take(256)
            .map(|_| frame("172.16.0.1:1000".into(), "10.200.0.1:80"))
            .collect();
        let pass = measure(&other, secs, |b| w.process(b, Direction::ToFrontend, 0));
        println!(
            "lb-userspace {alg}, 100 services x 10 backends, {FLOWS} flows, 1 core: \
             new flow {:.2} Mpps, established {:.2} Mpps, reply (rev-NAT) {:.2} Mpps, not a frontend {:.2} Mpps",
            first / 1e6,
            est / 1e6,
            rev / 1e6,
            pass / 1e6
        );
    }
}
