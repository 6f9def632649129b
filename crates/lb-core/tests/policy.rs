//! Packet-level tests against `decide` for issue 7's policies: internal
//! traffic policy Local, weighted Maglev, the Maglev hash seed across nodes,
//! and topology-aware routing (zone hints, PreferClose).

use std::collections::BTreeMap;

use lb_core::*;
use proptest::prelude::*;

const NODE_IP: &str = "192.168.1.10";

fn node(zone: Option<&str>) -> NodeConfig {
    let mut n = NodeConfig::new("node-a", vec![NODE_IP.parse().unwrap()]);
    n.zone = zone.map(String::from);
    n
}

fn clusterip(backends: Vec<BackendParams>) -> Service {
    let mut svc = Service::new("default/web".parse().unwrap());
    svc.frontends.push(FrontendParams::new(
        "10.96.0.10:80".parse().unwrap(),
        FrontendType::ClusterIp,
    ));
    svc.backends = backends;
    svc
}

fn be(i: u8) -> BackendParams {
    BackendParams::new(format!("10.0.0.{i}:80").parse().unwrap())
}

fn program(node: &NodeConfig, services: &[Service]) -> MemoryDataplane {
    let mut dp = MemoryDataplane::new();
    Reconciler::new()
        .apply(&mut dp, &DesiredState::build(node, services).unwrap())
        .unwrap();
    dp
}

fn key(sport: u16) -> FlowKey {
    FlowKey {
        src: "10.1.0.1".parse().unwrap(),
        sport,
        dst: "10.96.0.10".parse().unwrap(),
        dport: 80,
        proto: L4Proto::Tcp,
    }
}

fn pick(dp: &MemoryDataplane, node: &NodeConfig, k: &FlowKey, entropy: u32) -> Option<String> {
    let ctx = FlowContext {
        now: 0,
        entropy,
        scope: Scope::External,
    };
    match decide(dp.tables(), node, &mut FlowState::new(), k, ctx) {
        Verdict::Forward(f) => Some(f.backend.host_port().to_string()),
        _ => None,
    }
}

#[test]
fn internal_traffic_policy_local_keeps_clusterip_on_the_node() {
    let n = node(None);
    let mut svc = clusterip(vec![be(1).on_node("node-a"), be(2).on_node("node-b")]);
    svc.int_traffic_policy = TrafficPolicy::Local;
    let dp = program(&n, &[svc.clone()]);
    for sport in 0..40 {
        let v = decide(
            dp.tables(),
            &n,
            &mut FlowState::new(),
            &key(sport),
            FlowContext {
                now: 0,
                entropy: u32::from(sport) * 7919,
                scope: Scope::Internal,
            },
        );
        let Verdict::Forward(f) = v else {
            panic!("{v:?}")
        };
        assert_eq!(f.backend.host_port().to_string(), "10.0.0.1:80");
        assert_eq!(f.snat, None, "the client address is kept");
    }
    // No local backend: dropped, reason no_local_backend.
    svc.backends = vec![be(2).on_node("node-b")];
    let dp = program(&n, &[svc]);
    assert!(matches!(
        decide(
            dp.tables(),
            &n,
            &mut FlowState::new(),
            &key(1),
            FlowContext {
                now: 0,
                entropy: 0,
                scope: Scope::Internal
            }
        ),
        Verdict::Drop {
            reason: DropReason::NoLocalBackend,
            ..
        }
    ));
}

#[test]
fn maglev_is_weighted_by_table_entries_and_weight_zero_takes_nothing() {
    let n = node(None);
    let mut svc = clusterip(vec![
        be(1).with_weight(300),
        be(2).with_weight(100),
        be(3).with_weight(0),
    ]);
    svc.algorithm = Some(LbAlgorithm::Maglev);
    let dp = program(&n, &[svc]);
    let fe = dp.tables().frontends.values().next().unwrap();
    let table = fe.maglev.as_ref().expect("maglev table");
    let mut entries: BTreeMap<BackendId, usize> = BTreeMap::new();
    for id in table.iter() {
        *entries.entry(*id).or_default() += 1;
    }
    let share = |i: u8| {
        let id = dp
            .tables()
            .backends
            .values()
            .find(|b| b.addr.host_port().to_string() == format!("10.0.0.{i}:80"))
            .unwrap()
            .id;
        entries.get(&id).copied().unwrap_or(0)
    };
    let (a, b) = (share(1), share(2));
    assert_eq!(share(3), 0, "weight 0 owns no entry");
    let ratio = a as f64 / b as f64;
    assert!((2.7..3.3).contains(&ratio), "entries {a}:{b}");
    // Flows follow the entries.
    let mut hits: BTreeMap<String, u32> = BTreeMap::new();
    for sport in 0..4000 {
        *hits
            .entry(pick(&dp, &n, &key(sport), 0).unwrap())
            .or_default() += 1;
    }
    assert!(!hits.contains_key("10.0.0.3:80"), "{hits:?}");
    let ratio = f64::from(hits["10.0.0.1:80"]) / f64::from(hits["10.0.0.2:80"]);
    assert!((2.4..3.6).contains(&ratio), "{hits:?}");
}

