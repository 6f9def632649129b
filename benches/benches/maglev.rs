//! Cost of building one Maglev lookup table
//! ([`lb_core::select::maglev::build_table`]) with M = 16381 (Cilium's
//! default) and M = 65521, for 10, 100 and 1000 equally weighted backends.
//!
//! This is what the reconciler pays per frontend whose selectable backend
//! set changed (tables are shared between frontends with the same set and
//! reused when the set is unchanged).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lb_benches::backend_addr;
use lb_core::select::maglev::{build_table, MaglevBackend};
use lb_core::{BackendId, MaglevConfig};

fn backends(n: usize) -> Vec<MaglevBackend> {
    (0..n)
        .map(|j| MaglevBackend {
            addr: backend_addr(0, j, n),
            id: BackendId(j as u32 + 1),
            weight: 100,
        })
        .collect()
}

fn bench_build_table(c: &mut Criterion) {
    let mut group = c.benchmark_group("maglev_build_table");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for m in [16381u32, 65521] {
        let cfg = MaglevConfig::new(m, 0).expect("accepted table size");
        for n in [10usize, 100, 1000] {
            let input = backends(n);
            let table = build_table(&input, &cfg);
            assert_eq!(table.len(), m as usize);
            group.bench_function(BenchmarkId::new(format!("M={m}"), n), |b| {
                b.iter(|| build_table(black_box(&input), &cfg))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_build_table);
criterion_main!(benches);
