//! Sequences of arbitrary desired states through the reconciler: building
//! never panics; for the valid ones the incremental plan equals the full
//! recomputation, the ops apply one by one without a dangling intermediate
//! step, the dataplane ends equal to the reconciler's tables, and a resync
//! is empty. Invalid ones are skipped, and the next valid state must still
//! plan correctly from the last committed one.
#![no_main]

use lb_core::*;
use lb_fuzz::{node, SvcSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|steps: Vec<Vec<SvcSpec>>| {
    let node = node();
    let mut dp = MemoryDataplane::new();
    let mut rec = Reconciler::new();
    for specs in steps.iter().take(6) {
        let services: Vec<Service> = specs.iter().take(6).map(SvcSpec::to_service).collect();
        let Ok(desired) = DesiredState::build(&node, &services) else {
            continue;
        };
        let Ok(plan) = rec.plan(&desired) else {
            continue;
        };
        // The incremental plan equals the full recomputation.
        let full = diff(rec.current(), &rec.current().realize(&desired).unwrap());
        assert_eq!(plan.ops, full);
        for op in &plan.ops {
            dp.apply(std::slice::from_ref(op))
                .unwrap_or_else(|e| panic!("op {op} dangles: {e}"));
        }
        rec.commit(plan, &desired);
        assert!(dp.tables() == rec.current());
        assert!(
            rec.plan(&desired).unwrap().ops.is_empty(),
            "resync not empty"
        );
    }
});
