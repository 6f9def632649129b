//! Bad packets never panic the packet path: random bytes, and random
//! damage to valid frames, in both directions. Every malformed frame is
//! counted; the verdict class equals the reference classification.

use lb_core::*;
use lb_testkit::conformance::reference::{classify, Class};
use lb_userspace::{Direction, DropKind, Outcome, UserspaceDataplane};
use proptest::prelude::*;

fn dataplane() -> UserspaceDataplane {
    let node = NodeConfig::new("node-1", vec!["192.168.1.10".parse().unwrap()]);
    let mut svc = Service::new("default/web".parse().unwrap());
    svc.frontends.push(FrontendParams::new(
        "10.96.0.10:80".parse().unwrap(),
        FrontendType::ClusterIp,
    ));
    svc.frontends.push(FrontendParams::new(
        "0.0.0.0:30053/UDP".parse().unwrap(),
        FrontendType::NodePort,
    ));
    svc.backends
        .push(BackendParams::new("10.0.1.5:80".parse().unwrap()).on_node("node-1"));
    svc.backends
        .push(BackendParams::new("10.0.1.5:53/UDP".parse().unwrap()));
    let desired = DesiredState::build(&node, &[svc]).unwrap();
    let mut dp = UserspaceDataplane::new(node, Default::default());
    Reconciler::new().apply(&mut dp, &desired).unwrap();
    dp
}

fn valid(udp: bool, sport: u16) -> Vec<u8> {
    let src = format!("192.168.5.2:{sport}").parse().unwrap();
    if udp {
        lb_testkit::PacketBuilder::udp(src, "192.168.1.10:30053".parse().unwrap())
            .payload(b"x")
            .build()
            .unwrap()
    } else {
        lb_testkit::PacketBuilder::tcp(src, "10.96.0.10:80".parse().unwrap())
            .syn()
            .build()
            .unwrap()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..120), reply in any::<bool>()) {
        let dp = dataplane();
        let mut w = dp.worker();
        let mut f = bytes.clone();
        let dir = if reply { Direction::Reply } else { Direction::ToFrontend };
        let out = w.process(&mut f, dir, 0);
        match classify(&bytes) {
            Class::Malformed => prop_assert_eq!(out, Outcome::Dropped(DropKind::Malformed)),
            Class::Ignore => prop_assert_eq!((out, &f), (Outcome::Pass, &bytes)),
            Class::Flow(_) => prop_assert!(!matches!(out, Outcome::Dropped(DropKind::Malformed))),
        }
    }

    #[test]
    fn damaged_frames_never_panic(udp in any::<bool>(), sport in 1u16.., edits in prop::collection::vec((0usize..80, any::<u8>()), 0..6), cut in 0usize..90) {
        let dp = dataplane();
        let mut w = dp.worker();
        let mut f = valid(udp, sport);
        for (at, v) in edits {
            if let Some(b) = f.get_mut(at) { *b = v; }
        }
        f.truncate(cut.max(1).min(f.len()));
        let class = classify(&f);
        let before = dp.counters().drops(DropKind::Malformed);
        let out = w.process(&mut f.clone(), Direction::ToFrontend, 0);
        let _ = w.process(&mut f, Direction::Reply, 0);
        let after = dp.counters().drops(DropKind::Malformed);
        prop_assert_eq!(class == Class::Malformed, out == Outcome::Dropped(DropKind::Malformed));
        prop_assert_eq!(after - before, if class == Class::Malformed { 2 } else { 0 });
    }
}

#[test]
fn counters_count_services_and_drop_reasons() {
    let dp = dataplane();
    let mut w = dp.worker();
    let f = valid(false, 40000);
    for _ in 0..3 {
        assert!(matches!(
            w.process(&mut f.clone(), Direction::ToFrontend, 0),
            Outcome::Forwarded(_)
        ));
    }
    let mut short = f[..14 + 20 + 8].to_vec();
    assert_eq!(
        w.process(&mut short, Direction::ToFrontend, 0),
        Outcome::Dropped(DropKind::Malformed)
    );
    let s = dp.counters().services();
    let (_, st) = s.iter().next().unwrap();
    assert_eq!(
        (st.packets, st.new_flows, st.bytes),
        (3, 1, 3 * f.len() as u64)
    );
    assert_eq!(dp.counters().drops(DropKind::Malformed), 1);
}
