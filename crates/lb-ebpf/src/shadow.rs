//! The dataplane's userspace copy of what it wrote into the maps it alone
//! writes (services, backends, reverse NAT, metadata, the counter slots
//! handed out, Maglev tables and source ranges), and the undo log of a batch. The
//! per-family maps (`lb4_*`, `lb6_*`) have one [`FamShadow`] each; the
//! shared ones (counters, metadata, Maglev) one copy.
//!
//! [`crate::EbpfDataplane`] is the only writer of these maps, so the copy
//! is exact: a write is skipped when the entry already holds the value, and
//! the value to restore on rollback comes from the copy instead of a read
//! of the kernel's map (the read before every write made a full sync cost
//! twice the syscalls). The copy is rebuilt from the pinned maps once, when
//! the dataplane is opened (after an agent restart), and after a rollback
//! that could not restore every entry.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;

use std::os::fd::AsFd;

use aya::maps::{
    Array, HashMap as BpfHashMap, IterableMap, MapData, MapError, PerCpuArray, PerCpuValues,
};
use aya::Pod;

use crate::abi::*;
use crate::batch;
use crate::dataplane::ignore_missing;
use crate::family::{Family, V4, V6};
use crate::maps::Maps;
use crate::retry::on_enomem;
use crate::slots::SlotAlloc;

/// A frontend as programmed: its slot-0 key, backend slot count and source
/// ranges of its family `(network address, prefix length)` in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FeState<F: Family> {
    pub key: F::Key,
    pub total: u16,
    pub ranges: Vec<(F::Addr, u8)>,
}

/// What the dataplane wrote into one family's maps.
#[derive(Debug)]
pub(crate) struct FamShadow<F: Family> {
    /// Frontends of this family by service id.
    pub frontends: HashMap<u32, FeState<F>>,
    /// `lb4_services` / `lb6_services`: slot 0 and backend slots of every
    /// frontend.
    pub services: HashMap<F::Key, Lb4Service>,
    /// `lb4_backends` / `lb6_backends`.
    pub backends: HashMap<u32, F::Backend>,
    /// `lb4_reverse_nat` / `lb6_reverse_nat`.
    pub rev_nat: HashMap<u32, F::RevNat>,
    /// `lb4_src_range` / `lb6_src_range`, keyed `(service id, address,
    /// prefix length)`.
    pub ranges: HashMap<(u32, F::Addr, u8), u8>,
}

impl<F: Family> Default for FamShadow<F> {
    fn default() -> Self {
        FamShadow {
            frontends: HashMap::new(),
            services: HashMap::new(),
            backends: HashMap::new(),
            rev_nat: HashMap::new(),
            ranges: HashMap::new(),
        }
    }
}

/// What the dataplane wrote.
#[derive(Debug, Default)]
pub(crate) struct Shadow {
    /// The `lb4_*` maps.
    pub v4: FamShadow<V4>,
    /// The `lb6_*` maps.
    pub v6: FamShadow<V6>,
    /// `lb_be_meta`.
    pub be_meta: HashMap<u32, LbBeMeta>,
    /// Counter slots of backends (`lb_be_stats`), by backend id.
    pub be_slots: SlotAlloc,
    /// `lb_svc_meta`.
    pub svc_meta: HashMap<u32, LbSvcMeta>,
    /// Counter slots of frontends (`lb_svc_stats`), by service id.
    pub svc_slots: SlotAlloc,
    /// Keys of `lb4_maglev` (both families' tables).
    pub maglev: HashSet<u32>,
}

impl Shadow {
    /// The affinity timeout (seconds) of frontend `id`, if it is programmed
    /// (in either family) with session affinity.
    pub fn affinity_timeout(&self, id: u32) -> Option<u32> {
        fn of<F: Family>(s: &FamShadow<F>, id: u32) -> Option<u32> {
            let fe = s.services.get(&s.frontends.get(&id)?.key)?;
            (fe.flags & SVC_F_AFFINITY != 0).then_some(fe.affinity_timeout)
        }
        of(&self.v4, id).or_else(|| of(&self.v6, id))
    }
}

/// One family's entry's previous state, to put back on rollback (`None`:
/// absent).
pub(crate) enum FamUndo<F: Family> {
    Fe(u32, Option<FeState<F>>),
    Service(F::Key, Option<Lb4Service>),
    Backend(u32, Option<F::Backend>),
    RevNat(u32, Option<F::RevNat>),
    Range((u32, F::Addr, u8), Option<u8>),
}

