//! NAT46/64 against same-family SNAT through the packet path: packets per
//! second on one core (frames in memory: parse, decide, translate or
//! rewrite, checksums) of established flows and their replies, for one
//! ClusterIP with 10 remote backends (Maglev, M = 16381) and 4096 flows,
//! in three cases: IPv4 -> IPv4 backends (SNAT), NAT46 (IPv4 -> IPv6
//! backends) and NAT64 (IPv6 -> IPv4 backends). The cases are interleaved
//! over several rounds (the first one rotating) so that machine noise hits
//! all alike. Prints every round and the median and spread per case.
//!
//! `cargo run --release -p lb-userspace --example nat46x64_pps [-- ROUNDS SECONDS_PER_CASE]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use lb_core::*;
use lb_userspace::rng::FastRng;
use lb_userspace::{Direction, Outcome, PacketPath, UserspaceDataplane};

mod pps_common;
use pps_common::*;

const NAMES: [&str; 3] = ["IPv4->IPv4 SNAT", "NAT46", "NAT64"];

/// `fe6`/`be6`: the frontend's and the backends' family.
fn case(fe6: bool, be6: bool) -> Case {
    let mut node = NodeConfig::new(
        "node-1",
        vec![
            "192.168.1.10".parse().unwrap(),
            "fd00:1::10".parse().unwrap(),
        ],
    );
    node.maglev = MaglevConfig::new(16381, 7).unwrap();
    node.nat46x64 = true;
    let vip = hp(if fe6 { "fd00:96::1" } else { "10.96.0.1" }, 80);
    let mut svc = Service::new("default/svc".parse().unwrap());
    svc.frontends.push(FrontendParams::new(
        vip.parse().unwrap(),
        FrontendType::ClusterIp,
    ));
    svc.backends = (1..=10)
        .map(|b| {
            let be = if be6 {
                format!("fd00:2::{b:x}")
            } else {
                format!("10.2.0.{b}")
            };
            BackendParams::new(hp(&be, 8080).parse().unwrap()).on_node("node-2")
        })
        .collect();
    svc.algorithm = Some(LbAlgorithm::Maglev);
    let desired = DesiredState::build(&node, &[svc]).unwrap();
    let mut dp = UserspaceDataplane::new(node, Default::default());
    Reconciler::new().apply(&mut dp, &desired).unwrap();
    let mut w = dp.worker_with_rng(FastRng::new(1));
    let frames = client_frames(fe6, &vip);
    let mut replies = Vec::new();
    let mut buf = vec![0u8; 2048];
    for f in &frames {
        buf[..f.len()].copy_from_slice(f);
        let (out, n) = w.process_buf(&mut buf, f.len(), Direction::ToFrontend, 0);
        let Outcome::Forwarded(_) = out else {
            panic!("not forwarded: {out:?}");
        };
        let q = lb_testkit::parse(&buf[..n]).unwrap();
        replies.push(frame(&q.dst.to_string(), &q.src.to_string()));
    }
    Case {
        _dp: dp,
        w,
        frames,
        replies,
    }
}

fn measure(w: &mut PacketPath, frames: &[Vec<u8>], dir: Direction, secs: f64) -> f64 {
    let mut buf = vec![0u8; 2048];
    let mut n = 0u64;
    let mut spent = Duration::ZERO;
    let limit = Duration::from_secs_f64(secs);
    while spent < limit {
        let t = Instant::now();
        for fr in frames {
            buf[..fr.len()].copy_from_slice(fr);
            let out = w.process_buf(&mut buf, fr.len(), dir, 0);
            debug_assert!(!matches!(out.0, Outcome::Pass | Outcome::Dropped(_)));
            black_box(out);
        }
        spent += t.elapsed();
        n += frames.len() as u64;
    }
    n as f64 / spent.as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let mut cases = [case(false, false), case(false, true), case(true, false)];
    // results[case][0 = established, 1 = reply]
    let mut results = vec![vec![Vec::new(); 2]; 3];
    for round in 0..rounds {
        for k in 0..3 {
            let c = (round + k) % 3;
            let case = &mut cases[c];
            let e = measure(&mut case.w, &case.frames, Direction::ToFrontend, secs);
            let r = measure(&mut case.w, &case.replies, Direction::Reply, secs);
            results[c][0].push(e);
            results[c][1].push(r);
            println!(
                "round {round} {}: established {:.2} Mpps, reply {:.2} Mpps",
                NAMES[c],
                e / 1e6,
                r / 1e6
            );
        }
    }
    println!("\n| case | established Mpps median (min-max) | reply Mpps median (min-max) |");
    println!("|---|---|---|");
    for (c, name) in NAMES.iter().enumerate() {
        let (me, le, he) = median_spread(&mut results[c][0]);
        let (mr, lr, hr) = median_spread(&mut results[c][1]);
        println!(
            "| {name} | {:.2} ({:.2}-{:.2}) | {:.2} ({:.2}-{:.2}) |",
            me / 1e6,
            le / 1e6,
            he / 1e6,
            mr / 1e6,
            lr / 1e6,
            hr / 1e6
        );
    }
}
