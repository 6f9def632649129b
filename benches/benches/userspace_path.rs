//! Per-packet cost of the userspace dataplane's in-place packet path
//! (`lb_userspace::PacketPath::process`: parse, decide, rewrite,
//! checksums), frames in memory, one thread: 100 ClusterIP services × 10
//! backends, 4096 flows to one frontend, random and Maglev (M = 16381).
//! The figures are per packet; 1 / figure is the packets per second one
//! core sustains without I/O.
//!
//! Run: `cargo bench -p lb-benches --bench userspace_path`.
//!
//! * `new_flow`: every packet is the first of its flow (selection, CT
//!   insert); the flow table is emptied (untimed) after each pass over the
//!   4096 flows.
//! * `established`: every packet hits its CT entry.
//! * `reply`: the backends' replies, reverse-NATed.
//!
//! Each timed packet includes copying the frame (66 bytes) into the work
//! buffer.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use lb_core::{
    BackendParams, DesiredState, FrontendParams, FrontendType, LbAlgorithm, MaglevConfig,
    NodeConfig, Reconciler, Service,
};
use lb_userspace::rng::FastRng;
use lb_userspace::{Direction, Outcome, PacketPath, UserspaceDataplane};

const FLOWS: usize = 4096;

fn frame(src: String, dst: &str) -> Vec<u8> {
    lb_testkit::PacketBuilder::tcp(src.parse().unwrap(), dst.parse().unwrap())
        .ack()
        .payload([0u8; 12])
        .build()
        .unwrap()
}

fn setup(alg: LbAlgorithm) -> (UserspaceDataplane, PacketPath) {
    let mut node = NodeConfig::new("node-1", vec!["192.168.1.10".parse().unwrap()]);
    node.maglev = MaglevConfig::new(16381, 7).unwrap();
    let services: Vec<Service> = (0..100u32)
        .map(|s| {
            let mut svc = Service::new(format!("default/svc{s}").parse().unwrap());
            svc.frontends.push(FrontendParams::new(
                format!("10.96.0.{}:80", s + 1).parse().unwrap(),
                FrontendType::ClusterIp,
            ));
            svc.backends = (1..=10)
                .map(|b| {
                    BackendParams::new(format!("10.1.{s}.{b}:8080").parse().unwrap())
                        .on_node("node-1")
                })
                .collect();
            svc.algorithm = Some(alg);
            svc
        })
        .collect();
    let desired = DesiredState::build(&node, &services).unwrap();
    let mut dp = UserspaceDataplane::new(node, Default::default());
    Reconciler::new().apply(&mut dp, &desired).unwrap();
    let w = dp.worker_with_rng(FastRng::new(1));
    (dp, w)
}

/// Runs `iters` packets round-robin over `frames`; `between` is called
/// (untimed) after each full pass.
fn run(
    w: &mut PacketPath,
    frames: &[Vec<u8>],
    dir: Direction,
    iters: u64,
    mut between: impl FnMut(&mut PacketPath),
) -> Duration {
    let mut buf = [0u8; 256];
    let mut spent = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = (left as usize).min(frames.len());
        let t = Instant::now();
        for fr in &frames[..n] {
            let b = &mut buf[..fr.len()];
            b.copy_from_slice(fr);
            black_box(w.process(b, dir, 0));
        }
        spent += t.elapsed();
        left -= n as u64;
        between(w);
    }
    spent
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("userspace_path");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for alg in [LbAlgorithm::Random, LbAlgorithm::Maglev] {
        let (_dp, mut w) = setup(alg);
        let frames: Vec<Vec<u8>> = (0..FLOWS)
            .map(|i| {
                frame(
                    format!("172.16.{}.{}:{}", i / 250 % 250, i % 250 + 1, 10000 + i),
                    "10.96.0.7:80",
                )
            })
            .collect();
        g.bench_function(format!("{alg}/new_flow"), |b| {
            w.reset_flows();
            b.iter_custom(|iters| {
                run(&mut w, &frames, Direction::ToFrontend, iters, |w| {
                    w.reset_flows()
                })
            })
        });
        w.reset_flows();
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
        g.bench_function(format!("{alg}/established"), |b| {
            b.iter_custom(|iters| run(&mut w, &frames, Direction::ToFrontend, iters, |_| {}))
        });
        g.bench_function(format!("{alg}/reply"), |b| {
            b.iter_custom(|iters| run(&mut w, &replies, Direction::Reply, iters, |_| {}))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
