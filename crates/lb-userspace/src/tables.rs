//! The published table snapshot and its writer.
//!
//! Writers ([`TableWriter::apply`]) validate a batch of ops against a private
//! [`MemoryDataplane`] under a `parking_lot` mutex — all or nothing, with
//! capacity checks — then build the next immutable [`Snapshot`] and publish
//! it with one `arc-swap` store. Readers (packet-path workers) only `load()`
//! the current snapshot: no lock and no allocation per packet.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use lb_core::{
    Capacity, Dataplane, DataplaneError, L3n4Addr, MemoryDataplane, NodeConfig, Op, RevNatId,
    Tables,
};
use parking_lot::Mutex;

/// Everything the packet path reads: one consistent version of the tables.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Frontends and backends, with the node's Maglev parameters (the flow
    /// hash seed).
    pub tables: Tables,
    /// Reverse-NAT entries by ID.
    pub rev_nat: BTreeMap<RevNatId, L3n4Addr>,
    /// The node: its addresses (wildcard frontends, SNAT source).
    pub node: NodeConfig,
    /// Increases by one with every published batch.
    pub generation: u64,
}

/// Validates and publishes table updates.
#[derive(Debug)]
pub struct TableWriter {
    staged: Mutex<MemoryDataplane>,
    current: Arc<ArcSwap<Snapshot>>,
}

impl TableWriter {
    /// An empty table set for `node`, holding at most `capacity` entries.
    pub fn new(node: NodeConfig, capacity: Capacity) -> Self {
        let mut tables = Tables::new();
        tables.maglev = node.maglev;
        let snapshot = Snapshot {
            tables,
            rev_nat: BTreeMap::new(),
            node,
            generation: 0,
        };
        TableWriter {
            staged: Mutex::new(MemoryDataplane::with_capacity(capacity)),
            current: Arc::new(ArcSwap::from_pointee(snapshot)),
        }
    }

    /// The handle readers load snapshots from.
    pub fn reader(&self) -> Arc<ArcSwap<Snapshot>> {
        self.current.clone()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Applies `ops` all-or-nothing and publishes the result. On error the
    /// published snapshot is unchanged.
    ///
    /// ```
    /// use lb_core::*;
    /// use lb_userspace::tables::TableWriter;
    /// let node = NodeConfig::new("n", vec!["192.168.1.10".parse().unwrap()]);
    /// let w = TableWriter::new(node, Capacity { frontends: 8, backends: 1 });
    /// let b = |i: u32| Op::UpsertBackend(Backend {
    ///     id: BackendId(i), addr: format!("10.0.0.{i}:80").parse().unwrap(), local: true, zone: None });
    /// assert!(w.apply(&[b(1), b(2)]).is_err());
    /// assert_eq!(w.snapshot().tables.backends.len(), 0);
    /// w.apply(&[b(1)]).unwrap();
    /// assert_eq!(w.snapshot().generation, 1);
    /// ```
    pub fn apply(&self, ops: &[Op]) -> Result<(), DataplaneError> {
        let mut staged = self.staged.lock();
        let mut next = staged.clone();
        next.apply(ops)?;
        let old = self.current.load();
        let mut tables = next.tables().clone();
        tables.maglev = old.node.maglev;
        let snapshot = Snapshot {
            tables,
            rev_nat: next.rev_nat().clone(),
            node: old.node.clone(),
            generation: old.generation + 1,
        };
        self.current.store(Arc::new(snapshot));
        *staged = next;
        Ok(())
    }
}
