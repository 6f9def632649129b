//! Sequences of arbitrary desired states through the reconciler: valid ones
//! must program exactly the desired state without a dangling intermediate
//! step; invalid ones must be rejected without touching anything.
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
