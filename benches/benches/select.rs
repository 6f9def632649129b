//! Per-lookup cost of backend selection and of the per-flow oracle.
//!
//! * `select_backend/{random,maglev}/{10,100}`: [`select_backend`] on one
//!   frontend with 10 or 100 backends; the flow hash and entropy vary per
//!   call (1024 precomputed pseudo-random values, cycled).
//! * `decide/*`: [`lb_core::flow::decide`] against the tables of 1000
//!   ClusterIP services x 10 backends (random), with 10k unrelated
//!   established flows in connection tracking:
//!   - `established`: the flow has a CT entry (read-only path);
//!   - `new_flow_then_close`: no CT entry, a backend is selected and a CT
//!     entry inserted; the flow is then closed (`FlowState::close`) so the
//!     next call is new again, i.e. the figure includes one CT removal;
//!   - `affinity_hit_then_close`: as above on a service with ClientIP
//!     affinity whose client already has a fresh affinity entry;
//!   - `ct_insert_remove_reference`: just the CT `HashMap` insert + remove
//!     pair, to subtract from the two `_then_close` figures.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lb_benches::{cluster_ip_frontend, flow, single_frontend, tables, ServiceSpec, XorShift32};
use lb_core::select::select_backend;
use lb_core::{decide, FlowContext, FlowKey, FlowState, LbAlgorithm, Scope, Selection, Verdict};

const INPUTS: usize = 1024;

fn bench_select(c: &mut Criterion) {
    let mut group = c.benchmark_group("select_backend");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut rng = XorShift32::new(0x5eed);
    let hashes = rng.take(INPUTS);
    let entropy = rng.take(INPUTS);
    for algorithm in [LbAlgorithm::Random, LbAlgorithm::Maglev] {
        for n in [10usize, 100] {
            let (_tables, fe) = single_frontend(n, algorithm, false);
            assert!(select_backend(&fe, hashes[0], entropy[0]).is_some());
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new(algorithm.as_str(), n), |b| {
                b.iter(|| {
                    i = (i + 1) & (INPUTS - 1);
                    select_backend(black_box(&fe), hashes[i], entropy[i])
                })
            });
        }
    }
    group.finish();
}

fn ctx(now: u64, entropy: u32) -> FlowContext {
    FlowContext {
        now,
        entropy,
        scope: Scope::External,
    }
}

fn selection(v: Verdict) -> Selection {
    match v {
        Verdict::Forward(f) => f.selection,
        other => panic!("expected a forward, got {other:?}"),
    }
}

/// 10k established flows from clients that the benchmarked flows never use.
fn background_flows(t: &lb_core::Tables, state: &mut FlowState, services: usize) {
    let node = lb_benches::node();
    for k in 0..10_000u32 {
        let key = flow(
            500_000 + k,
            1024 + (k % 50_000) as u16,
            cluster_ip_frontend(k as usize % services),
        );
        decide(t, &node, state, &key, ctx(0, k));
    }
}

fn bench_decide(c: &mut Criterion) {
    const SERVICES: usize = 1000;
    let mut group = c.benchmark_group("decide");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let node = lb_benches::node();
    let entropy = XorShift32::new(7).take(INPUTS);
    let keys = |sport: u16| -> Vec<FlowKey> {
        (0..INPUTS as u32)
            .map(|k| flow(k, sport, cluster_ip_frontend(k as usize % SERVICES)))
            .collect()
    };

    let plain = tables(&ServiceSpec::cluster_ip(SERVICES, 10, LbAlgorithm::Random));

    // (a) Established: every key already has a CT entry.
    {
        let mut state = FlowState::new();
        background_flows(&plain, &mut state, SERVICES);
        let flows = keys(40_000);
        for (k, e) in flows.iter().zip(&entropy) {
            decide(&plain, &node, &mut state, k, ctx(0, *e));
        }
        assert_eq!(
            selection(decide(&plain, &node, &mut state, &flows[0], ctx(0, 0))),
            Selection::Established
        );
        let mut i = 0usize;
        group.bench_function("established", |b| {
            b.iter(|| {
                i = (i + 1) & (INPUTS - 1);
                decide(
                    black_box(&plain),
                    &node,
                    &mut state,
                    &flows[i],
                    ctx(0, entropy[i]),
                )
            })
        });
    }

    // (b) New flow: no CT entry; closed afterwards so it stays new.
    {
        let mut state = FlowState::new();
        background_flows(&plain, &mut state, SERVICES);
        let flows = keys(40_001);
        assert_eq!(
            selection(decide(&plain, &node, &mut state, &flows[0], ctx(0, 0))),
            Selection::New
        );
        state.close(&flows[0]);
        let mut i = 0usize;
        group.bench_function("new_flow_then_close", |b| {
            b.iter(|| {
                i = (i + 1) & (INPUTS - 1);
                let v = decide(
                    black_box(&plain),
                    &node,
                    &mut state,
                    &flows[i],
                    ctx(0, entropy[i]),
                );
                state.close(&flows[i]);
                v
            })
        });
    }

    // (c) New flow, ClientIP affinity hit: each client has a fresh entry.
    {
        let sticky =
            tables(&ServiceSpec::cluster_ip(SERVICES, 10, LbAlgorithm::Random).with_affinity());
        let mut state = FlowState::new();
        background_flows(&sticky, &mut state, SERVICES);
        for (k, e) in keys(40_002).iter().zip(&entropy) {
            decide(&sticky, &node, &mut state, k, ctx(0, *e));
            state.close(k);
        }
        let flows = keys(40_003);
        assert_eq!(
            selection(decide(&sticky, &node, &mut state, &flows[0], ctx(1, 0))),
            Selection::Affinity
        );
        state.close(&flows[0]);
        let mut i = 0usize;
        group.bench_function("affinity_hit_then_close", |b| {
            b.iter(|| {
                i = (i + 1) & (INPUTS - 1);
                let v = decide(
                    black_box(&sticky),
                    &node,
                    &mut state,
                    &flows[i],
                    ctx(1, entropy[i]),
                );
                state.close(&flows[i]);
                v
            })
        });
    }

    // Reference: the CT insert + remove that the two figures above include.
    {
        let mut state = FlowState::new();
        background_flows(&plain, &mut state, SERVICES);
        let flows = keys(40_004);
        let entry = *state.ct.values().next().expect("background flows");
        let mut i = 0usize;
        group.bench_function("ct_insert_remove_reference", |b| {
            b.iter(|| {
                i = (i + 1) & (INPUTS - 1);
                state.ct.insert(black_box(flows[i]), entry);
                state.ct.remove(&flows[i])
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_select, bench_decide);
criterion_main!(benches);
