//! Dense counter slots: the per-CPU counter arrays (`lb_svc_stats`,
//! `lb_be_stats`) are indexed by a slot the dataplane hands every frontend
//! and backend. These tests check that the slots are dense, that a freed
//! slot is handed out again with zeroed counters, that a restarted
//! dataplane keeps every slot and its counters (and allocates around them),
//! that maps naming one slot twice are repaired on open, and that pins of
//! the older per-CPU hash layout are refused. Privileged (root); bounded:
//! a few small applies and a few dozen test runs each.

mod common;

use std::collections::BTreeSet;

use aya::maps::{IterableMap, PerCpuHashMap};
use common::*;
use lb_core::*;
use lb_ebpf::abi::{LbSvcStats, MAP_SVC_STATS};
use lb_ebpf::{EbpfDataplane, LoadError, LoadOptions};
use lb_testkit::BpffsGuard;

fn web() -> Service {
    service(
        "default/web",
        &[("10.96.0.10:80", FrontendType::ClusterIp)],
        &["10.0.1.5:8080", "10.0.1.6:8080"],
    )
}

fn api() -> Service {
    service(
        "default/api",
        &[("10.96.0.20:443", FrontendType::ClusterIp)],
        &["10.0.2.5:8443"],
    )
}

fn db() -> Service {
    service(
        "default/db",
        &[("10.96.0.30:5432", FrontendType::ClusterIp)],
        &["10.0.3.5:5432"],
    )
}

/// The id of the frontend on `vip`.
fn fe_id(fx: &Fixture, vip: &str) -> ServiceId {
    fx.rec
        .current()
        .frontend_by_key(&FrontendKey {
            addr: vip.parse().unwrap(),
            scope: Scope::External,
        })
        .expect("frontend")
        .id
}

/// The id of the backend at `addr`.
fn be_id(fx: &Fixture, addr: &str) -> BackendId {
    let a: L3n4Addr = addr.parse().unwrap();
    *fx.rec
        .current()
        .backends
        .iter()
        .find(|(_, b)| b.addr == a)
        .expect("backend")
        .0
}

/// The counter slot of the frontend on `vip` (its slot-0 entry).
fn fe_slot(fx: &mut Fixture, vip: &str) -> u32 {
    let id = fe_id(fx, vip).0;
    fx.dp
        .maps()
        .services
        .iter()
        .map(|r| r.unwrap())
        .find(|(k, v)| k.backend_slot == 0 && v.rev_nat_index == id)
        .expect("slot-0 entry")
        .1
        .stats_slot
}

/// The counter slot of the backend at `addr`.
fn be_slot(fx: &mut Fixture, addr: &str) -> u32 {
    let id = be_id(fx, addr).0;
    fx.dp.maps().backends.get(&id, 0).unwrap().stats_slot
}

/// Sends `n` new flows to `vip` (client ports from `port`).
fn traffic(fx: &mut Fixture, vip: &str, port: u16, n: u16) {
    for p in port..port + n {
        let (rv, _) = fx.ingress(&tcp(&format!("192.168.5.2:{p}"), vip));
        assert_eq!(rv, TC_ACT_OK);
    }
}

