//! Agent restart: `EbpfDataplane::restore` reads the pinned maps back into
//! lb-core tables with the same identifiers, so planning the same desired
//! state yields no ops. Privileged (root); private bpffs.

mod common;

use common::*;
use lb_core::*;
use lb_ebpf::EbpfDataplane;

/// `name` with `frontends` and every backend field: the first of
/// `backends` on this node in zone-a, then one on node-2 of weight 50, one
/// terminating and one quarantined; traffic policy Local, ClientIP
/// affinity, and the source ranges `ranges` in the order given.
fn rich_web(
    name: &str,
    frontends: &[(&str, FrontendType)],
    backends: [&str; 4],
    ranges: [&str; 3],
) -> Service {
    let mut web = service(name, frontends, &[]);
    web.backends = vec![
        BackendParams::new(backends[0].parse().unwrap()).on_node("node-1"),
        BackendParams::new(backends[1].parse().unwrap())
            .on_node("node-2")
            .with_weight(50),
        BackendParams::new(backends[2].parse().unwrap())
            .on_node("node-2")
            .with_state(BackendState::Terminating),
        BackendParams::new(backends[3].parse().unwrap())
            .on_node("node-2")
            .with_state(BackendState::Quarantined),
    ];
    web.backends[0].zone = Some("zone-a".into());
    web.ext_traffic_policy = TrafficPolicy::Local;
    web.session_affinity = SessionAffinity::ClientIp { timeout_secs: 600 };
    web.source_ranges = ranges.iter().map(|r| r.parse().unwrap()).collect();
    web
}

/// `name`: a UDP ClusterIP `frontend` with Maglev over `backends`.
fn maglev_dns(name: &str, frontend: &str, backends: &[&str]) -> Service {
    let mut dns = service(name, &[(frontend, FrontendType::ClusterIp)], backends);
    dns.algorithm = Some(LbAlgorithm::Maglev);
    dns
}

