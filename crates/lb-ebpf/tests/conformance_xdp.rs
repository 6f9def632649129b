//! The conformance suite against lb-ebpf with XDP acceleration: frames
//! towards a frontend go through `lb_xdp` and, when it passes them, the tc
//! ingress program (see `common/dut_xdp.rs`), compared frame by frame with
//! lb-core's oracle. Privileged (root).

mod common;
#[path = "common/dut.rs"]
mod dut;
#[path = "common/dut_xdp.rs"]
mod dut_xdp;

use std::sync::atomic::Ordering;

use lb_testkit::conformance::{run_suite, Scenario};

/// As for the tc adapter (`conformance.rs`): the kernel's clock cannot be
/// set and test runs refuse runts. IPv6 frames go through lb_xdp as IPv4
/// ones do (DSR flows encapsulated in IPv6-in-IPv6 at XDP too);
/// NAT46/NAT64 frontends' frames are passed to tc, which translates.
fn unsupported() -> Vec<Scenario> {
    vec![
        Scenario::AffinityTimeout,
        Scenario::ShortFrames,
        Scenario::MalformedPacketsV6,
    ]
}

#[test]
fn ebpf_with_xdp_passes_every_scenario_it_can_run() {
    let report = run_suite(dut_xdp::EbpfXdp::new);
    let unsupported = unsupported();
    report.assert_all_passed_except(&unsupported);
    // The scenarios with remote backends behind NodePort, LoadBalancer or
    // ExternalIP frontends were forwarded at XDP, not only passed to tc.
    let n = dut_xdp::XDP_FORWARDED.load(Ordering::Relaxed);
    assert!(n > 0, "lb_xdp forwarded no frame");
    let n6 = dut_xdp::XDP_FORWARDED_V6.load(Ordering::Relaxed);
    assert!(n6 > 0, "lb_xdp forwarded no IPv6 frame");
    // IPv6 DSR flows (DsrRemoteBackend: 2 + 2 TCP frames, 1 UDP) are
    // encapsulated at XDP, none by tc.
    let dsr6 = dut_xdp::XDP_FORWARDED_V6_DSR.load(Ordering::Relaxed);
    assert!(dsr6 >= 5, "lb_xdp encapsulated {dsr6} IPv6 DSR frames");
    assert_eq!(
        dut_xdp::TC_FORWARDED_V6_DSR.load(Ordering::Relaxed),
        0,
        "IPv6 DSR frames encapsulated by tc"
    );
    println!("lb_xdp forwarded {n} frames, {n6} of them IPv6, {dsr6} in IPv6-in-IPv6");
}
