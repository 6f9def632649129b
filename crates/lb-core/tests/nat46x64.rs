//! NAT46/64 in the model: which backends a frontend gets with the setting
//! off and on, the node validation, and the translated flow `decide`
//! returns (property tests over random services, families, modes and
//! policies).

use std::net::IpAddr;

use lb_core::*;
use proptest::prelude::*;

const NODE4: &str = "192.168.1.10";
const NODE6: &str = "fd00:1::10";

fn node(nat46x64: bool) -> NodeConfig {
    let mut n = NodeConfig::new(
        "node-a",
        vec![NODE4.parse().unwrap(), NODE6.parse().unwrap()],
    );
    n.nat46x64 = nat46x64;
    n
}

fn svc(frontends: &[(&str, FrontendType)], backends: &[(&str, bool)]) -> Service {
    let mut s = Service::new("default/web".parse().unwrap());
    for (a, k) in frontends {
        s.frontends
            .push(FrontendParams::new(a.parse().unwrap(), *k));
    }
    for (a, local) in backends {
        let node = if *local { "node-a" } else { "node-b" };
        s.backends
            .push(BackendParams::new(a.parse().unwrap()).on_node(node));
    }
    s
}

fn program(node: &NodeConfig, services: &[Service]) -> MemoryDataplane {
    let mut dp = MemoryDataplane::new();
    Reconciler::new()
        .apply(&mut dp, &DesiredState::build(node, services).unwrap())
        .unwrap();
    dp
}

fn key(src: &str, sport: u16, dst: &str, dport: u16) -> FlowKey {
    FlowKey {
        src: src.parse().unwrap(),
        sport,
        dst: dst.parse().unwrap(),
        dport,
        proto: L4Proto::Tcp,
    }
}

fn ctx(entropy: u32) -> FlowContext {
    FlowContext {
        now: 0,
        entropy,
        scope: Scope::External,
    }
}

#[test]
fn off_by_default_and_other_family_backends_are_not_used() {
    assert!(!NodeConfig::new("n", vec![]).nat46x64);
    let n = node(false);
    let s = svc(
        &[("198.51.100.10:80", FrontendType::ClusterIp)],
        &[("[fd00:200::2]:8080", false)],
    );
    let dp = program(&n, &[s]);
    let v = decide(
        dp.tables(),
        &n,
        &mut FlowState::new(),
        &key("192.168.10.2", 40000, "198.51.100.10", 80),
        ctx(0),
    );
    assert!(matches!(
        v,
        Verdict::Drop {
            reason: DropReason::NoBackend,
            ..
        }
    ));
}

#[test]
fn node_without_both_families_is_rejected_when_on() {
    let mut n = NodeConfig::new("n", vec![NODE4.parse().unwrap()]);
    n.nat46x64 = true;
    let s = svc(&[("198.51.100.10:80", FrontendType::ClusterIp)], &[]);
    assert_eq!(
        DesiredState::build(&n, std::slice::from_ref(&s)),
        Err(ConfigError::Nat46x64NeedsDualStackNode)
    );
    n.nat46x64 = false;
    assert!(DesiredState::build(&n, &[s]).is_ok());
}

#[test]
fn nat46_forward_is_snated_in_the_backend_family_even_for_local_backends() {
    let n = node(true);
    let mut s = svc(
        &[("198.51.100.10:80", FrontendType::ClusterIp)],
        &[("[fd00:200::2]:8080", true)],
    );
    s.int_traffic_policy = TrafficPolicy::Local;
    let dp = program(&n, &[s]);
    let k = key("192.168.10.2", 40000, "198.51.100.10", 80);
    let Verdict::Forward(f) = decide(dp.tables(), &n, &mut FlowState::new(), &k, ctx(0)) else {
        panic!("expected a forward");
    };
    assert_eq!(f.translation(), Translation::Nat46);
    assert_eq!(f.snat, Some(NODE6.parse().unwrap()));
    assert_eq!(f.encap, None);
    let out = f.backend_key(&k);
    assert_eq!(out.dst, "fd00:200::2".parse::<IpAddr>().unwrap());
    assert_eq!(out.dport, 8080);
    assert_eq!(f.reply_to_client(&k), k.reversed());
}

#[test]
fn nat64_forward_and_dsr_does_not_apply() {
    let mut n = node(true);
    n.mode = LbMode::Dsr;
    let s = svc(
        &[("[2001:db8::10]:80", FrontendType::LoadBalancer)],
        &[("10.200.1.2:8080", false)],
    );
    let dp = program(&n, &[s]);
    let k = key("2001:db8:1::2", 40000, "2001:db8::10", 80);
    let Verdict::Forward(f) = decide(dp.tables(), &n, &mut FlowState::new(), &k, ctx(0)) else {
        panic!("expected a forward");
    };
    assert_eq!(f.translation(), Translation::Nat64);
    assert_eq!(f.snat, Some(NODE4.parse().unwrap()));
    assert_eq!(f.encap, None);
}

