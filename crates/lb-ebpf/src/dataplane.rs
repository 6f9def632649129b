//! [`EbpfDataplane`]: lb-core's [`Op`]s as writes to the pinned BPF maps.
//!
//! Every batch is checked first (IPv4 only, Maglev table size, backends
//! that slots name, and the peak occupancy of every map while the batch is
//! applied); only then are maps written, in the op order the reconciler
//! chose. Within one frontend: source ranges, backend slots, then slot 0
//! (its counts last), then stale slots and ranges. A Maglev table is a new
//! inner array, filled, then swapped into the outer map in one update.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use aya::maps::{Array, HashMap as BpfHashMap, MapData, MapError, PerCpuHashMap, PerCpuValues};
use aya::Pod;
use lb_core::{
    Backend, BackendId, BackendState, Dataplane, DataplaneError, Frontend, FrontendType, L4Proto,
    LbAlgorithm, MaglevConfig, NodeConfig, Op, ServiceId,
};

use crate::abi::*;
use crate::maps::{Maps, SrcRangeData, SrcRangeKey};
use crate::retry::on_enomem;

/// Counters read from the per-CPU maps (summed over CPUs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Dropped packets per reason.
    pub drops: Vec<(DropReason, u64)>,
    /// Per-frontend counters.
    pub services: BTreeMap<ServiceId, LbSvcStats>,
    /// Per-backend counters (client -> backend direction; socket-LB
    /// connections count as new flows).
    pub backends: BTreeMap<BackendId, LbSvcStats>,
}

impl Counters {
    /// Drops for one reason.
    pub fn drops_for(&self, reason: DropReason) -> u64 {
        self.drops
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }
}

/// Records `$key` of the hash map `$field` in the undo log.
macro_rules! undo_hash {
    ($undo:expr, $maps:expr, $field:ident, $key:expr) => {
        $undo.hash(&*$maps, |m| &mut m.$field, |m| &m.$field, $key)
    };
}

/// Records `$key` of the per-CPU hash map `$field` in the undo log.
macro_rules! undo_per_cpu {
    ($undo:expr, $maps:expr, $field:ident, $key:expr) => {
        $undo.per_cpu(&*$maps, |m| &mut m.$field, |m| &m.$field, $key)
    };
}

type UndoFn = Box<dyn FnOnce(&mut Maps) -> Result<(), MapError>>;

/// The previous contents of every map entry a batch wrote, to put back in
/// reverse order when a later write fails ([`Dataplane::apply`] is all or
/// nothing).
#[derive(Default)]
struct UndoLog {
    entries: Vec<UndoFn>,
}

impl UndoLog {
    /// Records the current value (or absence) of `key` in a hash map.
    fn hash<K: Pod + 'static, V: Pod + 'static>(
        &mut self,
        maps: &Maps,
        sel: fn(&mut Maps) -> &mut BpfHashMap<MapData, K, V>,
        get: fn(&Maps) -> &BpfHashMap<MapData, K, V>,
        key: K,
    ) {
        let prev = get(maps).get(&key, 0).ok();
        self.entries.push(Box::new(move |m| {
            let map = sel(m);
            match prev {
                Some(v) => map.insert(key, v, 0),
                None => ignore_missing(map.remove(&key)),
            }
        }));
    }

    /// Records the current values (or absence) of `key` in a per-CPU hash map.
    fn per_cpu<K: Pod + 'static, V: Pod + 'static>(
        &mut self,
        maps: &Maps,
        sel: fn(&mut Maps) -> &mut PerCpuHashMap<MapData, K, V>,
        get: fn(&Maps) -> &PerCpuHashMap<MapData, K, V>,
        key: K,
    ) {
        let prev = get(maps).get(&key, 0).ok();
        self.entries.push(Box::new(move |m| {
            let map = sel(m);
            match prev {
                Some(v) => map.insert(key, v, 0),
                None => ignore_missing(map.remove(&key)),
            }
        }));
    }

