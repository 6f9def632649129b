//! [`EbpfDataplane`]: lb-core's [`Op`]s as writes to the pinned BPF maps.
//!
//! IPv4 frontends, backends and reverse-NAT entries go into the `lb4_*`
//! maps, IPv6 ones into the `lb6_*` maps (one generic code path,
//! [`crate::family`]); Maglev tables, counters and metadata are shared.
//! Every batch is checked first (TCP/UDP only, one address family per
//! frontend and its backends — the frontend's own, or the other one for
//! NAT46/64 when the dataplane was opened with it on —, Maglev table size, backends that slots name,
//! and the peak occupancy of every map while the batch is applied); only
//! then are maps written, in the op order the reconciler
//! chose. Within one frontend: source ranges, backend slots, then slot 0
//! (its counts last), then stale slots and ranges. A Maglev table is a new
//! inner array, filled, then swapped into the outer map in one update.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use aya::maps::{Array, MapData, MapError};
use lb_core::{
    Backend, BackendId, BackendState, Dataplane, DataplaneError, Frontend, FrontendType, L4Proto,
    LbAlgorithm, MaglevConfig, NodeConfig, Op, ServiceId,
};

use crate::abi::*;
use crate::family::{Fam, Family, V4, V6};
use crate::maps::Maps;
use crate::retry::on_enomem;
use crate::shadow::{
    self, del, free_slot, put, slot_for, Ctr, FamUndo, FeState, Pending, Shadow, SlotConflicts,
    Undo, UndoLog,
};

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

/// Capacities of one family's maps.
#[derive(Debug, Clone, Copy)]
struct FamCaps {
    services: usize,
    backends: usize,
    rev_nat: usize,
    src_range: usize,
}

/// Capacities of the maps the dataplane fills.
#[derive(Debug, Clone, Copy)]
struct Caps {
    /// By [`Fam::idx`].
    fam: [FamCaps; 2],
    maglev: usize,
    /// `lb_svc_stats` (and `lb_svc_meta`, the same size): frontends of
    /// both families.
    svc_stats: usize,
    /// `lb_be_stats` (and `lb_be_meta`): backends of both families.
    be_stats: usize,
}

/// The eBPF dataplane: implements [`Dataplane`] on the maps a
/// [`crate::load`] pinned.
#[derive(Debug)]
pub struct EbpfDataplane {
    pub(crate) maps: Maps,
    pub(crate) maglev: MaglevConfig,
    caps: Caps,
    shadow: Shadow,
    /// Why frontends with backends of the other family (NAT46/64,
    /// `crate::nat46`) are refused; `None` when they are accepted.
    nat46x64_off: Option<&'static str>,
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

/// Why a node configuration does not allow NAT46/64 frontends, or `None`.
fn nat46x64_off(node: &NodeConfig) -> Option<&'static str> {
    let has = |v4: bool| node.node_ips.iter().any(|ip| ip.is_ipv4() == v4);
    if !node.nat46x64 {
        Some("NAT46/64 is off for this dataplane (NodeConfig::nat46x64)")
    } else if !(has(true) && has(false)) {
        Some(
            "NAT46/64 needs a node address of each family (the SNAT sources of \
             translated flows)",
        )
    } else {
        None
    }
}

fn unsupported(what: impl Into<String>) -> DataplaneError {
    DataplaneError::Unsupported(what.into())
}