/// One entry's previous state, to put back on rollback (`None`: absent).
pub(crate) enum Undo {
    V4(FamUndo<V4>),
    V6(FamUndo<V6>),
    BeMeta(u32, Option<LbBeMeta>),
    SvcMeta(u32, Option<LbSvcMeta>),
    /// Owner `.1` got a new counter slot (rollback: free it).
    SlotNew(Ctr, u32),
    /// Owner `.1` gave back slot `.2` holding counters `.3` (rollback: take
    /// it again and put the counters back, in case the batch reused it).
    SlotFreed(Ctr, u32, u32, Option<PerCpuValues<LbSvcStats>>),
    Maglev(u32, Option<Array<MapData, u32>>),
}

/// Which counter array a slot is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctr {
    /// `lb_svc_stats` (owners: service ids).
    Svc,
    /// `lb_be_stats` (owners: backend ids).
    Be,
}

impl Ctr {
    /// The map's name.
    pub fn map(self) -> &'static str {
        match self {
            Ctr::Svc => MAP_SVC_STATS,
            Ctr::Be => MAP_BE_STATS,
        }
    }

    /// The allocator of this array in `shadow`.
    pub fn slots(self, shadow: &mut Shadow) -> &mut SlotAlloc {
        match self {
            Ctr::Svc => &mut shadow.svc_slots,
            Ctr::Be => &mut shadow.be_slots,
        }
    }

    /// The array in `maps`.
    pub fn array(self, maps: &mut Maps) -> &mut PerCpuArray<MapData, LbSvcStats> {
        match self {
            Ctr::Svc => &mut maps.svc_stats,
            Ctr::Be => &mut maps.be_stats,
        }
    }
}

impl fmt::Display for Ctr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.map())
    }
}

/// The counter slot of `owner` in `ctr`'s array, newly taken (and queued
/// to be zeroed, before anything naming it is written) when it had none.
/// `None` when the array is full (the batch check rules that out).
pub(crate) fn slot_for(
    ctr: Ctr,
    shadow: &mut Shadow,
    pending: &mut Pending,
    undo: &mut UndoLog,
    owner: u32,
) -> Option<u32> {
    let (slot, fresh) = ctr.slots(shadow).assign(owner)?;
    if fresh {
        undo.push(Undo::SlotNew(ctr, owner));
        match ctr {
            Ctr::Svc => pending.svc_stats.push(slot),
            Ctr::Be => pending.be_stats.push(slot),
        }
    }
    Some(slot)
}

/// Frees the counter slot of `owner` (if it has one). Its counters are read
/// for rollback only: a slot is zeroed when it is handed out again.
pub(crate) fn free_slot(
    ctr: Ctr,
    shadow: &mut Shadow,
    maps: &mut Maps,
    undo: &mut UndoLog,
    owner: u32,
) {
    if let Some(slot) = ctr.slots(shadow).release(owner) {
        let counters = ctr.array(maps).get(&slot, 0).ok();
        undo.push(Undo::SlotFreed(ctr, owner, slot, counters));
    }
}

/// The previous state of every entry a batch wrote, oldest first.
pub(crate) type UndoLog = Vec<Undo>;

/// Puts `key` back to `prev` in `map` and its copy `mirror`.
fn restore<K: Pod + Eq + Hash, V: Pod>(
    map: &mut BpfHashMap<MapData, K, V>,
    mirror: &mut HashMap<K, V>,
    key: K,
    prev: Option<V>,
) -> Result<(), MapError> {
    match prev {
        Some(v) => {
            mirror.insert(key, v);
            map.insert(key, v, 0)
        }
        None => {
            mirror.remove(&key);
            ignore_missing(map.remove(&key))
        }
    }
}

/// Queues `key = value` for `pending` and writes it into `mirror`, unless
/// the copy says the map already holds it; records the previous value in
/// `undo` through `wrap` (before the write: a write that fails is restored
/// too, which is a no-op or a delete of nothing).
pub(crate) fn put<K: Pod + Eq + Hash, V: Pod + PartialEq>(
    mirror: &mut HashMap<K, V>,
    pending: &mut Vec<(K, V)>,
    undo: &mut UndoLog,
    wrap: fn(K, Option<V>) -> Undo,
    key: K,
    value: V,
) {
    let prev = mirror.get(&key).copied();
    if prev == Some(value) {
        return;
    }
    undo.push(wrap(key, prev));
    mirror.insert(key, value);
    pending.push((key, value));
}