    /// Records the Maglev table (inner map) of service `id`, if any.
    fn maglev(&mut self, maps: &Maps, id: u16) {
        let prev = maps.maglev.get(&id, 0).ok();
        self.entries.push(Box::new(move |m| match prev {
            Some(inner) => m.maglev.insert(id, &inner, 0),
            None => ignore_missing(m.maglev.remove(&id)),
        }));
    }

    /// Records a source-range entry; `existed` comes from the shadow state
    /// (an LPM lookup cannot tell an exact match from a shorter prefix).
    fn src_range(&mut self, maps: &Maps, key: SrcRangeKey, existed: bool) {
        let prev = if existed {
            Some(maps.src_range.get(&key, 0).unwrap_or(0))
        } else {
            None
        };
        self.entries.push(Box::new(move |m| match prev {
            Some(v) => m.src_range.insert(&key, v, 0),
            None => ignore_missing(m.src_range.remove(&key)),
        }));
    }

    /// Restores every recorded entry, newest first. Returns how many
    /// restores failed (they are best effort: the maps are resynced after).
    fn rollback(self, maps: &mut Maps) -> usize {
        self.entries
            .into_iter()
            .rev()
            .map(|undo| undo(maps))
            .filter(Result::is_err)
            .count()
    }
}

/// What the dataplane knows is programmed (rebuilt from the maps on open).
#[derive(Debug, Clone, Default)]
struct Shadow {
    frontends: HashMap<u16, FeState>,
    backends: HashSet<u32>,
    rev_nat: HashSet<u16>,
    maglev: HashSet<u16>,
    /// Entries of the services map (every frontend's total + 1).
    service_entries: usize,
    /// Entries of the source-range trie.
    range_entries: usize,
}

#[derive(Debug, Clone)]
struct FeState {
    key: Lb4Key,
    total: u16,
    ranges: Vec<(u32, u8)>,
}

/// Capacities of the maps the dataplane fills.
#[derive(Debug, Clone, Copy)]
struct Caps {
    services: usize,
    backends: usize,
    rev_nat: usize,
    maglev: usize,
    src_range: usize,
}

/// The eBPF dataplane: implements [`Dataplane`] on the maps a
/// [`crate::load`] pinned.
#[derive(Debug)]
pub struct EbpfDataplane {
    pub(crate) maps: Maps,
    pub(crate) maglev: MaglevConfig,
    caps: Caps,
    shadow: Shadow,
}

pub(crate) fn sys(context: impl Into<String>) -> impl FnOnce(MapError) -> DataplaneError {
    let context = context.into();
    move |e| DataplaneError::System {
        context,
        source: Box::new(e),
    }
}

pub(crate) fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

fn unsupported(what: impl Into<String>) -> DataplaneError {
    DataplaneError::Unsupported(what.into())
}

fn v4(addr: IpAddr, what: &dyn std::fmt::Display) -> Result<Ipv4Addr, DataplaneError> {
    match addr {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(_) => Err(unsupported(format!(
            "{what}: IPv6 (this dataplane is IPv4 only)"
        ))),
    }
}