/// Two nodes that built their state independently (different service sets,
/// so different IDs) agree on every flow's backend under one seed; another
/// seed moves flows.
#[test]
fn the_maglev_seed_makes_nodes_agree_and_other_seeds_differ() {
    let backends: Vec<BackendParams> = (1..=9).map(be).collect();
    let mut svc = clusterip(backends.clone());
    svc.algorithm = Some(LbAlgorithm::Maglev);
    let seed = MaglevConfig::seed_from_str("JLfvgnHc2kaSUFaI");
    let with_seed = |seed: u32| {
        let mut n = node(None);
        n.maglev = MaglevConfig::new(1021, seed).unwrap();
        n
    };
    let node_a = with_seed(seed);
    let dp_a = program(&node_a, std::slice::from_ref(&svc));
    let node_b = with_seed(seed);
    let mut other = clusterip(backends.iter().rev().cloned().collect());
    other.name = "default/other".parse().unwrap();
    other.frontends[0].addr = "10.96.0.99:80".parse().unwrap();
    let mut svc_b = svc.clone();
    svc_b.backends.reverse();
    let dp_b = program(&node_b, &[other, svc_b]);
    let node_c = with_seed(seed ^ 1);
    let dp_c = program(&node_c, std::slice::from_ref(&svc));
    let mut differ = 0;
    for sport in 0..500 {
        let k = key(sport);
        let a = pick(&dp_a, &node_a, &k, 1);
        assert_eq!(a, pick(&dp_b, &node_b, &k, 2), "{k:?}");
        if a != pick(&dp_c, &node_c, &k, 1) {
            differ += 1;
        }
    }
    assert!(
        differ > 250,
        "another seed moved only {differ} of 500 flows"
    );
}

#[test]
fn zone_hints_keep_new_flows_in_the_zone_and_fall_back() {
    let hinted = vec![
        be(1).in_zone("a").with_zone_hints(["a"]),
        be(2).in_zone("b").with_zone_hints(["b"]),
        be(3).in_zone("a").with_zone_hints(["a"]),
    ];
    let n = node(Some("a"));
    let dp = program(&n, &[clusterip(hinted.clone())]);
    let fe = dp.tables().frontends.values().next().unwrap();
    assert_eq!(fe.selectable, 2);
    for e in 0..200u32 {
        let b = pick(&dp, &n, &key(1), e * 40_503).unwrap();
        assert_ne!(b, "10.0.0.2:80");
    }
    // A node in zone c (no backend hinted for it), and a node without a
    // zone: every backend.
    for n in [node(Some("c")), node(None)] {
        let dp = program(&n, &[clusterip(hinted.clone())]);
        assert_eq!(dp.tables().frontends.values().next().unwrap().selectable, 3);
    }
    // One ready backend without hints: every backend.
    let mut missing = hinted.clone();
    missing.push(be(4).in_zone("a"));
    let dp = program(&n, &[clusterip(missing)]);
    assert_eq!(dp.tables().frontends.values().next().unwrap().selectable, 4);
    // Traffic policy Local is not zone-filtered.
    let mut local = clusterip(
        hinted
            .iter()
            .cloned()
            .map(|b| b.on_node("node-a"))
            .collect(),
    );
    local.int_traffic_policy = TrafficPolicy::Local;
    let dp = program(&n, &[local]);
    assert_eq!(dp.tables().frontends.values().next().unwrap().selectable, 3);
}

#[test]
fn prefer_close_prefers_the_node_zone_then_falls_back() {
    let zoned = vec![be(1).in_zone("a"), be(2).in_zone("b"), be(3).in_zone("b")];
    let mut svc = clusterip(zoned);
    svc.traffic_distribution = TrafficDistribution::PreferClose;
    let n = node(Some("b"));
    let dp = program(&n, &[svc.clone()]);
    for e in 0..100u32 {
        assert_ne!(pick(&dp, &n, &key(1), e * 40_503).unwrap(), "10.0.0.1:80");
    }
    // Nothing in zone c: all of them.
    let n = node(Some("c"));
    let dp = program(&n, &[svc.clone()]);
    assert_eq!(dp.tables().frontends.values().next().unwrap().selectable, 3);
    // The same-zone backend terminates: the other zone takes over.
    svc.traffic_distribution = TrafficDistribution::PreferClose;
    svc.backends[0].state = BackendState::Terminating;
    let n = node(Some("a"));
    let dp = program(&n, &[svc]);
    for e in 0..50u32 {
        assert_ne!(pick(&dp, &n, &key(1), e * 40_503).unwrap(), "10.0.0.1:80");
    }
}

