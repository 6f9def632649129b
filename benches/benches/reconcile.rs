//! Control-plane cost at scale: 10k ClusterIP services x 10 backends
//! (random selection), i.e. 10k frontends and 100k backends.
//!
//! * `full_sync_from_empty`: `DesiredState::build` + `Reconciler::plan` on
//!   an empty reconciler (realize + diff), what an agent pays on start.
//! * `desired_build`: `DesiredState::build` alone.
//! * `one_endpoint_change/plan`: everything is programmed, one backend of
//!   one service is replaced; `Reconciler::plan` (incremental: a lockstep
//!   walk over the previous and the new desired state) for the prebuilt
//!   desired state. Checked (outside the timed loop) to yield 3 ops.
//!   `one_endpoint_change/{realize,diff}` time the full recomputation
//!   (`Tables::realize` + `diff`), the reference the incremental plan is
//!   tested against, for comparison.
//! * `one_endpoint_change/build_and_plan`: the same, including rebuilding
//!   the desired state from the service list (what an agent that rebuilds
//!   on every event pays).
//! * `one_endpoint_change/apply_memory_dataplane`: plan + apply to a
//!   [`MemoryDataplane`] (capacity raised to 200k backends: 100k exceed the
//!   default 65536) + commit, setup (cloning the programmed reconciler and
//!   dataplane) untimed via `iter_batched`.
//! * `no_change_resync/plan`: plan for the unchanged desired state, checked
//!   to yield 0 ops.
//! * `maglev_1k_one_endpoint_change/plan`: 1k services x 10 backends with
//!   Maglev (M = 16381): plan of one endpoint change, which rebuilds one
//!   table, and its realize and diff halves.
//!
//! Every timed closure returns the plan, so its drop is part of the figure,
//! as it is for an agent that discards or commits it.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use lb_benches::{desired, node, programmed, replace_backend, ServiceSpec};
use lb_core::{diff, Capacity, DesiredState, LbAlgorithm, MemoryDataplane, Reconciler};

const SERVICES: usize = 10_000;
const BACKENDS: usize = 10;

fn bench_reconcile(c: &mut Criterion) {
    let node = node();
    let before = ServiceSpec::cluster_ip(SERVICES, BACKENDS, LbAlgorithm::Random).build();
    let mut after = before.clone();
    replace_backend(&mut after, SERVICES / 2, 3, 0);

    let desired_before = desired(&before);
    let desired_after = desired(&after);
    assert_eq!(desired_before.frontends.len(), SERVICES);
    assert_eq!(desired_before.backends.len(), SERVICES * BACKENDS);

    let mut group = c.benchmark_group("reconcile_10k_services_x10");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    // (a) Full sync from empty.
    {
        let plan = Reconciler::new().plan(&desired_before).unwrap();
        assert_eq!(plan.ops.len(), 2 * SERVICES + SERVICES * BACKENDS);
        group.bench_function("full_sync_from_empty", |b| {
            b.iter(|| {
                let d = DesiredState::build(&node, black_box(&before)).unwrap();
                Reconciler::new().plan(&d).unwrap()
            })
        });
    }

    // (b) DesiredState::build alone.
    group.bench_function("desired_build", |b| {
        b.iter(|| DesiredState::build(&node, black_box(&before)).unwrap())
    });

    // (c) One endpoint change on top of a fully programmed state.
    let reconciler = programmed(&before);
    {
        let ops = reconciler.plan(&desired_after).unwrap().ops;
        // UpsertBackend(new), UpsertFrontend, DeleteBackend(old).
        assert!(ops.len() <= 4, "one endpoint change gave {} ops", ops.len());
        assert_eq!(ops.len(), 3, "{ops:?}");
    }
    group.bench_function("one_endpoint_change/plan", |b| {
        b.iter(|| reconciler.plan(black_box(&desired_after)).unwrap())
    });
    // The two halves of `plan`.
    group.bench_function("one_endpoint_change/realize", |b| {
        b.iter(|| {
            reconciler
                .current()
                .realize(black_box(&desired_after))
                .unwrap()
        })
    });
    let next = reconciler.current().realize(&desired_after).unwrap();
    group.bench_function("one_endpoint_change/diff", |b| {
        b.iter(|| diff(reconciler.current(), black_box(&next)))
    });
    group.bench_function("one_endpoint_change/build_and_plan", |b| {
        b.iter(|| {
            let d = DesiredState::build(&node, black_box(&after)).unwrap();
            reconciler.plan(&d).unwrap()
        })
    });
    {
        // 100k backends exceed the default (Cilium's) capacity of 65536.
        let mut dp = MemoryDataplane::with_capacity(Capacity {
            frontends: 65_536,
            backends: 2 * SERVICES * BACKENDS,
        });
        let mut programmed = Reconciler::new();
        programmed.apply(&mut dp, &desired_before).unwrap();
        group.bench_function("one_endpoint_change/apply_memory_dataplane", |b| {
            b.iter_batched(
                || (programmed.clone(), dp.clone()),
                |(mut r, mut dp)| {
                    let n = r.apply(&mut dp, black_box(&desired_after)).unwrap();
                    assert_eq!(n, 3);
                    (r, dp)
                },
                BatchSize::PerIteration,
            )
        });
    }

    // (d) No-change resync.
    assert!(reconciler.plan(&desired_before).unwrap().ops.is_empty());
    group.bench_function("no_change_resync/plan", |b| {
        b.iter(|| reconciler.plan(black_box(&desired_before)).unwrap())
    });
    group.finish();
}

fn bench_reconcile_maglev(c: &mut Criterion) {
    const MAGLEV_SERVICES: usize = 1000;
    let before = ServiceSpec::cluster_ip(MAGLEV_SERVICES, BACKENDS, LbAlgorithm::Maglev).build();
    let mut after = before.clone();
    replace_backend(&mut after, MAGLEV_SERVICES / 2, 3, 0);
    let desired_after = desired(&after);
    let reconciler = programmed(&before);
    let ops = reconciler.plan(&desired_after).unwrap().ops;
    // UpsertBackend(new), UpsertMaglev, UpsertFrontend, DeleteBackend(old).
    assert_eq!(ops.len(), 4, "{ops:?}");

    let mut group = c.benchmark_group("reconcile_maglev_1k_services_x10");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("one_endpoint_change/plan", |b| {
        b.iter(|| reconciler.plan(black_box(&desired_after)).unwrap())
    });
    group.bench_function("one_endpoint_change/realize", |b| {
        b.iter(|| {
            reconciler
                .current()
                .realize(black_box(&desired_after))
                .unwrap()
        })
    });
    let next = reconciler.current().realize(&desired_after).unwrap();
    group.bench_function("one_endpoint_change/diff", |b| {
        b.iter(|| diff(reconciler.current(), black_box(&next)))
    });
    group.finish();
}

criterion_group!(benches, bench_reconcile, bench_reconcile_maglev);
criterion_main!(benches);
