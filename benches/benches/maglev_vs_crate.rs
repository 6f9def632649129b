//! Maglev table build, lb-core against the `maglev` crate (0.2, the
//! reference implementation on crates.io), side by side in one group:
//! M = 16381 and 65521, 10, 100 and 1000 equally weighted backends, the
//! same backend addresses for both.
//!
//! Run: `cargo bench -p lb-benches --bench maglev_vs_crate`.
//!
//! lb-core builds `lb_core::select::maglev::build_table` (a `[BackendId]`
//! table); the crate builds `maglev::Maglev::with_capacity(nodes, M)` (it
//! takes the first prime >= M, which is M itself here), moving in a clone
//! of the node list made outside the timed part. Disruption and balance of
//! both: `cargo run --release -p lb-benches --example maglev_compare`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use lb_core::select::maglev::build_table;
use lb_core::MaglevConfig;

#[path = "common/maglev_cmp.rs"]
mod maglev_cmp;
use maglev_cmp::{backend_set, ours_input};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build_vs_crate");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for m in [16381u32, 65521] {
        let cfg = MaglevConfig::new(m, 0).expect("accepted table size");
        for n in [10usize, 100, 1000] {
            let addrs = backend_set(n, 0x5eed + n as u64);
            let input = ours_input(&addrs);
            assert_eq!(build_table(&input, &cfg).len(), m as usize);
            assert_eq!(maglev_cmp::theirs(&addrs, m as usize).len(), m as usize);
            g.bench_function(BenchmarkId::new(format!("M={m}/lb_core"), n), |b| {
                b.iter(|| build_table(black_box(&input), &cfg))
            });
            g.bench_function(BenchmarkId::new(format!("M={m}/maglev_crate"), n), |b| {
                b.iter_batched(
                    || addrs.clone(),
                    |nodes| maglev::Maglev::with_capacity(nodes, m as usize),
                    BatchSize::LargeInput,
                )
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
