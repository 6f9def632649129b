//! The reconciler: the minimal, safely ordered [`Op`]s that turn one
//! [`Tables`] into another, and [`Reconciler`], which keeps the programmed
//! state and applies desired states to a [`Dataplane`] all-or-nothing.

use std::collections::BTreeMap;

use crate::ids::IdDelta;
use crate::tables::{build_frontend, same_table, MaglevMemo};
use crate::{
    Backend, BackendId, BackendPlacement, Changes, ConfigError, Dataplane, DataplaneError,
    DesiredFrontend, DesiredState, FrontendKey, L3n4Addr, LbAlgorithm, MaglevConfig, Op, ServiceId,
    Tables,
};

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
            if !prev.is_some_and(|p| same_table(p, table)) {
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

/// A computed step: the ops that reach the desired state, in order.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The ops, in order.
    pub ops: Vec<Op>,
    step: Step,
}

/// What committing a plan changes besides applying its ops.
#[derive(Debug, Clone)]
enum Step {
    /// A full recomputation: the next tables outright.
    Full(Box<Tables>),
    /// An incremental step: identifier changes to record, and the desired
    /// entries that changed (`None`: removed), to patch the remembered
    /// desired state with.
    Delta {
        maglev: MaglevConfig,
        frontend_ids: (IdDelta<FrontendKey>, Vec<FrontendKey>),
        backend_ids: (IdDelta<L3n4Addr>, Vec<L3n4Addr>),
        frontends: Vec<(FrontendKey, Option<DesiredFrontend>)>,
        backends: Vec<(L3n4Addr, Option<BackendPlacement>)>,
    },
}

/// Keeps the programmed [`Tables`] and moves a dataplane to new desired states.
///
/// After the first step, planning is incremental: only the frontends and
/// backends whose desired entries changed since the last committed step are
/// rebuilt, so one endpoint change costs a walk over the desired state, not
/// a rebuild of every table. The result always equals the full
/// recomputation, [`diff`]`(current, current.realize(desired))`.
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
    /// The desired state `current` was built from, once known.
    desired: Option<DesiredState>,
}

impl Reconciler {
    /// A reconciler for an empty dataplane.
    pub fn new() -> Self {
        Reconciler {
            current: Tables::default(),
            desired: Some(DesiredState::default()),
        }
    }

    /// A reconciler for a dataplane that already holds `tables` (after a
    /// restart). Its first plan is a full recomputation.
    pub fn with_tables(tables: Tables) -> Self {
        Reconciler {
            current: tables,
            desired: None,
        }
    }

    /// The programmed state.
    pub fn current(&self) -> &Tables {
        &self.current
    }

    /// Computes the step to `desired` without applying it: a lockstep walk
    /// over the last committed desired state and `desired`.
    pub fn plan(&self, desired: &DesiredState) -> Result<Plan, ConfigError> {
        match &self.desired {
            Some(old) => self.plan_step(
                desired,
                changes(&old.backends, &desired.backends),
                changes(&old.frontends, &desired.frontends),
                old.maglev != desired.maglev,
            ),
            None => self.plan_full(desired),
        }
    }

    /// Like [`Reconciler::plan`], but looks only at the entries `changed`
    /// names (as [`crate::DesiredBuilder::take_changes`] reports them): the
    /// cost follows the size of the change, not of the state. Every other
    /// entry must be as it was at the last commit.
    pub fn plan_changes(
        &self,
        desired: &DesiredState,
        changed: &Changes,
    ) -> Result<Plan, ConfigError> {
        let Some(old) = self.desired.as_ref().filter(|o| o.maglev == desired.maglev) else {
            return self.plan(desired);
        };
        self.plan_step(
            desired,
            keyed_changes(&changed.backends, &old.backends, &desired.backends),
            keyed_changes(&changed.frontends, &old.frontends, &desired.frontends),
            false,
        )
    }

    fn plan_full(&self, desired: &DesiredState) -> Result<Plan, ConfigError> {
        let next = self.current.realize(desired)?;
        Ok(Plan {
            ops: diff(&self.current, &next),
            step: Step::Full(Box::new(next)),
        })
    }

    /// Records that `plan` (computed for `desired`) was applied.
    pub fn commit(&mut self, plan: Plan, desired: &DesiredState) {
        match plan.step {
            Step::Full(next) => {
                self.current = *next;
                self.desired = Some(desired.clone());
            }
            Step::Delta {
                maglev,
                frontend_ids,
                backend_ids,
                frontends,
                backends,
            } => {
                self.current
                    .commit_step(&plan.ops, maglev, frontend_ids, backend_ids);
                let remembered = self.desired.get_or_insert_with(DesiredState::default);
                remembered.maglev = maglev;
                for (k, v) in frontends {
                    match v {
                        Some(v) => remembered.frontends.insert(k, v),
                        None => remembered.frontends.remove(&k),
                    };
                }
                for (k, v) in backends {
                    match v {
                        Some(v) => remembered.backends.insert(k, v),
                        None => remembered.backends.remove(&k),
                    };
                }
            }
        }
    }