proptest! {
    /// Whatever the zones, hints and states: a new flow goes to a backend
    /// hinted for the node's zone whenever one that is ready exists and
    /// every ready backend has hints; a frontend with a ready backend never
    /// drops; with Maglev too.
    #[test]
    fn zone_filtering_never_strands_a_frontend(
        spec in proptest::collection::vec((0u8..3, 0u8..8, 0u8..3), 1..8),
        node_zone in 0u8..4,
        entropy: u32,
        sport: u16,
        maglev: bool,
        prefer_close: bool,
    ) {
        const ZONES: [&str; 3] = ["a", "b", "c"];
        let states = [BackendState::Active, BackendState::Terminating, BackendState::Quarantined];
        let backends: Vec<BackendParams> = spec
            .iter()
            .enumerate()
            .map(|(i, (zone, hints, state))| {
                let hints: Vec<&str> = (0..3).filter(|z| hints & (1 << z) != 0).map(|z| ZONES[z]).collect();
                be(i as u8 + 1)
                    .in_zone(ZONES[*zone as usize])
                    .with_zone_hints(hints)
                    .with_state(states[*state as usize])
            })
            .collect();
        let mut svc = clusterip(backends.clone());
        if maglev {
            svc.algorithm = Some(LbAlgorithm::Maglev);
        }
        if prefer_close {
            svc.traffic_distribution = TrafficDistribution::PreferClose;
        }
        let zone = ZONES.get(node_zone as usize).copied();
        let n = node(zone);
        let dp = program(&n, &[svc]);
        let got = pick(&dp, &n, &key(sport), entropy);
        let ready: Vec<&BackendParams> = backends.iter().filter(|b| b.state == BackendState::Active).collect();
        let any_term = backends.iter().any(|b| b.state == BackendState::Terminating);
        match &got {
            None => prop_assert!(ready.is_empty() && !any_term),
            Some(addr) => {
                let b = backends.iter().find(|b| b.addr.host_port().to_string() == *addr).unwrap();
                if !ready.is_empty() {
                    prop_assert_eq!(b.state, BackendState::Active);
                    let explicit = ready.iter().any(|b| !b.zone_hints.is_empty());
                    let hinted = |x: &BackendParams, z: &str| if explicit || !prefer_close {
                        x.zone_hints.iter().any(|h| h == z)
                    } else {
                        x.zone.as_deref() == Some(z)
                    };
                    let all_hinted = ready.iter().all(|x| if explicit || !prefer_close { !x.zone_hints.is_empty() } else { x.zone.is_some() });
                    if let Some(z) = zone {
                        if all_hinted && ready.iter().any(|x| hinted(x, z)) {
                            prop_assert!(hinted(b, z), "{addr} not hinted for {z}");
                        }
                    }
                }
            }
        }
    }

    /// PreferSameNode: a new flow stays on this node whenever a ready
    /// backend runs here and every ready backend's node is known; otherwise
    /// it stays in the node's zone when a ready backend is there and every
    /// ready backend's zone is known; a frontend with a ready backend
    /// never drops.
    #[test]
    fn prefer_same_node_keeps_flows_on_the_node_then_the_zone(
        spec in proptest::collection::vec((0u8..4, 0u8..4, any::<bool>()), 1..8),
        node_zone in 0u8..4,
        entropy: u32,
        sport: u16,
        maglev: bool,
    ) {
        const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
        const ZONES: [&str; 3] = ["a", "b", "c"];
        let backends: Vec<BackendParams> = spec
            .iter()
            .enumerate()
            .map(|(i, (node, zone, active))| {
                let mut b = be(i as u8 + 1);
                b.node_name = NODES.get(*node as usize).map(|n| n.to_string());
                b.zone = ZONES.get(*zone as usize).map(|z| z.to_string());
                if !active {
                    b = b.with_state(BackendState::Terminating);
                }
                b
            })
            .collect();
        let mut svc = clusterip(backends.clone());
        svc.traffic_distribution = TrafficDistribution::PreferSameNode;
        if maglev {
            svc.algorithm = Some(LbAlgorithm::Maglev);
        }
        let zone = ZONES.get(node_zone as usize).copied();
        let n = node(zone);
        let dp = program(&n, &[svc]);
        let got = pick(&dp, &n, &key(sport), entropy);
        let ready: Vec<&BackendParams> = backends.iter().filter(|b| b.state == BackendState::Active).collect();
        if ready.is_empty() {
            return Ok(());
        }
        let addr = got.expect("a frontend with a ready backend never drops");
        let b = backends.iter().find(|b| b.addr.host_port().to_string() == addr).unwrap();
        prop_assert_eq!(b.state, BackendState::Active);
        let here = |x: &BackendParams| x.node_name.as_deref() == Some("node-a");
        if ready.iter().all(|x| x.node_name.is_some()) && ready.iter().any(|x| here(x)) {
            prop_assert!(here(b), "{addr} is not on this node");
        } else if let Some(z) = zone {
            let in_zone = |x: &BackendParams| x.zone.as_deref() == Some(z);
            if ready.iter().all(|x| x.zone.is_some()) && ready.iter().any(|x| in_zone(x)) {
                prop_assert!(in_zone(b), "{addr} is not in zone {z}");
            }
        }
    }
}
