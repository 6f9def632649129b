//! The conformance suite against lb-ebpf: every scenario through
//! `BPF_PROG_TEST_RUN` of the tc programs (see `common/dut.rs`), compared
//! frame by frame with lb-core's oracle. What a test run cannot do is
//! declared, with the reason, and asserted here. Privileged (root).

mod common;
#[path = "common/dut.rs"]
mod dut;

use lb_testkit::conformance::{run_suite, Scenario};

/// Declared unsupported by the adapter (reasons in `Ebpf::unsupported`):
/// the kernel's clock cannot be set, test runs refuse runts (IPv4 ones, and
/// the IPv6 one of `MalformedPacketsV6`). Every other scenario runs,
/// IPv6, dual-stack and NAT46/NAT64 (`bpf/lb_nat46.h`) included.
fn unsupported() -> Vec<Scenario> {
    vec![
        Scenario::AffinityTimeout,
        Scenario::ShortFrames,
        Scenario::MalformedPacketsV6,
    ]
}

#[test]
fn ebpf_passes_every_scenario_it_can_run() {
    let report = run_suite(dut::Ebpf::new);
    let unsupported = unsupported();
    report.assert_all_passed_except(&unsupported);
    assert!(report.passed.contains(&Scenario::SnatRemoteBackend));
    assert!(report.passed.contains(&Scenario::SnatRemoteBackendV6));
    assert!(report.passed.contains(&Scenario::DualStack));
    assert!(report.passed.contains(&Scenario::Nat46));
    assert!(report.passed.contains(&Scenario::Nat64));
}