    /// [`Reconciler::apply`] for a change set: plans with
    /// [`Reconciler::plan_changes`], applies, commits.
    pub fn apply_changes<D: Dataplane + ?Sized>(
        &mut self,
        dp: &mut D,
        desired: &DesiredState,
        changed: &Changes,
    ) -> Result<usize, ReconcileError> {
        let plan = self.plan_changes(desired, changed)?;
        self.apply_plan(dp, plan, desired)
    }

    /// Plans, applies to `dp`, and commits; returns the number of ops. On
    /// error nothing is committed and the dataplane applied nothing.
    pub fn apply<D: Dataplane + ?Sized>(
        &mut self,
        dp: &mut D,
        desired: &DesiredState,
    ) -> Result<usize, ReconcileError> {
        let plan = self.plan(desired)?;
        self.apply_plan(dp, plan, desired)
    }

    fn apply_plan<D: Dataplane + ?Sized>(
        &mut self,
        dp: &mut D,
        plan: Plan,
        desired: &DesiredState,
    ) -> Result<usize, ReconcileError> {
        if !plan.ops.is_empty() {
            dp.apply(&plan.ops)?;
        }
        let n = plan.ops.len();
        self.commit(plan, desired);
        Ok(n)
    }

    fn plan_step<'a>(
        &self,
        desired: &DesiredState,
        backend_changes: impl Iterator<Item = Change<'a, L3n4Addr, BackendPlacement>>,
        frontend_changes: impl Iterator<Item = Change<'a, FrontendKey, DesiredFrontend>>,
        maglev_changed: bool,
    ) -> Result<Plan, ConfigError> {
        let cur = &self.current;
        let mut patch_backends = Vec::new();
        let mut patch_frontends = Vec::new();
        let (fe_alloc, be_alloc) = cur.allocators();

        let mut be_ids = be_alloc.preview();
        let mut be_removed = Vec::new();
        let mut upsert_backends: Vec<(BackendId, Op)> = Vec::new();
        let mut delete_backends: Vec<(BackendId, Op)> = Vec::new();
        for change in backend_changes {
            match change {
                Change::Removed(addr) => {
                    patch_backends.push((*addr, None));
                    if let Some(id) = be_alloc.get(addr) {
                        let id = BackendId(id);
                        delete_backends.push((id, Op::DeleteBackend { id, addr: *addr }));
                    }
                    be_removed.push(*addr);
                }
                Change::Added(addr, p) | Change::Changed(addr, p) => {
                    patch_backends.push((*addr, Some(p.clone())));
                    let id = BackendId(be_ids.acquire(addr)?);
                    let b = Backend {
                        id,
                        addr: *addr,
                        local: p.local,
                        zone: p.zone.clone(),
                    };
                    if cur.backends.get(&id) != Some(&b) {
                        upsert_backends.push((id, Op::UpsertBackend(b)));
                    }
                }
                Change::Same(..) => {}
            }
        }

        let mut fe_ids = fe_alloc.preview();
        let mut fe_removed = Vec::new();
        let mut memo = MaglevMemo::default();
        let (mut rev_nats, mut maglevs, mut upserts) = (Vec::new(), Vec::new(), Vec::new());
        let (mut deletes, mut maglev_deletes, mut rev_nat_deletes) =
            (Vec::new(), Vec::new(), Vec::new());
        for change in frontend_changes {
            let (key, d) = match change {
                Change::Removed(key) => {
                    patch_frontends.push((*key, None));
                    if let Some(fe) = cur.frontend_by_key(key) {
                        deletes.push((
                            fe.id,
                            Op::DeleteFrontend {
                                id: fe.id,
                                key: *key,
                            },
                        ));
                        if fe.maglev.is_some() {
                            maglev_deletes.push((fe.id, Op::DeleteMaglev { id: fe.id }));
                        }
                        rev_nat_deletes.push((
                            fe.id,
                            Op::DeleteRevNat {
                                id: fe.id.rev_nat(),
                            },
                        ));
                    }
                    fe_removed.push(*key);
                    continue;
                }
                Change::Same(key, d) if maglev_changed && d.algorithm == LbAlgorithm::Maglev => {
                    (key, d)
                }
                Change::Same(..) => continue,
                Change::Added(key, d) | Change::Changed(key, d) => {
                    patch_frontends.push((*key, Some(d.clone())));
                    (key, d)
                }
            };
            let id = ServiceId(fe_ids.acquire(key)?);
            let prev = cur.frontend_by_key(key).filter(|o| o.id == id);
            let fe = build_frontend(
                id,
                *key,
                d,
                |addr| be_ids.acquire(addr).map(BackendId),
                prev.map(|p| (p, cur.maglev)),
                desired.maglev,
                &mut memo,
            )?;
            if prev.map(|p| p.key.addr) != Some(key.addr) {
                rev_nats.push((
                    id,
                    Op::UpsertRevNat {
                        id: id.rev_nat(),
                        addr: key.addr,
                    },
                ));
            }
            let prev_table = prev.and_then(|p| p.maglev.as_ref());
            match (&fe.maglev, prev_table) {
                (Some(t), p) if !p.is_some_and(|p| same_table(p, t)) => maglevs.push((
                    id,
                    Op::UpsertMaglev {
                        id,
                        table: t.clone(),
                    },
                )),
                (None, Some(_)) => maglev_deletes.push((id, Op::DeleteMaglev { id })),
                _ => {}
            }
            if prev != Some(&fe) {
                upserts.push((id, Op::UpsertFrontend(fe)));
            }
        }

        let mut ops = Vec::new();
        for mut group in [
            upsert_backends
                .into_iter()
                .map(|(id, op)| (u64::from(id.0), op))
                .collect::<Vec<_>>(),
            by_service(rev_nats),
            by_service(maglevs),
            by_service(upserts),
            by_service(deletes),
            by_service(maglev_deletes),
            by_service(rev_nat_deletes),
            delete_backends
                .into_iter()
                .map(|(id, op)| (u64::from(id.0), op))
                .collect(),
        ] {
            group.sort_by_key(|(id, _)| *id);
            ops.extend(group.into_iter().map(|(_, op)| op));
        }
        Ok(Plan {
            ops,
            step: Step::Delta {
                maglev: desired.maglev,
                frontend_ids: (fe_ids.into_delta(), fe_removed),
                backend_ids: (be_ids.into_delta(), be_removed),
                frontends: patch_frontends,
                backends: patch_backends,
            },
        })
    }
}