/// An IPv4 address as the datapath stores it (`__be32`).
pub fn be32(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

/// The protocol number of a TCP or UDP address (the datapath parses
/// nothing else: an SCTP entry would never match).
fn l4(proto: L4Proto, what: &dyn std::fmt::Display) -> Result<u8, DataplaneError> {
    match proto {
        L4Proto::Tcp | L4Proto::Udp => Ok(proto.number()),
        other => Err(unsupported(format!(
            "{what}: {other} (this dataplane handles TCP and UDP only)"
        ))),
    }
}

fn fe_type(kind: FrontendType) -> u8 {
    match kind {
        FrontendType::ClusterIp => 0,
        FrontendType::NodePort => 1,
        FrontendType::LoadBalancer => 2,
        FrontendType::ExternalIp => 3,
        FrontendType::HostPort => 4,
    }
}

/// The services-map key of a frontend (slot 0).
pub fn frontend_key(fe: &Frontend) -> Result<Lb4Key, DataplaneError> {
    let addr = fe.key.addr;
    Ok(Lb4Key {
        address: be32(v4(addr.addr, &addr)?),
        dport: addr.port.to_be(),
        backend_slot: 0,
        proto: l4(addr.proto, &addr)?,
        scope: fe.key.scope as u8,
        pad: [0; 2],
    })
}

/// The slot-0 value of a frontend.
pub fn frontend_entry(fe: &Frontend) -> Lb4Service {
    let sel = fe.selectable_backends();
    let mut flags = 0;
    if fe.affinity_timeout.is_some() {
        flags |= SVC_F_AFFINITY;
    }
    if fe.algorithm == LbAlgorithm::Maglev {
        flags |= SVC_F_MAGLEV;
    }
    if fe.local_only {
        flags |= SVC_F_LOCAL_ONLY;
    }
    if fe.two_scopes {
        flags |= SVC_F_TWO_SCOPES;
    }
    if fe.has_source_ranges() {
        flags |= SVC_F_SOURCE_RANGES;
    }
    if !sel.is_empty()
        && sel
            .iter()
            .all(|s| s.weight > 0 && s.weight == sel[0].weight)
    {
        flags |= SVC_F_UNIFORM;
    }
    Lb4Service {
        affinity_timeout: fe.affinity_timeout.unwrap_or(0),
        total_weight: sel.iter().map(|s| u32::from(s.weight)).sum(),
        count: sel.len() as u16,
        total: fe.backends.len() as u16,
        rev_nat_index: fe.id.0,
        flags,
        fe_type: fe_type(fe.kind),
        ..Lb4Service::default()
    }
}

fn v4_ranges(fe: &Frontend) -> Vec<(u32, u8)> {
    fe.source_ranges
        .iter()
        .filter_map(|n| match n {
            ipnet::IpNet::V4(n) => Some((be32(n.network()), n.prefix_len())),
            ipnet::IpNet::V6(_) => None,
        })
        .collect()
}

fn range_key(id: u16, (addr, len): (u32, u8)) -> SrcRangeKey {
    SrcRangeKey::new(
        32 + u32::from(len),
        SrcRangeData {
            rev_nat_index: id,
            pad: 0,
            addr,
        },
    )
}

/// The backends-map value of a backend.
pub fn backend_value(b: &Backend) -> Result<Lb4Backend, DataplaneError> {
    let addr = &b.addr;
    Ok(Lb4Backend {
        address: be32(v4(addr.addr, addr)?),
        port: addr.port.to_be(),
        proto: l4(addr.proto, addr)?,
        flags: if b.local { BE_F_LOCAL } else { 0 },
    })
}

/// Zeroed per-CPU counters (a new service or backend starts from 0).
fn zero_stats(ctx: &str) -> Result<PerCpuValues<LbSvcStats>, DataplaneError> {
    let err = |e: std::io::Error| DataplaneError::System {
        context: ctx.to_string(),
        source: Box::new(e),
    };
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| err(e))?;
    PerCpuValues::try_from(vec![LbSvcStats::default(); cpus]).map_err(err)
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

fn state_code(s: BackendState) -> u16 {
    match s {
        BackendState::Active => BE_STATE_ACTIVE,
        BackendState::Terminating => BE_STATE_TERMINATING,
        BackendState::Quarantined => BE_STATE_QUARANTINED,
        BackendState::Maintenance => BE_STATE_MAINTENANCE,
    }
}

impl EbpfDataplane {
    /// Opens the maps pinned under `pin_dir` (by [`crate::load`]), learns
    /// what is already programmed and writes the node's configuration
    /// (Maglev seed and size, node IPv4 addresses).
    ///
    /// A Maglev table size different from the one the programmed Maglev
    /// tables were built for is refused ([`DataplaneError::Unsupported`]):
    /// the datapath would index the old tables with the new size. Run
    /// [`crate::cleanup`] and load again to change it.
    pub fn open(pin_dir: &Path, node: &NodeConfig) -> Result<Self, DataplaneError> {
        let maps = Maps::open(pin_dir).map_err(|e| DataplaneError::System {
            context: "opening pinned maps".into(),
            source: Box::new(e),
        })?;
        let cap = |m| {
            maps.capacity(m)
                .map(|c| c as usize)
                .ok_or_else(|| unsupported(format!("map {m} has no capacity")))
        };
        let caps = Caps {
            services: cap(MAP_SERVICES)?,
            backends: cap(MAP_BACKENDS)?,
            rev_nat: cap(MAP_REV_NAT)?,
            maglev: cap(MAP_MAGLEV)?,
            src_range: cap(MAP_SRC_RANGE)?,
        };
        let mut dp = EbpfDataplane {
            maps,
            maglev: node.maglev,
            caps,
            shadow: Shadow::default(),
        };
        dp.resync()?;
        dp.check_maglev_size()?;
        dp.write_config(node)?;
        Ok(dp)
    }

    /// Refuses a Maglev table size that differs from the size of the
    /// programmed tables (a restart with another [`MaglevConfig`]).
    fn check_maglev_size(&self) -> Result<(), DataplaneError> {
        let want = self.maglev.table_size();
        let Some(id) = self.shadow.maglev.iter().next() else {
            return Ok(());
        };
        let have = self
            .maps
            .maglev
            .get(id, 0)
            .ok()
            .map(|t| t.len())
            .or_else(|| {
                let cfg = self.maps.config.get(&0, 0).ok()?;
                (cfg.maglev_table_size != 0).then_some(cfg.maglev_table_size)
            });
        match have {
            Some(have) if have != want => Err(unsupported(format!(
                "Maglev table size {want}: the programmed tables have {have} entries; \
                 run lb_ebpf::cleanup (or keep the old MaglevConfig) to change it"
            ))),
            _ => Ok(()),
        }
    }

    fn write_config(&mut self, node: &NodeConfig) -> Result<(), DataplaneError> {
        let ips: Vec<u32> = node
            .node_ips
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(a) => Some(be32(*a)),
                IpAddr::V6(_) => None,
            })
            .collect();
        if ips.len() > MAX_NODE_IPS {
            return Err(unsupported(format!(
                "{} node IPv4 addresses (at most {MAX_NODE_IPS})",
                ips.len()
            )));
        }
        // Keep a SNAT port range set earlier (set_snat_ports).
        let old = self.maps.config.get(&0, 0).unwrap_or_default();
        let mut cfg = LbConfig {
            maglev_seed: node.maglev.seed(),
            maglev_table_size: node.maglev.table_size(),
            node_ip_count: ips.len() as u32,
            lb_mode: match node.mode {
                lb_core::LbMode::Snat => crate::abi::LB_MODE_SNAT,
                lb_core::LbMode::Dsr => crate::abi::LB_MODE_DSR,
                lb_core::LbMode::Hybrid => crate::abi::LB_MODE_HYBRID,
            },
            snat_port_min: if old.snat_port_min != 0 {
                old.snat_port_min
            } else {
                SNAT_PORT_MIN
            },
            snat_port_max: if old.snat_port_max != 0 {
                old.snat_port_max
            } else {
                SNAT_PORT_MAX
            },
            ..LbConfig::default()
        };
        cfg.node_ips[..ips.len()].copy_from_slice(&ips);
        self.maps
            .config
            .set(0, cfg, 0)
            .map_err(sys("writing lb_config"))
    }

    /// Sets the source ports SNATed flows use, for new flows. The default,
    /// [`SNAT_PORT_MIN`]`..=`[`SNAT_PORT_MAX`] (61000-65535), lies above
    /// Linux's default `net.ipv4.ip_local_port_range` (32768-60999). Keep
    /// the range clear of the node's own ephemeral ports (check that sysctl
    /// if it was changed) and of NodePorts; a range set here survives
    /// [`EbpfDataplane::open`] after a restart.
    pub fn set_snat_ports(
        &mut self,
        ports: std::ops::RangeInclusive<u16>,
    ) -> Result<(), DataplaneError> {
        if ports.is_empty() || *ports.start() == 0 {
            return Err(unsupported(format!("SNAT port range {ports:?}")));
        }
        let mut cfg = self
            .maps
            .config
            .get(&0, 0)
            .map_err(sys("reading lb_config"))?;
        cfg.snat_port_min = *ports.start();
        cfg.snat_port_max = *ports.end();
        self.maps
            .config
            .set(0, cfg, 0)
            .map_err(sys("writing lb_config"))
    }

    /// Rebuilds the shadow state from the maps.
    fn resync(&mut self) -> Result<(), DataplaneError> {
        let mut s = Shadow::default();
        let keys: Vec<Lb4Key> = self
            .maps
            .services
            .keys()
            .collect::<Result<_, _>>()
            .map_err(sys("listing services"))?;
        s.service_entries = keys.len();
        for key in keys.into_iter().filter(|k| k.backend_slot == 0) {
            if let Ok(v) = self.maps.services.get(&key, 0) {
                s.frontends.insert(
                    v.rev_nat_index,
                    FeState {
                        key,
                        total: v.total,
                        ranges: Vec::new(),
                    },
                );
            }
        }
        for k in self.maps.src_range.keys() {
            let k = k.map_err(sys("listing source ranges"))?;
            s.range_entries += 1;
            let d = k.data();
            if let Some(fe) = s.frontends.get_mut(&d.rev_nat_index) {
                fe.ranges.push((d.addr, (k.prefix_len() - 32) as u8));
            }
        }
        s.backends = self
            .maps
            .backends
            .keys()
            .collect::<Result<_, _>>()
            .map_err(sys("listing backends"))?;
        s.rev_nat = self
            .maps
            .rev_nat
            .keys()
            .collect::<Result<_, _>>()
            .map_err(sys("listing rev-nat"))?;
        s.maglev = self
            .maps
            .maglev
            .keys()
            .collect::<Result<_, _>>()
            .map_err(sys("listing maglev"))?;
        self.shadow = s;
        Ok(())
    }

    /// The services-map key of frontend `id`, if programmed.
    pub(crate) fn shadow_frontend_key(&self, id: u16) -> Option<Lb4Key> {
        self.shadow.frontends.get(&id).map(|fe| fe.key)
    }

    /// The typed maps (tests read CT and affinity entries through them).
    pub fn maps(&mut self) -> &mut Maps {
        &mut self.maps
    }

    /// Reads the drop, per-service and per-backend counters.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        let mut c = Counters::default();
        for r in DropReason::ALL {
            let v = self
                .maps
                .drops
                .get(&(r as u32), 0)
                .map_err(sys("reading lb_drops"))?;
            c.drops.push((r, v.iter().sum()));
        }
        for item in self.maps.svc_stats.iter() {
            let (id, per_cpu) = item.map_err(sys("reading lb_svc_stats"))?;
            c.services.insert(ServiceId(id), sum_cpus(&per_cpu));
        }
        for item in self.maps.be_stats.iter() {
            let (id, per_cpu) = item.map_err(sys("reading lb_be_stats"))?;
            c.backends.insert(BackendId(id), sum_cpus(&per_cpu));
        }
        Ok(c)
    }

    /// Validates the batch against the shadow state and the map capacities;
    /// returns the shadow state after the batch.
    fn check(&self, ops: &[Op]) -> Result<Shadow, DataplaneError> {
        let mut s = self.shadow.clone();
        let mut peak_services = s.service_entries;
        let mut peak_ranges = s.range_entries;
        let (mut peak_backends, mut peak_rev_nat, mut peak_maglev) =
            (s.backends.len(), s.rev_nat.len(), s.maglev.len());
        let m = self.maglev.table_size() as usize;
        for op in ops {
            match op {
                Op::UpsertBackend(b) => {
                    backend_value(b)?;
                    s.backends.insert(b.id.0);
                }
                Op::DeleteBackend { id, .. } => {
                    s.backends.remove(&id.0);
                }
                Op::UpsertRevNat { id, addr } => {
                    v4(addr.addr, addr)?;
                    s.rev_nat.insert(id.0);
                }
                Op::DeleteRevNat { id } => {
                    s.rev_nat.remove(&id.0);
                }
                Op::UpsertMaglev { id, table } => {
                    if !table.is_empty() && table.len() != m {
                        return Err(unsupported(format!(
                            "maglev table {id} has {} entries, the datapath is configured for {m}",
                            table.len()
                        )));
                    }
                    if let Some(b) = table.iter().find(|b| !s.backends.contains(&b.0)) {
                        return Err(DataplaneError::Dangling(format!(
                            "maglev table {id} names backend {b}"
                        )));
                    }
                    if table.is_empty() {
                        s.maglev.remove(&id.0);
                    } else {
                        s.maglev.insert(id.0);
                    }
                }
                Op::DeleteMaglev { id } => {
                    s.maglev.remove(&id.0);
                }
                Op::UpsertFrontend(fe) => {
                    let key = frontend_key(fe)?;
                    let total = u16::try_from(fe.backends.len()).map_err(|_| {
                        unsupported(format!("frontend {}: more than 65535 backends", fe.id))
                    })?;
                    if let Some(b) = fe.backends.iter().find(|b| !s.backends.contains(&b.id.0)) {
                        return Err(DataplaneError::Dangling(format!(
                            "frontend {} names backend {}",
                            fe.id, b.id
                        )));
                    }
                    let ranges = v4_ranges(fe);
                    let (old_entries, old_ranges, same_key, old_total) =
                        match s.frontends.get(&fe.id.0) {
                            Some(o) => (
                                usize::from(o.total) + 1,
                                o.ranges.len(),
                                o.key == key,
                                usize::from(o.total),
                            ),
                            None => (0, 0, false, 0),
                        };
                    let new_entries = usize::from(total) + 1;
                    let during = if same_key {
                        s.service_entries - old_entries + old_total.max(new_entries - 1) + 1
                    } else {
                        s.service_entries + new_entries
                    };
                    peak_services = peak_services.max(during);
                    s.service_entries = s.service_entries - old_entries + new_entries;
                    peak_ranges = peak_ranges.max(s.range_entries + ranges.len());
                    s.range_entries = s.range_entries - old_ranges + ranges.len();
                    s.frontends.insert(fe.id.0, FeState { key, total, ranges });
                }
                Op::DeleteFrontend { id, .. } => {
                    if let Some(o) = s.frontends.remove(&id.0) {
                        s.service_entries -= usize::from(o.total) + 1;
                        s.range_entries -= o.ranges.len();
                    }
                }
            }
            peak_backends = peak_backends.max(s.backends.len());
            peak_rev_nat = peak_rev_nat.max(s.rev_nat.len());
            peak_maglev = peak_maglev.max(s.maglev.len());
        }
        for (table, capacity, needed) in [
            ("services map", self.caps.services, peak_services),
            ("backends map", self.caps.backends, peak_backends),
            ("reverse-NAT map", self.caps.rev_nat, peak_rev_nat),
            ("maglev map", self.caps.maglev, peak_maglev),
            ("source-range map", self.caps.src_range, peak_ranges),
        ] {
            if needed > capacity {
                return Err(DataplaneError::CapacityExceeded {
                    table,
                    capacity,
                    needed,
                });
            }
        }
        Ok(s)
    }

    fn write(&mut self, op: &Op, undo: &mut UndoLog) -> Result<(), DataplaneError> {
        let maps = &mut self.maps;
        match op {
            Op::UpsertBackend(b) => {
                let ctx = || format!("writing backend {}", b.id);
                let value = backend_value(b)?;
                undo_hash!(undo, maps, backends, b.id.0);
                maps.backends.insert(b.id.0, value, 0).map_err(sys(ctx()))?;
                if maps.be_stats.get(&b.id.0, 0).is_err() {
                    undo_per_cpu!(undo, maps, be_stats, b.id.0);
                    maps.be_stats
                        .insert(b.id.0, zero_stats(&ctx())?, 0)
                        .map_err(sys(ctx()))?;
                }
                // Metadata only a restarted agent reads; a zone that does
                // not fit is left out (restore then rewrites the backend).
                undo_hash!(undo, maps, be_meta, b.id.0);
                match b.zone.as_deref().and_then(LbBeMeta::new) {
                    Some(m) => maps.be_meta.insert(b.id.0, m, 0).map_err(sys(ctx())),
                    None => ignore_missing(maps.be_meta.remove(&b.id.0)).map_err(sys(ctx())),
                }
            }
            Op::DeleteBackend { id, .. } => {
                let ctx = || format!("deleting backend {id}");
                undo_hash!(undo, maps, backends, id.0);
                ignore_missing(maps.backends.remove(&id.0)).map_err(sys(ctx()))?;
                undo_per_cpu!(undo, maps, be_stats, id.0);
                ignore_missing(maps.be_stats.remove(&id.0)).map_err(sys(ctx()))?;
                undo_hash!(undo, maps, be_meta, id.0);
                ignore_missing(maps.be_meta.remove(&id.0)).map_err(sys(ctx()))
            }
            Op::UpsertRevNat { id, addr } => {
                let v = Lb4ReverseNat {
                    address: be32(v4(addr.addr, addr)?),
                    port: addr.port.to_be(),
                    pad: 0,
                };
                undo_hash!(undo, maps, rev_nat, id.0);
                maps.rev_nat
                    .insert(id.0, v, 0)
                    .map_err(sys(format!("writing rev-nat {id}")))
            }
            Op::DeleteRevNat { id } => {
                undo_hash!(undo, maps, rev_nat, id.0);
                ignore_missing(maps.rev_nat.remove(&id.0))
                    .map_err(sys(format!("deleting rev-nat {id}")))
            }
            Op::UpsertMaglev { id, table } => self.write_maglev(*id, table, undo),
            Op::DeleteMaglev { id } => {
                undo.maglev(maps, id.0);
                ignore_missing(maps.maglev.remove(&id.0))
                    .map_err(sys(format!("deleting maglev {id}")))
            }
            Op::UpsertFrontend(fe) => self.write_frontend(fe, undo),
            Op::DeleteFrontend { id, .. } => self.delete_frontend(*id, undo),
        }
    }

    fn write_maglev(
        &mut self,
        id: ServiceId,
        table: &[BackendId],
        undo: &mut UndoLog,
    ) -> Result<(), DataplaneError> {
        let ctx = || format!("writing maglev table {id}");
        undo.maglev(&self.maps, id.0);
        if table.is_empty() {
            return ignore_missing(self.maps.maglev.remove(&id.0)).map_err(sys(ctx()));
        }
        let mut inner: Array<MapData, u32> =
            on_enomem(|| Array::create(table.len() as u32, BPF_F_INNER_MAP)).map_err(sys(ctx()))?;
        for (i, b) in table.iter().enumerate() {
            inner.set(i as u32, b.0, 0).map_err(sys(ctx()))?;
        }
        // One update swaps the whole table: a packet sees old or new.
        on_enomem(|| self.maps.maglev.insert(id.0, &inner, 0)).map_err(sys(ctx()))
    }

    fn write_frontend(&mut self, fe: &Frontend, undo: &mut UndoLog) -> Result<(), DataplaneError> {
        let ctx = || format!("writing frontend {}", fe.id);
        let key = frontend_key(fe)?;
        let old = self.shadow.frontends.get(&fe.id.0).cloned();
        let old_ranges = old.as_ref().map(|o| o.ranges.clone()).unwrap_or_default();
        let maps = &mut self.maps;
        let ranges = v4_ranges(fe);
        for (pos, r) in ranges.iter().enumerate() {
            let pos = u8::try_from(pos).unwrap_or(u8::MAX);
            let rk = range_key(fe.id.0, *r);
            undo.src_range(maps, rk, old_ranges.contains(r));
            on_enomem(|| maps.src_range.insert(&rk, pos, 0)).map_err(sys(ctx()))?;
        }
        for (i, b) in fe.backends.iter().enumerate() {
            let slot = Lb4Key {
                backend_slot: (i + 1) as u16,
                ..key
            };
            let v = Lb4Service {
                backend_id: b.id.0,
                weight: b.weight,
                flags: state_code(b.state),
                ..Lb4Service::default()
            };
            undo_hash!(undo, maps, services, slot);
            maps.services.insert(slot, v, 0).map_err(sys(ctx()))?;
        }
        undo_hash!(undo, maps, services, key);
        maps.services
            .insert(key, frontend_entry(fe), 0)
            .map_err(sys(ctx()))?;
        undo_hash!(undo, maps, svc_meta, fe.id.0);
        match LbSvcMeta::new(&fe.service.to_string()) {
            Some(m) => maps.svc_meta.insert(fe.id.0, m, 0),
            None => ignore_missing(maps.svc_meta.remove(&fe.id.0)),
        }
        .map_err(sys(ctx()))?;
        if maps.svc_stats.get(&fe.id.0, 0).is_err() {
            undo_per_cpu!(undo, maps, svc_stats, fe.id.0);
            maps.svc_stats
                .insert(fe.id.0, zero_stats(&ctx())?, 0)
                .map_err(sys(ctx()))?;
        }
        if let Some(old) = &old {
            let first_stale = if old.key == key {
                fe.backends.len() as u16 + 1
            } else {
                undo_hash!(undo, maps, services, old.key);
                ignore_missing(maps.services.remove(&old.key)).map_err(sys(ctx()))?;
                1
            };
            for slot in first_stale..=old.total {
                let k = Lb4Key {
                    backend_slot: slot,
                    ..old.key
                };
                undo_hash!(undo, maps, services, k);
                ignore_missing(maps.services.remove(&k)).map_err(sys(ctx()))?;
            }
            for r in old.ranges.iter().filter(|r| !ranges.contains(r)) {
                let rk = range_key(fe.id.0, *r);
                undo.src_range(maps, rk, true);
                ignore_missing(maps.src_range.remove(&rk)).map_err(sys(ctx()))?;
            }
        }
        self.shadow.frontends.insert(
            fe.id.0,
            FeState {
                key,
                total: fe.backends.len() as u16,
                ranges,
            },
        );
        Ok(())
    }

    fn delete_frontend(&mut self, id: ServiceId, undo: &mut UndoLog) -> Result<(), DataplaneError> {
        let ctx = || format!("deleting frontend {id}");
        let Some(old) = self.shadow.frontends.remove(&id.0) else {
            return Ok(());
        };
        let maps = &mut self.maps;
        // Slot 0 first: from here on no packet matches the frontend.
        for slot in 0..=old.total {
            let k = Lb4Key {
                backend_slot: slot,
                ..old.key
            };
            undo_hash!(undo, maps, services, k);
            ignore_missing(maps.services.remove(&k)).map_err(sys(ctx()))?;
        }
        for r in &old.ranges {
            let rk = range_key(id.0, *r);
            undo.src_range(maps, rk, true);
            ignore_missing(maps.src_range.remove(&rk)).map_err(sys(ctx()))?;
        }
        undo_hash!(undo, maps, svc_meta, id.0);
        ignore_missing(maps.svc_meta.remove(&id.0)).map_err(sys(ctx()))?;
        undo_per_cpu!(undo, maps, svc_stats, id.0);
        ignore_missing(maps.svc_stats.remove(&id.0)).map_err(sys(ctx()))
    }

    /// Writes a validated batch; on the first failure restores every entry
    /// written so far (newest first) and relearns the maps.
    fn write_all(&mut self, ops: &[Op]) -> Result<(), DataplaneError> {
        let mut undo = UndoLog::default();
        for op in ops {
            if let Err(e) = self.write(op, &mut undo) {
                undo.rollback(&mut self.maps);
                // Relearn what the maps hold before reporting.
                let _ = self.resync();
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Dataplane for EbpfDataplane {
    /// All or nothing: the batch is validated first (including map
    /// capacities), and a write the kernel refuses midway restores every
    /// entry the batch had written.
    fn apply(&mut self, ops: &[Op]) -> Result<(), DataplaneError> {
        let next = self.check(ops)?;
        self.write_all(ops)?;
        self.shadow = next;
        Ok(())
    }
}
