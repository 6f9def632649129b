//! [`DesiredBuilder`]: a desired state kept up to date one service at a
//! time, for agents that see services change one by one.
//!
//! Each [`DesiredBuilder::upsert`] validates and expands only that service
//! and is all-or-nothing for it: an invalid service, or one that claims a
//! frontend another service owns, is refused with an error and its previous
//! version stays in force, while every other service is unaffected. The
//! builder records which frontends and backends changed, so
//! [`crate::Reconciler::plan_changes`] can plan in time proportional to the
//! change.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    BackendPlacement, ConfigError, DesiredState, FrontendKey, L3n4Addr, NodeConfig, Service,
    ServiceName,
};

/// The frontend keys and backend addresses whose desired entries changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Frontend entries added, changed or removed.
    pub frontends: BTreeSet<FrontendKey>,
    /// Backend addresses added, changed or removed.
    pub backends: BTreeSet<L3n4Addr>,
}

impl Changes {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.frontends.is_empty() && self.backends.is_empty()
    }
}

/// What the builder remembers of one accepted service.
#[derive(Debug, Clone)]
struct Accepted {
    frontends: Vec<FrontendKey>,
    backends: Vec<L3n4Addr>,
}

/// Keeps a [`DesiredState`] up to date one service at a time.
///
/// ```
/// use lb_core::*;
/// let node = NodeConfig::new("node-1", vec!["192.168.1.10".parse().unwrap()]);
/// let mut builder = DesiredBuilder::new(node).unwrap();
/// let mut web = Service::new("default/web".parse().unwrap());
/// web.frontends.push(FrontendParams::new("10.96.0.10:80".parse().unwrap(), FrontendType::ClusterIp));
/// web.backends.push(BackendParams::new("10.0.0.5:8080".parse().unwrap()));
/// builder.upsert(&web).unwrap();
///
/// // Another service may not take the same frontend; `web` stays as it was.
/// let mut thief = Service::new("default/thief".parse().unwrap());
/// thief.frontends = web.frontends.clone();
/// assert!(builder.upsert(&thief).is_err());
///
/// let mut dp = MemoryDataplane::new();
/// let mut reconciler = Reconciler::new();
/// let changes = builder.take_changes();
/// assert_eq!(reconciler.apply_changes(&mut dp, builder.state(), &changes).unwrap(), 3);
/// ```
#[derive(Debug, Clone)]
pub struct DesiredBuilder {
    node: NodeConfig,
    state: DesiredState,
    accepted: BTreeMap<ServiceName, Accepted>,
    /// Which service owns each frontend address.
    owners: BTreeMap<L3n4Addr, ServiceName>,
    /// The placement each accepted service declares for each backend address.
    backend_refs: BTreeMap<L3n4Addr, BTreeMap<ServiceName, BackendPlacement>>,
    changes: Changes,
}

impl DesiredBuilder {
    /// An empty builder for `node`; fails if the node configuration is invalid.
    pub fn new(node: NodeConfig) -> Result<Self, ConfigError> {
        let state = DesiredState::build(&node, &[])?;
        Ok(DesiredBuilder {
            node,
            state,
            accepted: BTreeMap::new(),
            owners: BTreeMap::new(),
            backend_refs: BTreeMap::new(),
            changes: Changes::default(),
        })
    }

    /// The node configuration.
    pub fn node(&self) -> &NodeConfig {
        &self.node
    }

    /// The desired state of every accepted service.
    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    /// The names of the accepted services.
    pub fn services(&self) -> impl Iterator<Item = &ServiceName> {
        self.accepted.keys()
    }

    /// Adds or replaces one service. On error nothing changes: the
    /// service's previous version (if any) stays.
    pub fn upsert(&mut self, svc: &Service) -> Result<(), ConfigError> {
        let alone = DesiredState::build(&self.node, std::slice::from_ref(svc))?;
        for key in alone.frontends.keys() {
            if let Some(owner) = self.owners.get(&key.addr) {
                if *owner != svc.name {
                    return Err(ConfigError::DuplicateFrontend {
                        frontend: key.addr,
                        first: owner.clone(),
                        second: svc.name.clone(),
                    });
                }
            }
        }
        let frontends: Vec<FrontendKey> = alone.frontends.keys().copied().collect();
        let backends: Vec<L3n4Addr> = alone.backends.keys().copied().collect();
        self.remove(&svc.name);
        for (key, fe) in alone.frontends {
            self.owners.insert(key.addr, svc.name.clone());
            self.changes.frontends.insert(key);
            self.state.frontends.insert(key, fe);
        }
        for (addr, placement) in alone.backends {
            self.backend_refs
                .entry(addr)
                .or_default()
                .insert(svc.name.clone(), placement);
            self.refresh_backend(addr);
        }
        self.accepted.insert(
            svc.name.clone(),
            Accepted {
                frontends,
                backends,
            },
        );
        Ok(())
    }

    /// Removes a service; returns whether it was there.
    pub fn remove(&mut self, name: &ServiceName) -> bool {
        let Some(old) = self.accepted.remove(name) else {
            return false;
        };
        for key in old.frontends {
            self.state.frontends.remove(&key);
            self.owners.remove(&key.addr);
            self.changes.frontends.insert(key);
        }
        for addr in old.backends {
            if let Some(refs) = self.backend_refs.get_mut(&addr) {
                refs.remove(name);
                if refs.is_empty() {
                    self.backend_refs.remove(&addr);
                }
            }
            self.refresh_backend(addr);
        }
        true
    }

    /// The changes since the last call, for [`crate::Reconciler::plan_changes`].
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Recomputes the merged placement of `addr` and records a change.
    fn refresh_backend(&mut self, addr: L3n4Addr) {
        let merged = self
            .backend_refs
            .get(&addr)
            .and_then(|refs| refs.values().cloned().reduce(|a, b| a.merge(&b)));
        if self.state.backends.get(&addr) != merged.as_ref() {
            match merged {
                Some(p) => self.state.backends.insert(addr, p),
                None => self.state.backends.remove(&addr),
            };
            self.changes.backends.insert(addr);
        }
    }
}
