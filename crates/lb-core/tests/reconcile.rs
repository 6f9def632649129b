//! Reconciler invariants: ops applied one at a time never dangle, reach the
//! desired state, are minimal, and keep identifiers stable.

use std::net::{IpAddr, Ipv4Addr};

use lb_core::*;
use proptest::prelude::*;

fn node() -> NodeConfig {
    let mut n = NodeConfig::new("node-a", vec!["192.168.1.10".parse().unwrap()]);
    n.maglev = MaglevConfig::new(251, 9).unwrap();
    n
}

/// A compact description of one service for generation.
#[derive(Debug, Clone)]
struct Spec {
    vip: u8,
    nodeport: Option<u16>,
    maglev: bool,
    affinity: bool,
    local: bool,
    backends: Vec<(u8, u8, bool)>, // (address byte, state index, on this node)
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u8..12,
        proptest::option::of(30000u16..30006),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec((0u8..16, 0u8..4, any::<bool>()), 0..6),
    )
        .prop_map(|(vip, nodeport, maglev, affinity, local, backends)| Spec {
            vip,
            nodeport,
            maglev,
            affinity,
            local,
            backends,
        })
}

fn services(specs: &[Spec]) -> Vec<Service> {
    let mut out: Vec<Service> = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        // Skip specs that would collide with an earlier one: the generator
        // wants valid states here (invalid ones are tested elsewhere).
        if specs[..i]
            .iter()
            .any(|o| o.vip == s.vip || (o.nodeport.is_some() && o.nodeport == s.nodeport))
        {
            continue;
        }
        let svc = service_of(i, s);
        out.push(svc);
    }
    out
}

/// The service a spec describes, named `ns/svc-{i}`.
fn service_of(i: usize, s: &Spec) -> Service {
    let states = [
        BackendState::Active,
        BackendState::Terminating,
        BackendState::Quarantined,
        BackendState::Maintenance,
    ];
    let mut svc = Service::new(ServiceName::new("ns", format!("svc-{i}")));
    let vip = IpAddr::V4(Ipv4Addr::new(10, 96, 0, s.vip));
    svc.frontends.push(FrontendParams::new(
        L3n4Addr::new(vip, 80, L4Proto::Tcp),
        FrontendType::ClusterIp,
    ));
    if let Some(p) = s.nodeport {
        svc.frontends.push(FrontendParams::new(
            L3n4Addr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p, L4Proto::Tcp),
            FrontendType::NodePort,
        ));
    }
    if s.maglev {
        svc.algorithm = Some(LbAlgorithm::Maglev);
    }
    if s.affinity {
        svc.session_affinity = SessionAffinity::client_ip();
    }
    if s.local {
        svc.ext_traffic_policy = TrafficPolicy::Local;
    }
    for (addr, state, here) in &s.backends {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, *addr));
        let mut b = BackendParams::new(L3n4Addr::new(ip, 8080, L4Proto::Tcp))
            .with_state(states[*state as usize]);
        b.node_name = Some(if *here { "node-a" } else { "node-b" }.into());
        svc.backends.push(b);
    }
    svc
}

