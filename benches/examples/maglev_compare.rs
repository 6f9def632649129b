//! Maglev disruption and balance, lb-core against the `maglev` crate: for
//! N backends and table size M, over random backend sets (and, for
//! lb-core, random seeds), removes one random backend and prints
//!
//! * the share of table entries whose owner changed (including the removed
//!   backend's own entries), against the bound 1/N + 1%;
//! * max/avg: the most entries any backend owns over the mean (M/N), for
//!   the table before the removal.
//!
//! Run: `cargo run --release -p lb-benches --example maglev_compare`
//! (about a minute; the crate's build of 1000 backends at M = 65521
//! allocates a 500 MB permutation matrix).

#[path = "../benches/common/maglev_cmp.rs"]
mod maglev_cmp;
use maglev_cmp::*;

fn main() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    println!(
        "{:>5} {:>6} {:>6} {:>7} | {:>12} {:>12} {:>9} | {:>12} {:>12} {:>9}",
        "N",
        "M",
        "trials",
        "bound",
        "ours mean",
        "ours max",
        "ours m/a",
        "crate mean",
        "crate max",
        "crate m/a"
    );
    for &n in &[10usize, 100, 1000] {
        for &m in &[16381u32, 65521] {
            let trials = if n >= 1000 { 4 } else { 20 };
            let (mut o_sum, mut o_max, mut o_load) = (0.0f64, 0.0f64, 0.0f64);
            let (mut t_sum, mut t_max, mut t_load) = (0.0f64, 0.0f64, 0.0f64);
            for _ in 0..trials {
                let all = backend_set(n, next());
                let gone = (next() % n as u64) as usize;
                let rest: Vec<_> = all
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != gone)
                    .map(|(_, a)| *a)
                    .collect();
                let seed = next() as u32;
                let (ob, oa) = (ours(&all, m, seed), ours(&rest, m, seed));
                let o = changed_share(&all, &ob, &rest, &oa);
                o_sum += o;
                o_max = o_max.max(o);
                o_load = o_load.max(max_over_avg(&ob, n));
                let (tb, ta) = (theirs(&all, m as usize), theirs(&rest, m as usize));
                let t = changed_share(&all, &tb, &rest, &ta);
                t_sum += t;
                t_max = t_max.max(t);
                t_load = t_load.max(max_over_avg(&tb, n));
            }
            let pct = |x: f64| format!("{:.2}%", 100.0 * x);
            println!(
                "{n:>5} {m:>6} {trials:>6} {:>7} | {:>12} {:>12} {:>9.3} | {:>12} {:>12} {:>9.3}",
                pct(1.0 / n as f64 + 0.01),
                pct(o_sum / trials as f64),
                pct(o_max),
                o_load,
                pct(t_sum / trials as f64),
                pct(t_max),
                t_load
            );
        }
    }
    println!("m/a: the worst max/avg entries per backend over the trials (1.000 = perfect)");
}
