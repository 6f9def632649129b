//! Packet counters: per drop reason and per service, shared by all workers
//! (relaxed atomic adds: no lock per packet).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

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
    /// A flow lb-core sends with DSR encapsulation ([`lb_core::LbMode`])
    /// whose frame could not be wrapped: no room past it in the caller's
    /// buffer, or an IPv6 flow (IPIP here is over IPv4 only; userspace
    /// only, [`crate::dsr`]).
    Unsupported = 5,
    /// A NAT46/64 packet that could not be translated: no room for the
    /// bigger header in the caller's buffer, or no node address of the
    /// backend's family (userspace only, [`crate::nat46x64`]).
    Nat46x64 = 6,
    /// A frontend under traffic policy Local without a backend on this
    /// node (`LB_DROP_NO_LOCAL_BACKEND`).
    NoLocalBackend = 7,
    /// An ICMP error about a NAT46/64 flow with no equivalent in the
    /// client's family, or no room to translate it
    /// ([`crate::nat46x64_icmp`]; `LB_DROP_NAT46X64_ICMP`).
    Nat46x64Icmp = 8,
    /// An IPv4 packet of a NAT46/64 flow over the MTU once translated to
    /// IPv6 (`LB_DROP_FRAG_NEEDED`): answered with ICMP fragmentation
    /// needed when it has DF, else dropped ([`crate::nat46x64`]).
    FragNeeded = 9,
}

impl DropKind {
    /// Every reason.
    pub const ALL: [DropKind; 9] = [
        DropKind::Malformed,
        DropKind::NoBackend,
        DropKind::SourceRange,
        DropKind::SnatPorts,
        DropKind::Unsupported,
        DropKind::Nat46x64,
        DropKind::NoLocalBackend,
        DropKind::Nat46x64Icmp,
        DropKind::FragNeeded,
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
            DropKind::NoLocalBackend => "no_local_backend",
            DropKind::Nat46x64Icmp => "nat46x64_icmp_untranslatable",
            DropKind::FragNeeded => "frag_needed",
        }
    }
}

impl From<DropReason> for DropKind {
    fn from(r: DropReason) -> Self {
        match r {
            DropReason::NoBackend => DropKind::NoBackend,
            DropReason::NoLocalBackend => DropKind::NoLocalBackend,
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

/// Service counters per chunk: service ids are 32 bits, so the counters
/// are a two-level table of 2^16 chunks of 2^16 counters, a chunk allocated
/// on the first packet of one of its services (ids are handed out densely
/// from 1, so one or two chunks are live in practice).
const CHUNK_BITS: u32 = 16;
const CHUNK: usize = 1 << CHUNK_BITS;

/// The counters of a dataplane.
#[derive(Debug)]
pub struct Counters {
    drops: [AtomicU64; 10],
    services: Box<[OnceLock<Box<[ServiceCounter]>>]>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            drops: Default::default(),
            services: (0..CHUNK).map(|_| OnceLock::new()).collect(),
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
        let chunk = self.services[(id.0 >> CHUNK_BITS) as usize]
            .get_or_init(|| (0..CHUNK).map(|_| ServiceCounter::default()).collect());
        let c = &chunk[id.0 as usize & (CHUNK - 1)];
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
            .filter_map(|(hi, chunk)| Some((hi, chunk.get()?)))
            .flat_map(|(hi, chunk)| {
                chunk.iter().enumerate().filter_map(move |(lo, c)| {
                    let s = ServiceStats {
                        packets: c.packets.load(Ordering::Relaxed),
                        bytes: c.bytes.load(Ordering::Relaxed),
                        new_flows: c.new_flows.load(Ordering::Relaxed),
                    };
                    let id = ((hi as u32) << CHUNK_BITS) | lo as u32;
                    (s.packets > 0).then_some((ServiceId(id), s))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Service ids are 32 bits: ids past 65535 are counted on their own.
    #[test]
    fn wide_service_ids_are_counted_apart() {
        let c = Counters::default();
        for id in [1, 65_535, 65_536, 70_000, u32::MAX - 1] {
            c.service(ServiceId(id), 100, true);
        }
        c.service(ServiceId(70_000), 50, false);
        let s = c.services();
        assert_eq!(
            s.keys().map(|k| k.0).collect::<Vec<_>>(),
            [1, 65_535, 65_536, 70_000, u32::MAX - 1]
        );
        let w = s[&ServiceId(70_000)];
        assert_eq!((w.packets, w.bytes, w.new_flows), (2, 150, 1));
    }
}