#[test]
fn dual_stack_service_keeps_each_family_on_its_own_backends() {
    let n = node(true);
    let s = svc(
        &[
            ("198.51.100.10:80", FrontendType::ClusterIp),
            ("[fd00:96::10]:80", FrontendType::ClusterIp),
        ],
        &[("10.200.1.2:8080", false), ("[fd00:200::2]:8080", false)],
    );
    let dp = program(&n, &[s]);
    for (src, dst) in [
        ("192.168.10.2", "198.51.100.10"),
        ("fd00:10::2", "fd00:96::10"),
    ] {
        for sport in 1000..1100 {
            let Verdict::Forward(f) = decide(
                dp.tables(),
                &n,
                &mut FlowState::new(),
                &key(src, sport, dst, 80),
                ctx(sport.into()),
            ) else {
                panic!("expected a forward");
            };
            assert_eq!(f.translation(), Translation::None);
        }
    }
}

proptest! {
    /// Over random frontends (either family, several types), backends
    /// (either family, local or remote), policies, modes and the setting:
    /// a translated flow happens only with the setting on and only when the
    /// frontend has no backend of its own family; it is then SNATed to the
    /// node's address of the backend's family and never encapsulated; the
    /// backend-side tuple is entirely of the backend's family; and the
    /// reverse translation restores the client's tuple, reversed.
    #[test]
    fn translated_flows_hold_their_invariants(
        fe_v6: bool,
        kind in 0usize..3,
        backends in proptest::collection::vec((any::<bool>(), any::<bool>(), 1u8..200), 1..6),
        nat in any::<bool>(),
        local_policy: bool,
        mode in 0usize..3,
        sport: u16,
        entropy: u32,
    ) {
        let kinds = [FrontendType::ClusterIp, FrontendType::LoadBalancer, FrontendType::ExternalIp];
        let modes = [LbMode::Snat, LbMode::Dsr, LbMode::Hybrid];
        let mut n = node(nat);
        n.mode = modes[mode];
        let fe = if fe_v6 { "[2001:db8::10]:80" } else { "198.51.100.10:80" };
        let addrs: Vec<(String, bool)> = backends
            .iter()
            .map(|(v6, local, i)| {
                let a = if *v6 { format!("[fd00:200::{i:x}]:8080") } else { format!("10.200.{i}.2:8080") };
                (a, *local)
            })
            .collect();
        let refs: Vec<(&str, bool)> = addrs.iter().map(|(a, l)| (a.as_str(), *l)).collect();
        let mut s = svc(&[(fe, kinds[kind])], &refs);
        if local_policy {
            s.ext_traffic_policy = TrafficPolicy::Local;
            s.int_traffic_policy = TrafficPolicy::Local;
        }
        let dp = program(&n, &[s]);
        let client = if fe_v6 { "2001:db8:1::2" } else { "192.168.10.2" };
        let k = key(client, sport, fe.rsplit_once(':').unwrap().0.trim_matches(&['[', ']'][..]), 80);
        let same_family = backends.iter().any(|(v6, _, _)| *v6 == fe_v6);
        match decide(dp.tables(), &n, &mut FlowState::new(), &k, ctx(entropy)) {
            Verdict::Forward(f) => {
                let t = f.translation();
                prop_assert_eq!(t.is_translated(), f.backend.addr.is_ipv6() != fe_v6);
                if t.is_translated() {
                    prop_assert!(n.nat46x64);
                    prop_assert!(!same_family);
                    prop_assert_eq!(f.snat, n.node_ip_like(f.backend.addr));
                    prop_assert_eq!(f.encap, None);
                }
                let out = f.backend_key(&k);
                prop_assert_eq!(out.src.is_ipv6(), f.backend.addr.is_ipv6());
                prop_assert_eq!(out.dst.is_ipv6(), f.backend.addr.is_ipv6());
                let back = f.reply_to_client(&k);
                prop_assert_eq!(back, k.reversed());
            }
            Verdict::Drop { reason, .. } => {
                prop_assert_eq!(reason, DropReason::no_backend(local_policy));
                // Nothing of the frontend's family, and the setting is off
                // or policy Local left no local backend.
                prop_assert!(!same_family || local_policy);
            }
            Verdict::Pass => prop_assert!(false, "a frontend flow passed"),
        }
    }
}