/// `addr` as family `F` stores it.
fn fam_addr<F: Family>(
    addr: IpAddr,
    what: &dyn std::fmt::Display,
) -> Result<F::Addr, DataplaneError> {
    F::addr(addr).ok_or_else(|| {
        unsupported(format!(
            "{what}: not {} (an address of the other family)",
            F::FAM.name()
        ))
    })
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

/// The services-map key of an IPv4 frontend (slot 0).
pub fn frontend_key(fe: &Frontend) -> Result<Lb4Key, DataplaneError> {
    fam_key::<V4>(fe)
}

/// The services-map key of an IPv6 frontend (slot 0).
pub fn frontend_key6(fe: &Frontend) -> Result<Lb6Key, DataplaneError> {
    fam_key::<V6>(fe)
}

/// The family-`F` services-map key of a frontend (slot 0).
fn fam_key<F: Family>(fe: &Frontend) -> Result<F::Key, DataplaneError> {
    let addr = fe.key.addr;
    Ok(F::key(
        fam_addr::<F>(addr.addr, &addr)?,
        addr.port.to_be(),
        0,
        l4(addr.proto, &addr)?,
        fe.key.scope as u8,
    ))
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

/// A frontend's source ranges of family `F`, in order. Those of the other
/// family can never match its clients and are not programmed (the frontend
/// still has `SVC_F_SOURCE_RANGES`, as lb-core's `decide` checks).
fn fam_ranges<F: Family>(fe: &Frontend) -> Vec<(F::Addr, u8)> {
    fe.source_ranges
        .iter()
        .filter_map(|n| F::addr(n.network()).map(|a| (a, n.prefix_len())))
        .collect()
}

/// The backends-map value of an IPv4 backend.
pub fn backend_value(b: &Backend) -> Result<Lb4Backend, DataplaneError> {
    fam_backend::<V4>(b)
}

/// The backends-map value of an IPv6 backend.
pub fn backend_value6(b: &Backend) -> Result<Lb6Backend, DataplaneError> {
    fam_backend::<V6>(b)
}

/// The family-`F` backends-map value of a backend.
fn fam_backend<F: Family>(b: &Backend) -> Result<F::Backend, DataplaneError> {
    let addr = &b.addr;
    Ok(F::backend(
        fam_addr::<F>(addr.addr, addr)?,
        addr.port.to_be(),
        l4(addr.proto, addr)?,
        if b.local { BE_F_LOCAL } else { 0 },
    ))
}

/// A backend's family-checked value: [`fam_backend`] of its own family.
fn check_backend(b: &Backend) -> Result<Fam, DataplaneError> {
    match Fam::of(b.addr.addr) {
        Fam::V4 => fam_backend::<V4>(b).map(|_| Fam::V4),
        Fam::V6 => fam_backend::<V6>(b).map(|_| Fam::V6),
    }
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
    /// what is already programmed (both families) and writes the node's
    /// configuration (Maglev seed and size, node IPv4 and IPv6 addresses).
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
        let fam = |services, backends, rev_nat, src_range| {
            Ok::<_, DataplaneError>(FamCaps {
                services: cap(services)?,
                backends: cap(backends)?,
                rev_nat: cap(rev_nat)?,
                src_range: cap(src_range)?,
            })
        };
        let caps = Caps {
            fam: [
                fam(V4::SERVICES, V4::BACKENDS, V4::REV_NAT, V4::SRC_RANGE)?,
                fam(V6::SERVICES, V6::BACKENDS, V6::REV_NAT, V6::SRC_RANGE)?,
            ],
            maglev: cap(MAP_MAGLEV)?,
            svc_stats: cap(MAP_SVC_STATS)?.min(cap(MAP_SVC_META)?),
            be_stats: cap(MAP_BE_STATS)?.min(cap(MAP_BE_META)?),
        };
        let mut dp = EbpfDataplane {
            maps,
            maglev: node.maglev,
            caps,
            shadow: Shadow::default(),
            nat46x64_off: nat46x64_off(node),
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
        let ips6: Vec<[u8; 16]> = node
            .node_ips
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(_) => None,
                IpAddr::V6(a) => Some(a.octets()),
            })
            .collect();
        for (n, family) in [(ips.len(), "IPv4"), (ips6.len(), "IPv6")] {
            if n > MAX_NODE_IPS {
                return Err(unsupported(format!(
                    "{n} node {family} addresses (at most {MAX_NODE_IPS})"
                )));
            }
        }
        // Keep a SNAT port range set earlier (set_snat_ports).
        let old = self.maps.config.get(&0, 0).unwrap_or_default();
        let mut cfg = LbConfig {
            maglev_seed: node.maglev.seed(),
            maglev_table_size: node.maglev.table_size(),
            node_ip_count: ips.len() as u32,
            node_ip6_count: ips6.len() as u32,
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
        cfg.node_ips6[..ips6.len()].copy_from_slice(&ips6);
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

    /// Rebuilds the shadow state from the maps (with the counter slot
    /// allocators), and gives a new counter slot to every frontend or
    /// backend whose stored slot could not be kept.
    fn resync(&mut self) -> Result<(), DataplaneError> {
        let (shadow, conflicts) =
            shadow::read(&self.maps).map_err(|(map, e)| DataplaneError::System {
                context: format!("reading {map}"),
                source: Box::new(e),
            })?;
        self.shadow = shadow;
        self.repair_slots(conflicts)
    }

    /// Writes a fresh (zeroed) counter slot into the entries of `c`'s
    /// owners. Only maps a failed apply left inconsistent have any.
    fn repair_slots(&mut self, c: SlotConflicts) -> Result<(), DataplaneError> {
        let (mut undo, mut q) = (UndoLog::new(), Pending::default());
        for id in c.svc {
            let slot = slot_for(Ctr::Svc, &mut self.shadow, &mut q, &mut undo, id)
                .ok_or_else(|| full(Ctr::Svc, self.caps.svc_stats))?;
            self.repair_fe::<V4>(id, slot, &mut q);
            self.repair_fe::<V6>(id, slot, &mut q);
        }
        for id in c.be {
            let slot = slot_for(Ctr::Be, &mut self.shadow, &mut q, &mut undo, id)
                .ok_or_else(|| full(Ctr::Be, self.caps.be_stats))?;
            repair_be::<V4>(&mut self.shadow, id, slot, &mut q);
            repair_be::<V6>(&mut self.shadow, id, slot, &mut q);
        }
        flush(&mut self.maps, &mut q)
    }

    /// Queues frontend `id`'s slot-0 entry of family `F` with counter slot `slot`.
    fn repair_fe<F: Family>(&mut self, id: u32, slot: u32, q: &mut Pending) {
        let fs = F::sh_mut(&mut self.shadow);
        let Some(key) = fs.frontends.get(&id).map(|f| f.key) else {
            return;
        };
        if let Some(v) = fs.services.get_mut(&key) {
            v.stats_slot = slot;
            F::pending(q).services.push((key, *v));
        }
    }

    /// The counter slots handed out: `(frontends, backends)` (the entries in
    /// use of `lb_svc_stats` and `lb_be_stats`).
    pub fn counter_slots_used(&self) -> (usize, usize) {
        (self.shadow.svc_slots.len(), self.shadow.be_slots.len())
    }

    /// The counters of frontend `id` (summed over CPUs), if it is programmed.
    pub fn service_stats(&self, id: ServiceId) -> Result<Option<LbSvcStats>, DataplaneError> {
        match self.shadow.svc_slots.get(id.0) {
            Some(slot) => self
                .maps
                .service_stats_at(slot)
                .map(Some)
                .map_err(sys("reading lb_svc_stats")),
            None => Ok(None),
        }
    }

    /// The counters of backend `id` (summed over CPUs), if it is programmed.
    pub fn backend_stats(&self, id: BackendId) -> Result<Option<LbSvcStats>, DataplaneError> {
        match self.shadow.be_slots.get(id.0) {
            Some(slot) => self
                .maps
                .backend_stats_at(slot)
                .map(Some)
                .map_err(sys("reading lb_be_stats")),
            None => Ok(None),
        }
    }

    /// The affinity timeout (seconds) of frontend `id`, if it is programmed
    /// with session affinity.
    pub(crate) fn affinity_timeout(&self, id: u32) -> Option<u32> {
        self.shadow.affinity_timeout(id)
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
        for (id, slot) in self.shadow.svc_slots.iter() {
            let v = self
                .maps
                .service_stats_at(slot)
                .map_err(sys("reading lb_svc_stats"))?;
            c.services.insert(ServiceId(id), v);
        }
        for (id, slot) in self.shadow.be_slots.iter() {
            let v = self
                .maps
                .backend_stats_at(slot)
                .map_err(sys("reading lb_be_stats"))?;
            c.backends.insert(BackendId(id), v);
        }
        Ok(c)
    }

    /// Validates the batch against the shadow state and the map capacities
    /// without copying the shadow: what the batch changes is kept in small
    /// overlays, so a one-op batch costs O(op), not O(programmed state).
    fn check(&self, ops: &[Op]) -> Result<(), DataplaneError> {
        let s = &self.shadow;
        let mut fams = [FamCount::new(&s.v4), FamCount::new(&s.v6)];
        let mut maglev = Overlay::new(s.maglev.len());
        // The shared counter maps hold the frontends and backends of both
        // families.
        let mut svc_stats = Overlay::new(s.svc_slots.len());
        let mut be_stats = Overlay::new(s.be_slots.len());
        // Frontends the batch touched: (key, total, range count), or gone.
        let mut fes: HashMap<u32, Option<(AnyKey, usize, usize)>> = HashMap::new();
        let m = self.maglev.table_size() as usize;
        let in_backends = |f: Fam, id: &u32| match f {
            Fam::V4 => s.v4.backends.contains_key(id),
            Fam::V6 => s.v6.backends.contains_key(id),
        };
        let in_rev_nat = |f: Fam, id: &u32| match f {
            Fam::V4 => s.v4.rev_nat.contains_key(id),
            Fam::V6 => s.v6.rev_nat.contains_key(id),
        };
        let has_backend = |fams: &[FamCount; 2], f: Fam, id: u32| {
            fams[f.idx()].backends.has(id, |id| in_backends(f, id))
        };
        for op in ops {
            match op {
                Op::UpsertBackend(b) => {
                    let f = check_backend(b)?;
                    be_stats.set(b.id.0, true, |id| s.be_slots.get(*id).is_some());
                    // An id moving to the other family leaves that one.
                    for (g, present) in [(f, true), (f.other(), false)] {
                        fams[g.idx()]
                            .backends
                            .set(b.id.0, present, |id| in_backends(g, id));
                    }
                }
                Op::DeleteBackend { id, .. } => {
                    be_stats.set(id.0, false, |id| s.be_slots.get(*id).is_some());
                    for g in [Fam::V4, Fam::V6] {
                        fams[g.idx()]
                            .backends
                            .set(id.0, false, |id| in_backends(g, id));
                    }
                }
                Op::UpsertRevNat { id, addr } => {
                    let f = Fam::of(addr.addr);
                    for (g, present) in [(f, true), (f.other(), false)] {
                        fams[g.idx()]
                            .rev_nat
                            .set(id.0, present, |id| in_rev_nat(g, id));
                    }
                }
                Op::DeleteRevNat { id } => {
                    for g in [Fam::V4, Fam::V6] {
                        fams[g.idx()]
                            .rev_nat
                            .set(id.0, false, |id| in_rev_nat(g, id));
                    }
                }
                Op::UpsertMaglev { id, table } => {
                    if !table.is_empty() && table.len() != m {
                        return Err(unsupported(format!(
                            "maglev table {id} has {} entries, the datapath is configured for {m}",
                            table.len()
                        )));
                    }
                    if let Some(b) = table.iter().find(|b| {
                        !has_backend(&fams, Fam::V4, b.0) && !has_backend(&fams, Fam::V6, b.0)
                    }) {
                        return Err(DataplaneError::Dangling(format!(
                            "maglev table {id} names backend {b}"
                        )));
                    }
                    maglev.set(id.0, !table.is_empty(), |id| s.maglev.contains(id));
                }
                Op::DeleteMaglev { id } => {
                    maglev.set(id.0, false, |id| s.maglev.contains(id));
                }
                Op::UpsertFrontend(fe) => {
                    let f = Fam::of(fe.key.addr.addr);
                    let (key, ranges) = match f {
                        Fam::V4 => (AnyKey::V4(fam_key::<V4>(fe)?), fam_ranges::<V4>(fe).len()),
                        Fam::V6 => (AnyKey::V6(fam_key::<V6>(fe)?), fam_ranges::<V6>(fe).len()),
                    };
                    let total = u16::try_from(fe.backends.len()).map_err(|_| {
                        DataplaneError::CapacityExceeded {
                            table: "backend slots of one frontend (services map backend_slot)",
                            capacity: usize::from(u16::MAX),
                            needed: fe.backends.len(),
                        }
                    })?;
                    let total = usize::from(total);
                    // Backends of one family: the frontend's own, or with
                    // NAT46/64 on the other's (crate::nat46), never a mix.
                    let mut fams_seen = [false; 2];
                    for b in &fe.backends {
                        let g = if has_backend(&fams, f, b.id.0) {
                            f
                        } else if has_backend(&fams, f.other(), b.id.0) {
                            f.other()
                        } else {
                            return Err(DataplaneError::Dangling(format!(
                                "frontend {} names backend {}",
                                fe.id, b.id
                            )));
                        };
                        fams_seen[g.idx()] = true;
                        if g != f {
                            if let Some(why) = self.nat46x64_off {
                                return Err(unsupported(format!(
                                    "frontend {} ({}, {}) names backend {} of the other \
                                     address family: {why}",
                                    fe.id,
                                    fe.key.addr,
                                    f.name(),
                                    b.id
                                )));
                            }
                        }
                    }
                    if fams_seen == [true, true] {
                        return Err(unsupported(format!(
                            "frontend {} ({}) names backends of both address families \
                             (NAT46/64 translates a frontend served by the other family only)",
                            fe.id, fe.key.addr
                        )));
                    }
                    let old = match fes.get(&fe.id.0) {
                        Some(o) => *o,
                        None => shadow_fe(s, fe.id.0),
                    };
                    let (old_entries, old_ranges, same_key, old_total) = match old {
                        Some((k, t, r)) if k.fam() == f => (t + 1, r, k == key, t),
                        Some((k, t, r)) => {
                            // Written anew in this family; the entries of
                            // the other one go afterwards.
                            let o = &mut fams[k.fam().idx()];
                            o.services -= t + 1;
                            o.ranges -= r;
                            (0, 0, false, 0)
                        }
                        None => (0, 0, false, 0),
                    };
                    let c = &mut fams[f.idx()];
                    let new_entries = total + 1;
                    let during = if same_key {
                        c.services - old_entries + old_total.max(total) + 1
                    } else {
                        c.services + new_entries
                    };
                    c.peak_services = c.peak_services.max(during);
                    c.services = c.services - old_entries + new_entries;
                    c.peak_ranges = c.peak_ranges.max(c.ranges + ranges);
                    c.ranges = c.ranges - old_ranges + ranges;
                    fes.insert(fe.id.0, Some((key, total, ranges)));
                    svc_stats.set(fe.id.0, true, |id| s.svc_slots.get(*id).is_some());
                }
                Op::DeleteFrontend { id, .. } => {
                    let old = match fes.get(&id.0) {
                        Some(o) => *o,
                        None => shadow_fe(s, id.0),
                    };
                    if let Some((k, t, r)) = old {
                        let c = &mut fams[k.fam().idx()];
                        c.services -= t + 1;
                        c.ranges -= r;
                    }
                    fes.insert(id.0, None);
                    svc_stats.set(id.0, false, |id| s.svc_slots.get(*id).is_some());
                }
            }
        }
        let mut needs = vec![(MAP_MAGLEV, self.caps.maglev, maglev.peak)];
        for (f, (services, backends, rev_nat, src_range)) in [
            (
                Fam::V4,
                (V4::SERVICES, V4::BACKENDS, V4::REV_NAT, V4::SRC_RANGE),
            ),
            (
                Fam::V6,
                (V6::SERVICES, V6::BACKENDS, V6::REV_NAT, V6::SRC_RANGE),
            ),
        ] {
            let (c, cap) = (&fams[f.idx()], &self.caps.fam[f.idx()]);
            needs.extend([
                (services, cap.services, c.peak_services),
                (backends, cap.backends, c.backends.peak),
                (rev_nat, cap.rev_nat, c.rev_nat.peak),
                (src_range, cap.src_range, c.peak_ranges),
            ]);
        }
        // The shared maps last: a family's own map names the shortage first.
        needs.extend([
            (MAP_SVC_STATS, self.caps.svc_stats, svc_stats.peak),
            (MAP_BE_STATS, self.caps.be_stats, be_stats.peak),
        ]);
        for (table, capacity, needed) in needs {
            if needed > capacity {
                return Err(DataplaneError::CapacityExceeded {
                    table,
                    capacity,
                    needed,
                });
            }
        }
        Ok(())
    }

    fn write(
        &mut self,
        op: &Op,
        undo: &mut UndoLog,
        q: &mut Pending,
    ) -> Result<(), DataplaneError> {
        let is_delete = matches!(
            op,
            Op::DeleteBackend { .. }
                | Op::DeleteRevNat { .. }
                | Op::DeleteMaglev { .. }
                | Op::DeleteFrontend { .. }
                | Op::UpsertMaglev { .. }
        );
        if is_delete {
            // Queued writes go in before anything is removed or names them.
            flush(&mut self.maps, q)?;
        }
        match op {
            Op::UpsertBackend(b) => {
                let ctx = || format!("writing backend {}", b.id);
                let id = b.id.0;
                let slot = slot_for(Ctr::Be, &mut self.shadow, q, undo, id)
                    .ok_or_else(|| full(Ctr::Be, self.caps.be_stats))?;
                match Fam::of(b.addr.addr) {
                    Fam::V4 => self.write_backend::<V4>(b, slot, undo, q)?,
                    Fam::V6 => self.write_backend::<V6>(b, slot, undo, q)?,
                }
                let (maps, sh) = (&mut self.maps, &mut self.shadow);
                // Metadata only a restarted agent reads; a zone that does
                // not fit is left out (restore then rewrites the backend).
                match b.zone.as_deref().and_then(LbBeMeta::new) {
                    Some(m) => {
                        put(&mut sh.be_meta, &mut q.be_meta, undo, Undo::BeMeta, id, m);
                        Ok(())
                    }
                    None if sh.be_meta.contains_key(&id) => {
                        flush(maps, q)?;
                        del(&mut maps.be_meta, &mut sh.be_meta, undo, Undo::BeMeta, id)
                            .map_err(sys(ctx()))
                    }
                    None => Ok(()),
                }
            }
            Op::DeleteBackend { id, .. } => {
                let ctx = || format!("deleting backend {id}");
                let id = id.0;
                self.delete_backend::<V4>(id, undo).map_err(sys(ctx()))?;
                self.delete_backend::<V6>(id, undo).map_err(sys(ctx()))?;
                let (maps, sh) = (&mut self.maps, &mut self.shadow);
                free_slot(Ctr::Be, sh, maps, undo, id);
                del(&mut maps.be_meta, &mut sh.be_meta, undo, Undo::BeMeta, id).map_err(sys(ctx()))
            }
            Op::UpsertRevNat { id, addr } => match Fam::of(addr.addr) {
                Fam::V4 => self.write_rev_nat::<V4>(id.0, addr, undo, q),
                Fam::V6 => self.write_rev_nat::<V6>(id.0, addr, undo, q),
            },
            Op::DeleteRevNat { id } => {
                let ctx = || format!("deleting rev-nat {id}");
                self.delete_rev_nat::<V4>(id.0, undo).map_err(sys(ctx()))?;
                self.delete_rev_nat::<V6>(id.0, undo).map_err(sys(ctx()))
            }
            Op::UpsertMaglev { id, table } => self.write_maglev(*id, table, undo),
            Op::DeleteMaglev { id } => {
                let (maps, sh) = (&mut self.maps, &mut self.shadow);
                if !sh.maglev.remove(&id.0) {
                    return Ok(());
                }
                undo.push(Undo::Maglev(id.0, maps.maglev.get(&id.0, 0).ok()));
                ignore_missing(maps.maglev.remove(&id.0))
                    .map_err(sys(format!("deleting maglev {id}")))
            }
            Op::UpsertFrontend(fe) => match Fam::of(fe.key.addr.addr) {
                Fam::V4 => self.write_frontend::<V4>(fe, undo, q),
                Fam::V6 => self.write_frontend::<V6>(fe, undo, q),
            },
            Op::DeleteFrontend { id, .. } => self.delete_frontend(*id, undo),
        }
    }

    /// Writes backend `b` with counter slot `slot` into family `F`'s map
    /// (removing it from the other family's when its id moved).
    fn write_backend<F: Family>(
        &mut self,
        b: &Backend,
        slot: u32,
        undo: &mut UndoLog,
        q: &mut Pending,
    ) -> Result<(), DataplaneError> {
        let mut value = fam_backend::<F>(b)?;
        F::set_stats_slot(&mut value, slot);
        put(
            &mut F::sh_mut(&mut self.shadow).backends,
            &mut F::pending(q).backends,
            undo,
            |k, p| F::undo(FamUndo::Backend(k, p)),
            b.id.0,
            value,
        );
        if F::Other::sh(&self.shadow).backends.contains_key(&b.id.0) {
            flush(&mut self.maps, q)?;
            self.delete_backend::<F::Other>(b.id.0, undo)
                .map_err(sys(format!("writing backend {}", b.id)))?;
        }
        Ok(())
    }

    /// Removes backend `id` from family `F`'s map (if it is there).
    fn delete_backend<F: Family>(&mut self, id: u32, undo: &mut UndoLog) -> Result<(), MapError> {
        del(
            F::backends_mut(&mut self.maps),
            &mut F::sh_mut(&mut self.shadow).backends,
            undo,
            |k, p| F::undo(FamUndo::Backend(k, p)),
            id,
        )
    }

    /// Writes reverse-NAT entry `id` into family `F`'s map (removing it from
    /// the other family's when its id moved).
    fn write_rev_nat<F: Family>(
        &mut self,
        id: u32,
        addr: &lb_core::L3n4Addr,
        undo: &mut UndoLog,
        q: &mut Pending,
    ) -> Result<(), DataplaneError> {
        let v = F::rev_nat(fam_addr::<F>(addr.addr, addr)?, addr.port.to_be());
        put(
            &mut F::sh_mut(&mut self.shadow).rev_nat,
            &mut F::pending(q).rev_nat,
            undo,
            |k, p| F::undo(FamUndo::RevNat(k, p)),
            id,
            v,
        );
        if F::Other::sh(&self.shadow).rev_nat.contains_key(&id) {
            flush(&mut self.maps, q)?;
            self.delete_rev_nat::<F::Other>(id, undo)
                .map_err(sys(format!("writing rev-nat {id}")))?;
        }
        Ok(())
    }

    /// Removes reverse-NAT entry `id` from family `F`'s map (if it is there).
    fn delete_rev_nat<F: Family>(&mut self, id: u32, undo: &mut UndoLog) -> Result<(), MapError> {
        del(
            F::rev_nat_mut(&mut self.maps),
            &mut F::sh_mut(&mut self.shadow).rev_nat,
            undo,
            |k, p| F::undo(FamUndo::RevNat(k, p)),
            id,
        )
    }

    fn write_maglev(
        &mut self,
        id: ServiceId,
        table: &[BackendId],
        undo: &mut UndoLog,
    ) -> Result<(), DataplaneError> {
        let ctx = || format!("writing maglev table {id}");
        // The previous table (an inner map) is kept open to be put back.
        let prev = if self.shadow.maglev.contains(&id.0) {
            self.maps.maglev.get(&id.0, 0).ok()
        } else {
            None
        };
        undo.push(Undo::Maglev(id.0, prev));
        if table.is_empty() {
            self.shadow.maglev.remove(&id.0);
            return ignore_missing(self.maps.maglev.remove(&id.0)).map_err(sys(ctx()));
        }
        self.shadow.maglev.insert(id.0);
        let mut inner: Array<MapData, u32> =
            on_enomem(|| Array::create(table.len() as u32, BPF_F_INNER_MAP)).map_err(sys(ctx()))?;
        for (i, b) in table.iter().enumerate() {
            inner.set(i as u32, b.0, 0).map_err(sys(ctx()))?;
        }
        // One update swaps the whole table: a packet sees old or new.
        on_enomem(|| self.maps.maglev.insert(id.0, &inner, 0)).map_err(sys(ctx()))
    }

    /// Writes frontend `fe` of family `F`: its source ranges, backend
    /// slots, slot 0, counters and metadata, then removes what is stale
    /// (slots and ranges it no longer has, its old key, or its entries in
    /// the other family's maps).
    fn write_frontend<F: Family>(
        &mut self,
        fe: &Frontend,
        undo: &mut UndoLog,
        q: &mut Pending,
    ) -> Result<(), DataplaneError> {
        let ctx = || format!("writing frontend {}", fe.id);
        let id = fe.id.0;
        let key = fam_key::<F>(fe)?;
        let (maps, sh) = (&mut self.maps, &mut self.shadow);
        let old = F::sh(sh).frontends.get(&id).cloned();
        let ranges = fam_ranges::<F>(fe);
        for (pos, r) in ranges.iter().enumerate() {
            let pos = u8::try_from(pos).unwrap_or(u8::MAX);
            let k = (id, r.0, r.1);
            let fs = F::sh_mut(sh);
            let prev = fs.ranges.get(&k).copied();
            if prev != Some(pos) {
                undo.push(F::undo(FamUndo::Range(k, prev)));
                fs.ranges.insert(k, pos);
                let rk = F::range_key(id, r.0, r.1);
                on_enomem(|| F::src_range_mut(maps).insert(&rk, pos, 0)).map_err(sys(ctx()))?;
            }
        }
        let stats_slot = slot_for(Ctr::Svc, sh, q, undo, id)
            .ok_or_else(|| full(Ctr::Svc, self.caps.svc_stats))?;
        let fs = F::sh_mut(sh);
        let fq = F::pending(q);
        let service = |k, p| F::undo(FamUndo::Service(k, p));
        for (i, b) in fe.backends.iter().enumerate() {
            let v = Lb4Service {
                backend_id: b.id.0,
                weight: b.weight,
                flags: state_code(b.state),
                ..Lb4Service::default()
            };
            let slot = F::with_slot(key, (i + 1) as u16);
            put(&mut fs.services, &mut fq.services, undo, service, slot, v);
        }
        let mut entry = frontend_entry(fe);
        entry.stats_slot = stats_slot;
        if fe
            .backends
            .first()
            .is_some_and(|b| F::Other::sh(sh).backends.contains_key(&b.id.0))
        {
            // NAT46/64: the datapath looks the slots' backends up in the
            // other family's map and translates (crate::nat46).
            entry.flags |= SVC_F_NAT46X64;
        }
        let fs = F::sh_mut(sh);
        let fq = F::pending(q);
        put(
            &mut fs.services,
            &mut fq.services,
            undo,
            service,
            key,
            entry,
        );
        let meta = LbSvcMeta::new(&fe.service.to_string());
        if let Some(m) = meta {
            put(
                &mut sh.svc_meta,
                &mut q.svc_meta,
                undo,
                Undo::SvcMeta,
                id,
                m,
            );
        }
        let other = F::Other::sh(sh).frontends.contains_key(&id);
        let stale = other
            || old.as_ref().is_some_and(|o| {
                o.key != key
                    || usize::from(o.total) > fe.backends.len()
                    || o.ranges.iter().any(|r| !ranges.contains(r))
            });
        if stale || (meta.is_none() && sh.svc_meta.contains_key(&id)) {
            // The new entries go in before stale ones are removed.
            flush(maps, q)?;
        }
        if meta.is_none() {
            del(
                &mut maps.svc_meta,
                &mut sh.svc_meta,
                undo,
                Undo::SvcMeta,
                id,
            )
            .map_err(sys(ctx()))?;
        }
        if let Some(old) = &old {
            let fs = F::sh_mut(sh);
            let first_stale = if old.key == key {
                fe.backends.len() as u16 + 1
            } else {
                del(
                    F::services_mut(maps),
                    &mut fs.services,
                    undo,
                    service,
                    old.key,
                )
                .map_err(sys(ctx()))?;
                1
            };
            for slot in first_stale..=old.total {
                let k = F::with_slot(old.key, slot);
                del(F::services_mut(maps), &mut fs.services, undo, service, k)
                    .map_err(sys(ctx()))?;
            }
            for r in old.ranges.iter().filter(|r| !ranges.contains(r)) {
                let k = (id, r.0, r.1);
                if let Some(prev) = fs.ranges.remove(&k) {
                    undo.push(F::undo(FamUndo::Range(k, Some(prev))));
                    ignore_missing(F::src_range_mut(maps).remove(&F::range_key(id, r.0, r.1)))
                        .map_err(sys(ctx()))?;
                }
            }
        }
        if other {
            // The frontend moved from the other family (same id).
            self.delete_entries::<F::Other>(id, undo)
                .map_err(sys(ctx()))?;
        }
        undo.push(F::undo(FamUndo::Fe(id, old)));
        F::sh_mut(&mut self.shadow).frontends.insert(
            id,
            FeState {
                key,
                total: fe.backends.len() as u16,
                ranges,
            },
        );
        Ok(())
    }

    /// Removes frontend `id`'s entries from family `F`'s maps: slot 0 first
    /// (from then on no packet matches it), its backend slots, its source
    /// ranges. False when the family has no such frontend.
    fn delete_entries<F: Family>(&mut self, id: u32, undo: &mut UndoLog) -> Result<bool, MapError> {
        let (maps, sh) = (&mut self.maps, F::sh_mut(&mut self.shadow));
        let Some(old) = sh.frontends.remove(&id) else {
            return Ok(false);
        };
        undo.push(F::undo(FamUndo::Fe(id, Some(old.clone()))));
        for slot in 0..=old.total {
            let k = F::with_slot(old.key, slot);
            del(
                F::services_mut(maps),
                &mut sh.services,
                undo,
                |k, p| F::undo(FamUndo::Service(k, p)),
                k,
            )?;
        }
        for r in &old.ranges {
            let k = (id, r.0, r.1);
            if let Some(prev) = sh.ranges.remove(&k) {
                undo.push(F::undo(FamUndo::Range(k, Some(prev))));
                ignore_missing(F::src_range_mut(maps).remove(&F::range_key(id, r.0, r.1)))?;
            }
        }
        Ok(true)
    }

    fn delete_frontend(&mut self, id: ServiceId, undo: &mut UndoLog) -> Result<(), DataplaneError> {
        let ctx = || format!("deleting frontend {id}");
        let v4 = self.delete_entries::<V4>(id.0, undo).map_err(sys(ctx()))?;
        let v6 = self.delete_entries::<V6>(id.0, undo).map_err(sys(ctx()))?;
        if !v4 && !v6 {
            return Ok(());
        }
        let (maps, sh) = (&mut self.maps, &mut self.shadow);
        del(
            &mut maps.svc_meta,
            &mut sh.svc_meta,
            undo,
            Undo::SvcMeta,
            id.0,
        )
        .map_err(sys(ctx()))?;
        free_slot(Ctr::Svc, sh, maps, undo, id.0);
        Ok(())
    }

    /// Writes a validated batch; on the first failure restores every entry
    /// written so far (newest first), in the maps and in the shadow.
    fn write_all(&mut self, ops: &[Op]) -> Result<(), DataplaneError> {
        let mut undo = UndoLog::new();
        let mut q = Pending::default();
        let mut last = None;
        for op in ops {
            if last.is_some_and(|l| l != std::mem::discriminant(op)) {
                // A new kind of op: what is queued goes in first.
                if let Err(e) = flush(&mut self.maps, &mut q) {
                    return Err(self.undo(undo, e));
                }
            }
            last = Some(std::mem::discriminant(op));
            if let Err(e) = self.write(op, &mut undo, &mut q) {
                return Err(self.undo(undo, e));
            }
        }
        match flush(&mut self.maps, &mut q) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.undo(undo, e)),
        }
    }

    /// Rolls `undo` back after `e`; returns `e`.
    fn undo(&mut self, undo: UndoLog, e: DataplaneError) -> DataplaneError {
        if shadow::rollback(undo, &mut self.maps, &mut self.shadow) > 0 {
            // Some entries could not be put back: relearn the maps.
            let _ = self.resync();
        }
        e
    }
}

