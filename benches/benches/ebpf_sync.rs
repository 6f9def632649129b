//! Control plane into the real BPF maps: 10k ClusterIP services × 10
//! backends (random selection) programmed through `lb_ebpf::EbpfDataplane`
//! (one `bpf(2)` map update per entry). **Privileged** (root): fails loudly
//! without; loads the tc programs (for their maps) but attaches nothing.
//!
//! Run: `cargo bench -p lb-benches --bench ebpf_sync`.
//!
//! * `full_sync/build_plan_apply`: `DesiredState::build` +
//!   `Reconciler::apply` (plan from empty, write every map entry, commit)
//!   into empty maps: what an agent pays on start. The maps are emptied
//!   between iterations (untimed).
//! * `full_sync/apply_only`: the same batch of ops (planned untimed) written
//!   by `Dataplane::apply` alone: the map-update syscalls plus the
//!   dataplane's batch validation.
//! * `one_endpoint_change/*`: everything is programmed; one backend of one
//!   service is replaced by a pod at a new address (and back, in turn), the
//!   incremental way an agent does it: `DesiredBuilder::upsert` of that one
//!   service, `take_changes`, `Reconciler::plan_changes`,
//!   `Dataplane::apply`, `Reconciler::commit`. Checked to be 3 ops
//!   (UpsertBackend, UpsertFrontend, DeleteBackend). Each iteration times
//!   the parts separately:
//!   - `total`: all of it;
//!   - `planner`: upsert + take_changes + plan_changes;
//!   - `dataplane_apply`: `EbpfDataplane::apply` (validation + syscalls);
//!   - `commit`: `Reconciler::commit`.
//! * `one_endpoint_change_full_plan/total`: the same change planned with
//!   `Reconciler::apply` over a prebuilt full `DesiredState` (a lockstep
//!   walk over all entries), for comparison.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use lb_benches::{desired, node, replace_backend, ServiceSpec};
use lb_core::{Dataplane, DesiredBuilder, DesiredState, LbAlgorithm, Reconciler, Service};

#[path = "common/ebpf.rs"]
mod ebpf;

const SERVICES: usize = 10_000;
const BACKENDS: usize = 10;
/// The service whose endpoint changes.
const CHANGED: usize = SERVICES / 2;

/// Empties the maps (through the dataplane, so its shadow follows).
fn clear(rig: &mut ebpf::Rig) {
    let mut rec = std::mem::take(&mut rig.rec);
    rec.apply(&mut rig.dp, &DesiredState::default())
        .expect("clear");
    rig.rec = Reconciler::new();
}

fn bench_full_sync(c: &mut Criterion) {
    let node = node();
    let services = ServiceSpec::cluster_ip(SERVICES, BACKENDS, LbAlgorithm::Random).build();
    let mut rig = ebpf::Rig::new(ebpf::capacity_for(SERVICES, BACKENDS, 16, 262_144), &node);
    let ops = rig.apply(&node, &services);
    assert_eq!(ops, 2 * SERVICES + SERVICES * BACKENDS);
    assert_eq!(
        rig.dp.maps().services.keys().count(),
        SERVICES * (BACKENDS + 1)
    );
    clear(&mut rig);

    let mut g = c.benchmark_group("ebpf_sync_10k_services_x10");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    g.bench_function("full_sync/build_plan_apply", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let d = DesiredState::build(&node, &services).expect("valid");
                let n = rig.rec.apply(&mut rig.dp, &d).expect("apply");
                total += t.elapsed();
                assert_eq!(n, 2 * SERVICES + SERVICES * BACKENDS);
                clear(&mut rig);
            }
            total
        })
    });
    let d = desired(&services);
    let plan = Reconciler::new().plan(&d).expect("plan");
    g.bench_function("full_sync/apply_only", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                rig.dp.apply(&plan.ops).expect("apply");
                total += t.elapsed();
                // The dataplane holds what `plan` wrote; empty it through a
                // reconciler that knows so.
                let mut rec = Reconciler::new();
                let p = rec.plan(&d).expect("plan");
                rec.commit(p, &d);
                rec.apply(&mut rig.dp, &DesiredState::default())
                    .expect("clear");
            }
            total
        })
    });
    g.finish();
}

/// Which parts of a change an iteration reports.
#[derive(Clone, Copy)]
enum Part {
    Total,
    Planner,
    DataplaneApply,
    Commit,
}

fn bench_one_change(c: &mut Criterion) {
    let node = node();
    let services = ServiceSpec::cluster_ip(SERVICES, BACKENDS, LbAlgorithm::Random).build();
    let mut changed: Vec<Service> = services.clone();
    replace_backend(&mut changed, CHANGED, 3, 0);
    let variants = [services[CHANGED].clone(), changed[CHANGED].clone()];

    let mut rig = ebpf::Rig::new(ebpf::capacity_for(SERVICES, BACKENDS, 16, 262_144), &node);
    let mut builder = DesiredBuilder::new(node.clone()).expect("node");
    for s in &services {
        builder.upsert(s).expect("valid");
    }
    let ch = builder.take_changes();
    rig.rec
        .apply_changes(&mut rig.dp, builder.state(), &ch)
        .expect("initial sync");
    let mut turn = 1usize;

    let mut g = c.benchmark_group("ebpf_sync_10k_services_x10");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, part) in [
        ("total", Part::Total),
        ("planner", Part::Planner),
        ("dataplane_apply", Part::DataplaneApply),
        ("commit", Part::Commit),
    ] {
        g.bench_function(format!("one_endpoint_change/{name}"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    builder.upsert(&variants[turn % 2]).expect("valid");
                    let changes = builder.take_changes();
                    let plan = rig
                        .rec
                        .plan_changes(builder.state(), &changes)
                        .expect("plan");
                    let t1 = Instant::now();
                    rig.dp.apply(&plan.ops).expect("apply");
                    let t2 = Instant::now();
                    let n = plan.ops.len();
                    rig.rec.commit(plan, builder.state());
                    let t3 = Instant::now();
                    assert_eq!(n, 3, "one endpoint change is 3 ops");
                    turn += 1;
                    spent += match part {
                        Part::Total => t3 - t0,
                        Part::Planner => t1 - t0,
                        Part::DataplaneApply => t2 - t1,
                        Part::Commit => t3 - t2,
                    };
                }
                spent
            })
        });
    }

    // The same change through a full desired state and the lockstep plan.
    let desired_states = [desired(&services), desired(&changed)];
    // Bring the reconciler to a known desired state first.
    rig.rec
        .apply(&mut rig.dp, &desired_states[turn % 2])
        .expect("sync");
    g.bench_function("one_endpoint_change_full_plan/total", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                turn += 1;
                let t = Instant::now();
                let n = rig
                    .rec
                    .apply(&mut rig.dp, &desired_states[turn % 2])
                    .expect("apply");
                spent += t.elapsed();
                assert_eq!(n, 3);
            }
            spent
        })
    });
    g.finish();
}

criterion_group!(benches, bench_one_change, bench_full_sync);
criterion_main!(benches);
