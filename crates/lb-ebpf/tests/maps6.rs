//! IPv6 in the maps: a dual-stack service programs its IPv6 frontends,
//! backend slots, backends, reverse-NAT entries and source ranges into the
//! `lb6_*` maps and its IPv4 ones into the `lb4_*` maps, every entry as the
//! datapath reads it; Maglev tables, counters and metadata are shared.
//! NAT46/64 (a frontend with backends of the other family) is refused
//! before anything is written when the dataplane has it off. Privileged (root); private bpffs; no
//! packets (bounded: a few map reads).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};

use common::*;
use lb_core::*;
use lb_ebpf::abi::*;
use lb_ebpf::Maps;

const NODE_IP6: &str = "fd00:1::10";

fn node() -> NodeConfig {
    let mut node = NodeConfig::new("node-1", vec![ip(NODE_IP), ip(NODE_IP6)]);
    node.maglev = MaglevConfig::new(251, 7).unwrap();
    node
}

/// `web`: ClusterIP, NodePort (wildcard, traffic policy Local: two scopes)
/// and LoadBalancer (source ranges of both families) in both families;
/// IPv6 backends with weights, states, locality.
fn dual_stack() -> Service {
    let mut web = service(
        "default/web",
        &[
            ("10.96.0.10:80", FrontendType::ClusterIp),
            ("[fd00:96::10]:80", FrontendType::ClusterIp),
            ("0.0.0.0:30080", FrontendType::NodePort),
            ("[::]:30080", FrontendType::NodePort),
            ("203.0.113.7:80", FrontendType::LoadBalancer),
            ("[2001:db8:1::7]:80", FrontendType::LoadBalancer),
        ],
        &[],
    );
    web.backends = vec![
        BackendParams::new("10.0.1.5:8080".parse().unwrap()).on_node("node-1"),
        BackendParams::new("10.0.2.5:8080".parse().unwrap()).on_node("node-2"),
        BackendParams::new("[fd00:a::5]:8080".parse().unwrap()).on_node("node-1"),
        BackendParams::new("[fd00:b::5]:8080".parse().unwrap())
            .on_node("node-2")
            .with_weight(50),
        BackendParams::new("[fd00:b::6]:8080".parse().unwrap())
            .on_node("node-2")
            .with_state(BackendState::Terminating),
    ];
    web.backends[2].zone = Some("zone-a".into());
    web.ext_traffic_policy = TrafficPolicy::Local;
    web.session_affinity = SessionAffinity::ClientIp { timeout_secs: 300 };
    web.source_ranges = vec![
        "fd00:c::/64".parse().unwrap(),
        "192.168.0.0/16".parse().unwrap(),
        "2001:db8::/32".parse().unwrap(),
    ];
    web
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

/// A map's entries as sorted debug lines.
fn dump<K: std::fmt::Debug, V: std::fmt::Debug>(
    it: impl Iterator<Item = Result<(K, V), aya::maps::MapError>>,
) -> Vec<String> {
    let mut v: Vec<String> = it.map(|r| format!("{:?}", r.unwrap())).collect();
    v.sort();
    v
}

fn entries<K: aya::Pod + Ord, V: aya::Pod>(
    it: impl Iterator<Item = Result<(K, V), aya::maps::MapError>>,
) -> BTreeMap<K, V> {
    it.map(|r| r.unwrap()).collect()
}

/// Every `lb6_services` entry, as `(address, port, proto, scope, slot)`.
fn services6(maps: &Maps) -> BTreeMap<([u8; 16], u16, u8, u8, u16), Lb4Service> {
    maps.services6
        .iter()
        .map(|r| {
            let (k, v) = r.unwrap();
            assert_eq!(k.pad, [0; 2]);
            (
                (
                    k.address,
                    u16::from_be(k.dport),
                    k.proto,
                    k.scope,
                    k.backend_slot,
                ),
                v,
            )
        })
        .collect()
}

#[test]
fn a_dual_stack_service_fills_the_lb6_maps_entry_by_entry() {
    let mut fx = Fixture::with_node(node());
    fx.apply(&[dual_stack()]);
    let tables = fx.rec.current().clone();
    let id_of = |addr: &str, scope: Scope| {
        let addr: L3n4Addr = addr.parse().unwrap();
        tables
            .frontends
            .values()
            .find(|f| f.key.addr == addr && f.key.scope == scope)
            .unwrap_or_else(|| panic!("no frontend {addr} {scope:?}"))
            .id
    };
    let be_id = |addr: &str| {
        let addr: L3n4Addr = addr.parse().unwrap();
        tables
            .backends
            .values()
            .find(|b| b.addr == addr)
            .unwrap_or_else(|| panic!("no backend {addr}"))
            .id
            .0
    };
    let maps = fx.dp.maps();

    // Backends: each family in its own map, by id.
    let be6 = entries(maps.backends6.iter());
    let want6: BTreeMap<u32, Lb6Backend> = [
        ("[fd00:a::5]:8080", BE_F_LOCAL),
        ("[fd00:b::5]:8080", 0),
        ("[fd00:b::6]:8080", 0),
    ]
    .into_iter()
    .map(|(a, flags)| {
        let addr: L3n4Addr = a.parse().unwrap();
        let IpAddr::V6(ip) = addr.addr else { panic!() };
        (
            be_id(a),
            Lb6Backend {
                address: ip.octets(),
                port: 8080u16.to_be(),
                proto: 6,
                flags,
                // Checked below (dense, one per backend).
                stats_slot: be6.get(&be_id(a)).map_or(u32::MAX, |b| b.stats_slot),
            },
        )
    })
    .collect();
    assert_eq!(be6, want6);
    let be4 = entries(maps.backends.iter());
    assert_eq!(
        be4.keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([be_id("10.0.1.5:8080"), be_id("10.0.2.5:8080")])
    );
    assert!(be4.keys().all(|id| !be6.contains_key(id)), "one id space");

    // Frontends: ClusterIP; NodePort on the node IP and the wildcard, each
    // in both scopes (Local policy); LoadBalancer in both scopes.
    let svc6 = services6(maps);
    let tcp = 6;
    let fes6 = [
        (
            "[fd00:96::10]:80",
            v6("fd00:96::10"),
            80,
            FrontendType::ClusterIp,
            Scope::External,
        ),
        (
            "[fd00:1::10]:30080",
            v6(NODE_IP6),
            30080,
            FrontendType::NodePort,
            Scope::External,
        ),
        (
            "[fd00:1::10]:30080",
            v6(NODE_IP6),
            30080,
            FrontendType::NodePort,
            Scope::Internal,
        ),
        (
            "[::]:30080",
            [0; 16],
            30080,
            FrontendType::NodePort,
            Scope::External,
        ),
        (
            "[::]:30080",
            [0; 16],
            30080,
            FrontendType::NodePort,
            Scope::Internal,
        ),
        (
            "[2001:db8:1::7]:80",
            v6("2001:db8:1::7"),
            80,
            FrontendType::LoadBalancer,
            Scope::External,
        ),
        (
            "[2001:db8:1::7]:80",
            v6("2001:db8:1::7"),
            80,
            FrontendType::LoadBalancer,
            Scope::Internal,
        ),
    ];
    // Slot order: selectable first (by address), then the terminating one.
    let slots = [
        (be_id("[fd00:a::5]:8080"), 100, BE_STATE_ACTIVE),
        (be_id("[fd00:b::5]:8080"), 50, BE_STATE_ACTIVE),
        (be_id("[fd00:b::6]:8080"), 100, BE_STATE_TERMINATING),
    ];
    let mut want_svc6 = BTreeMap::new();
    let fe_code = |t: FrontendType| match t {
        FrontendType::ClusterIp => 0,
        FrontendType::NodePort => 1,
        FrontendType::LoadBalancer => 2,
        FrontendType::ExternalIp => 3,
        FrontendType::HostPort => 4,
    };
    for (name, addr, port, kind, scope) in fes6 {
        let id = id_of(name, scope);
        let fe = &tables.frontends[&id];
        // Local policy: the external scope of NodePort/LB selects only the
        // node's own backend.
        let local_only = scope == Scope::External && kind != FrontendType::ClusterIp;
        assert_eq!(fe.local_only, local_only, "{name} {scope:?}");
        let two_scopes = kind != FrontendType::ClusterIp;
        let mut flags = SVC_F_AFFINITY;
        if local_only {
            flags |= SVC_F_LOCAL_ONLY;
        }
        if two_scopes {
            flags |= SVC_F_TWO_SCOPES;
        }
        if kind == FrontendType::LoadBalancer {
            flags |= SVC_F_SOURCE_RANGES;
        }
        let (count, total_weight) = (
            fe.selectable as u16,
            fe.selectable_backends()
                .iter()
                .map(|s| u32::from(s.weight))
                .sum::<u32>(),
        );
        if fe
            .selectable_backends()
            .iter()
            .all(|s| s.weight == fe.selectable_backends()[0].weight)
        {
            flags |= SVC_F_UNIFORM;
        }
        want_svc6.insert(
            (addr, port, tcp, scope as u8, 0),
            Lb4Service {
                affinity_timeout: 300,
                total_weight,
                rev_nat_index: id.0,
                count,
                total: fe.backends.len() as u16,
                flags,
                fe_type: fe_code(kind),
                // Checked below (dense, one per frontend).
                stats_slot: svc6
                    .get(&(addr, port, tcp, scope as u8, 0))
                    .map_or(u32::MAX, |v| v.stats_slot),
                ..Lb4Service::default()
            },
        );
        for (i, s) in fe.backends.iter().enumerate() {
            want_svc6.insert(
                (addr, port, tcp, scope as u8, i as u16 + 1),
                Lb4Service {
                    backend_id: s.id.0,
                    weight: s.weight,
                    flags: match s.state {
                        BackendState::Active => BE_STATE_ACTIVE,
                        BackendState::Terminating => BE_STATE_TERMINATING,
                        other => panic!("{other:?}"),
                    },
                    ..Lb4Service::default()
                },
            );
        }
        if local_only {
            // Only the local backend is selectable.
            assert_eq!((count, total_weight), (1, 100), "{name}");
            assert_eq!(fe.backends[0].id.0, slots[0].0);
        } else {
            assert_eq!((count, total_weight), (2, 150), "{name} {scope:?}");
            let got: Vec<_> = fe
                .backends
                .iter()
                .map(|s| (s.id.0, s.weight, s.state))
                .collect();
            assert_eq!(got.len(), 3);
            for (g, w) in got.iter().zip(&slots) {
                assert_eq!((g.0, g.1), (w.0, w.1));
            }
        }
    }
    assert_eq!(svc6, want_svc6, "every lb6_services entry");
    // No IPv6 address in the IPv4 services map, and vice versa.
    let ids6: BTreeSet<u32> = svc6
        .iter()
        .filter(|(k, _)| k.4 == 0)
        .map(|(_, v)| v.rev_nat_index)
        .collect();
    let ids4: BTreeSet<u32> = maps
        .services
        .iter()
        .map(|r| r.unwrap())
        .filter(|(k, _)| k.backend_slot == 0)
        .map(|(_, v)| v.rev_nat_index)
        .collect();
    assert_eq!(ids4.len(), 7, "IPv4: the same seven entries");
    assert!(ids4.is_disjoint(&ids6));

    // Reverse NAT: every IPv6 frontend's address and port, by its id.
    let rn6 = entries(maps.rev_nat6.iter());
    let want_rn6: BTreeMap<u32, Lb6ReverseNat> = fes6
        .iter()
        .map(|(name, addr, port, _, scope)| {
            (
                id_of(name, *scope).0,
                Lb6ReverseNat {
                    address: *addr,
                    port: port.to_be(),
                    pad: 0,
                },
            )
        })
        .collect();
    assert_eq!(rn6, want_rn6);
    let rn4 = entries(maps.rev_nat.iter());
    assert_eq!(rn4.keys().copied().collect::<BTreeSet<_>>(), ids4);

    // Source ranges: the IPv6 ones of IPv6 LoadBalancer entries, in their
    // order among the IPv6 ranges; the IPv4 one in lb4_src_range only.
    let mut ranges6: Vec<(u32, [u8; 16], u32, u8)> = maps
        .src_range6
        .iter()
        .map(|r| {
            let (k, pos) = r.unwrap();
            (k.data().rev_nat_index, k.data().addr, k.prefix_len(), pos)
        })
        .collect();
    ranges6.sort();
    let mut want_ranges6 = Vec::new();
    for scope in [Scope::External, Scope::Internal] {
        let id = id_of("[2001:db8:1::7]:80", scope).0;
        want_ranges6.push((id, v6("fd00:c::"), 32 + 64, 0));
        want_ranges6.push((id, v6("2001:db8::"), 32 + 32, 1));
    }
    want_ranges6.sort();
    assert_eq!(ranges6, want_ranges6);
    let ranges4: Vec<(u32, u32, u32)> = maps
        .src_range
        .iter()
        .map(|r| {
            let (k, pos) = r.unwrap();
            (k.data().rev_nat_index, k.prefix_len(), u32::from(pos))
        })
        .collect();
    assert_eq!(ranges4.len(), 2, "{ranges4:?}");
    assert!(ranges4.iter().all(|r| r.1 == 32 + 16 && r.2 == 0));

    // Shared: counters and metadata for every frontend and backend.
    let all_fe: BTreeSet<u32> = ids4.union(&ids6).copied().collect();
    // Every frontend of both families has a counter slot of its own, and
    // the slots are dense.
    let fe_slots: BTreeSet<u32> = maps
        .services
        .iter()
        .map(|r| r.unwrap())
        .filter(|(k, _)| k.backend_slot == 0)
        .map(|(_, v)| v.stats_slot)
        .chain(
            maps.services6
                .iter()
                .map(|r| r.unwrap())
                .filter(|(k, _)| k.backend_slot == 0)
                .map(|(_, v)| v.stats_slot),
        )
        .collect();
    assert_eq!(
        fe_slots,
        (0..all_fe.len() as u32).collect::<BTreeSet<_>>(),
        "dense frontend counter slots"
    );
    let meta: BTreeMap<u32, String> = maps
        .svc_meta
        .iter()
        .map(|r| r.map(|(k, v)| (k, v.name())).unwrap())
        .collect();
    assert_eq!(meta.keys().copied().collect::<BTreeSet<_>>(), all_fe);
    assert!(meta.values().all(|n| n == "default/web"));
    let all_be: BTreeSet<u32> = be4.keys().chain(be6.keys()).copied().collect();
    let be_slots: BTreeSet<u32> = be4
        .values()
        .map(|b| b.stats_slot)
        .chain(be6.values().map(|b| b.stats_slot))
        .collect();
    assert_eq!(
        be_slots,
        (0..all_be.len() as u32).collect::<BTreeSet<_>>(),
        "dense backend counter slots"
    );
    assert_eq!(
        maps.be_meta
            .get(&be_id("[fd00:a::5]:8080"), 0)
            .unwrap()
            .zone(),
        "zone-a"
    );
}

#[test]
fn maglev_tables_of_ipv6_frontends_name_ipv6_backends() {
    let mut fx = Fixture::with_node(node());
    let mut web = dual_stack();
    web.algorithm = Some(LbAlgorithm::Maglev);
    web.ext_traffic_policy = TrafficPolicy::Cluster;
    fx.apply(&[web]);
    let tables = fx.rec.current().clone();
    let maps = fx.dp.maps();
    let be6: BTreeSet<u32> = maps.backends6.keys().map(|k| k.unwrap()).collect();
    let be4: BTreeSet<u32> = maps.backends.keys().map(|k| k.unwrap()).collect();
    let mut v6_tables = 0;
    for fe in tables.frontends.values() {
        let inner = maps.maglev.get(&fe.id.0, 0).expect("a table per frontend");
        let table: Vec<u32> = inner.iter().map(|r| r.unwrap()).collect();
        assert_eq!(table.len(), 251);
        let want: Vec<u32> = fe.maglev.as_ref().unwrap().iter().map(|b| b.0).collect();
        assert_eq!(table, want, "frontend {}", fe.id);
        let own = if fe.key.addr.addr.is_ipv6() {
            v6_tables += 1;
            &be6
        } else {
            &be4
        };
        assert!(table.iter().all(|b| own.contains(b)), "frontend {}", fe.id);
        let key_flags = if fe.key.addr.addr.is_ipv6() {
            let addr = match fe.key.addr.addr {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(_) => unreachable!(),
            };
            maps.services6
                .get(
                    &Lb6Key {
                        address: addr,
                        dport: fe.key.addr.port.to_be(),
                        backend_slot: 0,
                        proto: 6,
                        scope: fe.key.scope as u8,
                        pad: [0; 2],
                    },
                    0,
                )
                .unwrap()
                .flags
        } else {
            continue;
        };
        assert_ne!(key_flags & SVC_F_MAGLEV, 0);
    }
    // ClusterIP, NodePort on the node IP and the wildcard, LoadBalancer
    // (one scope each under traffic policy Cluster).
    assert_eq!(v6_tables, 4);
}

/// A dataplane opened with NAT46/64 off (the default) refuses a translated
/// frontend, whatever the desired state was built with
/// (tests/prog_run_nat46.rs covers it on).
#[test]
fn nat46x64_is_refused_before_anything_is_written_when_off() {
    let mut node = node();
    let mut fx = Fixture::with_node(node.clone());
    node.nat46x64 = true;
    let other = service(
        "default/other",
        &[("[fd00:96::20]:80", FrontendType::ClusterIp)],
        &["[fd00:a::20]:80"],
    );
    fx.apply(std::slice::from_ref(&other));
    let before = (
        dump(fx.dp.maps().services6.iter()),
        dump(fx.dp.maps().backends.iter()),
        dump(fx.dp.maps().backends6.iter()),
        dump(fx.dp.maps().rev_nat6.iter()),
    );
    // An IPv4 frontend whose only backends are IPv6 (NAT46).
    let nat = service(
        "default/nat",
        &[("10.96.0.30:80", FrontendType::ClusterIp)],
        &["[fd00:a::30]:80"],
    );
    let desired = DesiredState::build(&node, &[other, nat]).unwrap();
    let err = fx.rec.apply(&mut fx.dp, &desired).unwrap_err();
    let ReconcileError::Dataplane(DataplaneError::Unsupported(msg)) = &err else {
        panic!("{err}");
    };
    assert!(msg.contains("NAT46/64 is off"), "{msg}");
    let after = (
        dump(fx.dp.maps().services6.iter()),
        dump(fx.dp.maps().backends.iter()),
        dump(fx.dp.maps().backends6.iter()),
        dump(fx.dp.maps().rev_nat6.iter()),
    );
    assert_eq!(after, before, "nothing written");
    assert_eq!(fx.dp.maps().services.iter().count(), 0);
}

#[test]
fn removing_the_service_empties_every_lb6_map() {
    let mut fx = Fixture::with_node(node());
    fx.apply(&[dual_stack()]);
    assert!(fx.dp.maps().services6.iter().count() > 0);
    fx.apply(&[]);
    assert_eq!(
        fx.dp.counter_slots_used(),
        (0, 0),
        "every counter slot freed"
    );
    let maps = fx.dp.maps();
    assert_eq!(maps.services6.iter().count(), 0);
    assert_eq!(maps.backends6.iter().count(), 0);
    assert_eq!(maps.rev_nat6.iter().count(), 0);
    assert_eq!(maps.src_range6.iter().count(), 0);
    assert_eq!(maps.services.iter().count(), 0);
    assert_eq!(maps.svc_meta.iter().count(), 0);
    assert_eq!(maps.be_meta.iter().count(), 0);
}
