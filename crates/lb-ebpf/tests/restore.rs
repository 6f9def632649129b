//! Agent restart: `EbpfDataplane::restore` reads the pinned maps back into
//! lb-core tables with the same identifiers, so planning the same desired
//! state yields no ops. Privileged (root); private bpffs.

mod common;

use common::*;
use lb_core::*;
use lb_ebpf::EbpfDataplane;

/// Services that use every field a frontend carries: two scopes, source
/// ranges in a non-sorted order, affinity, Maglev, backend states,
/// weights, zones and locality, UDP, NodePort on the wildcard.
fn rich_services() -> Vec<Service> {
    let mut web = service(
        "default/web",
        &[
            ("10.96.0.10:80", FrontendType::ClusterIp),
            ("0.0.0.0:30080", FrontendType::NodePort),
            ("203.0.113.7:80", FrontendType::LoadBalancer),
        ],
        &[],
    );
    web.backends = vec![
        BackendParams::new("10.0.1.5:8080".parse().unwrap()).on_node("node-1"),
        BackendParams::new("10.0.2.5:8080".parse().unwrap())
            .on_node("node-2")
            .with_weight(50),
        BackendParams::new("10.0.2.6:8080".parse().unwrap())
            .on_node("node-2")
            .with_state(BackendState::Terminating),
        BackendParams::new("10.0.2.7:8080".parse().unwrap())
            .on_node("node-2")
            .with_state(BackendState::Quarantined),
    ];
    web.backends[0].zone = Some("zone-a".into());
    web.ext_traffic_policy = TrafficPolicy::Local;
    web.session_affinity = SessionAffinity::ClientIp { timeout_secs: 600 };
    web.source_ranges = vec![
        "192.168.0.0/16".parse().unwrap(),
        "10.0.0.0/8".parse().unwrap(),
        "172.16.5.0/24".parse().unwrap(),
    ];
    let mut dns = service(
        "kube-system/dns",
        &[("10.96.0.53:53/UDP", FrontendType::ClusterIp)],
        &[
            "10.0.1.8:5353/UDP",
            "10.0.1.9:5353/UDP",
            "10.0.2.8:5353/UDP",
        ],
    );
    dns.algorithm = Some(LbAlgorithm::Maglev);
    // Maglev with nothing selectable: an empty table.
    let mut gone = service(
        "default/gone",
        &[("10.96.0.66:80", FrontendType::ClusterIp)],
        &[],
    );
    gone.algorithm = Some(LbAlgorithm::Maglev);
    gone.backends =
        vec![BackendParams::new("10.0.1.10:80".parse().unwrap())
            .with_state(BackendState::Maintenance)];
    vec![web, dns, gone]
}

fn node() -> NodeConfig {
    let mut node = NodeConfig::new("node-1", vec![ip(NODE_IP)]);
    node.maglev = MaglevConfig::new(251, 7).unwrap();
    node
}

#[test]
fn restore_rebuilds_the_tables_and_the_same_state_plans_no_ops() {
    let node = node();
    let mut fx = Fixture::with_node(node.clone());
    let services = rich_services();
    fx.apply(&services);
    let before = fx.rec.current().clone();
    assert!(before.frontends.len() >= 5, "{:?}", before.frontends.keys());

    // A restarted agent: new dataplane handle on the same pins, no memory.
    let dp = EbpfDataplane::open(fx.loaded.pin_dir(), &node).expect("reopen");
    let restored = dp.restore().expect("restore");
    assert_eq!(restored.backends, before.backends);
    for (id, fe) in &before.frontends {
        assert_eq!(restored.frontends.get(id), Some(fe), "frontend {id}");
    }
    assert_eq!(restored.frontends.len(), before.frontends.len());

    let desired = DesiredState::build(&node, &services).unwrap();
    let rec = Reconciler::with_tables(restored);
    let plan = rec.plan(&desired).unwrap();
    assert!(
        plan.ops.is_empty(),
        "restart must not rewrite: {:#?}",
        plan.ops
    );

    // New entries after the restart get fresh IDs; old IDs stay.
    let mut more = services.clone();
    more.push(service(
        "default/new",
        &[("10.96.0.99:80", FrontendType::ClusterIp)],
        &["10.0.1.99:80"],
    ));
    let plan = rec
        .plan(&DesiredState::build(&node, &more).unwrap())
        .unwrap();
    // Only the new service's backend, rev-NAT entry and frontend.
    assert_eq!(plan.ops.len(), 3, "{:#?}", plan.ops);
    for op in &plan.ops {
        match op {
            Op::UpsertBackend(b) => {
                assert_eq!(b.addr, "10.0.1.99:80".parse().unwrap());
                assert!(!before.backends.contains_key(&b.id), "{op}");
            }
            Op::UpsertRevNat { id, .. } => {
                assert!(!before.frontends.contains_key(&ServiceId(id.0)), "{op}")
            }
            Op::UpsertFrontend(f) => {
                assert_eq!(f.service.name, "new");
                assert!(!before.frontends.contains_key(&f.id), "{op}");
            }
            other => panic!("unexpected {other}"),
        }
    }
}

#[test]
fn a_name_too_long_for_the_metadata_is_rewritten_in_place() {
    let node = node();
    let mut fx = Fixture::with_node(node.clone());
    let long = format!("default/{}", "x".repeat(200));
    let services = vec![service(
        &long,
        &[("10.96.0.10:80", FrontendType::ClusterIp)],
        &["10.0.1.5:8080"],
    )];
    fx.apply(&services);
    let before = fx.rec.current().clone();
    let dp = EbpfDataplane::open(fx.loaded.pin_dir(), &node).expect("reopen");
    let restored = dp.restore().expect("restore");
    let fe = restored.frontends.values().next().unwrap();
    assert_eq!(
        fe.service.to_string(),
        "/",
        "an unknown name comes back empty"
    );
    let plan = Reconciler::with_tables(restored)
        .plan(&DesiredState::build(&node, &services).unwrap())
        .unwrap();
    // One in-place rewrite of the same frontend ID: no delete, no new ID.
    assert_eq!(plan.ops.len(), 1, "{:#?}", plan.ops);
    match &plan.ops[0] {
        Op::UpsertFrontend(f) => assert_eq!(Some(f), before.frontends.get(&f.id)),
        other => panic!("unexpected {other}"),
    }
}
