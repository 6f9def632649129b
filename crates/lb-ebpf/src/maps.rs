//! Typed aya handles on the pinned maps (`DIR/maps/<name>`), opened from the
//! pins so key and value sizes are checked against the kernel's maps.

use std::path::Path;

use aya::maps::{
    lpm_trie::Key, Array, HashMap, HashOfMaps, LpmTrie, Map, MapData, MapError, PerCpuArray,
    PerCpuValues,
};

use crate::abi::*;
use crate::loader::maps_dir;

/// A map could not be opened or used.
#[derive(Debug, thiserror::Error)]
#[error("map {map}: {source}")]
pub struct MapsError {
    /// The map.
    pub map: &'static str,
    /// The aya error.
    #[source]
    pub source: MapError,
}

/// Data part of the source-range LPM key (`struct lb4_src_range_key`
/// without `prefixlen`, which aya's [`Key`] carries).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SrcRangeData {
    /// Frontend's reverse-NAT id.
    pub rev_nat_index: u32,
    /// Prefix address, network order.
    pub addr: u32,
}
// SAFETY: repr(C), integers only, no implicit padding.
unsafe impl aya::Pod for SrcRangeData {}
const _: () = assert!(std::mem::size_of::<Key<SrcRangeData>>() == 12);

/// The source-range trie key type.
pub type SrcRangeKey = Key<SrcRangeData>;

/// Data part of the IPv6 source-range LPM key (`struct lb6_src_range_key`
/// without `prefixlen`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SrcRangeData6 {
    /// Frontend's reverse-NAT id.
    pub rev_nat_index: u32,
    /// Prefix address, network order.
    pub addr: [u8; 16],
}
// SAFETY: repr(C), integers only, no implicit padding.
unsafe impl aya::Pod for SrcRangeData6 {}
const _: () = assert!(std::mem::size_of::<Key<SrcRangeData6>>() == 24);

/// The IPv6 source-range trie key type.
pub type SrcRangeKey6 = Key<SrcRangeData6>;

/// Every map of the tc object.
pub struct Maps {
    /// Frontend entries (slot 0) and backend slots.
    pub services: HashMap<MapData, Lb4Key, Lb4Service>,
    /// Backends by id.
    pub backends: HashMap<MapData, u32, Lb4Backend>,
    /// Reverse-NAT entries by id.
    pub rev_nat: HashMap<MapData, u32, Lb4ReverseNat>,
    /// Connection tracking (LRU).
    pub ct: HashMap<MapData, Ct4Key, Ct4Entry>,
    /// Session affinity (LRU).
    pub affinity: HashMap<MapData, Lb4AffinityKey, LbAffinityVal>,
    /// Maglev tables by service id.
    pub maglev: HashOfMaps<MapData, u32, Array<MapData, u32>>,
    /// Source ranges.
    pub src_range: LpmTrie<MapData, SrcRangeData, u8>,
    /// Configuration (index 0).
    pub config: Array<MapData, LbConfig>,
    /// Per-CPU drop counters by [`DropReason`].
    pub drops: PerCpuArray<MapData, u64>,
    /// Per-CPU frontend counters by counter slot ([`Lb4Service::stats_slot`]
    /// of the frontend's slot-0 entry); [`Maps::service_stats_at`] sums them.
    pub svc_stats: PerCpuArray<MapData, LbSvcStats>,
    /// Per-CPU backend counters by counter slot ([`Lb4Backend::stats_slot`]);
    /// [`Maps::backend_stats_at`] sums them.
    pub be_stats: PerCpuArray<MapData, LbSvcStats>,
    /// Service names by service id (userspace only).
    pub svc_meta: HashMap<MapData, u32, LbSvcMeta>,
    /// Backend zones by backend id (userspace only).
    pub be_meta: HashMap<MapData, u32, LbBeMeta>,
    /// Socket-LB reverse translation (LRU).
    pub sock_rev: HashMap<MapData, Lb4SockKey, Lb4SockVal>,
    /// SNAT reverse entries (LRU).
    pub snat: HashMap<MapData, Ct4Key, Lb4SnatEntry>,
    /// Attached devices (ifindex -> 1).
    pub devices: HashMap<MapData, u32, u8>,
    /// IPv6 frontend entries (slot 0) and backend slots.
    pub services6: HashMap<MapData, Lb6Key, Lb4Service>,
    /// IPv6 backends by id.
    pub backends6: HashMap<MapData, u32, Lb6Backend>,
    /// IPv6 reverse-NAT entries by id.
    pub rev_nat6: HashMap<MapData, u32, Lb6ReverseNat>,
    /// IPv6 connection tracking (LRU).
    pub ct6: HashMap<MapData, Ct6Key, Ct6Entry>,
    /// IPv6 session affinity (LRU).
    pub affinity6: HashMap<MapData, Lb6AffinityKey, LbAffinityVal>,
    /// IPv6 source ranges.
    pub src_range6: LpmTrie<MapData, SrcRangeData6, u8>,
    /// IPv6 SNAT reverse entries (LRU).
    pub snat6: HashMap<MapData, Ct6Key, Lb6SnatEntry>,
    /// IPv6 socket-LB reverse translation (LRU).
    pub sock_rev6: HashMap<MapData, Lb6SockKey, Lb6SockVal>,
    capacities: Vec<(&'static str, u32)>,
}

impl std::fmt::Debug for Maps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maps").finish_non_exhaustive()
    }
}