#[test]
fn freed_slots_are_handed_out_again_with_zeroed_counters() {
    let mut fx = Fixture::new(MaglevConfig::default());
    fx.apply(&[web(), api()]);
    assert_eq!(fx.dp.counter_slots_used(), (2, 3));
    let fe_slots: BTreeSet<u32> = ["10.96.0.10:80", "10.96.0.20:443"]
        .iter()
        .map(|v| fe_slot(&mut fx, v))
        .collect();
    assert_eq!(fe_slots, BTreeSet::from([0, 1]), "dense frontend slots");
    let be_slots: BTreeSet<u32> = ["10.0.1.5:8080", "10.0.1.6:8080", "10.0.2.5:8443"]
        .iter()
        .map(|b| be_slot(&mut fx, b))
        .collect();
    assert_eq!(be_slots, BTreeSet::from([0, 1, 2]), "dense backend slots");

    traffic(&mut fx, "10.96.0.10:80", 40000, 4);
    traffic(&mut fx, "10.96.0.20:443", 41000, 3);
    let api_fe = fe_slot(&mut fx, "10.96.0.20:443");
    let api_be = be_slot(&mut fx, "10.0.2.5:8443");
    let web_id = fe_id(&fx, "10.96.0.10:80");
    let web_before = fx.dp.service_stats(web_id).unwrap().unwrap();
    assert_eq!((web_before.packets, web_before.new_flows), (4, 4));
    assert_eq!(
        fx.dp.maps().service_stats_at(api_fe).unwrap().packets,
        3,
        "api counted in its slot"
    );

    // api goes: its slots are freed (their counters stay until reused).
    fx.apply(&[web()]);
    assert_eq!(fx.dp.counter_slots_used(), (1, 2));
    let c = fx.dp.counters().unwrap();
    assert_eq!(c.services.len(), 1);
    assert_eq!(c.backends.len(), 2);

    // db comes: it takes the freed slots, zeroed.
    fx.apply(&[web(), db()]);
    assert_eq!(fe_slot(&mut fx, "10.96.0.30:5432"), api_fe);
    assert_eq!(be_slot(&mut fx, "10.0.3.5:5432"), api_be);
    let db_id = fe_id(&fx, "10.96.0.30:5432");
    let db_be = be_id(&fx, "10.0.3.5:5432");
    assert_eq!(
        fx.dp.service_stats(db_id).unwrap(),
        Some(LbSvcStats::default())
    );
    assert_eq!(
        fx.dp.backend_stats(db_be).unwrap(),
        Some(LbSvcStats::default())
    );
    traffic(&mut fx, "10.96.0.30:5432", 42000, 2);
    let db_now = fx.dp.service_stats(db_id).unwrap().unwrap();
    assert_eq!((db_now.packets, db_now.new_flows), (2, 2));
    assert_eq!(fx.dp.backend_stats(db_be).unwrap().unwrap().packets, 2);
    // web's counters were not touched by any of it.
    assert_eq!(fx.dp.service_stats(web_id).unwrap().unwrap(), web_before);
}

#[test]
fn a_restarted_dataplane_keeps_slots_and_counters_and_allocates_around_them() {
    let mut fx = Fixture::new(MaglevConfig::default());
    fx.apply(&[web(), api(), db()]);
    traffic(&mut fx, "10.96.0.10:80", 40000, 3);
    traffic(&mut fx, "10.96.0.30:5432", 41000, 2);
    // api goes, leaving holes below db's slots.
    fx.apply(&[web(), db()]);
    let before = fx.dp.counters().unwrap();
    let used = fx.dp.counter_slots_used();
    let lines = counter_lines(fx.dp.maps());

    // A restart: the allocators come back from the maps.
    let restored = {
        let dp = EbpfDataplane::open(fx.loaded.pin_dir(), &fx.node).expect("reopen");
        let tables = dp.restore().expect("restore");
        fx.dp = dp;
        tables
    };
    assert_eq!(fx.dp.counters().unwrap(), before, "counters kept");
    assert_eq!(fx.dp.counter_slots_used(), used);
    assert_eq!(counter_lines(fx.dp.maps()), lines, "slots kept");
    fx.rec = Reconciler::with_tables(restored);

    // New entries fill the holes first, then go above; none shares a slot.
    let mut more = vec![web(), db(), api()];
    more.push(service(
        "default/cache",
        &[("10.96.0.40:6379", FrontendType::ClusterIp)],
        &["10.0.4.5:6379", "10.0.4.6:6379"],
    ));
    fx.apply(&more);
    let fes = [
        "10.96.0.10:80",
        "10.96.0.20:443",
        "10.96.0.30:5432",
        "10.96.0.40:6379",
    ];
    let fe_slots: BTreeSet<u32> = fes.iter().map(|v| fe_slot(&mut fx, v)).collect();
    assert_eq!(fe_slots, BTreeSet::from([0, 1, 2, 3]));
    let bes = [
        "10.0.1.5:8080",
        "10.0.1.6:8080",
        "10.0.2.5:8443",
        "10.0.3.5:5432",
        "10.0.4.5:6379",
        "10.0.4.6:6379",
    ];
    let be_slots: BTreeSet<u32> = bes.iter().map(|b| be_slot(&mut fx, b)).collect();
    assert_eq!(be_slots, (0..6).collect::<BTreeSet<u32>>());
    let after = fx.dp.counters().unwrap();
    for (id, c) in &before.services {
        assert_eq!(after.services.get(id), Some(c), "frontend {id} untouched");
    }
    for vip in ["10.96.0.20:443", "10.96.0.40:6379"] {
        let id = fe_id(&fx, vip);
        assert_eq!(after.services[&id], LbSvcStats::default(), "{vip} zeroed");
    }
}

