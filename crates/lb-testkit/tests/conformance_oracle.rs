//! The conformance suite against lb-core's in-memory dataplane and
//! `flow::decide` (the reference): every scenario runs but those where
//! lb-core's model keeping the client's source port (SNATed or not) gives
//! two flows one reply tuple: two clients with one port to one remote
//! backend, and one client port to two frontends of one backend.

use lb_testkit::conformance::{run_suite, OracleDataplane, Scenario};

#[test]
fn oracle_passes_every_scenario() {
    let report = run_suite(OracleDataplane::new);
    let unsupported = [
        Scenario::SnatPortCollision,
        Scenario::ReplyTupleClash,
        Scenario::SnatPortCollisionV6,
        // lb-core's model has no ICMP.
        Scenario::IcmpErrors,
        Scenario::Nat46x64Icmp,
    ];
    report.assert_all_passed_except(&unsupported);
}

/// The scenario the oracle cannot run catches what it would catch in a
/// dataplane: keeping the client's port gives the second client the first
/// one's SNAT tuple.
#[test]
fn snat_port_collision_catches_a_dataplane_that_keeps_the_client_port() {
    use lb_testkit::conformance::{scenarios, Session};
    for scenario in [Scenario::SnatPortCollision, Scenario::SnatPortCollisionV6] {
        let setup = scenarios::setup(scenario);
        let mut dut = OracleDataplane::new(&setup);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut s = Session::new(&mut dut, setup.node.clone());
            scenario.run(&mut s);
        }));
        let msg = result.expect_err("the scenario must fail");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("SNAT tuple"), "{scenario}: {msg}");
    }
}

/// The reply-tuple clash scenario catches a dataplane that keeps the
/// client's port of a DNATed flow whose reply tuple another flow holds.
#[test]
fn reply_tuple_clash_catches_a_dataplane_that_keeps_the_client_port() {
    use lb_testkit::conformance::{scenarios, Session};
    let scenario = Scenario::ReplyTupleClash;
    let setup = scenarios::setup(scenario);
    let mut dut = OracleDataplane::new(&setup);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut s = Session::new(&mut dut, setup.node.clone());
        scenario.run(&mut s);
    }));
    let msg = result.expect_err("the scenario must fail");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("reply tuples shared"), "{msg}");
}

/// The dual-stack traces the differential tests replay carry the IPv6
/// frames that are no flow's packet (ICMPv6 messages, first and later
/// fragments, a routing header with segments left), which the oracle
/// passes untouched, and flows' packets behind extension headers the
/// dataplanes skip (hop-by-hop, destination options, routing with no
/// segments left), which it load-balances; so a dataplane that treated
/// either kind otherwise would disagree with it.
#[test]
fn dual_stack_traces_carry_icmpv6_fragments_and_extension_headers() {
    use lb_testkit::conformance::trace::{self, Record, Recording, Step};
    use lb_testkit::conformance::PacketResult;

    let (mut icmp6, mut first_fragments, mut later_fragments) = (0, 0, 0);
    let (mut not_ours_routing, mut skipped, mut skipped_and_rewritten) = (0, 0, 0);
    // The seeds lb-ebpf's differential test records dual-stack traces with.
    let traces: Vec<_> = (0..3)
        .map(|seed| trace::record_opts(seed, 600, Recording::DETERMINISTIC_DUAL_STACK))
        .collect();
    for t in &traces {
        let records = trace::replay(&mut OracleDataplane::new(&trace::setup(t)), t);
        for (step, record) in t.steps.iter().zip(&records) {
            let Step::Packet { frame, .. } = step else {
                continue;
            };
            if frame.len() < 14 + 48 || frame[12..14] != [0x86, 0xdd] {
                continue;
            }
            let untouched = &Record::Packet(PacketResult::Accept(frame.clone()));
            match (frame[14 + 6], frame[14 + 43]) {
                (58, _) => icmp6 += 1,
                (44, 1) => first_fragments += 1,
                (44, _) => later_fragments += 1,
                (43, 1) => not_ours_routing += 1,
                (0 | 43 | 60, _) => {
                    skipped += 1;
                    if matches!(record, Record::Packet(PacketResult::Accept(out)) if out != frame) {
                        skipped_and_rewritten += 1;
                    }
                    continue;
                }
                _ => continue,
            }
            assert_eq!(record, untouched);
        }
    }
    assert!(icmp6 >= 2, "{icmp6} ICMPv6 frames");
    assert!(first_fragments >= 1, "{first_fragments} first fragments");
    assert!(later_fragments >= 1, "{later_fragments} later fragments");
    assert!(
        not_ours_routing >= 1,
        "{not_ours_routing} routing, segments left"
    );
    assert!(
        skipped_and_rewritten >= 2,
        "{skipped_and_rewritten} of {skipped} rewritten"
    );
}