/// Services that use every field a frontend carries: two scopes, source
/// ranges in a non-sorted order, affinity, Maglev, backend states,
/// weights, zones and locality, UDP, NodePort on the wildcard.
fn rich_services() -> Vec<Service> {
    let web = rich_web(
        "default/web",
        &[
            ("10.96.0.10:80", FrontendType::ClusterIp),
            ("0.0.0.0:30080", FrontendType::NodePort),
            ("203.0.113.7:80", FrontendType::LoadBalancer),
        ],
        [
            "10.0.1.5:8080",
            "10.0.2.5:8080",
            "10.0.2.6:8080",
            "10.0.2.7:8080",
        ],
        ["192.168.0.0/16", "10.0.0.0/8", "172.16.5.0/24"],
    );
    let dns = maglev_dns(
        "kube-system/dns",
        "10.96.0.53:53/UDP",
        &[
            "10.0.1.8:5353/UDP",
            "10.0.1.9:5353/UDP",
            "10.0.2.8:5353/UDP",
        ],
    );
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

/// IPv6 and dual-stack services: every field of [`rich_services`] on IPv6
/// addresses (every frontend type, wildcard `[::]` NodePort and HostPort, IPv6 source ranges in a non-sorted
/// order, UDP Maglev), plus one service with frontends and backends of
/// both families and source ranges of both.
fn rich_services6() -> Vec<Service> {
    let web = rich_web(
        "default/web6",
        &[
            ("[fd00:96::10]:80", FrontendType::ClusterIp),
            ("[::]:30080", FrontendType::NodePort),
            ("[2001:db8:7::7]:80", FrontendType::LoadBalancer),
            ("[2001:db8:8::8]:8080", FrontendType::ExternalIp),
            ("[::]:9090", FrontendType::HostPort),
        ],
        [
            "[fd00:a::5]:8080",
            "[fd00:b::5]:8080",
            "[fd00:b::6]:8080",
            "[fd00:b::7]:8080",
        ],
        ["fd00:c::/64", "2001:db8::/32", "fd00:1:2::/48"],
    );
    let dns = maglev_dns(
        "kube-system/dns6",
        "[fd00:96::53]:53/UDP",
        &[
            "[fd00:a::8]:5353/UDP",
            "[fd00:a::9]:5353/UDP",
            "[fd00:b::8]:5353/UDP",
        ],
    );
    let mut dual = service(
        "default/dual",
        &[
            ("10.96.0.77:80", FrontendType::ClusterIp),
            ("[fd00:96::77]:80", FrontendType::ClusterIp),
            ("0.0.0.0:30077", FrontendType::NodePort),
            ("[::]:30077", FrontendType::NodePort),
            ("203.0.113.77:80", FrontendType::LoadBalancer),
            ("[2001:db8:77::77]:80", FrontendType::LoadBalancer),
        ],
        &[
            "10.0.1.77:80",
            "10.0.2.77:80",
            "[fd00:a::77]:80",
            "[fd00:b::77]:80",
        ],
    );
    dual.algorithm = Some(LbAlgorithm::Maglev);
    dual.source_ranges = vec![
        "2001:db8::/32".parse().unwrap(),
        "192.168.0.0/16".parse().unwrap(),
        "fd00::/8".parse().unwrap(),
    ];
    dual.backends[2].zone = Some("zone-b".into());
    vec![web, dns, dual]
}

/// Every entry of the maps the dataplane writes, as sorted debug lines.
fn snapshot(maps: &lb_ebpf::Maps) -> Vec<String> {
    fn lines<K: std::fmt::Debug, V: std::fmt::Debug>(
        tag: &str,
        it: impl Iterator<Item = Result<(K, V), aya::maps::MapError>>,
    ) -> Vec<String> {
        it.map(|r| format!("{tag} {:?}", r.unwrap())).collect()
    }
    let mut out = Vec::new();
    out.extend(lines("svc", maps.services.iter()));
    out.extend(lines("svc6", maps.services6.iter()));
    out.extend(lines("be", maps.backends.iter()));
    out.extend(lines("be6", maps.backends6.iter()));
    out.extend(lines("revnat", maps.rev_nat.iter()));
    out.extend(lines("revnat6", maps.rev_nat6.iter()));
    for r in maps.src_range.iter() {
        let (k, pos) = r.unwrap();
        out.push(format!("range {:?}/{} = {pos}", k.data(), k.prefix_len()));
    }
    for r in maps.src_range6.iter() {
        let (k, pos) = r.unwrap();
        out.push(format!("range6 {:?}/{} = {pos}", k.data(), k.prefix_len()));
    }
    out.extend(lines("svcmeta", maps.svc_meta.iter()));
    out.extend(lines("bemeta", maps.be_meta.iter()));
    for k in maps.maglev.keys() {
        let k = k.unwrap();
        let table: Vec<u32> = maps
            .maglev
            .get(&k, 0)
            .unwrap()
            .iter()
            .map(|r| r.unwrap())
            .collect();
        out.push(format!("maglev {k} {table:?}"));
    }
    out.extend(counter_lines(maps));
    out.sort();
    out
}

/// IPv6-only and dual-stack services (next to the IPv4 ones) survive a
/// restart: the restored tables equal the programmed ones, the same
/// desired state plans no op, and every map is byte for byte what it was.
/// Bounded: three small applies.
#[test]
fn ipv6_and_dual_stack_services_survive_a_restart_byte_for_byte() {
    let mut node = node();
    node.node_ips.push(ip("fd00:1::10"));
    let mut fx = Fixture::with_node(node.clone());
    let mut services = rich_services();
    services.extend(rich_services6());
    fx.apply(&services);
    let before = fx.rec.current().clone();
    let v6 = before
        .frontends
        .values()
        .filter(|f| f.key.addr.addr.is_ipv6())
        .count();
    assert!(v6 >= 10, "{v6} IPv6 frontends");
    let maps_before = snapshot(fx.dp.maps());
    assert!(maps_before.iter().any(|l| l.starts_with("range6 ")));
    assert!(maps_before.iter().any(|l| l.starts_with("be6 ")));

    let mut dp = EbpfDataplane::open(fx.loaded.pin_dir(), &node).expect("reopen");
    assert_eq!(snapshot(dp.maps()), maps_before, "open writes nothing");
    let restored = dp.restore().expect("restore");
    assert_eq!(restored.backends, before.backends);
    // A frontend's source ranges of the other family are never programmed
    // (they cannot match its clients): those of `dual`'s LoadBalancer
    // frontends come back without them, all else exactly.
    let mixed = |fe: &Frontend| {
        fe.source_ranges
            .iter()
            .any(|n| n.addr().is_ipv4() != fe.key.addr.addr.is_ipv4())
    };
    let mut rewritten = std::collections::BTreeSet::new();
    for (id, fe) in &before.frontends {
        let got = restored.frontends.get(id).expect("restored");
        if mixed(fe) {
            let mut own = fe.clone();
            own.source_ranges
                .retain(|n| n.addr().is_ipv4() == fe.key.addr.addr.is_ipv4());
            assert_eq!(got, &own, "frontend {id}");
            rewritten.insert(*id);
        } else {
            assert_eq!(got, fe, "frontend {id}");
        }
    }
    assert_eq!(restored.frontends.len(), before.frontends.len());
    assert_eq!(rewritten.len(), 2, "dual's LoadBalancer frontends");

    let desired = DesiredState::build(&node, &services).unwrap();
    let mut rec = Reconciler::with_tables(restored);
    let plan = rec.plan(&desired).unwrap();
    let ids: std::collections::BTreeSet<ServiceId> = plan
        .ops
        .iter()
        .map(|op| match op {
            Op::UpsertFrontend(f) => f.id,
            other => panic!("restart must not rewrite more: {other}"),
        })
        .collect();
    assert_eq!(ids, rewritten, "in place, same ids: {:#?}", plan.ops);
    rec.apply(&mut dp, &desired).expect("apply after restart");
    assert_eq!(snapshot(dp.maps()), maps_before, "byte for byte");

    // A change after the restart goes to the IPv6 maps in place.
    let mut less = services.clone();
    less.retain(|s| s.name.name != "dns6");
    rec.apply(&mut dp, &DesiredState::build(&node, &less).unwrap())
        .expect("remove dns6");
    let after = snapshot(dp.maps());
    assert!(after.len() < maps_before.len());
    assert!(
        !after
            .iter()
            .any(|l| l.starts_with("svc6 ") && l.contains("dport: 13568")),
        "port 53 entries gone: {after:#?}"
    );
}
