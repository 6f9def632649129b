//! Packet counters: per drop reason and per service, shared by all workers
//! (relaxed atomic adds: no lock per packet).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use lb_core::{DropReason, ServiceId};

/// Why the userspace packet path dropped a packet (the indices of the BPF
/// `lb_drops` map: `LB_DROP_MALFORMED`, `..._NO_BACKEND`, `..._SOURCE_RANGE`,
/// `..._SNAT_PORTS`; index 3, `LB_DROP_REWRITE`, cannot happen here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropKind {
    /// A truncated or invalid IPv4/TCP/UDP header.
    Malformed = 0,
    /// A frontend without a backend for the flow.
    NoBackend = 1,
    /// A client outside the frontend's source ranges.
    SourceRange = 2,
    /// A new SNATed flow found no free source port (`LB_DROP_SNAT_PORTS`).
    SnatPorts = 4,
    /// A flow lb-core sends with DSR encapsulation ([`lb_core::LbMode`]),
    /// which this dataplane does not implement (userspace only).
    Unsupported = 5,
    /// A NAT46/64 packet that could not be translated: no room for the
    /// bigger header in the caller's buffer, or no node address of the
    /// backend's family (userspace only, [`crate::nat46x64`]).
    Nat46x64 = 6,
}

impl DropKind {
    /// Every reason.
    pub const ALL: [DropKind; 6] = [
        DropKind::Malformed,
        DropKind::NoBackend,
        DropKind::SourceRange,
        DropKind::SnatPorts,
        DropKind::Unsupported,
        DropKind::Nat46x64,
    ];

    /// A short name for counters and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropKind::Malformed => "malformed",
            DropKind::NoBackend => "no_backend",
            DropKind::SourceRange => "source_range_denied",
            DropKind::SnatPorts => "snat_ports",
            DropKind::Unsupported => "dsr_unsupported",
            DropKind::Nat46x64 => "nat46x64_untranslatable",
        }
    }
}

impl From<DropReason> for DropKind {
    fn from(r: DropReason) -> Self {
        match r {
            DropReason::NoBackend => DropKind::NoBackend,
            DropReason::SourceRangeDenied => DropKind::SourceRange,
        }
    }
}

/// One service's counters.
#[derive(Debug, Default)]
struct ServiceCounter {
    packets: AtomicU64,
    bytes: AtomicU64,
    new_flows: AtomicU64,
}

/// Counters of one service, read at one time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Packets to the frontend (forwarded or dropped for lack of a backend).
    pub packets: u64,
    /// Their bytes (whole frames).
    pub bytes: u64,
    /// Flows that got a backend.
    pub new_flows: u64,
}

/// The counters of a dataplane.
#[derive(Debug)]
pub struct Counters {
    drops: [AtomicU64; 7],
    services: Box<[ServiceCounter]>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            drops: Default::default(),
            services: (0..=usize::from(u16::MAX))
                .map(|_| ServiceCounter::default())
                .collect(),
        }
    }
}

impl Counters {
    /// Counts a dropped packet.
    pub fn count_drop(&self, reason: DropKind) {
        self.drops[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a packet of service `id` of `bytes` bytes.
    pub fn service(&self, id: ServiceId, bytes: usize, new_flow: bool) {
        let c = &self.services[usize::from(id.0)];
        c.packets.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if new_flow {
            c.new_flows.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Packets dropped for `reason`.
    pub fn drops(&self, reason: DropKind) -> u64 {
        self.drops[reason as usize].load(Ordering::Relaxed)
    }

    /// The counters of every service that saw a packet.
    pub fn services(&self) -> BTreeMap<ServiceId, ServiceStats> {
        self.services
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let s = ServiceStats {
                    packets: c.packets.load(Ordering::Relaxed),
                    bytes: c.bytes.load(Ordering::Relaxed),
                    new_flows: c.new_flows.load(Ordering::Relaxed),
                };
                (s.packets > 0).then_some((ServiceId(i as u16), s))
            })
            .collect()
    }
}
