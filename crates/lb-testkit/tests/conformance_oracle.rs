//! The conformance suite against lb-core's in-memory dataplane and
//! `flow::decide` (the reference): every scenario runs, none is unsupported.

use lb_testkit::conformance::{run_suite, OracleDataplane, Scenario};

#[test]
fn oracle_passes_every_scenario() {
    let report = run_suite(OracleDataplane::new);
    report.assert_unsupported(&[]);
    assert_eq!(report.passed, Scenario::ALL.to_vec());
}
