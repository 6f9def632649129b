//! [`Tables`]: the programmed state with identifiers, the shape every
//! dataplane stores (frontends by ID, backends by ID, reverse NAT).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::ids::IdDelta;
use crate::select::maglev::{build_table, MaglevBackend};
use crate::{
    Backend, BackendId, BackendSlot, ConfigError, DesiredFrontend, DesiredState, Frontend,
    FrontendKey, IdAllocator, L3n4Addr, LbAlgorithm, MaglevConfig, RevNatId, ServiceId,
};

/// The most service IDs (0 reserved; the dataplanes key by a 32-bit id).
pub const MAX_SERVICE_ID: u32 = u32::MAX - 1;
/// The most backend IDs (0 reserved).
pub const MAX_BACKEND_ID: u32 = u32::MAX - 1;

/// The programmed state: what a dataplane holds after applying the ops.
///
/// Built from a [`DesiredState`] with [`Tables::realize`], which keeps the
/// identifiers and Maglev tables of everything that did not change.
#[derive(Debug, Clone)]
pub struct Tables {
    /// Frontends by ID.
    pub frontends: BTreeMap<ServiceId, Frontend>,
    /// Backends by ID.
    pub backends: BTreeMap<BackendId, Backend>,
    /// Maglev parameters the tables were built with.
    pub maglev: MaglevConfig,
    frontend_ids: IdAllocator<FrontendKey>,
    backend_ids: IdAllocator<L3n4Addr>,
    by_key: HashMap<FrontendKey, ServiceId>,
}

impl Default for Tables {
    fn default() -> Self {
        Tables {
            frontends: BTreeMap::new(),
            backends: BTreeMap::new(),
            maglev: MaglevConfig::default(),
            frontend_ids: IdAllocator::new("service", MAX_SERVICE_ID),
            backend_ids: IdAllocator::new("backend", MAX_BACKEND_ID),
            by_key: HashMap::new(),
        }
    }
}

impl PartialEq for Tables {
    /// Two tables are equal when they program the same entries.
    fn eq(&self, other: &Self) -> bool {
        self.frontends == other.frontends && self.backends == other.backends
    }
}

impl Tables {
    /// Empty tables.
    pub fn new() -> Self {
        Tables::default()
    }

    /// Whether `fe`'s flows cross IP families ([`crate::nat46x64`]): its
    /// backends are all of one family (never a mix), so the first one
    /// decides. [`crate::Translation::None`] for a frontend without
    /// backends.
    pub fn translation(&self, fe: &Frontend) -> crate::Translation {
        fe.backends
            .iter()
            .find_map(|slot| self.backends.get(&slot.id))
            .map_or(crate::Translation::None, |b| {
                crate::Translation::between(fe.key.addr.addr, b.addr.addr)
            })
    }

    /// The frontend entry for `key`.
    pub fn frontend_by_key(&self, key: &FrontendKey) -> Option<&Frontend> {
        self.by_key.get(key).and_then(|id| self.frontends.get(id))
    }

