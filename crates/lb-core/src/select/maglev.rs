//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted.
//!
//! Every backend owns a pseudo-random permutation of the `M` table slots,
//! derived from its address and the seed alone (never from its ID), so every
//! node with the same backends and seed builds the same table. Backends take
//! turns claiming their next preferred free slot until the table is full; a
//! backend of weight `w` takes `w / w_max` turns per round, so it ends up
//! with a share of slots proportional to its weight.

use std::net::IpAddr;

use crate::hash::jhash2;
use crate::{BackendId, ConfigError, L3n4Addr};

/// The table sizes Cilium accepts (`maglev.tableSize`): primes, so every
/// skip is coprime with the size and each permutation covers the table.
pub const MAGLEV_TABLE_SIZES: &[u32] = &[
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
];

/// Salt that turns the offset hash into an independent skip hash.
const SKIP_SALT: u32 = 0x9e37_79b9;

/// Maglev parameters shared by every node of a cluster.
///
/// ```
/// use lb_core::MaglevConfig;
/// assert_eq!(MaglevConfig::default().table_size(), 16381);
/// assert!(MaglevConfig::new(16381, 7).is_ok());
/// assert!(MaglevConfig::new(1000, 7).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MaglevConfig {
    table_size: u32,
    seed: u32,
}

impl Default for MaglevConfig {
    /// Cilium's default size 16381 and seed 0.
    fn default() -> Self {
        MaglevConfig {
            table_size: 16381,
            seed: 0,
        }
    }
}

impl MaglevConfig {
    /// Checks that `table_size` is one of [`MAGLEV_TABLE_SIZES`].
    pub fn new(table_size: u32, seed: u32) -> Result<Self, ConfigError> {
        if !MAGLEV_TABLE_SIZES.contains(&table_size) {
            return Err(ConfigError::InvalidMaglevTableSize {
                size: table_size,
                accepted: MAGLEV_TABLE_SIZES,
            });
        }
        Ok(MaglevConfig { table_size, seed })
    }

    /// `M`, the number of table entries.
    pub const fn table_size(&self) -> u32 {
        self.table_size
    }

    /// The seed of the backend permutations and of the flow hash.
    pub const fn seed(&self) -> u32 {
        self.seed
    }

    /// Derives a seed from an operator-chosen string (the agent's
    /// `--maglev-hash-seed`, in the spirit of Cilium's `maglev.hashSeed`,
    /// which is 12 random bytes in base64): `jhash2` with initial value 0
    /// over the string's length followed by its UTF-8 bytes packed
    /// big-endian into words, the last word zero-padded. Any string is
    /// accepted, so a Cilium seed can be reused as is; nodes given the same
    /// string get the same seed, and the empty string gives 0, the default.
    ///
    /// ```
    /// use lb_core::MaglevConfig;
    /// let s = MaglevConfig::seed_from_str("JLfvgnHc2kaSUFaI");
    /// assert_eq!(s, MaglevConfig::seed_from_str("JLfvgnHc2kaSUFaI"));
    /// assert_ne!(s, MaglevConfig::seed_from_str("JLfvgnHc2kaSUFaJ"));
    /// assert_eq!(MaglevConfig::seed_from_str(""), 0);
    /// ```
    pub fn seed_from_str(s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let bytes = s.as_bytes();
        let mut words = Vec::with_capacity(1 + bytes.len().div_ceil(4));
        words.push(bytes.len() as u32);
        for chunk in bytes.chunks(4) {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            words.push(u32::from_be_bytes(w));
        }
        jhash2(&words, 0)
    }
}

/// One backend's input to [`build_table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaglevBackend {
    /// Its address: the permutation is derived from it.
    pub addr: L3n4Addr,
    /// What the table stores for it.
    pub id: BackendId,
    /// Its relative weight; 0 leaves it out.
    pub weight: u16,
}

/// The words a backend's permutation is hashed from.
fn addr_words(addr: &L3n4Addr) -> ([u32; 6], usize) {
    let mut w = [0u32; 6];
    let n = match addr.addr {
        IpAddr::V4(a) => {
            w[0] = u32::from(a);
            1
        }
        IpAddr::V6(a) => {
            for (i, chunk) in a.octets().chunks_exact(4).enumerate() {
                w[i] = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            }
            4
        }
    };
    w[n] = (u32::from(addr.port) << 8) | u32::from(addr.proto.number());
    (w, n + 1)
}

