//! The conformance suite against lb-userspace's packet path: every
//! scenario, compared frame by frame with lb-core's oracle.

mod common;

use lb_testkit::conformance::{run_suite, Scenario};

#[test]
fn userspace_passes_every_scenario() {
    let report = run_suite(common::Userspace::new);
    let unsupported: [Scenario; 0] = [];
    report.assert_all_passed_except(&unsupported);
}
