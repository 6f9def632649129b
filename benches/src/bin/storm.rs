//! The short-connection storm (`lb_benches::e2e::storm`) from the command
//! line, for the long runs recorded in RELIABILITY.md (root):
//!
//! ```text
//! storm [--phase SECS] [--connections C] [--threads T] [--backends N]
//!       [--time-wait SECS]
//! ```
//!
//! `--time-wait 0` lets gc drop closed flows' tuples after the 10 s closing
//! grace (what lb-ebpf did before `CtTimeouts::time_wait`).
//!
//! Prints one line per phase (direct, clusterip, nodeport): requests,
//! connections per second, wrk errors and every non-zero TCP counter of the
//! client and backend namespaces.

use std::time::Duration;

use lb_benches::e2e::storm::{self, StormOptions};

fn main() {
    lb_testkit::require_privileges();
    let mut o = StormOptions::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().unwrap_or_else(|| {
            eprintln!("storm: {flag} needs a value");
            std::process::exit(2)
        });
        let num = |v: &str| -> u64 {
            v.parse().unwrap_or_else(|_| {
                eprintln!("storm: bad value {v} for {flag}");
                std::process::exit(2)
            })
        };
        match flag.as_str() {
            "--phase" => o.phase = Duration::from_secs(num(&val)),
            "--connections" => o.connections = num(&val) as u32,
            "--threads" => o.threads = num(&val) as u32,
            "--backends" => o.backends = num(&val) as usize,
            "--time-wait" => o.time_wait = num(&val),
            other => {
                eprintln!("storm: unknown argument {other}");
                std::process::exit(2)
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("lb-storm-{}", std::process::id()));
    let result = std::fs::create_dir_all(&dir)
        .map_err(|e| e.into())
        .and_then(|_| storm::run(&o, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(phases) => {
            println!(
                "storm: wrk -t{} -c{} Connection: close, {} s per phase, {} backends, time_wait {} s",
                o.threads,
                o.connections,
                o.phase.as_secs(),
                o.backends,
                o.time_wait
            );
            for p in phases {
                println!("{}", p.summary());
            }
        }
        Err(e) => {
            eprintln!("storm: {e}");
            std::process::exit(1)
        }
    }
}
