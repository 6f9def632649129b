//! Differential test: recorded packet traces replayed through lb-core's
//! oracle (`MemoryDataplane` + `flow::decide` + a from-scratch rewrite) and
//! through lb-userspace give identical verdicts and identical frames
//! (addresses, ports and checksums). lb-ebpf joins through its own adapter.

mod common;

use lb_testkit::conformance::trace::{self, Recording};
use lb_testkit::conformance::{OracleDataplane, PacketResult};
use proptest::prelude::*;

/// Traces without packets that would give a new flow the reply tuple of
/// another tracked flow (a SNATed one: backend, node IP, client port; or
/// one client port to two frontends of one backend): lb-core's model keeps
/// the client's port and lets the newer flow take the replies, while
/// lb-userspace gives the new flow another source port (the conformance
/// scenarios `SnatPortCollision` and `ReplyTupleClash` check that).
const RECORDING: Recording = Recording {
    snat_collisions: false,
    ..Recording::DEFAULT
};

fn compare(seed: u64, packets: usize) {
    let t = trace::record_opts(seed, packets, RECORDING);
    let setup = trace::setup(&t);
    let oracle = trace::replay(&mut OracleDataplane::new(&setup), &t);
    let userspace = trace::replay(&mut common::Userspace::new(&setup), &t);
    trace::assert_same(&t, ("oracle", &oracle), ("lb-userspace", &userspace));
}

#[test]
fn recorded_traces_give_identical_verdicts_and_frames() {
    for seed in 0..8 {
        compare(seed, 600);
    }
}

#[test]
fn traces_without_snat_agree_too() {
    for seed in 100..104 {
        let t = trace::record_opts(
            seed,
            400,
            Recording {
                snat: false,
                ..RECORDING
            },
        );
        let setup = trace::setup(&t);
        let oracle = trace::replay(&mut OracleDataplane::new(&setup), &t);
        let userspace = trace::replay(&mut common::Userspace::new(&setup), &t);
        trace::assert_same(&t, ("oracle", &oracle), ("lb-userspace", &userspace));
    }
}

#[test]
fn traces_exercise_every_outcome() {
    let t = trace::record(1, 600);
    let records = trace::replay(&mut common::Userspace::new(&trace::setup(&t)), &t);
    let (mut dropped, mut changed, mut same) = (0, 0, 0);
    for (step, r) in t.steps.iter().zip(&records) {
        if let (trace::Step::Packet { frame, .. }, trace::Record::Packet(p)) = (step, r) {
            match p {
                PacketResult::Drop => dropped += 1,
                PacketResult::Accept(out) if out == frame => same += 1,
                PacketResult::Accept(_) => changed += 1,
            }
        }
    }
    assert!(
        dropped > 10 && changed > 300 && same > 30,
        "{dropped} {changed} {same}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn random_traces_agree(seed in any::<u64>()) {
        compare(seed, 300);
    }
}