/// The `(offset, skip)` of a backend's permutation in a table of `m` entries.
fn permutation(addr: &L3n4Addr, m: u32, seed: u32) -> (u32, u32) {
    let (w, n) = addr_words(addr);
    let offset = jhash2(&w[..n], seed) % m;
    let skip = jhash2(&w[..n], seed ^ SKIP_SALT) % (m - 1) + 1;
    (offset, skip)
}

/// True when two of `backends` (with a non-zero weight) get the same skip
/// in their permutations. They then walk the same cycle of the table, one
/// a fixed number of steps behind the other, and contend for the same
/// slots in lock-step: Maglev's rare worst case for disruption, where
/// removing a third backend moves far more than its own entries (seen: 10%
/// of M = 131071 beyond the removed backend's share, with 10 backends).
/// The chance is about N² / 2M for N backends.
///
/// ```
/// use lb_core::{BackendId, L3n4Addr, MaglevConfig};
/// use lb_core::select::maglev::{shares_a_skip, MaglevBackend};
/// let b = |i: u8| MaglevBackend {
///     addr: format!("10.0.0.{i}:80").parse::<L3n4Addr>().unwrap(),
///     id: BackendId(i.into()),
///     weight: 1,
/// };
/// assert!(!shares_a_skip(&[b(1)], &MaglevConfig::new(251, 0).unwrap()));
/// ```
pub fn shares_a_skip(backends: &[MaglevBackend], cfg: &MaglevConfig) -> bool {
    let mut skips: Vec<u32> = backends
        .iter()
        .filter(|b| b.weight > 0)
        .map(|b| permutation(&b.addr, cfg.table_size, cfg.seed).1)
        .collect();
    skips.sort_unstable();
    skips.windows(2).any(|w| w[0] == w[1])
}