    /// The reverse-NAT entries: every frontend's ID and address.
    pub fn rev_nat(&self) -> impl Iterator<Item = (RevNatId, L3n4Addr)> + '_ {
        self.frontends
            .values()
            .map(|fe| (fe.id.rev_nat(), fe.key.addr))
    }

    /// Stores a frontend (dataplanes that build tables from ops use this).
    pub fn insert_frontend(&mut self, fe: Frontend) {
        if let Some(old) = self.frontends.get(&fe.id) {
            if old.key != fe.key {
                self.by_key.remove(&old.key);
            }
        }
        self.by_key.insert(fe.key, fe.id);
        self.frontends.insert(fe.id, fe);
    }

    /// Removes a frontend by ID.
    pub fn remove_frontend(&mut self, id: ServiceId) -> Option<Frontend> {
        let fe = self.frontends.remove(&id)?;
        self.by_key.remove(&fe.key);
        Some(fe)
    }

    /// Rebuilds tables from entries a dataplane kept (after an agent
    /// restart), so the reconciler keeps their identifiers and the next
    /// resync of an unchanged state only rewrites what differs.
    pub fn restore(
        frontends: impl IntoIterator<Item = Frontend>,
        backends: impl IntoIterator<Item = Backend>,
        maglev: MaglevConfig,
    ) -> Result<Tables, ConfigError> {
        let mut t = Tables {
            maglev,
            ..Tables::default()
        };
        for b in backends {
            t.backend_ids.restore(&b.addr, b.id.0)?;
            t.backends.insert(b.id, b);
        }
        for fe in frontends {
            t.frontend_ids.restore(&fe.key, fe.id.0)?;
            t.insert_frontend(fe);
        }
        Ok(t)
    }

    /// The next tables for `desired`, keeping the identifiers of every
    /// frontend key and backend address that stays, and the Maglev table of
    /// every frontend whose selectable backends did not change.
    pub fn realize(&self, desired: &DesiredState) -> Result<Tables, ConfigError> {
        let mut next = Tables {
            maglev: desired.maglev,
            frontend_ids: self.frontend_ids.clone(),
            backend_ids: self.backend_ids.clone(),
            ..Tables::default()
        };
        next.frontend_ids
            .retain(|k| desired.frontends.contains_key(k));
        next.backend_ids
            .retain(|a| desired.backends.contains_key(a));

        for (addr, placement) in &desired.backends {
            let id = BackendId(next.backend_ids.acquire(addr)?);
            next.backends.insert(
                id,
                Backend {
                    id,
                    addr: *addr,
                    local: placement.local,
                    zone: placement.zone.clone(),
                },
            );
        }

        let mut memo = MaglevMemo::default();
        for (key, d) in &desired.frontends {
            let id = ServiceId(next.frontend_ids.acquire(key)?);
            let old = self.frontend_by_key(key).filter(|o| o.id == id);
            let fe = build_frontend(
                id,
                *key,
                d,
                |addr| next.backend_ids.acquire(addr).map(BackendId),
                old.map(|o| (o, self.maglev)),
                desired.maglev,
                &mut memo,
            )?;
            next.insert_frontend(fe);
        }
        Ok(next)
    }

    /// The frontend-key and backend-address allocators (for the incremental reconciler).
    pub(crate) fn allocators(&self) -> (&IdAllocator<FrontendKey>, &IdAllocator<L3n4Addr>) {
        (&self.frontend_ids, &self.backend_ids)
    }

    /// Applies a committed step: the ops' entries and the identifier changes.
    pub(crate) fn commit_step(
        &mut self,
        ops: &[crate::Op],
        maglev: MaglevConfig,
        frontend_ids: (IdDelta<FrontendKey>, Vec<FrontendKey>),
        backend_ids: (IdDelta<L3n4Addr>, Vec<L3n4Addr>),
    ) {
        use crate::Op;
        for op in ops {
            match op {
                Op::UpsertBackend(b) => {
                    self.backends.insert(b.id, b.clone());
                }
                Op::UpsertFrontend(fe) => self.insert_frontend(fe.clone()),
                Op::DeleteFrontend { id, .. } => {
                    self.remove_frontend(*id);
                }
                Op::DeleteBackend { id, .. } => {
                    self.backends.remove(id);
                }
                Op::UpsertRevNat { .. }
                | Op::UpsertMaglev { .. }
                | Op::DeleteMaglev { .. }
                | Op::DeleteRevNat { .. } => {}
            }
        }
        self.maglev = maglev;
        self.frontend_ids
            .commit_preview(frontend_ids.0, &frontend_ids.1);
        self.backend_ids
            .commit_preview(backend_ids.0, &backend_ids.1);
    }
}

/// Maglev tables built during one step, keyed by their (address, weight)
/// set: frontends of one service often share a backend set (a NodePort on
/// every node IP), and each distinct table is built once.
#[derive(Debug, Default)]
pub(crate) struct MaglevMemo(HashMap<Vec<(L3n4Addr, u16)>, Arc<[BackendId]>>);

/// True when two Maglev tables hold the same entries (same allocation first).
pub(crate) fn same_table(a: &Arc<[BackendId]>, b: &Arc<[BackendId]>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// Builds the programmed form of a desired frontend. `backend_id` names each
/// backend address; `old` is the previously programmed entry for the same
/// key and ID with the Maglev parameters it was built with, whose table is
/// reused when the selectable backends and parameters are unchanged.
pub(crate) fn build_frontend(
    id: ServiceId,
    key: FrontendKey,
    d: &DesiredFrontend,
    mut backend_id: impl FnMut(&L3n4Addr) -> Result<BackendId, ConfigError>,
    old: Option<(&Frontend, MaglevConfig)>,
    cfg: MaglevConfig,
    memo: &mut MaglevMemo,
) -> Result<Frontend, ConfigError> {
    let backends = d
        .backends
        .iter()
        .map(|b| {
            Ok(BackendSlot {
                id: backend_id(&b.addr)?,
                state: b.state,
                weight: b.weight,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let mut fe = Frontend {
        id,
        key,
        kind: d.kind,
        service: d.service.clone(),
        backends,
        selectable: d.selectable.min(d.backends.len()),
        algorithm: d.algorithm,
        affinity_timeout: d.affinity_timeout,
        source_ranges: d.source_ranges.clone(),
        local_only: d.local_only,
        two_scopes: d.two_scopes,
        maglev: None,
    };
    if fe.algorithm != LbAlgorithm::Maglev {
        return Ok(fe);
    }
    if let Some((old, old_cfg)) = old {
        if old_cfg == cfg && old.selectable_backends() == fe.selectable_backends() {
            if let Some(table) = &old.maglev {
                fe.maglev = Some(table.clone());
                return Ok(fe);
            }
        }
    }
    let selectable = &d.backends[..d.selectable.min(d.backends.len())];
    let set: Vec<(L3n4Addr, u16)> = selectable.iter().map(|b| (b.addr, b.weight)).collect();
    if let Some(table) = memo.0.get(&set) {
        fe.maglev = Some(table.clone());
        return Ok(fe);
    }
    let input: Vec<MaglevBackend> = selectable
        .iter()
        .zip(fe.selectable_backends())
        .map(|(b, slot)| MaglevBackend {
            addr: b.addr,
            id: slot.id,
            weight: b.weight,
        })
        .collect();
    let table: Arc<[BackendId]> = build_table(&input, &cfg).into();
    memo.0.insert(set, table.clone());
    fe.maglev = Some(table);
    Ok(fe)
}