fn by_service(v: Vec<(ServiceId, Op)>) -> Vec<(u64, Op)> {
    v.into_iter()
        .map(|(id, op)| (u64::from(id.0), op))
        .collect()
}

/// How one key differs between two sorted maps.
enum Change<'a, K, V> {
    Removed(&'a K),
    Added(&'a K, &'a V),
    Changed(&'a K, &'a V),
    Same(&'a K, &'a V),
}

/// The changes of the keys in `keys`, looked up in both maps.
fn keyed_changes<'a, K: Ord, V: PartialEq>(
    keys: &'a std::collections::BTreeSet<K>,
    old: &'a BTreeMap<K, V>,
    new: &'a BTreeMap<K, V>,
) -> impl Iterator<Item = Change<'a, K, V>> {
    keys.iter()
        .filter_map(move |k| match (old.get(k), new.get(k)) {
            (None, None) => None,
            (Some(_), None) => Some(Change::Removed(k)),
            (None, Some(v)) => Some(Change::Added(k, v)),
            (Some(a), Some(b)) if a == b => Some(Change::Same(k, b)),
            (Some(_), Some(b)) => Some(Change::Changed(k, b)),
        })
}

/// Walks two sorted maps in lockstep and yields every key's change.
fn changes<'a, K: Ord, V: PartialEq>(
    old: &'a BTreeMap<K, V>,
    new: &'a BTreeMap<K, V>,
) -> impl Iterator<Item = Change<'a, K, V>> {
    let mut a = old.iter().peekable();
    let mut b = new.iter().peekable();
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (None, None) => None,
        (Some(_), None) => a.next().map(|(k, _)| Change::Removed(k)),
        (None, Some(_)) => b.next().map(|(k, v)| Change::Added(k, v)),
        (Some((ka, _)), Some((kb, _))) => match ka.cmp(kb) {
            std::cmp::Ordering::Less => a.next().map(|(k, _)| Change::Removed(k)),
            std::cmp::Ordering::Greater => b.next().map(|(k, v)| Change::Added(k, v)),
            std::cmp::Ordering::Equal => {
                let (k, va) = a.next()?;
                let (_, vb) = b.next()?;
                Some(if va == vb {
                    Change::Same(k, vb)
                } else {
                    Change::Changed(k, vb)
                })
            }
        },
    })
}
