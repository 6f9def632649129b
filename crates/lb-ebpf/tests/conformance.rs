//! The conformance suite against lb-ebpf: every scenario through
//! `BPF_PROG_TEST_RUN` of the tc programs (see `common/dut.rs`), compared
//! frame by frame with lb-core's oracle. What a test run cannot do is
//! declared, with the reason, and asserted here. Privileged (root).

mod common;
#[path = "common/dut.rs"]
mod dut;

use lb_testkit::conformance::{run_suite, Scenario};

/// Declared unsupported by the adapter (reasons in `Ebpf::unsupported`):
/// the kernel's clock cannot be set, test runs refuse runts, and the IPv6
/// scenarios ([`Scenario::uses_ipv6`]) need IPv6 maps this dataplane does not
/// have yet.
fn unsupported() -> Vec<Scenario> {
    let mut v = vec![Scenario::AffinityTimeout, Scenario::ShortFrames];
    v.extend(Scenario::ALL.into_iter().filter(|s| s.uses_ipv6()));
    v
}

#[test]
fn ebpf_passes_every_scenario_it_can_run() {
    let report = run_suite(dut::Ebpf::new);
    let unsupported = unsupported();
    report.assert_unsupported(&unsupported);
    let expected: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| !unsupported.contains(s))
        .collect();
    assert_eq!(report.passed, expected);
    assert!(report.passed.contains(&Scenario::SnatRemoteBackend));
}