/// Queues backend `id`'s value of family `F` with counter slot `slot`.
fn repair_be<F: Family>(shadow: &mut Shadow, id: u32, slot: u32, q: &mut Pending) {
    if let Some(v) = F::sh_mut(shadow).backends.get_mut(&id) {
        F::set_stats_slot(v, slot);
        F::pending(q).backends.push((id, *v));
    }
}

/// Every counter slot of `ctr`'s array is in use (the batch check rules
/// this out; a defensive error, never a panic).
fn full(ctr: Ctr, capacity: usize) -> DataplaneError {
    DataplaneError::CapacityExceeded {
        table: ctr.map(),
        capacity,
        needed: capacity + 1,
    }
}

/// Writes what `q` holds (see [`Pending`]).
fn flush(maps: &mut Maps, q: &mut Pending) -> Result<(), DataplaneError> {
    q.flush(maps).map_err(|(map, e)| DataplaneError::System {
        context: format!("writing {map}"),
        source: Box::new(e),
    })
}

/// A services key of either family (batch validation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AnyKey {
    V4(Lb4Key),
    V6(Lb6Key),
}

impl AnyKey {
    fn fam(&self) -> Fam {
        match self {
            AnyKey::V4(_) => Fam::V4,
            AnyKey::V6(_) => Fam::V6,
        }
    }
}

