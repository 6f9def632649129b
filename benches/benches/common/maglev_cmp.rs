//! Shared by the Maglev comparison (`benches/maglev_vs_crate.rs`,
//! `examples/maglev_compare.rs`, `tests/maglev_compare.rs`): the same
//! backend set built into a lookup table by lb-core and by the `maglev`
//! crate, each table given as the owner's index into the backend list, and
//! the two figures of merit (disruption on one removal, max/avg load).
#![allow(dead_code)]

use std::net::SocketAddr;

use lb_core::select::maglev::{build_table, MaglevBackend};
use lb_core::{BackendId, L3n4Addr, L4Proto, MaglevConfig};

/// `n` distinct backend addresses (`:8080`), pseudo-random from `seed`.
pub fn backend_set(n: usize, seed: u64) -> Vec<SocketAddr> {
    let mut x = seed | 1;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let ip = std::net::Ipv4Addr::from((x >> 16) as u32);
        if seen.insert(ip) {
            out.push(SocketAddr::new(ip.into(), 8080));
        }
    }
    out
}

/// lb-core's input for `addrs` (equal weights; id = index + 1).
pub fn ours_input(addrs: &[SocketAddr]) -> Vec<MaglevBackend> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| MaglevBackend {
            addr: L3n4Addr::new(a.ip(), a.port(), L4Proto::Tcp),
            id: BackendId(u32::try_from(i).expect("few backends") + 1),
            weight: 100,
        })
        .collect()
}

/// lb-core's table for `addrs`, as owner indices into `addrs`.
pub fn ours(addrs: &[SocketAddr], m: u32, seed: u32) -> Vec<usize> {
    let cfg = MaglevConfig::new(m, seed).expect("accepted table size");
    build_table(&ours_input(addrs), &cfg)
        .iter()
        .map(|id| id.0 as usize - 1)
        .collect()
}

/// The `maglev` crate's table for `addrs` with capacity `m` (a prime: the
/// crate takes the first prime at or above it), as owner indices into
/// `addrs`.
///
/// The crate keeps its table private; its `Debug` output prints it
/// (`lookup: Some([i, j, ...])`), which is parsed here.
/// `tests/maglev_compare.rs` checks the parse against the crate's own
/// `get`.
pub fn theirs(addrs: &[SocketAddr], m: usize) -> Vec<usize> {
    table_of(&maglev::Maglev::with_capacity(addrs.to_vec(), m))
}

/// The lookup table inside a `maglev::Maglev` (see [`theirs`]).
pub fn table_of(t: &maglev::Maglev<SocketAddr>) -> Vec<usize> {
    let dbg = format!("{t:?}");
    let start = dbg.find("lookup: Some([").expect("crate's Debug layout") + "lookup: Some([".len();
    let end = start + dbg[start..].find(']').expect("end of table");
    dbg[start..end]
        .split(", ")
        .map(|s| s.trim().parse::<usize>().expect("owner index"))
        .collect()
}

/// The share of entries whose owner (by address) changed from `before`
/// (over `all`) to `after` (over `rest`, `all` without one backend).
pub fn changed_share(
    all: &[SocketAddr],
    before: &[usize],
    rest: &[SocketAddr],
    after: &[usize],
) -> f64 {
    assert_eq!(before.len(), after.len());
    let changed = before
        .iter()
        .zip(after)
        .filter(|(b, a)| all[**b] != rest[**a])
        .count();
    changed as f64 / before.len() as f64
}

/// Largest share of entries any backend owns, over the mean share.
pub fn max_over_avg(table: &[usize], backends: usize) -> f64 {
    let mut counts = vec![0usize; backends];
    for &o in table {
        counts[o] += 1;
    }
    let max = *counts.iter().max().expect("backends") as f64;
    max / (table.len() as f64 / backends as f64)
}
