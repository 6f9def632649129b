//! [`EbpfDataplane`]: lb-core's [`Op`]s as writes to the pinned BPF maps.
//!
//! Every batch is checked first (IPv4 only, Maglev table size, backends
//! that slots name, and the peak occupancy of every map while the batch is
//! applied); only then are maps written, in the op order the reconciler
//! chose. Within one frontend: source ranges, backend slots, then slot 0
//! (its counts last), then stale slots and ranges. A Maglev table is a new
//! inner array, filled, then swapped into the outer map in one update.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use aya::maps::{Array, MapData, MapError, PerCpuValues};
use lb_core::{
    Backend, BackendId, BackendState, Dataplane, DataplaneError, Frontend, FrontendType, L4Proto,
    LbAlgorithm, MaglevConfig, NodeConfig, Op, ServiceId,
};

use crate::abi::*;
use crate::maps::Maps;
use crate::retry::on_enomem;
use crate::shadow::{self, del, put, range_key, FeState, Pending, Shadow, Undo, UndoLog};

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

    /// Rebuilds the shadow state from the maps.
    fn resync(&mut self) -> Result<(), DataplaneError> {
        self.shadow = shadow::read(&self.maps).map_err(|(map, e)| DataplaneError::System {
            context: format!("reading {map}"),
            source: Box::new(e),
        })?;
        Ok(())
    }

    /// The services-map key of frontend `id`, if programmed.
    pub(crate) fn shadow_frontend_key(&self, id: u32) -> Option<Lb4Key> {
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

    /// Validates the batch against the shadow state and the map capacities
    /// without copying the shadow: what the batch changes is kept in small
    /// overlays, so a one-op batch costs O(op), not O(programmed state).
    fn check(&self, ops: &[Op]) -> Result<(), DataplaneError> {
        let s = &self.shadow;
        let mut backends = Overlay::new(s.backends.len());
        let mut rev_nat = Overlay::new(s.rev_nat.len());
        let mut maglev = Overlay::new(s.maglev.len());
        // Frontends the batch touched: (key, total, range count), or gone.
        let mut fes: HashMap<u32, Option<(Lb4Key, usize, usize)>> = HashMap::new();
        let mut service_entries = s.services.len();
        let mut range_entries = s.ranges.len();
        let (mut peak_services, mut peak_ranges) = (service_entries, range_entries);
        let m = self.maglev.table_size() as usize;
        let has_backend = |o: &Overlay<u32>, id: u32| o.has(id, |id| s.backends.contains_key(id));
        for op in ops {
            match op {
                Op::UpsertBackend(b) => {
                    backend_value(b)?;
                    backends.set(b.id.0, true, |id| s.backends.contains_key(id));
                }
                Op::DeleteBackend { id, .. } => {
                    backends.set(id.0, false, |id| s.backends.contains_key(id));
                }
                Op::UpsertRevNat { id, addr } => {
                    v4(addr.addr, addr)?;
                    rev_nat.set(id.0, true, |id| s.rev_nat.contains_key(id));
                }
                Op::DeleteRevNat { id } => {
                    rev_nat.set(id.0, false, |id| s.rev_nat.contains_key(id));
                }
                Op::UpsertMaglev { id, table } => {
                    if !table.is_empty() && table.len() != m {
                        return Err(unsupported(format!(
                            "maglev table {id} has {} entries, the datapath is configured for {m}",
                            table.len()
                        )));
                    }
                    if let Some(b) = table.iter().find(|b| !has_backend(&backends, b.0)) {
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
                    let key = frontend_key(fe)?;
                    let total = u16::try_from(fe.backends.len()).map_err(|_| {
                        DataplaneError::CapacityExceeded {
                            table: "backend slots of one frontend (lb4_services backend_slot)",
                            capacity: usize::from(u16::MAX),
                            needed: fe.backends.len(),
                        }
                    })?;
                    let total = usize::from(total);
                    if let Some(b) = fe.backends.iter().find(|b| !has_backend(&backends, b.id.0)) {
                        return Err(DataplaneError::Dangling(format!(
                            "frontend {} names backend {}",
                            fe.id, b.id
                        )));
                    }
                    let ranges = v4_ranges(fe).len();
                    let old = match fes.get(&fe.id.0) {
                        Some(o) => *o,
                        None => s
                            .frontends
                            .get(&fe.id.0)
                            .map(|o| (o.key, usize::from(o.total), o.ranges.len())),
                    };
                    let (old_entries, old_ranges, same_key, old_total) = match old {
                        Some((k, t, r)) => (t + 1, r, k == key, t),
                        None => (0, 0, false, 0),
                    };
                    let new_entries = total + 1;
                    let during = if same_key {
                        service_entries - old_entries + old_total.max(total) + 1
                    } else {
                        service_entries + new_entries
                    };
                    peak_services = peak_services.max(during);
                    service_entries = service_entries - old_entries + new_entries;
                    peak_ranges = peak_ranges.max(range_entries + ranges);
                    range_entries = range_entries - old_ranges + ranges;
                    fes.insert(fe.id.0, Some((key, total, ranges)));
                }
                Op::DeleteFrontend { id, .. } => {
                    let old = match fes.get(&id.0) {
                        Some(o) => *o,
                        None => s
                            .frontends
                            .get(&id.0)
                            .map(|o| (o.key, usize::from(o.total), o.ranges.len())),
                    };
                    if let Some((_, t, r)) = old {
                        service_entries -= t + 1;
                        range_entries -= r;
                    }
                    fes.insert(id.0, None);
                }
            }
        }
        for (table, capacity, needed) in [
            (MAP_SERVICES, self.caps.services, peak_services),
            (MAP_BACKENDS, self.caps.backends, backends.peak),
            (MAP_REV_NAT, self.caps.rev_nat, rev_nat.peak),
            (MAP_MAGLEV, self.caps.maglev, maglev.peak),
            (MAP_SRC_RANGE, self.caps.src_range, peak_ranges),
        ] {
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
        let (maps, sh) = (&mut self.maps, &mut self.shadow);
        match op {
            Op::UpsertBackend(b) => {
                let ctx = || format!("writing backend {}", b.id);
                let id = b.id.0;
                let value = backend_value(b)?;
                put(
                    &mut sh.backends,
                    &mut q.backends,
                    undo,
                    Undo::Backend,
                    id,
                    value,
                );
                if sh.be_stats.insert(id) {
                    undo.push(Undo::BeStats(id, None));
                    q.be_stats.push(id);
                }
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
                del(
                    &mut maps.backends,
                    &mut sh.backends,
                    undo,
                    Undo::Backend,
                    id,
                )
                .map_err(sys(ctx()))?;
                if sh.be_stats.remove(&id) {
                    // The counters are read to be put back on rollback.
                    undo.push(Undo::BeStats(id, maps.be_stats.get(&id, 0).ok()));
                    ignore_missing(maps.be_stats.remove(&id)).map_err(sys(ctx()))?;
                }
                del(&mut maps.be_meta, &mut sh.be_meta, undo, Undo::BeMeta, id).map_err(sys(ctx()))
            }
            Op::UpsertRevNat { id, addr } => {
                let v = Lb4ReverseNat {
                    address: be32(v4(addr.addr, addr)?),
                    port: addr.port.to_be(),
                    pad: 0,
                };
                put(&mut sh.rev_nat, &mut q.rev_nat, undo, Undo::RevNat, id.0, v);
                Ok(())
            }
            Op::DeleteRevNat { id } => {
                del(&mut maps.rev_nat, &mut sh.rev_nat, undo, Undo::RevNat, id.0)
                    .map_err(sys(format!("deleting rev-nat {id}")))
            }
            Op::UpsertMaglev { id, table } => self.write_maglev(*id, table, undo),
            Op::DeleteMaglev { id } => {
                if !sh.maglev.remove(&id.0) {
                    return Ok(());
                }
                undo.push(Undo::Maglev(id.0, maps.maglev.get(&id.0, 0).ok()));
                ignore_missing(maps.maglev.remove(&id.0))
                    .map_err(sys(format!("deleting maglev {id}")))
            }
            Op::UpsertFrontend(fe) => self.write_frontend(fe, undo, q),
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

    fn write_frontend(
        &mut self,
        fe: &Frontend,
        undo: &mut UndoLog,
        q: &mut Pending,
    ) -> Result<(), DataplaneError> {
        let ctx = || format!("writing frontend {}", fe.id);
        let id = fe.id.0;
        let key = frontend_key(fe)?;
        let (maps, sh) = (&mut self.maps, &mut self.shadow);
        let old = sh.frontends.get(&id).cloned();
        let ranges = v4_ranges(fe);
        for (pos, r) in ranges.iter().enumerate() {
            let pos = u8::try_from(pos).unwrap_or(u8::MAX);
            let k = (id, r.0, r.1);
            let prev = sh.ranges.get(&k).copied();
            if prev != Some(pos) {
                undo.push(Undo::Range(k, prev));
                sh.ranges.insert(k, pos);
                let rk = range_key(id, *r);
                on_enomem(|| maps.src_range.insert(&rk, pos, 0)).map_err(sys(ctx()))?;
            }
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
            put(
                &mut sh.services,
                &mut q.services,
                undo,
                Undo::Service,
                slot,
                v,
            );
        }
        let entry = frontend_entry(fe);
        put(
            &mut sh.services,
            &mut q.services,
            undo,
            Undo::Service,
            key,
            entry,
        );
        if sh.svc_stats.insert(id) {
            undo.push(Undo::SvcStats(id, None));
            q.svc_stats.push(id);
        }
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
        let stale = old.as_ref().is_some_and(|o| {
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
            let first_stale = if old.key == key {
                fe.backends.len() as u16 + 1
            } else {
                del(
                    &mut maps.services,
                    &mut sh.services,
                    undo,
                    Undo::Service,
                    old.key,
                )
                .map_err(sys(ctx()))?;
                1
            };
            for slot in first_stale..=old.total {
                let k = Lb4Key {
                    backend_slot: slot,
                    ..old.key
                };
                del(&mut maps.services, &mut sh.services, undo, Undo::Service, k)
                    .map_err(sys(ctx()))?;
            }
            for r in old.ranges.iter().filter(|r| !ranges.contains(r)) {
                let k = (id, r.0, r.1);
                if let Some(prev) = sh.ranges.remove(&k) {
                    undo.push(Undo::Range(k, Some(prev)));
                    ignore_missing(maps.src_range.remove(&range_key(id, *r)))
                        .map_err(sys(ctx()))?;
                }
            }
        }
        undo.push(Undo::Fe(id, old));
        sh.frontends.insert(
            id,
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
        let (maps, sh) = (&mut self.maps, &mut self.shadow);
        let Some(old) = sh.frontends.remove(&id.0) else {
            return Ok(());
        };
        undo.push(Undo::Fe(id.0, Some(old.clone())));
        // Slot 0 first: from here on no packet matches the frontend.
        for slot in 0..=old.total {
            let k = Lb4Key {
                backend_slot: slot,
                ..old.key
            };
            del(&mut maps.services, &mut sh.services, undo, Undo::Service, k)
                .map_err(sys(ctx()))?;
        }
        for r in &old.ranges {
            let k = (id.0, r.0, r.1);
            if let Some(prev) = sh.ranges.remove(&k) {
                undo.push(Undo::Range(k, Some(prev)));
                ignore_missing(maps.src_range.remove(&range_key(id.0, *r))).map_err(sys(ctx()))?;
            }
        }
        del(
            &mut maps.svc_meta,
            &mut sh.svc_meta,
            undo,
            Undo::SvcMeta,
            id.0,
        )
        .map_err(sys(ctx()))?;
        if sh.svc_stats.remove(&id.0) {
            undo.push(Undo::SvcStats(id.0, maps.svc_stats.get(&id.0, 0).ok()));
            ignore_missing(maps.svc_stats.remove(&id.0)).map_err(sys(ctx()))?;
        }
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

/// Writes what `q` holds (see [`Pending`]).
fn flush(maps: &mut Maps, q: &mut Pending) -> Result<(), DataplaneError> {
    q.flush(maps).map_err(|(map, e)| DataplaneError::System {
        context: format!("writing {map}"),
        source: Box::new(e),
    })
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
