//! The reconciler: the minimal, safely ordered [`Op`]s that turn one
//! [`Tables`] into another, and [`Reconciler`], which keeps the programmed
//! state and applies desired states to a [`Dataplane`] all-or-nothing.

use crate::{ConfigError, Dataplane, DataplaneError, DesiredState, Op, Tables};

/// The ops that turn `old` into `new`, in an order that keeps every
/// intermediate state valid:
///
/// 1. backends that are new or changed,
/// 2. reverse-NAT entries, then Maglev tables, of new or changed frontends,
/// 3. the frontends themselves (their slots name only backends of step 1),
/// 4. removed frontends, then their Maglev tables and reverse-NAT entries,
/// 5. backends no frontend uses any more.
///
/// Unchanged entries produce no op, so `diff(t, t)` is empty.
pub fn diff(old: &Tables, new: &Tables) -> Vec<Op> {
    let mut ops = Vec::new();
    for (id, b) in &new.backends {
        if old.backends.get(id) != Some(b) {
            ops.push(Op::UpsertBackend(b.clone()));
        }
    }
    for (id, fe) in &new.frontends {
        let prev = old.frontends.get(id);
        if prev.map(|p| p.key.addr) != Some(fe.key.addr) {
            ops.push(Op::UpsertRevNat {
                id: id.rev_nat(),
                addr: fe.key.addr,
            });
        }
    }
    for (id, fe) in &new.frontends {
        let prev = old.frontends.get(id).and_then(|p| p.maglev.as_ref());
        if let Some(table) = &fe.maglev {
            if prev != Some(table) {
                ops.push(Op::UpsertMaglev {
                    id: *id,
                    table: table.clone(),
                });
            }
        }
    }
    for (id, fe) in &new.frontends {
        if old.frontends.get(id) != Some(fe) {
            ops.push(Op::UpsertFrontend(fe.clone()));
        }
    }
    for (id, fe) in &old.frontends {
        if !new.frontends.contains_key(id) {
            ops.push(Op::DeleteFrontend {
                id: *id,
                key: fe.key,
            });
        }
    }
    for (id, fe) in &old.frontends {
        let still = new.frontends.get(id).is_some_and(|n| n.maglev.is_some());
        if fe.maglev.is_some() && !still {
            ops.push(Op::DeleteMaglev { id: *id });
        }
    }
    for id in old.frontends.keys() {
        if !new.frontends.contains_key(id) {
            ops.push(Op::DeleteRevNat { id: id.rev_nat() });
        }
    }
    for (id, b) in &old.backends {
        if !new.backends.contains_key(id) {
            ops.push(Op::DeleteBackend {
                id: *id,
                addr: b.addr,
            });
        }
    }
    ops
}

/// Why [`Reconciler::apply`] failed. The programmed state is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The desired state is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The dataplane refused the ops.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

/// A computed step: the tables to reach and the ops that reach them.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The tables after the ops.
    pub next: Tables,
    /// The ops, in order.
    pub ops: Vec<Op>,
}

/// Keeps the programmed [`Tables`] and moves a dataplane to new desired states.
///
/// ```
/// use lb_core::*;
/// let node = NodeConfig::new("node-1", vec!["192.168.1.10".parse().unwrap()]);
/// let mut svc = Service::new("default/web".parse().unwrap());
/// svc.frontends.push(FrontendParams::new("10.96.0.10:80".parse().unwrap(), FrontendType::ClusterIp));
/// svc.backends.push(BackendParams::new("10.0.0.5:8080".parse().unwrap()));
/// let desired = DesiredState::build(&node, &[svc]).unwrap();
///
/// let mut dp = MemoryDataplane::new();
/// let mut reconciler = Reconciler::new();
/// assert_eq!(reconciler.apply(&mut dp, &desired).unwrap(), 3); // backend, rev-NAT, frontend
/// assert_eq!(reconciler.apply(&mut dp, &desired).unwrap(), 0); // nothing changed
/// ```
#[derive(Debug, Clone, Default)]
pub struct Reconciler {
    current: Tables,
}

impl Reconciler {
    /// A reconciler for an empty dataplane.
    pub fn new() -> Self {
        Reconciler::default()
    }

    /// A reconciler for a dataplane that already holds `tables` (after a restart).
    pub fn with_tables(tables: Tables) -> Self {
        Reconciler { current: tables }
    }

    /// The programmed state.
    pub fn current(&self) -> &Tables {
        &self.current
    }

    /// Computes the step to `desired` without applying it.
    pub fn plan(&self, desired: &DesiredState) -> Result<Plan, ConfigError> {
        let next = self.current.realize(desired)?;
        let ops = diff(&self.current, &next);
        Ok(Plan { next, ops })
    }

    /// Records that `plan` was applied.
    pub fn commit(&mut self, plan: Plan) {
        self.current = plan.next;
    }

    /// Plans, applies to `dp`, and commits; returns the number of ops. On
    /// error nothing is committed and the dataplane applied nothing.
    pub fn apply<D: Dataplane + ?Sized>(
        &mut self,
        dp: &mut D,
        desired: &DesiredState,
    ) -> Result<usize, ReconcileError> {
        let plan = self.plan(desired)?;
        if !plan.ops.is_empty() {
            dp.apply(&plan.ops)?;
        }
        let n = plan.ops.len();
        self.commit(plan);
        Ok(n)
    }
}
