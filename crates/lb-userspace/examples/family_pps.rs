//! IPv4 against IPv6 through the in-place packet path: packets per second
//! on one core (frames in memory: parse, decide, rewrite, checksums) for
//! the same 100 ClusterIP services × 10 node-local backends (Maglev,
//! M = 16381) and 4096 flows in each family, the two families interleaved
//! over several rounds so that machine noise hits both alike. Prints every
//! round and the median and spread per case.
//!
//! `cargo run --release -p lb-userspace --example family_pps [-- ROUNDS SECONDS_PER_CASE]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use lb_core::*;
use lb_userspace::rng::FastRng;
use lb_userspace::{Direction, Outcome, PacketPath, UserspaceDataplane};

mod pps_common;
use pps_common::*;

fn case(v6: bool) -> Case {
    let node_ip = if v6 { "fd00:1::10" } else { "192.168.1.10" };
    let mut node = NodeConfig::new("node-1", vec![node_ip.parse().unwrap()]);
    node.maglev = MaglevConfig::new(16381, 7).unwrap();
    let vip = |s: u32| {
        if v6 {
            format!("fd00:96::{:x}", s + 1)
        } else {
            format!("10.96.0.{}", s + 1)
        }
    };
    let services: Vec<Service> = (0..100u32)
        .map(|s| {
            let mut svc = Service::new(format!("default/svc{s}").parse().unwrap());
            svc.frontends.push(FrontendParams::new(
                hp(&vip(s), 80).parse().unwrap(),
                FrontendType::ClusterIp,
            ));
            svc.backends = (1..=10)
                .map(|b| {
                    let be = if v6 {
                        format!("fd00:1:{s:x}::{b:x}")
                    } else {
                        format!("10.1.{s}.{b}")
                    };
                    BackendParams::new(hp(&be, 8080).parse().unwrap()).on_node("node-1")
                })
                .collect();
            svc.algorithm = Some(LbAlgorithm::Maglev);
            svc
        })
        .collect();
    let desired = DesiredState::build(&node, &services).unwrap();
    let mut dp = UserspaceDataplane::new(node, Default::default());
    Reconciler::new().apply(&mut dp, &desired).unwrap();
    let mut w = dp.worker_with_rng(FastRng::new(1));
    let dst = hp(&vip(6), 80);
    let frames = client_frames(v6, &dst);
    let mut replies = Vec::new();
    for f in &frames {
        let mut b = f.clone();
        let Outcome::Forwarded(_) = w.process(&mut b, Direction::ToFrontend, 0) else {
            panic!("not forwarded");
        };
        let q = lb_testkit::parse(&b).unwrap();
        replies.push(frame(&q.dst.to_string(), &q.src.to_string()));
    }
    Case {
        _dp: dp,
        w,
        frames,
        replies,
    }
}

/// Packets per second of `frames` through `w` in `dir` for `secs`;
/// `reset` empties the flow table (untimed) after every pass.
fn measure(w: &mut PacketPath, frames: &[Vec<u8>], dir: Direction, secs: f64, reset: bool) -> f64 {
    let mut buf = vec![0u8; 2048];
    let mut n = 0u64;
    let mut spent = Duration::ZERO;
    let limit = Duration::from_secs_f64(secs);
    while spent < limit {
        let t = Instant::now();
        for fr in frames {
            let b = &mut buf[..fr.len()];
            b.copy_from_slice(fr);
            let out = w.process(b, dir, 0);
            debug_assert!(!matches!(out, Outcome::Pass | Outcome::Dropped(_)));
            black_box(out);
        }
        spent += t.elapsed();
        n += frames.len() as u64;
        if reset {
            w.reset_flows();
        }
    }
    if reset {
        // Leave the flows established for the next case.
        for fr in frames {
            let mut b = fr.clone();
            w.process(&mut b, Direction::ToFrontend, 0);
        }
    }
    n as f64 / spent.as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let mut cases = [case(false), case(true)];
    let names = ["established", "reply", "new_flow"];
    // results[family][kind] = pps per round
    let mut results = vec![vec![Vec::new(); names.len()]; 2];
    for round in 0..rounds {
        // Alternate which family goes first.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for fam in order {
            let c = &mut cases[fam];
            let e = measure(&mut c.w, &c.frames, Direction::ToFrontend, secs, false);
            let r = measure(&mut c.w, &c.replies, Direction::Reply, secs, false);
            let n = measure(&mut c.w, &c.frames, Direction::ToFrontend, secs, true);
            for (k, v) in [e, r, n].into_iter().enumerate() {
                results[fam][k].push(v);
            }
            println!(
                "round {round} {}: established {:.2} Mpps, reply {:.2} Mpps, new_flow {:.2} Mpps",
                if fam == 0 { "IPv4" } else { "IPv6" },
                e / 1e6,
                r / 1e6,
                n / 1e6
            );
        }
    }
    println!("\n| case | IPv4 Mpps median (min-max) | IPv6 Mpps median (min-max) | IPv6/IPv4 |");
    println!("|---|---|---|---|");
    for (k, name) in names.iter().enumerate() {
        let (m4, lo4, hi4) = median_spread(&mut results[0][k]);
        let (m6, lo6, hi6) = median_spread(&mut results[1][k]);
        println!(
            "| {name} | {:.2} ({:.2}-{:.2}) | {:.2} ({:.2}-{:.2}) | {:.2} |",
            m4 / 1e6,
            lo4 / 1e6,
            hi4 / 1e6,
            m6 / 1e6,
            lo6 / 1e6,
            hi6 / 1e6,
            m6 / m4
        );
    }
}