fn open(
    dir: &Path,
    map: &'static str,
    caps: &mut Vec<(&'static str, u32)>,
) -> Result<Map, MapsError> {
    let err = |source| MapsError { map, source };
    let data = MapData::from_pin(dir.join(map)).map_err(err)?;
    caps.push((map, data.info().map_err(err)?.max_entries()));
    Map::from_map_data(data).map_err(err)
}

macro_rules! typed {
    ($dir:expr, $caps:expr, $name:expr) => {
        open($dir, $name, $caps)?
            .try_into()
            .map_err(|source| MapsError { map: $name, source })?
    };
}

impl Maps {
    /// Opens the maps pinned under the loader's pin directory `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Maps, MapsError> {
        let dir = &maps_dir(pin_dir);
        let caps = &mut Vec::new();
        Ok(Maps {
            services: typed!(dir, caps, MAP_SERVICES),
            backends: typed!(dir, caps, MAP_BACKENDS),
            rev_nat: typed!(dir, caps, MAP_REV_NAT),
            ct: typed!(dir, caps, MAP_CT),
            affinity: typed!(dir, caps, MAP_AFFINITY),
            maglev: typed!(dir, caps, MAP_MAGLEV),
            src_range: typed!(dir, caps, MAP_SRC_RANGE),
            config: typed!(dir, caps, MAP_CONFIG),
            drops: typed!(dir, caps, MAP_DROPS),
            svc_stats: typed!(dir, caps, MAP_SVC_STATS),
            be_stats: typed!(dir, caps, MAP_BE_STATS),
            svc_meta: typed!(dir, caps, MAP_SVC_META),
            be_meta: typed!(dir, caps, MAP_BE_META),
            sock_rev: typed!(dir, caps, MAP_SOCK_REV),
            snat: typed!(dir, caps, MAP_SNAT),
            devices: typed!(dir, caps, MAP_DEVICES),
            services6: typed!(dir, caps, MAP_SERVICES6),
            backends6: typed!(dir, caps, MAP_BACKENDS6),
            rev_nat6: typed!(dir, caps, MAP_REV_NAT6),
            ct6: typed!(dir, caps, MAP_CT6),
            affinity6: typed!(dir, caps, MAP_AFFINITY6),
            src_range6: typed!(dir, caps, MAP_SRC_RANGE6),
            snat6: typed!(dir, caps, MAP_SNAT6),
            sock_rev6: typed!(dir, caps, MAP_SOCK_REV6),
            capacities: std::mem::take(caps),
        })
    }

    /// The counters (summed over CPUs) of the frontend with counter slot
    /// `slot`.
    pub fn service_stats_at(&self, slot: u32) -> Result<LbSvcStats, MapError> {
        Ok(sum_cpus(&self.svc_stats.get(&slot, 0)?))
    }

    /// The counters (summed over CPUs) of the backend with counter slot
    /// `slot`.
    pub fn backend_stats_at(&self, slot: u32) -> Result<LbSvcStats, MapError> {
        Ok(sum_cpus(&self.be_stats.get(&slot, 0)?))
    }

    /// `max_entries` of a map, as the kernel reported it when opened.
    pub fn capacity(&self, map: &str) -> Option<u32> {
        self.capacities
            .iter()
            .find(|(m, _)| *m == map)
            .map(|(_, c)| *c)
    }
}

/// The sum of per-CPU counters.
fn sum_cpus(per_cpu: &PerCpuValues<LbSvcStats>) -> LbSvcStats {
    let mut sum = LbSvcStats::default();
    for s in per_cpu.iter() {
        sum.packets += s.packets;
        sum.bytes += s.bytes;
        sum.new_flows += s.new_flows;
    }
    sum
}
