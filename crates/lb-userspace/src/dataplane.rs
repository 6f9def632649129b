//! [`UserspaceDataplane`]: lb-core's [`Dataplane`] over published tables,
//! plus the factory of packet-path workers.

use std::sync::Arc;

use lb_core::{Capacity, Dataplane, DataplaneError, NodeConfig, Op};

use crate::counters::Counters;
use crate::ct::{CtTimeouts, FlowTable, SnatPorts};
use crate::path::PacketPath;
use crate::rng::FastRng;
use crate::tables::{Snapshot, TableWriter};

/// Sizes of a userspace dataplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Table capacities (frontends, backends).
    pub capacity: Capacity,
    /// Tracked flows (and affinity entries) per worker.
    pub flows: usize,
    /// Source ports of SNATed flows.
    pub snat_ports: SnatPorts,
    /// Idle lifetimes of tracked flows ([`PacketPath::expire`]).
    pub timeouts: CtTimeouts,
}

impl Default for Config {
    /// lb-core's default capacities, 262144 flows per worker (each a
    /// forward and a reply entry, plus as many TIME_WAIT reservations: the
    /// counterpart of lb-ebpf's 524288-entry CT map),
    /// SNAT ports 61000–65535 and lb-ebpf's gc lifetimes.
    fn default() -> Self {
        Config {
            capacity: Capacity::default(),
            flows: 262_144,
            snat_ports: SnatPorts::default(),
            timeouts: CtTimeouts::default(),
        }
    }
}

/// The userspace dataplane: programmed with [`Dataplane::apply`], read by
/// any number of [`PacketPath`] workers.
///
/// ```
/// use lb_core::*;
/// use lb_userspace::{Direction, Outcome, UserspaceDataplane};
///
/// let node = NodeConfig::new("node-1", vec!["192.168.1.10".parse().unwrap()]);
/// let mut svc = Service::new("default/web".parse().unwrap());
/// svc.frontends.push(FrontendParams::new("10.96.0.10:80".parse().unwrap(), FrontendType::ClusterIp));
/// svc.backends.push(BackendParams::new("10.0.1.5:8080".parse().unwrap()).on_node("node-1"));
/// let desired = DesiredState::build(&node, &[svc]).unwrap();
///
/// let mut dp = UserspaceDataplane::new(node, Default::default());
/// Reconciler::new().apply(&mut dp, &desired).unwrap();
/// let mut worker = dp.worker();
///
/// let mut frame = lb_testkit::PacketBuilder::tcp(
///     "192.168.5.2:40000".parse().unwrap(), "10.96.0.10:80".parse().unwrap()).syn().build().unwrap();
/// let out = worker.process(&mut frame, Direction::ToFrontend, 0);
/// assert!(matches!(out, Outcome::Forwarded(_)));
/// assert_eq!(lb_testkit::parse(&frame).unwrap().dst.to_string(), "10.0.1.5:8080");
/// ```
#[derive(Debug, Clone)]
pub struct UserspaceDataplane {
    writer: Arc<TableWriter>,
    counters: Arc<Counters>,
    config: Config,
}

impl UserspaceDataplane {
    /// An empty dataplane for `node`.
    pub fn new(node: NodeConfig, config: Config) -> Self {
        UserspaceDataplane {
            writer: Arc::new(TableWriter::new(node, config.capacity)),
            counters: Arc::new(Counters::default()),
            config,
        }
    }

    /// Applies `ops` through a shared handle (same as [`Dataplane::apply`]).
    pub fn apply_ops(&self, ops: &[Op]) -> Result<(), DataplaneError> {
        self.writer.apply(ops)
    }

    /// A new worker whose random selection draws from a clock-seeded PRNG.
    pub fn worker(&self) -> PacketPath {
        self.worker_with_rng(FastRng::from_entropy())
    }

    /// A new worker with the given PRNG (deterministic tests).
    pub fn worker_with_rng(&self, rng: FastRng) -> PacketPath {
        PacketPath::new(
            self.writer.reader(),
            self.counters.clone(),
            FlowTable::new(self.config.flows)
                .with_snat_ports(self.config.snat_ports)
                .with_timeouts(self.config.timeouts),
            rng,
        )
    }

    /// The published tables.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.writer.snapshot()
    }

    /// The packet counters of every worker.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

impl Dataplane for UserspaceDataplane {
    fn apply(&mut self, ops: &[Op]) -> Result<(), DataplaneError> {
        self.writer.apply(ops)
    }
}
