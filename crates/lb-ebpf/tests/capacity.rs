//! Capacity of the maps, on the real kernel with tiny maps
//! (`BPF_PROG_TEST_RUN` for traffic). Privileged (root); bounded (a few
//! hundred test runs, well under 10 s).
//!
//! * Every map the control plane fills refuses a batch that does not fit
//!   with `CapacityExceeded` naming the map, its size and the entries
//!   needed, and the batch leaves every map untouched (all or nothing).
//! * The LRU maps (connection tracking, session affinity) evict instead:
//!   overfilled many times over, every new flow is still balanced and the
//!   newest flows keep their backend.

mod common;

use std::collections::BTreeSet;

use common::*;
use lb_core::*;
use lb_ebpf::abi::*;
use lb_ebpf::MapCapacity;

fn node() -> NodeConfig {
    NodeConfig::new("node-1", vec![ip(NODE_IP)])
}

fn tiny(f: impl FnOnce(&mut MapCapacity)) -> Fixture {
    let mut c = MapCapacity::default();
    f(&mut c);
    Fixture::with_capacity(node(), c)
}

fn backends(n: usize, third: u8) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.0.{third}.{}:80", i + 1))
        .collect()
}

fn clusterip(name: &str, vip: &str, n: usize, third: u8) -> Service {
    let mut s = svc(
        name,
        &[(format!("{vip}:80"), FrontendType::ClusterIp)],
        backends(n, third),
    );
    s.algorithm = Some(LbAlgorithm::Random);
    s
}

/// Entries of every map the control plane writes.
fn fill(fx: &mut Fixture) -> [usize; 5] {
    let m = fx.dp.maps();
    [
        m.services.keys().count(),
        m.backends.keys().count(),
        m.rev_nat.keys().count(),
        m.maglev.keys().count(),
        m.src_range.keys().count(),
    ]
}

