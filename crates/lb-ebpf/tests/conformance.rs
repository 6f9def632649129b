//! The conformance suite against lb-ebpf: every scenario through
//! `BPF_PROG_TEST_RUN` of the tc programs (see `common/dut.rs`), compared
//! frame by frame with lb-core's oracle. What a test run cannot do is
//! declared, with the reason, and asserted here. Privileged (root).

mod common;
#[path = "common/dut.rs"]
mod dut;

use lb_testkit::conformance::{run_suite, Scenario};

/// Declared unsupported by the adapter (reasons in `Ebpf::unsupported`):
/// the kernel's clock cannot be set, and test runs refuse runts.
const UNSUPPORTED: [Scenario; 2] = [Scenario::AffinityTimeout, Scenario::ShortFrames];

#[test]
fn ebpf_passes_every_scenario_it_can_run() {
    let report = run_suite(dut::Ebpf::new);
    report.assert_unsupported(&UNSUPPORTED);
    let expected: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| !UNSUPPORTED.contains(s))
        .collect();
    assert_eq!(report.passed, expected);
    assert!(report.passed.contains(&Scenario::SnatRemoteBackend));
}
