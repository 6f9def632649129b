//! The per-flow decision: selection rules, affinity, graceful termination,
//! traffic policies, source ranges and wildcard frontends.

use std::collections::BTreeSet;
use std::net::IpAddr;

use lb_core::*;
use proptest::prelude::*;

const NODE_IP: &str = "192.168.1.10";

fn node() -> NodeConfig {
    NodeConfig::new("node-a", vec![NODE_IP.parse().unwrap()])
}

fn backend(addr: &str, state: BackendState) -> BackendParams {
    BackendParams::new(addr.parse().unwrap())
        .with_state(state)
        .on_node("node-a")
}

fn web(backends: Vec<BackendParams>) -> Service {
    let mut svc = Service::new("default/web".parse().unwrap());
    svc.frontends.push(FrontendParams::new(
        "10.96.0.10:80".parse().unwrap(),
        FrontendType::ClusterIp,
    ));
    svc.frontends.push(FrontendParams::new(
        "0.0.0.0:30080".parse().unwrap(),
        FrontendType::NodePort,
    ));
    svc.frontends.push(FrontendParams::new(
        "203.0.113.7:80".parse().unwrap(),
        FrontendType::LoadBalancer,
    ));
    svc.backends = backends;
    svc
}

/// Programs `services` on a memory dataplane and returns it with its node.
fn program(services: &[Service]) -> (MemoryDataplane, NodeConfig) {
    let node = node();
    let mut dp = MemoryDataplane::new();
    Reconciler::new()
        .apply(&mut dp, &DesiredState::build(&node, services).unwrap())
        .unwrap();
    (dp, node)
}

fn flow(src: &str, sport: u16, dst: &str, dport: u16) -> FlowKey {
    FlowKey {
        src: src.parse().unwrap(),
        sport,
        dst: dst.parse().unwrap(),
        dport,
        proto: L4Proto::Tcp,
    }
}

fn ctx(now: u64, entropy: u32) -> FlowContext {
    FlowContext {
        now,
        entropy,
        scope: Scope::External,
    }
}

fn backend_of(v: Verdict) -> String {
    match v {
        Verdict::Forward(f) => f.backend.host_port().to_string(),
        other => panic!("expected a forward, got {other:?}"),
    }
}