/// Applies `services`; expects `CapacityExceeded` on `map` with `max` and
/// `needed`, and every map as it was.
fn refused(fx: &mut Fixture, services: &[Service], map: &str, max: usize, needed: usize) {
    let before = fill(fx);
    let desired = DesiredState::build(&fx.node, services).unwrap();
    let err = fx.rec.apply(&mut fx.dp, &desired).unwrap_err();
    match &err {
        ReconcileError::Dataplane(DataplaneError::CapacityExceeded {
            table,
            capacity,
            needed: n,
        }) => assert_eq!((*table, *capacity, *n), (map, max, needed), "{err}"),
        other => panic!("expected CapacityExceeded on {map}, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(map) && text.contains(&max.to_string()) && text.contains(&needed.to_string()),
        "{text}"
    );
    assert_eq!(fill(fx), before, "a refused batch changed the maps");
}

#[test]
fn services_map_full_refuses_the_batch_and_leaves_the_maps() {
    let mut fx = tiny(|c| c.services = 8);
    let a = clusterip("default/a", "10.96.0.1", 3, 1);
    fx.apply(std::slice::from_ref(&a));
    // b needs 5 more entries: 4 + 5 > 8.
    let b = clusterip("default/b", "10.96.0.2", 4, 2);
    refused(&mut fx, &[a.clone(), b], MAP_SERVICES, 8, 9);
    // A service of 9 entries replacing a: a's 4 entries are removed only
    // after big's are written, so the batch peaks at 13.
    let big = clusterip("default/big", "10.96.0.3", 8, 3);
    refused(&mut fx, &[big], MAP_SERVICES, 8, 13);
    // What fits still applies, and traffic to a still works.
    fx.apply(&[a, clusterip("default/c", "10.96.0.4", 3, 4)]);
    let (rv, out) = fx.ingress(&tcp("192.168.5.2:40000", "10.96.0.1:80"));
    assert_eq!(rv, TC_ACT_OK);
    assert!(endpoints(&out).1.to_string().starts_with("10.0.1."));
}

#[test]
fn backends_rev_nat_maglev_and_source_range_maps_full() {
    let mut fx = tiny(|c| c.backends = 4);
    refused(
        &mut fx,
        &[clusterip("default/a", "10.96.0.1", 5, 1)],
        MAP_BACKENDS,
        4,
        5,
    );

    let mut fx = tiny(|c| c.rev_nat = 2);
    let three: Vec<Service> = (1..=3)
        .map(|i| clusterip(&format!("default/s{i}"), &format!("10.96.0.{i}"), 1, i))
        .collect();
    refused(&mut fx, &three, MAP_REV_NAT, 2, 3);
    fx.apply(&three[..2]);

    let mut fx = tiny(|c| c.maglev = 1);
    let mut m: Vec<Service> = three.clone();
    for s in &mut m {
        s.algorithm = Some(LbAlgorithm::Maglev);
    }
    refused(&mut fx, &m[..2], MAP_MAGLEV, 1, 2);
    fx.apply(&m[..1]);

    let mut fx = tiny(|c| c.src_range = 2);
    let mut lb = svc(
        "default/lb",
        &[("203.0.113.1:80".to_string(), FrontendType::LoadBalancer)],
        backends(1, 1),
    );
    lb.source_ranges = ["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    refused(&mut fx, &[lb.clone()], MAP_SRC_RANGE, 2, 3);
    lb.source_ranges.pop();
    fx.apply(&[lb]);
}

/// A frontend whose backend slots do not fit a `u16` is refused before
/// any write.
#[test]
fn more_backend_slots_than_a_frontend_holds_are_refused() {
    let mut fx = tiny(|_| {});
    let mut node = node();
    node.max_backends_per_frontend = 70_000;
    fx.node = node;
    let many: Vec<String> = (0..65_536u32)
        .map(|i| format!("10.{}.{}.{}:80", 64 + (i >> 16), (i >> 8) & 255, i & 255))
        .collect();
    let s = svc(
        "default/huge",
        &[("10.96.0.1:80".to_string(), FrontendType::ClusterIp)],
        many,
    );
    let desired = DesiredState::build(&fx.node, &[s]).unwrap();
    let err = fx.rec.apply(&mut fx.dp, &desired).unwrap_err();
    assert!(
        matches!(
            err,
            ReconcileError::Dataplane(DataplaneError::CapacityExceeded {
                capacity: 65_535,
                needed: 65_536,
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("backend slots"), "{err}");
    assert_eq!(fill(&mut fx), [0; 5]);
}

/// Connection tracking is an LRU map of 64 entries (a flow takes up to
/// two): 400 new flows evict old entries, every flow is still balanced to
/// a backend, and a recent flow keeps its backend.
#[test]
fn a_full_ct_map_evicts_and_new_flows_keep_working() {
    let mut fx = tiny(|c| c.ct = 64);
    fx.apply(&[clusterip("default/a", "10.96.0.1", 4, 1)]);
    let mut last = None;
    for i in 0..400u32 {
        let src = format!("192.168.{}.{}:{}", 5 + i / 200, 1 + i % 200, 40000 + i);
        let (rv, out) = fx.ingress(&tcp(&src, "10.96.0.1:80"));
        assert_eq!(rv, TC_ACT_OK, "flow {i}");
        let to = endpoints(&out).1;
        assert!(
            to.to_string().starts_with("10.0.1."),
            "flow {i} went to {to}"
        );
        last = Some((src, to));
    }
    let n = fx.dp.maps().ct.keys().count();
    assert!(n <= 64, "{n} CT entries in a map of 64");
    assert!(n > 0);
    // The newest flow's next packets find their entry: same backend.
    let (src, to) = last.unwrap();
    for _ in 0..5 {
        let (_, out) = fx.ingress(&tcp(&src, "10.96.0.1:80"));
        assert_eq!(endpoints(&out).1, to);
    }
}

/// Session affinity is an LRU map of 16 entries: 200 clients evict old
/// entries, each is balanced, and the newest client stays on its backend.
#[test]
fn a_full_affinity_map_evicts_and_clients_keep_working() {
    let mut fx = tiny(|c| c.affinity = 16);
    let mut s = clusterip("default/a", "10.96.0.1", 4, 1);
    s.session_affinity = SessionAffinity::ClientIp { timeout_secs: 300 };
    fx.apply(&[s]);
    let mut seen = BTreeSet::new();
    let mut last = None;
    for i in 0..200u32 {
        let client = format!("192.168.{}.{}", 5 + i / 200, 1 + i % 200);
        let (rv, out) = fx.ingress(&tcp(&format!("{client}:40000"), "10.96.0.1:80"));
        assert_eq!(rv, TC_ACT_OK, "client {i}");
        let to = endpoints(&out).1;
        assert!(
            to.to_string().starts_with("10.0.1."),
            "client {i} went to {to}"
        );
        seen.insert(to);
        last = Some((client, to));
    }
    assert!(seen.len() > 1, "{seen:?}");
    let n = fx.dp.maps().affinity.keys().count();
    assert!(n <= 16 && n > 0, "{n} affinity entries in a map of 16");
    // The newest client's new connections (new source ports) stay put.
    let (client, to) = last.unwrap();
    for port in 41000..41010 {
        let (_, out) = fx.ingress(&tcp(&format!("{client}:{port}"), "10.96.0.1:80"));
        assert_eq!(endpoints(&out).1, to);
    }
}