#[test]
fn a_slot_named_twice_is_repaired_when_the_dataplane_opens() {
    let mut fx = Fixture::new(MaglevConfig::default());
    fx.apply(&[web(), api()]);
    traffic(&mut fx, "10.96.0.10:80", 40000, 4);
    // Corrupt the maps: api's backend names the slot of one of web's.
    let web_be = be_slot(&mut fx, "10.0.1.5:8080");
    let api_id = be_id(&fx, "10.0.2.5:8443").0;
    let mut v = fx.dp.maps().backends.get(&api_id, 0).unwrap();
    let web_be_id = be_id(&fx, "10.0.1.5:8080").0;
    // The lower id keeps the slot (owners are ranked by id).
    let (keeper, loser) = if web_be_id < api_id {
        (web_be_id, api_id)
    } else {
        (api_id, web_be_id)
    };
    v.stats_slot = web_be;
    fx.dp.maps().backends.insert(api_id, v, 0).unwrap();

    let dp = EbpfDataplane::open(fx.loaded.pin_dir(), &fx.node).expect("reopen");
    fx.dp = dp;
    let slots: Vec<u32> = fx
        .dp
        .maps()
        .backends
        .iter()
        .map(|r| r.unwrap().1.stats_slot)
        .collect();
    let distinct: BTreeSet<u32> = slots.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        3,
        "every backend has its own slot: {slots:?}"
    );
    assert_eq!(
        fx.dp.maps().backends.get(&keeper, 0).unwrap().stats_slot,
        web_be
    );
    let repaired = fx.dp.backend_stats(BackendId(loser)).unwrap().unwrap();
    assert_eq!(repaired, LbSvcStats::default(), "a new slot, zeroed");
    assert_eq!(fx.dp.counter_slots_used(), (2, 3));
}

#[test]
fn pins_of_the_per_cpu_hash_counter_layout_are_refused() {
    lb_testkit::require_privileges();
    let bpffs = BpffsGuard::new().expect("bpffs");
    let pin_dir = bpffs.pin_path("lb");
    let maps = lb_ebpf::loader::maps_dir(&pin_dir);
    lb_ebpf::loader::ensure_bpffs(&pin_dir).expect("bpffs");
    std::fs::create_dir_all(&maps).unwrap();
    // The layout before counter slots: same key and value sizes, hash type.
    let old: PerCpuHashMap<aya::maps::MapData, u32, LbSvcStats> =
        PerCpuHashMap::create(16, 0).expect("create");
    old.map().pin(maps.join(MAP_SVC_STATS)).expect("pin");
    let err = lb_ebpf::load(&LoadOptions::new(&pin_dir, &[])).unwrap_err();
    assert!(
        matches!(err, LoadError::IncompatiblePin { map, .. } if map == MAP_SVC_STATS),
        "{err}"
    );
    lb_ebpf::cleanup(&pin_dir).expect("cleanup");
}