/// Builds the Maglev lookup table: `cfg.table_size()` backend IDs.
///
/// The result depends only on the set of (address, weight) pairs and the
/// seed, not on the order of `backends` (an address listed twice counts
/// once, with its highest weight). Returns an empty table when no
/// backend has a non-zero weight.
///
/// ```
/// use lb_core::{BackendId, L3n4Addr, MaglevConfig};
/// use lb_core::select::maglev::{build_table, MaglevBackend};
/// let backend = |i: u8| MaglevBackend {
///     addr: format!("10.0.0.{i}:80").parse::<L3n4Addr>().unwrap(),
///     id: BackendId(i.into()),
///     weight: 1,
/// };
/// let table = build_table(&[backend(1), backend(2)], &MaglevConfig::new(251, 0).unwrap());
/// assert_eq!(table.len(), 251);
/// let ones = table.iter().filter(|id| **id == BackendId(1)).count();
/// assert!(ones == 125 || ones == 126);
/// ```
pub fn build_table(backends: &[MaglevBackend], cfg: &MaglevConfig) -> Vec<BackendId> {
    let m = cfg.table_size;
    let mut live: Vec<&MaglevBackend> = backends.iter().filter(|b| b.weight > 0).collect();
    if live.is_empty() {
        return Vec::new();
    }
    // Order by address so the result does not depend on the caller's order;
    // an address given twice counts once, with its highest weight.
    live.sort_by_key(|b| (b.addr, std::cmp::Reverse(b.weight)));
    live.dedup_by_key(|b| b.addr);
    let max_weight = u64::from(live.iter().map(|b| b.weight).max().unwrap_or(1));

    // A backend's preference list is `offset + j * skip (mod m)` for
    // j = 0, 1, ...; `pos` walks it by adding `skip` (both below m, so one
    // conditional subtraction replaces a division per probe).
    struct Turn {
        pos: u32,
        skip: u32,
        weight: u64,
        taken: u64,
    }
    impl Turn {
        fn advance(&mut self, m: u32) {
            // pos < m and skip < m: the sum fits u64 and is below 2m.
            let next = u64::from(self.pos) + u64::from(self.skip);
            self.pos = if next >= u64::from(m) {
                (next - u64::from(m)) as u32
            } else {
                next as u32
            };
        }
    }
    let mut turns: Vec<Turn> = live
        .iter()
        .map(|b| {
            let (offset, skip) = permutation(&b.addr, m, cfg.seed);
            Turn {
                pos: offset,
                skip,
                weight: b.weight.into(),
                taken: 0,
            }
        })
        .collect();

    const EMPTY: u32 = u32::MAX;
    let mut slots = vec![EMPTY; m as usize];
    let mut filled = 0u32;
    let mut round = 0u64;
    while filled < m {
        round += 1;
        for (i, t) in turns.iter_mut().enumerate() {
            // Weighted turn-taking: after `round` rounds a backend has had
            // `round * weight / max_weight` turns.
            if t.taken * max_weight >= round * t.weight {
                continue;
            }
            t.taken += 1;
            while slots[t.pos as usize] != EMPTY {
                t.advance(m);
            }
            slots[t.pos as usize] = i as u32;
            t.advance(m);
            filled += 1;
            if filled == m {
                break;
            }
        }
    }
    slots.into_iter().map(|i| live[i as usize].id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(i: u32, weight: u16) -> MaglevBackend {
        MaglevBackend {
            addr: L3n4Addr::new(
                IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
                8080,
                crate::L4Proto::Tcp,
            ),
            id: BackendId(i),
            weight,
        }
    }

    #[test]
    fn weights_split_the_table_proportionally() {
        let cfg = MaglevConfig::new(16381, 1).unwrap();
        let table = build_table(&[backend(1, 100), backend(2, 300)], &cfg);
        let ones = table.iter().filter(|id| **id == BackendId(1)).count() as f64;
        let share = ones / f64::from(cfg.table_size());
        assert!((share - 0.25).abs() < 0.01, "share {share}");
    }

    #[test]
    fn order_of_input_does_not_matter() {
        let cfg = MaglevConfig::new(1021, 3).unwrap();
        let a = build_table(&[backend(1, 1), backend(2, 1), backend(3, 1)], &cfg);
        let b = build_table(&[backend(3, 1), backend(1, 1), backend(2, 1)], &cfg);
        assert_eq!(a, b);
    }

    /// The table as the paper writes it: backend i's j-th preference is
    /// `(offset + j * skip) mod M`, computed by division every time.
    fn paper_table(backends: &[MaglevBackend], cfg: &MaglevConfig) -> Vec<BackendId> {
        let m = u64::from(cfg.table_size);
        let mut live: Vec<&MaglevBackend> = backends.iter().filter(|b| b.weight > 0).collect();
        live.sort_by_key(|b| (b.addr, std::cmp::Reverse(b.weight)));
        live.dedup_by_key(|b| b.addr);
        let max_w = u64::from(live.iter().map(|b| b.weight).max().unwrap_or(1));
        let perm: Vec<(u64, u64)> = live
            .iter()
            .map(|b| {
                let (o, s) = permutation(&b.addr, cfg.table_size, cfg.seed);
                (o.into(), s.into())
            })
            .collect();
        let (mut next, mut taken) = (vec![0u64; live.len()], vec![0u64; live.len()]);
        let mut slots: Vec<Option<usize>> = vec![None; m as usize];
        let (mut filled, mut round) = (0, 0u64);
        while filled < m && !live.is_empty() {
            round += 1;
            for i in 0..live.len() {
                if filled == m || taken[i] * max_w >= round * u64::from(live[i].weight) {
                    continue;
                }
                taken[i] += 1;
                let mut c = (perm[i].0 + next[i] * perm[i].1) % m;
                while slots[c as usize].is_some() {
                    next[i] += 1;
                    c = (perm[i].0 + next[i] * perm[i].1) % m;
                }
                slots[c as usize] = Some(i);
                next[i] += 1;
                filled += 1;
            }
        }
        slots.into_iter().flatten().map(|i| live[i].id).collect()
    }

    proptest::proptest! {
        /// The incremental walk of the preference lists builds exactly the
        /// table of the paper's formula, weights included.
        #[test]
        fn the_build_is_the_papers_formula(
            ids in proptest::collection::vec((1u32..5000, 0u16..4), 1..40),
            m in proptest::sample::select(vec![251u32, 1021, 16381]),
            seed in proptest::prelude::any::<u32>(),
        ) {
            let backends: Vec<MaglevBackend> = ids.iter().map(|&(i, w)| backend(i, w)).collect();
            let cfg = MaglevConfig::new(m, seed).unwrap();
            proptest::prop_assert_eq!(build_table(&backends, &cfg), paper_table(&backends, &cfg));
        }
    }

    #[test]
    fn zero_weights_are_left_out() {
        let cfg = MaglevConfig::new(251, 0).unwrap();
        assert!(build_table(&[backend(1, 0)], &cfg).is_empty());
        let t = build_table(&[backend(1, 0), backend(2, 5)], &cfg);
        assert!(t.iter().all(|id| *id == BackendId(2)));
    }
}
