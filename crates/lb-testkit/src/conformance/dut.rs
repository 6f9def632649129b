//! The interface a dataplane implements to be tested: [`DataplaneUnderTest`].

use lb_core::{Capacity, DataplaneError, NodeConfig, Op};

use super::Scenario;

/// Which way a frame travels through the dataplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → frontend (BPF: the tc ingress program of the client-facing device).
    ToFrontend,
    /// Backend → client (BPF: the tc egress program; reverse NAT).
    Reply,
}

/// Time and entropy of one packet. A dataplane that cannot take them from
/// the caller says so in [`Features`] and uses its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketCtx {
    /// Monotonic seconds (affinity timeouts).
    pub now: u64,
    /// The random number for weighted random selection.
    pub entropy: u32,
}

/// What a dataplane did with one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacketResult {
    /// Let through, possibly rewritten (BPF: `TC_ACT_OK` and the output frame).
    Accept(Vec<u8>),
    /// Dropped (BPF: `TC_ACT_SHOT`).
    Drop,
}

/// Counters of dropped packets by reason, for dataplanes that count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Drops {
    /// Truncated or invalid IPv4/TCP/UDP headers.
    pub malformed: u64,
    /// Frontends without a backend for the flow.
    pub no_backend: u64,
    /// Frontends under traffic policy Local without a backend on the node.
    pub no_local_backend: u64,
    /// Clients outside the source ranges.
    pub source_range: u64,
}

/// What the suite may rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// [`PacketCtx::entropy`] drives weighted random selection. Without it
    /// the suite accepts any selectable backend for a new random flow and
    /// follows the dataplane's choice.
    pub entropy: bool,
    /// [`PacketCtx::now`] is the dataplane's clock (affinity expiry).
    pub clock: bool,
    /// The dataplane SNATs flows to remote backends (`Forward::snat`).
    pub snat: bool,
}

impl Features {
    /// Everything.
    pub const ALL: Features = Features {
        entropy: true,
        clock: true,
        snat: true,
    };
}

/// How the suite builds a dataplane for one scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// The node: the dataplane's addresses (wildcard frontends, SNAT source)
    /// and Maglev parameters.
    pub node: NodeConfig,
    /// Table capacities.
    pub capacity: Capacity,
}

/// A dataplane under test: frames in, verdicts and frames out.
///
/// An adapter for a kernel dataplane runs [`process`](Self::process) with
/// `BPF_PROG_TEST_RUN` (ingress program for [`Direction::ToFrontend`],
/// egress for [`Direction::Reply`]) and returns `Accept(output)` for
/// `TC_ACT_OK`, `Drop` for `TC_ACT_SHOT`; it declares what it cannot do in
/// [`features`](Self::features) and [`unsupported`](Self::unsupported).
pub trait DataplaneUnderTest {
    /// A name for reports.
    fn name(&self) -> String;

    /// What the suite may rely on.
    fn features(&self) -> Features {
        Features::ALL
    }

    /// Why this dataplane cannot run `scenario`, or `None` when it can.
    /// The suite lists every such scenario with its reason.
    fn unsupported(&self, scenario: Scenario) -> Option<String> {
        let _ = scenario;
        None
    }

    /// Applies ops all-or-nothing (lb-core's `Dataplane::apply`).
    fn apply(&mut self, ops: &[Op]) -> Result<(), DataplaneError>;

    /// Processes one frame.
    fn process(&mut self, dir: Direction, frame: &[u8], ctx: PacketCtx) -> PacketResult;

    /// Forgets all connection-tracking and affinity state.
    fn reset_flows(&mut self);

    /// Drop counters, if the dataplane keeps them.
    fn drops(&self) -> Option<Drops> {
        None
    }
}

/// Lets a [`DataplaneUnderTest`] be driven by lb-core's `Reconciler`.
pub struct AsDataplane<'a, D: ?Sized>(pub &'a mut D);

impl<D: DataplaneUnderTest + ?Sized> lb_core::Dataplane for AsDataplane<'_, D> {
    fn apply(&mut self, ops: &[Op]) -> Result<(), DataplaneError> {
        self.0.apply(ops)
    }
}