/// Removes `key` from `map` and `mirror` when the copy has it. Call
/// [`Pending::flush`] first: queued writes go before any removal.
pub(crate) fn del<K: Pod + Eq + Hash, V: Pod>(
    map: &mut BpfHashMap<MapData, K, V>,
    mirror: &mut HashMap<K, V>,
    undo: &mut UndoLog,
    wrap: fn(K, Option<V>) -> Undo,
    key: K,
) -> Result<(), MapError> {
    let Some(prev) = mirror.remove(&key) else {
        return Ok(());
    };
    undo.push(wrap(key, Some(prev)));
    ignore_missing(map.remove(&key))
}

/// Writes queued for one `BPF_MAP_UPDATE_BATCH` per map (`be_stats` and
/// `svc_stats`: counter slots to zero).
///
/// A batch's ops are written in runs of one kind (the reconciler orders
/// them: backends, reverse NAT, Maglev, frontends, then removals); the
/// queues are flushed when the kind changes, before any removal and at the
/// end, so every entry is in the map before an entry written later can
/// name it. Within a flush the counters and metadata go first, then the
/// services map in queue order (a frontend's backend slots before its
/// slot 0).
#[derive(Default)]
pub(crate) struct Pending {
    pub v4: FamPending<V4>,
    pub v6: FamPending<V6>,
    pub be_meta: Vec<(u32, LbBeMeta)>,
    pub be_stats: Vec<u32>,
    pub svc_meta: Vec<(u32, LbSvcMeta)>,
    pub svc_stats: Vec<u32>,
}

/// One family's queued writes (see [`Pending`]).
pub(crate) struct FamPending<F: Family> {
    pub services: Vec<(F::Key, Lb4Service)>,
    pub backends: Vec<(u32, F::Backend)>,
    pub rev_nat: Vec<(u32, F::RevNat)>,
}

impl<F: Family> Default for FamPending<F> {
    fn default() -> Self {
        FamPending {
            services: Vec::new(),
            backends: Vec::new(),
            rev_nat: Vec::new(),
        }
    }
}

/// Writes `items` into `map` in one batch; whatever the batch did not apply
/// (an old kernel without batch updates for this map type, or an error) is
/// written one element at a time, so the error reported is the element's.
fn flush_map<K: Pod, V: Pod>(
    map: &mut BpfHashMap<MapData, K, V>,
    items: &mut Vec<(K, V)>,
) -> Result<(), MapError> {
    if items.is_empty() {
        return Ok(());
    }
    let (keys, values): (Vec<K>, Vec<V>) = items.drain(..).unzip();
    let done = match batch::update(map.map().fd(), &keys, &values) {
        Ok(()) => return Ok(()),
        Err(e) => e.done,
    };
    for (k, v) in keys.iter().zip(&values).skip(done) {
        on_enomem(|| map.insert(k, v, 0))?;
    }
    Ok(())
}

/// [`flush_map`] for a per-CPU counter array: zeroed counters in `slots`.
fn flush_stats(
    map: &mut PerCpuArray<MapData, LbSvcStats>,
    slots: &mut Vec<u32>,
) -> Result<(), MapError> {
    if slots.is_empty() {
        return Ok(());
    }
    let ids: Vec<u32> = std::mem::take(slots);
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| MapError::IoError(e))?;
    // Every CPU's copy is padded to 8 bytes; LbSvcStats is 3 × u64.
    let zeros = vec![0u8; ids.len() * cpus * std::mem::size_of::<LbSvcStats>()];
    let done = match batch::update_raw(map.map().fd().as_fd(), &ids, &zeros) {
        Ok(()) => return Ok(()),
        Err(e) => e.done,
    };
    let zero = || PerCpuValues::try_from(vec![LbSvcStats::default(); cpus]);
    for k in ids.iter().skip(done) {
        map.set(*k, zero().map_err(MapError::IoError)?, 0)?;
    }
    Ok(())
}