/// Applies `ops` one by one; every intermediate state must pass the
/// memory dataplane's dangling checks.
fn apply_each(dp: &mut MemoryDataplane, ops: &[Op]) {
    for op in ops {
        dp.apply(std::slice::from_ref(op))
            .unwrap_or_else(|e| panic!("op {op} failed: {e}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn ops_reach_the_desired_state_without_dangling(steps in proptest::collection::vec(proptest::collection::vec(spec(), 0..6), 1..5)) {
        let node = node();
        let mut dp = MemoryDataplane::new();
        let mut rec = Reconciler::new();
        for specs in &steps {
            let desired = DesiredState::build(&node, &services(specs)).unwrap();
            // The incremental plan equals the full recomputation.
            let full = diff(rec.current(), &rec.current().realize(&desired).unwrap());
            let plan = rec.plan(&desired).unwrap();
            prop_assert_eq!(&plan.ops, &full);
            apply_each(&mut dp, &plan.ops);
            rec.commit(plan, &desired);
            prop_assert!(dp.tables() == rec.current(), "dataplane differs from the reconciler");
            // Every frontend in the desired state is programmed with its backends.
            prop_assert_eq!(dp.tables().frontends.len(), desired.frontends.len());
            for (key, d) in &desired.frontends {
                let fe = dp.tables().frontend_by_key(key).expect("frontend programmed");
                let addrs: Vec<_> = fe.backends.iter().map(|s| dp.tables().backends[&s.id].addr).collect();
                let want: Vec<_> = d.backends.iter().map(|b| b.addr).collect();
                prop_assert_eq!(addrs, want);
                prop_assert_eq!(fe.maglev.is_some(), d.algorithm == LbAlgorithm::Maglev);
            }
            // The rev-NAT table holds exactly the frontends.
            prop_assert_eq!(dp.rev_nat().len(), dp.tables().frontends.len());
            // A resync of the same state is a no-op.
            prop_assert!(rec.plan(&desired).unwrap().ops.is_empty());
        }
    }

    #[test]
    fn ids_survive_unrelated_changes(a in proptest::collection::vec(spec(), 1..6), extra in spec()) {
        let node = node();
        let mut rec = Reconciler::new();
        let first = DesiredState::build(&node, &services(&a)).unwrap();
        let plan = rec.plan(&first).unwrap();
        rec.commit(plan, &first);
        let before: Vec<(FrontendKey, ServiceId)> = rec.current().frontends.values().map(|f| (f.key, f.id)).collect();
        let mut more = a.clone();
        more.push(extra);
        let second = DesiredState::build(&node, &services(&more)).unwrap();
        let plan = rec.plan(&second).unwrap();
        rec.commit(plan, &second);
        for (key, id) in before {
            if let Some(fe) = rec.current().frontend_by_key(&key) {
                prop_assert_eq!(fe.id, id);
            }
        }
    }
}

#[test]
fn one_endpoint_change_is_a_handful_of_ops() {
    let node = node();
    let specs: Vec<Spec> = (0..10)
        .map(|i| Spec {
            vip: i,
            nodeport: None,
            maglev: false,
            affinity: false,
            local: false,
            backends: vec![(i * 10, 0, true), (i * 10 + 1, 0, true)],
        })
        .collect();
    let mut rec = Reconciler::new();
    let mut dp = MemoryDataplane::new();
    rec.apply(
        &mut dp,
        &DesiredState::build(&node, &services(&specs)).unwrap(),
    )
    .unwrap();
    let mut changed = specs.clone();
    changed[3].backends[1].0 = 200;
    let plan = rec
        .plan(&DesiredState::build(&node, &services(&changed)).unwrap())
        .unwrap();
    let names: Vec<String> = plan.ops.iter().map(|o| o.to_string()).collect();
    assert_eq!(plan.ops.len(), 3, "{names:#?}");
    assert!(matches!(plan.ops[0], Op::UpsertBackend(_)));
    assert!(matches!(plan.ops[1], Op::UpsertFrontend(_)));
    assert!(matches!(plan.ops[2], Op::DeleteBackend { .. }));
}

#[test]
fn removing_a_service_deletes_frontend_before_backends() {
    let node = node();
    let spec = Spec {
        vip: 1,
        nodeport: Some(30001),
        maglev: true,
        affinity: false,
        local: false,
        backends: vec![(1, 0, true)],
    };
    let mut rec = Reconciler::new();
    let mut dp = MemoryDataplane::new();
    rec.apply(
        &mut dp,
        &DesiredState::build(&node, &services(&[spec])).unwrap(),
    )
    .unwrap();
    let plan = rec.plan(&DesiredState::build(&node, &[]).unwrap()).unwrap();
    let kinds: Vec<&str> = plan
        .ops
        .iter()
        .map(|o| match o {
            Op::DeleteFrontend { .. } => "fe",
            Op::DeleteMaglev { .. } => "maglev",
            Op::DeleteRevNat { .. } => "revnat",
            Op::DeleteBackend { .. } => "backend",
            _ => "upsert",
        })
        .collect();
    // ClusterIP, NodePort on the node IP, NodePort wildcard.
    assert_eq!(
        kinds,
        ["fe", "fe", "fe", "maglev", "maglev", "maglev", "revnat", "revnat", "revnat", "backend"]
    );
    apply_each(&mut dp, &plan.ops);
    assert!(dp.tables().frontends.is_empty() && dp.tables().backends.is_empty());
}

#[test]
fn a_full_dataplane_refuses_the_whole_batch() {
    let node = node();
    let specs: Vec<Spec> = (0..3)
        .map(|i| Spec {
            vip: i,
            nodeport: None,
            maglev: false,
            affinity: false,
            local: false,
            backends: vec![(i, 0, true)],
        })
        .collect();
    let mut dp = MemoryDataplane::with_capacity(Capacity {
        frontends: 2,
        backends: 10,
    });
    let mut rec = Reconciler::new();
    let err = rec
        .apply(
            &mut dp,
            &DesiredState::build(&node, &services(&specs)).unwrap(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("frontends is full"), "{err}");
    // Nothing was applied, nothing was committed.
    assert!(dp.tables().backends.is_empty() && dp.log().is_empty());
    assert!(rec.current().frontends.is_empty());
}

#[test]
fn restored_tables_keep_ids_and_resync_to_nothing() {
    let node = node();
    let specs: Vec<Spec> = (0..4)
        .map(|i| Spec {
            vip: i,
            nodeport: Some(30000 + u16::from(i)),
            maglev: i % 2 == 0,
            affinity: false,
            local: false,
            backends: vec![(i, 0, true), (i + 100, 1, false)],
        })
        .collect();
    let desired = DesiredState::build(&node, &services(&specs)).unwrap();
    let mut rec = Reconciler::new();
    let mut dp = MemoryDataplane::new();
    rec.apply(&mut dp, &desired).unwrap();
    // An agent restart: only what the dataplane holds survives.
    let t = dp.tables();
    let restored = Tables::restore(
        t.frontends.values().cloned(),
        t.backends.values().cloned(),
        t.maglev,
    )
    .unwrap();
    let mut rec2 = Reconciler::with_tables(restored);
    assert!(rec2.plan(&desired).unwrap().ops.is_empty());
    // New entries get fresh IDs, never a restored one.
    let mut more = specs.clone();
    more.push(Spec {
        vip: 50,
        nodeport: None,
        maglev: false,
        affinity: false,
        local: false,
        backends: vec![(77, 0, true)],
    });
    let more = DesiredState::build(&node, &services(&more)).unwrap();
    let plan = rec2.plan(&more).unwrap();
    let old_ids: Vec<ServiceId> = t.frontends.keys().copied().collect();
    for op in &plan.ops {
        if let Op::UpsertFrontend(fe) = op {
            assert!(!old_ids.contains(&fe.id));
        }
    }
    rec2.commit(plan, &more);
    // After the first (full) step, planning is incremental again.
    assert!(rec2.plan(&more).unwrap().ops.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Service-at-a-time updates through `DesiredBuilder` and
    /// `plan_changes` give the same state and ops as a full rebuild.
    #[test]
    fn builder_and_change_sets_match_full_rebuilds(
        steps in proptest::collection::vec((0usize..5, proptest::option::of(spec())), 1..16)
    ) {
        let node = node();
        let mut builder = DesiredBuilder::new(node.clone()).unwrap();
        let mut accepted: std::collections::BTreeMap<usize, Service> = Default::default();
        let mut rec = Reconciler::new();
        let mut dp = MemoryDataplane::new();
        for (i, spec) in &steps {
            match spec {
                Some(spec) => {
                    let svc = service_of(*i, spec);
                    let others: Vec<Service> = accepted
                        .iter()
                        .filter(|(k, _)| *k != i)
                        .map(|(_, v)| v.clone())
                        .chain([svc.clone()])
                        .collect();
                    let alone_ok = DesiredState::build(&node, &others).is_ok();
                    let res = builder.upsert(&svc);
                    prop_assert_eq!(res.is_ok(), alone_ok, "{:?}", res);
                    if res.is_ok() {
                        accepted.insert(*i, svc);
                    }
                }
                None => {
                    let name = ServiceName::new("ns", format!("svc-{i}"));
                    prop_assert_eq!(builder.remove(&name), accepted.remove(i).is_some());
                }
            }
            let all: Vec<Service> = accepted.values().cloned().collect();
            let rebuilt = DesiredState::build(&node, &all).unwrap();
            prop_assert_eq!(builder.state(), &rebuilt);
            let changes = builder.take_changes();
            let by_changes = rec.plan_changes(builder.state(), &changes).unwrap();
            let by_walk = rec.plan(builder.state()).unwrap();
            prop_assert_eq!(&by_changes.ops, &by_walk.ops);
            apply_each(&mut dp, &by_changes.ops);
            rec.commit(by_changes, builder.state());
            prop_assert!(dp.tables() == rec.current());
            prop_assert!(rec.plan(&rebuilt).unwrap().ops.is_empty());
        }
    }
}