/// Backends chosen for new flows over many entropies.
fn chosen(dp: &MemoryDataplane, node: &NodeConfig) -> BTreeSet<String> {
    let mut state = FlowState::new();
    (0..200u32)
        .map(|e| {
            backend_of(decide(
                dp.tables(),
                node,
                &mut state,
                &flow("10.1.0.1", 1000 + e as u16, "10.96.0.10", 80),
                ctx(0, e * 7919),
            ))
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn new_flows_go_to_active_backends_only() {
    use BackendState::*;
    let (dp, node) = program(&[web(vec![
        backend("10.0.0.1:80", Active),
        backend("10.0.0.2:80", Terminating),
        backend("10.0.0.3:80", Quarantined),
        backend("10.0.0.4:80", Maintenance),
        backend("10.0.0.5:80", Active),
    ])]);
    assert_eq!(chosen(&dp, &node), set(&["10.0.0.1:80", "10.0.0.5:80"]));
}

#[test]
fn without_active_backends_terminating_ones_take_new_flows() {
    use BackendState::*;
    let (dp, node) = program(&[web(vec![
        backend("10.0.0.2:80", Terminating),
        backend("10.0.0.3:80", Quarantined),
        backend("10.0.0.6:80", Terminating),
    ])]);
    assert_eq!(chosen(&dp, &node), set(&["10.0.0.2:80", "10.0.0.6:80"]));
}

#[test]
fn no_selectable_backend_drops() {
    let (dp, node) = program(&[web(vec![backend("10.0.0.3:80", BackendState::Quarantined)])]);
    let v = decide(
        dp.tables(),
        &node,
        &mut FlowState::new(),
        &flow("10.1.0.1", 1000, "10.96.0.10", 80),
        ctx(0, 0),
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
fn established_flow_keeps_a_terminating_backend_and_new_flows_avoid_it() {
    use BackendState::*;
    let node = node();
    let mut rec = Reconciler::new();
    let mut dp = MemoryDataplane::new();
    let both = vec![
        backend("10.0.0.1:80", Active),
        backend("10.0.0.2:80", Active),
    ];
    rec.apply(&mut dp, &DesiredState::build(&node, &[web(both)]).unwrap())
        .unwrap();
    let mut state = FlowState::new();
    // Find a flow that lands on 10.0.0.2.
    let (key, e) = (0..100u32)
        .map(|e| (flow("10.1.0.1", 2000 + e as u16, "10.96.0.10", 80), e * 51))
        .find(|(k, e)| {
            backend_of(decide(
                dp.tables(),
                &node,
                &mut state.clone(),
                k,
                ctx(0, *e),
            )) == "10.0.0.2:80"
        })
        .unwrap();
    assert_eq!(
        backend_of(decide(dp.tables(), &node, &mut state, &key, ctx(0, e))),
        "10.0.0.2:80"
    );

    // 10.0.0.2 starts terminating.
    let draining = vec![
        backend("10.0.0.1:80", Active),
        backend("10.0.0.2:80", Terminating),
    ];
    rec.apply(
        &mut dp,
        &DesiredState::build(&node, &[web(draining)]).unwrap(),
    )
    .unwrap();
    let v = decide(dp.tables(), &node, &mut state, &key, ctx(1, 0));
    assert!(matches!(v, Verdict::Forward(f) if f.selection == Selection::Established));
    assert_eq!(backend_of(v), "10.0.0.2:80");
    assert_eq!(chosen(&dp, &node), set(&["10.0.0.1:80"]));

    // Once it is gone, the flow is re-balanced onto a live backend.
    rec.apply(
        &mut dp,
        &DesiredState::build(&node, &[web(vec![backend("10.0.0.1:80", Active)])]).unwrap(),
    )
    .unwrap();
    let v = decide(dp.tables(), &node, &mut state, &key, ctx(2, e));
    assert_eq!(backend_of(v), "10.0.0.1:80");
}

#[test]
fn client_ip_affinity_sticks_until_the_timeout() {
    use BackendState::*;
    let mut svc = web((1..=5)
        .map(|i| backend(&format!("10.0.0.{i}:80"), Active))
        .collect());
    svc.session_affinity = SessionAffinity::ClientIp { timeout_secs: 60 };
    let (dp, node) = program(&[svc]);
    let mut state = FlowState::new();
    let first = backend_of(decide(
        dp.tables(),
        &node,
        &mut state,
        &flow("10.1.0.1", 1000, "10.96.0.10", 80),
        ctx(100, 3),
    ));
    // Other ports, other entropy, within the timeout: same backend.
    for (i, t) in [110u64, 150, 210].iter().enumerate() {
        let v = decide(
            dp.tables(),
            &node,
            &mut state,
            &flow("10.1.0.1", 2000 + i as u16, "10.96.0.10", 80),
            ctx(*t, 1000 + i as u32 * 37),
        );
        assert!(matches!(v, Verdict::Forward(f) if f.selection == Selection::Affinity));
        assert_eq!(backend_of(v), first);
    }
    // Idle past the timeout: balanced afresh.
    let v = decide(
        dp.tables(),
        &node,
        &mut state,
        &flow("10.1.0.1", 3000, "10.96.0.10", 80),
        ctx(210 + 61, 0),
    );
    assert!(matches!(v, Verdict::Forward(f) if f.selection == Selection::New));
}

#[test]
fn nodeport_answers_on_node_ip_wildcard_and_localhost_only() {
    let (dp, node) = program(&[web(vec![backend("10.0.0.1:80", BackendState::Active)])]);
    let mut st = FlowState::new();
    for dst in [NODE_IP, "127.0.0.1"] {
        let v = decide(
            dp.tables(),
            &node,
            &mut st,
            &flow("10.1.0.1", 1, dst, 30080),
            ctx(0, 0),
        );
        assert_eq!(backend_of(v), "10.0.0.1:80", "via {dst}");
    }
    // Some other host's address on the same port is not ours.
    let v = decide(
        dp.tables(),
        &node,
        &mut st,
        &flow("10.1.0.1", 1, "192.168.1.99", 30080),
        ctx(0, 0),
    );
    assert_eq!(v, Verdict::Pass);
}

#[test]
fn source_ranges_apply_to_load_balancer_frontends() {
    let mut svc = web(vec![backend("10.0.0.1:80", BackendState::Active)]);
    svc.source_ranges = vec!["198.51.100.0/24".parse().unwrap()];
    let (dp, node) = program(&[svc]);
    let mut st = FlowState::new();
    let lb = |src: &str, st: &mut FlowState| {
        decide(
            dp.tables(),
            &node,
            st,
            &flow(src, 1, "203.0.113.7", 80),
            ctx(0, 0),
        )
    };
    assert!(matches!(lb("198.51.100.20", &mut st), Verdict::Forward(_)));
    assert!(matches!(
        lb("192.0.2.1", &mut st),
        Verdict::Drop {
            reason: DropReason::SourceRangeDenied,
            ..
        }
    ));
    // The ClusterIP of the same service is not restricted.
    let v = decide(
        dp.tables(),
        &node,
        &mut st,
        &flow("192.0.2.1", 1, "10.96.0.10", 80),
        ctx(0, 0),
    );
    assert!(matches!(v, Verdict::Forward(_)));
}

#[test]
fn external_traffic_policy_local_uses_local_backends_and_keeps_the_client() {
    let mut svc = web(vec![
        backend("10.0.0.1:80", BackendState::Active),
        BackendParams::new("10.0.9.1:80".parse().unwrap()).on_node("node-b"),
    ]);
    svc.ext_traffic_policy = TrafficPolicy::Local;
    let (dp, node) = program(&[svc]);
    for e in 0..50u32 {
        // External scope (the NodePort from outside): local backend, client kept.
        let v = decide(
            dp.tables(),
            &node,
            &mut FlowState::new(),
            &flow("10.1.0.1", 1, NODE_IP, 30080),
            ctx(0, e * 104_729),
        );
        match v {
            Verdict::Forward(f) => {
                assert_eq!(f.backend.host_port().to_string(), "10.0.0.1:80");
                assert_eq!(f.snat, None);
            }
            other => panic!("{other:?}"),
        }
    }
    // Internal scope (from the node itself) still reaches the remote backend,
    // SNATed to the node address.
    let remote = (0..50u32).find_map(|e| {
        match decide(
            dp.tables(),
            &node,
            &mut FlowState::new(),
            &flow("10.1.0.1", 1, NODE_IP, 30080),
            FlowContext {
                now: 0,
                entropy: e * 104_729,
                scope: Scope::Internal,
            },
        ) {
            Verdict::Forward(f)
                if f.backend.port == 80 && f.backend.addr.to_string() == "10.0.9.1" =>
            {
                Some(f)
            }
            _ => None,
        }
    });
    assert_eq!(
        remote.unwrap().snat,
        Some(NODE_IP.parse::<IpAddr>().unwrap())
    );
}

#[test]
fn maglev_picks_the_same_backend_on_every_node() {
    let backends: Vec<BackendParams> = (1..=7)
        .map(|i| backend(&format!("10.0.0.{i}:80"), BackendState::Active))
        .collect();
    let mut svc = web(backends.clone());
    svc.algorithm = Some(LbAlgorithm::Maglev);
    let (dp_a, node_a) = program(std::slice::from_ref(&svc));
    // A second node, where IDs were assigned in another order.
    let node_b = node();
    let mut dp_b = MemoryDataplane::new();
    let mut rec_b = Reconciler::new();
    let mut other = Service::new("default/other".parse().unwrap());
    other.frontends.push(FrontendParams::new(
        "10.96.0.99:80".parse().unwrap(),
        FrontendType::ClusterIp,
    ));
    other.backends = backends.iter().rev().cloned().collect();
    rec_b
        .apply(
            &mut dp_b,
            &DesiredState::build(&node_b, &[other.clone()]).unwrap(),
        )
        .unwrap();
    rec_b
        .apply(
            &mut dp_b,
            &DesiredState::build(&node_b, &[other, svc]).unwrap(),
        )
        .unwrap();
    for sport in 0..300u16 {
        let k = flow("10.1.0.1", sport, "10.96.0.10", 80);
        let a = decide(dp_a.tables(), &node_a, &mut FlowState::new(), &k, ctx(0, 1));
        let b = decide(dp_b.tables(), &node_b, &mut FlowState::new(), &k, ctx(0, 2));
        assert_eq!(backend_of(a), backend_of(b));
    }
}

proptest! {
    /// Whatever the states, a new flow never lands on a backend that should
    /// not take new flows, and a service with an active backend never uses a
    /// terminating one.
    #[test]
    fn selection_rules_hold(states in proptest::collection::vec(0u8..4, 1..8), entropy: u32, sport: u16, maglev: bool) {
        use BackendState::*;
        let all = [Active, Terminating, Quarantined, Maintenance];
        let backends: Vec<BackendParams> = states
            .iter()
            .enumerate()
            .map(|(i, s)| backend(&format!("10.0.0.{}:80", i + 1), all[*s as usize]))
            .collect();
        let mut svc = web(backends.clone());
        if maglev {
            svc.algorithm = Some(LbAlgorithm::Maglev);
        }
        let (dp, node) = program(&[svc]);
        let v = decide(dp.tables(), &node, &mut FlowState::new(), &flow("10.1.0.1", sport, "10.96.0.10", 80), ctx(0, entropy));
        let any_active = backends.iter().any(|b| b.state == Active);
        let any_term = backends.iter().any(|b| b.state == Terminating);
        match v {
            Verdict::Forward(f) => {
                let b = backends.iter().find(|b| b.addr == f.backend).unwrap();
                prop_assert!(b.state == Active || (!any_active && b.state == Terminating));
            }
            Verdict::Drop { reason: DropReason::NoBackend, .. } => prop_assert!(!any_active && !any_term),
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    /// Random selection spreads flows in proportion to weights.
    #[test]
    fn random_respects_weights(w1 in 1u16..10, w2 in 1u16..10) {
        let svc = web(vec![
            backend("10.0.0.1:80", BackendState::Active).with_weight(w1),
            backend("10.0.0.2:80", BackendState::Active).with_weight(w2),
        ]);
        let (dp, node) = program(&[svc]);
        let total = u32::from(w1 + w2);
        let ones = (0..total)
            .filter(|e| backend_of(decide(dp.tables(), &node, &mut FlowState::new(), &flow("10.1.0.1", 1, "10.96.0.10", 80), ctx(0, *e))) == "10.0.0.1:80")
            .count();
        prop_assert_eq!(ones, usize::from(w1));
    }
}