impl Pending {
    /// Writes everything queued; on failure names the map.
    pub(crate) fn flush(&mut self, maps: &mut Maps) -> Result<(), (&'static str, MapError)> {
        flush_stats(&mut maps.be_stats, &mut self.be_stats).map_err(|e| (MAP_BE_STATS, e))?;
        flush_map(&mut maps.be_meta, &mut self.be_meta).map_err(|e| (MAP_BE_META, e))?;
        flush_fam(maps, &mut self.v4.backends, V4::backends_mut, V4::BACKENDS)?;
        flush_fam(maps, &mut self.v6.backends, V6::backends_mut, V6::BACKENDS)?;
        flush_fam(maps, &mut self.v4.rev_nat, V4::rev_nat_mut, V4::REV_NAT)?;
        flush_fam(maps, &mut self.v6.rev_nat, V6::rev_nat_mut, V6::REV_NAT)?;
        flush_stats(&mut maps.svc_stats, &mut self.svc_stats).map_err(|e| (MAP_SVC_STATS, e))?;
        flush_map(&mut maps.svc_meta, &mut self.svc_meta).map_err(|e| (MAP_SVC_META, e))?;
        flush_fam(maps, &mut self.v4.services, V4::services_mut, V4::SERVICES)?;
        flush_fam(maps, &mut self.v6.services, V6::services_mut, V6::SERVICES)
    }
}

/// [`flush_map`] of the map `map` picks from `maps`, named `name`.
fn flush_fam<K: Pod, V: Pod>(
    maps: &mut Maps,
    items: &mut Vec<(K, V)>,
    map: fn(&mut Maps) -> &mut BpfHashMap<MapData, K, V>,
    name: &'static str,
) -> Result<(), (&'static str, MapError)> {
    if items.is_empty() {
        return Ok(());
    }
    flush_map(map(maps), items).map_err(|e| (name, e))
}

/// Restores one family's entry (see [`rollback`]).
fn rollback_fam<F: Family>(
    u: FamUndo<F>,
    maps: &mut Maps,
    shadow: &mut Shadow,
) -> Result<(), MapError> {
    match u {
        FamUndo::Fe(id, prev) => {
            let fes = &mut F::sh_mut(shadow).frontends;
            match prev {
                Some(f) => fes.insert(id, f),
                None => fes.remove(&id),
            };
            Ok(())
        }
        FamUndo::Service(k, p) => {
            restore(F::services_mut(maps), &mut F::sh_mut(shadow).services, k, p)
        }
        FamUndo::Backend(k, p) => {
            restore(F::backends_mut(maps), &mut F::sh_mut(shadow).backends, k, p)
        }
        FamUndo::RevNat(k, p) => {
            restore(F::rev_nat_mut(maps), &mut F::sh_mut(shadow).rev_nat, k, p)
        }
        FamUndo::Range(k, p) => {
            let key = F::range_key(k.0, k.1, k.2);
            let ranges = &mut F::sh_mut(shadow).ranges;
            match p {
                Some(v) => {
                    ranges.insert(k, v);
                    F::src_range_mut(maps).insert(&key, v, 0)
                }
                None => {
                    ranges.remove(&k);
                    ignore_missing(F::src_range_mut(maps).remove(&key))
                }
            }
        }
    }
}

/// Restores every entry of `undo`, newest first, in the maps and in
/// `shadow`. Returns how many restores the kernel refused (they are best
/// effort: the caller then rebuilds the copy from the maps).
pub(crate) fn rollback(undo: UndoLog, maps: &mut Maps, shadow: &mut Shadow) -> usize {
    let mut failed = 0;
    for u in undo.into_iter().rev() {
        let r = match u {
            Undo::V4(u) => rollback_fam(u, maps, shadow),
            Undo::V6(u) => rollback_fam(u, maps, shadow),
            Undo::BeMeta(k, p) => restore(&mut maps.be_meta, &mut shadow.be_meta, k, p),
            Undo::SvcMeta(k, p) => restore(&mut maps.svc_meta, &mut shadow.svc_meta, k, p),
            Undo::SlotNew(ctr, owner) => {
                ctr.slots(shadow).release(owner);
                Ok(())
            }
            Undo::SlotFreed(ctr, owner, slot, counters) => {
                ctr.slots(shadow).take(owner, slot);
                match counters {
                    Some(v) => ctr.array(maps).set(slot, v, 0),
                    None => Ok(()),
                }
            }
            Undo::Maglev(id, p) => match p {
                Some(inner) => {
                    shadow.maglev.insert(id);
                    maps.maglev.insert(id, &inner, 0)
                }
                None => {
                    shadow.maglev.remove(&id);
                    ignore_missing(maps.maglev.remove(&id))
                }
            },
        };
        if r.is_err() {
            failed += 1;
        }
    }
    failed
}

