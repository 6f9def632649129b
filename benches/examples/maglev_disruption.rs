//! Maglev disruption on one backend removal: for N backends and table size
//! M, the share of entries whose owner changes besides the removed
//! backend's own, over many random backend sets and seeds.
//!
//! Run with `cargo run --release -p lb-benches --example maglev_disruption`.

use std::net::{IpAddr, Ipv4Addr};

use lb_core::select::maglev::{build_table, MaglevBackend};
use lb_core::{BackendId, L3n4Addr, L4Proto, MaglevConfig};

fn main() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    println!(
        "{:>5} {:>7} {:>7} {:>10} {:>10} {:>10}",
        "N", "M", "trials", "mean", "max", "bound"
    );
    for &n in &[3usize, 10, 100, 1000] {
        for &m in &[16381u32, 65521, 131071] {
            let trials = if n >= 1000 { 10 } else { 40 };
            let (mut sum, mut worst) = (0.0f64, 0.0f64);
            for _ in 0..trials {
                let cfg = MaglevConfig::new(m, next() as u32).expect("accepted size");
                let backends: Vec<MaglevBackend> = (0..n)
                    .map(|i| MaglevBackend {
                        addr: L3n4Addr::new(
                            IpAddr::V4(Ipv4Addr::from(next() as u32)),
                            8080,
                            L4Proto::Tcp,
                        ),
                        id: BackendId(i as u32 + 1),
                        weight: 1,
                    })
                    .collect();
                let before = build_table(&backends, &cfg);
                let gone = backends[(next() % n as u64) as usize].id;
                let rest: Vec<MaglevBackend> =
                    backends.iter().copied().filter(|b| b.id != gone).collect();
                let after = build_table(&rest, &cfg);
                let extra = before
                    .iter()
                    .zip(&after)
                    .filter(|(b, a)| **b != gone && b != a)
                    .count() as f64
                    / f64::from(m);
                sum += extra;
                worst = worst.max(extra);
            }
            println!(
                "{n:>5} {m:>7} {trials:>7} {:>9.2}% {:>9.2}% {:>9.2}%",
                100.0 * sum / trials as f64,
                100.0 * worst,
                1.0
            );
        }
    }
}
