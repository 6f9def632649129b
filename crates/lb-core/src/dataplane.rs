//! The pluggable dataplane: the [`Dataplane`] trait and [`MemoryDataplane`],
//! a deterministic in-memory implementation that checks every op.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{BackendId, DataplaneError, L3n4Addr, Op, RevNatId, ServiceId, Tables};

/// Something that programs load-balancing state: BPF maps, userspace
/// tables, or memory.
pub trait Dataplane {
    /// Applies `ops` in order. All-or-nothing: on error, none of them has
    /// taken effect (a dataplane checks capacity and validity up front).
    fn apply(&mut self, ops: &[Op]) -> Result<(), DataplaneError>;
}

/// Table capacities of a dataplane, like BPF map sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Most frontend entries.
    pub frontends: usize,
    /// Most backends.
    pub backends: usize,
}

impl Default for Capacity {
    /// Cilium's default map sizes (65536 each).
    fn default() -> Self {
        Capacity {
            frontends: 65_536,
            backends: 65_536,
        }
    }
}

/// An in-memory dataplane: applies ops to [`Tables`] and refuses any op that
/// would leave an entry pointing at something missing. Tests use it as the
/// reference; library users use it to see what would be programmed.
///
/// ```
/// use lb_core::*;
/// let mut dp = MemoryDataplane::new();
/// let backend = Backend { id: BackendId(1), addr: "10.0.0.5:80".parse().unwrap(), local: true, zone: None };
/// dp.apply(&[Op::UpsertBackend(backend)]).unwrap();
/// assert_eq!(dp.tables().backends.len(), 1);
/// // Removing a backend that does not exist is fine; dangling references are not.
/// assert!(dp.apply(&[Op::DeleteRevNat { id: RevNatId(9) }]).is_ok());
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryDataplane {
    tables: Tables,
    rev_nat: BTreeMap<RevNatId, L3n4Addr>,
    maglev: BTreeMap<ServiceId, Arc<[BackendId]>>,
    capacity: Capacity,
    log: Vec<Op>,
}

impl MemoryDataplane {
    /// An empty dataplane with default capacities.
    pub fn new() -> Self {
        MemoryDataplane::default()
    }

    /// An empty dataplane with the given capacities.
    pub fn with_capacity(capacity: Capacity) -> Self {
        MemoryDataplane {
            capacity,
            ..MemoryDataplane::default()
        }
    }

    /// What is programmed.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The reverse-NAT entries.
    pub fn rev_nat(&self) -> &BTreeMap<RevNatId, L3n4Addr> {
        &self.rev_nat
    }

    /// The Maglev tables by frontend.
    pub fn maglev_tables(&self) -> &BTreeMap<ServiceId, Arc<[BackendId]>> {
        &self.maglev
    }

    /// Every op applied so far, in order.
    pub fn log(&self) -> &[Op] {
        &self.log
    }

    /// Applies one op, checking that nothing dangles afterwards.
    pub fn apply_one(&mut self, op: &Op) -> Result<(), DataplaneError> {
        let dangling = |what: String| Err(DataplaneError::Dangling(what));
        match op {
            Op::UpsertBackend(b) => {
                if !self.tables.backends.contains_key(&b.id)
                    && self.tables.backends.len() >= self.capacity.backends
                {
                    return Err(DataplaneError::CapacityExceeded {
                        table: "backends",
                        capacity: self.capacity.backends,
                        needed: self.tables.backends.len() + 1,
                    });
                }
                self.tables.backends.insert(b.id, b.clone());
            }
            Op::UpsertRevNat { id, addr } => {
                self.rev_nat.insert(*id, *addr);
            }
            Op::UpsertMaglev { id, table } => {
                if let Some(missing) = table.iter().find(|b| !self.tables.backends.contains_key(b))
                {
                    return dangling(format!("maglev table {id} names backend {missing}"));
                }
                self.maglev.insert(*id, table.clone());
            }
            Op::UpsertFrontend(fe) => {
                if !self.tables.frontends.contains_key(&fe.id)
                    && self.tables.frontends.len() >= self.capacity.frontends
                {
                    return Err(DataplaneError::CapacityExceeded {
                        table: "frontends",
                        capacity: self.capacity.frontends,
                        needed: self.tables.frontends.len() + 1,
                    });
                }
                if let Some(s) = fe
                    .backends
                    .iter()
                    .find(|s| !self.tables.backends.contains_key(&s.id))
                {
                    return dangling(format!("frontend {} names backend {}", fe.id, s.id));
                }
                if self.rev_nat.get(&fe.id.rev_nat()) != Some(&fe.key.addr) {
                    return dangling(format!("frontend {} has no rev-nat entry", fe.id));
                }
                if fe.maglev.is_some() && self.maglev.get(&fe.id) != fe.maglev.as_ref() {
                    return dangling(format!("frontend {} has no maglev table", fe.id));
                }
                self.tables.insert_frontend(fe.clone());
            }
            Op::DeleteFrontend { id, .. } => {
                self.tables.remove_frontend(*id);
            }
            Op::DeleteMaglev { id } => {
                if self
                    .tables
                    .frontends
                    .get(id)
                    .is_some_and(|fe| fe.maglev.is_some())
                {
                    return dangling(format!("frontend {id} still uses its maglev table"));
                }
                self.maglev.remove(id);
            }
            Op::DeleteRevNat { id } => {
                if self.tables.frontends.contains_key(&ServiceId(id.0)) {
                    return dangling(format!("frontend {id} still uses its rev-nat entry"));
                }
                self.rev_nat.remove(id);
            }
            Op::DeleteBackend { id, .. } => {
                if let Some(fe) = self
                    .tables
                    .frontends
                    .values()
                    .find(|fe| fe.backends.iter().any(|s| s.id == *id))
                {
                    return dangling(format!("frontend {} still names backend {id}", fe.id));
                }
                if let Some(m) = self.maglev.iter().find(|(_, t)| t.contains(id)) {
                    return dangling(format!("maglev table {} still names backend {id}", m.0));
                }
                self.tables.backends.remove(id);
            }
        }
        self.log.push(op.clone());
        Ok(())
    }
}

impl Dataplane for MemoryDataplane {
    fn apply(&mut self, ops: &[Op]) -> Result<(), DataplaneError> {
        // All-or-nothing: work on a copy and keep it only if every op passes.
        let mut next = self.clone();
        for op in ops {
            next.apply_one(op)?;
        }
        *self = next;
        Ok(())
    }
}
