//! The conformance suite against lb-userspace's packet path: every
//! scenario, compared frame by frame with lb-core's oracle.

mod common;

use lb_testkit::conformance::{run_suite, Scenario};

#[test]
fn userspace_passes_every_scenario() {
    let report = run_suite(common::Userspace::new);
    report.assert_unsupported(&[]);
    assert_eq!(report.passed, Scenario::ALL.to_vec());
}