/// Rebuilds one family's copy from its maps.
fn read_fam<F: Family>(maps: &Maps) -> Result<FamShadow<F>, (&'static str, MapError)> {
    let mut s = FamShadow::<F>::default();
    for item in F::services(maps).iter() {
        let (k, v) = item.map_err(|e| (F::SERVICES, e))?;
        s.services.insert(k, v);
    }
    for (k, v) in &s.services {
        if F::slot(k) == 0 {
            s.frontends.insert(
                v.rev_nat_index,
                FeState {
                    key: *k,
                    total: v.total,
                    ranges: Vec::new(),
                },
            );
        }
    }
    // Source ranges in their list order (the trie's value is the position).
    let trie = F::src_range(maps);
    let mut ranges: Vec<(u32, u8, (F::Addr, u8))> = Vec::new();
    for k in trie.keys() {
        let k = k.map_err(|e| (F::SRC_RANGE, e))?;
        let (id, addr, len) = F::range_parts(&k);
        let pos = trie.get(&k, 0).unwrap_or(u8::MAX);
        s.ranges.insert((id, addr, len), pos);
        ranges.push((id, pos, (addr, len)));
    }
    ranges.sort();
    for (id, _, r) in ranges {
        if let Some(fe) = s.frontends.get_mut(&id) {
            fe.ranges.push(r);
        }
    }
    for item in F::backends(maps).iter() {
        let (k, v) = item.map_err(|e| (F::BACKENDS, e))?;
        s.backends.insert(k, v);
    }
    for item in F::rev_nat_map(maps).iter() {
        let (k, v) = item.map_err(|e| (F::REV_NAT, e))?;
        s.rev_nat.insert(k, v);
    }
    Ok(s)
}

/// Owners whose counter slot [`read`] could not keep (out of the array, or
/// shared with another owner): they need a new slot written into their entry.
#[derive(Debug, Default)]
pub(crate) struct SlotConflicts {
    /// Service ids.
    pub svc: Vec<u32>,
    /// Backend ids.
    pub be: Vec<u32>,
}

/// `(service id, counter slot)` of every frontend of family `F`.
fn fe_slots<F: Family>(s: &FamShadow<F>) -> impl Iterator<Item = (u32, u32)> + '_ {
    s.frontends
        .iter()
        .filter_map(|(id, fe)| Some((*id, s.services.get(&fe.key)?.stats_slot)))
}

/// `(backend id, counter slot)` of every backend of family `F`.
fn be_slots<F: Family>(s: &FamShadow<F>) -> impl Iterator<Item = (u32, u32)> + '_ {
    s.backends.iter().map(|(id, b)| (*id, F::stats_slot(b)))
}

/// Rebuilds the copy from the maps (one pass over each), with the counter
/// slot allocators (the slots the services and backends maps name).
pub(crate) fn read(maps: &Maps) -> Result<(Shadow, SlotConflicts), (&'static str, MapError)> {
    let mut s = Shadow {
        v4: read_fam(maps)?,
        v6: read_fam(maps)?,
        ..Shadow::default()
    };
    let cap = |m| maps.capacity(m).unwrap_or(0);
    // Sorted, so which of two owners of one slot keeps it does not depend
    // on hash order.
    let mut pairs: Vec<(u32, u32)> = fe_slots(&s.v4).chain(fe_slots(&s.v6)).collect();
    pairs.sort_unstable();
    let (svc_slots, svc) = SlotAlloc::rebuild(cap(MAP_SVC_STATS), pairs);
    let mut pairs: Vec<(u32, u32)> = be_slots(&s.v4).chain(be_slots(&s.v6)).collect();
    pairs.sort_unstable();
    let (be_slots, be) = SlotAlloc::rebuild(cap(MAP_BE_STATS), pairs);
    s.svc_slots = svc_slots;
    s.be_slots = be_slots;
    for item in maps.be_meta.iter() {
        let (k, v) = item.map_err(|e| (MAP_BE_META, e))?;
        s.be_meta.insert(k, v);
    }
    for item in maps.svc_meta.iter() {
        let (k, v) = item.map_err(|e| (MAP_SVC_META, e))?;
        s.svc_meta.insert(k, v);
    }
    for k in maps.maglev.keys() {
        s.maglev.insert(k.map_err(|e| (MAP_MAGLEV, e))?);
    }
    Ok((s, SlotConflicts { svc, be }))
}
