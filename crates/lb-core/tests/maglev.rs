//! Maglev table invariants: full, balanced, minimally disrupted, deterministic.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use lb_core::select::maglev::{build_table, shares_a_skip, MaglevBackend};
use lb_core::{BackendId, L3n4Addr, L4Proto, MaglevConfig, MAGLEV_TABLE_SIZES};
use proptest::prelude::*;

fn backends(addrs: &[u32]) -> Vec<MaglevBackend> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| MaglevBackend {
            addr: L3n4Addr::new(IpAddr::V4(Ipv4Addr::from(*a)), 8080, L4Proto::Tcp),
            id: BackendId(i as u32 + 1),
            weight: 1,
        })
        .collect()
}

fn counts(table: &[BackendId]) -> HashMap<BackendId, usize> {
    let mut c = HashMap::new();
    for id in table {
        *c.entry(*id).or_default() += 1;
    }
    c
}

/// Distinct backend addresses, min..=max of them.
fn addr_set(min: usize, max: usize) -> impl Strategy<Value = Vec<u32>> {
    proptest::collection::btree_set(0x0a00_0000u32..0x0aff_ffff, min..=max)
        .prop_map(|s| s.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn table_is_full_and_balanced(addrs in addr_set(1, 160), seed: u32) {
        // M >= 100 * N: pick the smallest accepted size that satisfies it.
        let n = addrs.len();
        let m = *MAGLEV_TABLE_SIZES.iter().find(|m| **m as usize >= 100 * n).unwrap();
        let cfg = MaglevConfig::new(m, seed).unwrap();
        let table = build_table(&backends(&addrs), &cfg);
        prop_assert_eq!(table.len(), m as usize);
        let c = counts(&table);
        prop_assert_eq!(c.len(), n, "every backend owns entries");
        let max = *c.values().max().unwrap() as f64;
        let avg = m as f64 / n as f64;
        prop_assert!(max / avg <= 1.02, "max/avg = {}", max / avg);
    }

    /// Maglev (like Cilium's) moves a few entries of surviving backends
    /// besides the removed backend's own. For 10 to 100 backends and
    /// M = 65521 or 131071 the extra stays under 1% of the table. With fewer
    /// backends it is usually far smaller, but rare sets move much more (seen:
    /// 7.6% extra for 3 backends at M = 131071), and at the default 16381
    /// with ~100 backends it averages 1.35% (see BENCHMARKS.md), so neither
    /// case is asserted here. Nor are sets where two backends share a skip
    /// (`shares_a_skip`, about N^2 / 2M of them): see
    /// `a_shared_skip_is_the_rare_worst_case` below.
    #[test]
    fn removing_one_backend_moves_few_entries(
        addrs in addr_set(10, 100),
        seed: u32,
        victim: prop::sample::Index,
        big in any::<bool>(),
    ) {
        let n = addrs.len();
        let m = if big { 131071 } else { 65521 };
        let cfg = MaglevConfig::new(m, seed).unwrap();
        let all = backends(&addrs);
        prop_assume!(!shares_a_skip(&all, &cfg));
        let before = build_table(&all, &cfg);
        let gone = all[victim.index(n)].id;
        let rest: Vec<_> = all.iter().copied().filter(|b| b.id != gone).collect();
        let after = build_table(&rest, &cfg);
        // Entries of surviving backends that changed owner.
        let changed = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let bound = (1.0 / n as f64 + 0.01) * m as f64;
        prop_assert!(changed as f64 <= bound, "{changed} of {m} entries changed (bound {bound})");
        prop_assert!(after.iter().all(|id| *id != gone));
    }

    #[test]
    fn same_inputs_same_table(addrs in addr_set(1, 20), seed: u32) {
        let cfg = MaglevConfig::new(1021, seed).unwrap();
        let mut shuffled = backends(&addrs);
        shuffled.reverse();
        prop_assert_eq!(build_table(&backends(&addrs), &cfg), build_table(&shuffled, &cfg));
    }
}

#[test]
fn only_cilium_table_sizes_are_accepted() {
    for m in MAGLEV_TABLE_SIZES {
        assert!(MaglevConfig::new(*m, 0).is_ok());
    }
    for bad in [0, 1, 100, 16383, 65537] {
        let err = MaglevConfig::new(bad, 0).unwrap_err();
        assert!(err.to_string().contains(&bad.to_string()), "{err}");
    }
}

/// The case proptest found (CI, 2026-11-26): two of ten backends share a
/// skip at M = 131071, and removing a third moves about 10% of the table
/// beyond its own share. The bound of 1/N + 1% does not hold for such sets;
/// this records the case and its size so a change in it shows.
#[test]
fn a_shared_skip_is_the_rare_worst_case() {
    let addrs = [
        167772160, 167772205, 169905816, 173507864, 174031693, 178470870, 181531345, 181600956,
        181831718, 182671121,
    ];
    let cfg = MaglevConfig::new(131071, 299676803).unwrap();
    let all = backends(&addrs);
    assert!(shares_a_skip(&all, &cfg));
    let before = build_table(&all, &cfg);
    let worst = (0..all.len())
        .map(|v| {
            let gone = all[v].id;
            let rest: Vec<_> = all.iter().copied().filter(|b| b.id != gone).collect();
            let after = build_table(&rest, &cfg);
            let own = before.iter().filter(|id| **id == gone).count();
            before.iter().zip(&after).filter(|(b, a)| b != a).count() - own
        })
        .max()
        .unwrap();
    // 13 179 extra entries (10.05% of M) when this was written.
    assert!((13_000..=13_400).contains(&worst), "{worst}");
}