/// Frontend `id` as programmed: (key, backend slots, source ranges).
fn shadow_fe(s: &Shadow, id: u32) -> Option<(AnyKey, usize, usize)> {
    s.v4.frontends
        .get(&id)
        .map(|o| (AnyKey::V4(o.key), usize::from(o.total), o.ranges.len()))
        .or_else(|| {
            s.v6.frontends
                .get(&id)
                .map(|o| (AnyKey::V6(o.key), usize::from(o.total), o.ranges.len()))
        })
}

/// One family's entry counts while a batch is validated.
struct FamCount {
    backends: Overlay<u32>,
    rev_nat: Overlay<u32>,
    services: usize,
    peak_services: usize,
    ranges: usize,
    peak_ranges: usize,
}

impl FamCount {
    fn new<F: Family>(s: &shadow::FamShadow<F>) -> Self {
        FamCount {
            backends: Overlay::new(s.backends.len()),
            rev_nat: Overlay::new(s.rev_nat.len()),
            services: s.services.len(),
            peak_services: s.services.len(),
            ranges: s.ranges.len(),
            peak_ranges: s.ranges.len(),
        }
    }
}

/// Presence changes a batch makes to one keyed map, over the shadow's
/// entries, and the map's peak entry count while the batch is applied.
struct Overlay<K> {
    changed: HashMap<K, bool>,
    count: usize,
    peak: usize,
}

impl<K: Copy + Eq + std::hash::Hash> Overlay<K> {
    fn new(count: usize) -> Self {
        Overlay {
            changed: HashMap::new(),
            count,
            peak: count,
        }
    }

    fn has(&self, k: K, base: impl Fn(&K) -> bool) -> bool {
        self.changed.get(&k).copied().unwrap_or_else(|| base(&k))
    }

    fn set(&mut self, k: K, present: bool, base: impl Fn(&K) -> bool) {
        let was = self.has(k, base);
        self.changed.insert(k, present);
        match (was, present) {
            (false, true) => self.count += 1,
            (true, false) => self.count -= 1,
            _ => {}
        }
        self.peak = self.peak.max(self.count);
    }
}

impl Dataplane for EbpfDataplane {
    /// All or nothing: the batch is validated first (including map
    /// capacities), and a write the kernel refuses midway restores every
    /// entry the batch had written.
    fn apply(&mut self, ops: &[Op]) -> Result<(), DataplaneError> {
        self.check(ops)?;
        self.write_all(ops)
    }
}
