//! Error types: parsing ([`ParseError`]), validating a desired state
//! ([`ConfigError`]) and programming a dataplane ([`DataplaneError`]).

use std::ops::RangeInclusive;

use crate::{BackendId, L3n4Addr, ServiceId, ServiceName};

/// A string or number that is not a valid protocol or address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not TCP, UDP or SCTP.
    #[error("unknown protocol {0:?}: expected TCP, UDP or SCTP")]
    UnknownProtocol(String),
    /// Not `ADDR:PORT[/PROTO]`.
    #[error("invalid address {0:?}: expected ADDR:PORT[/PROTO], IPv6 as [ADDR]:PORT")]
    Address(String),
    /// Not `NAMESPACE/NAME`.
    #[error("invalid service name {0:?}: expected NAMESPACE/NAME")]
    ServiceName(String),
    /// Not a backend-selection algorithm.
    #[error("unknown backend selection {0:?}: expected random or maglev")]
    Algorithm(String),
}

/// Why a desired state was rejected. The previous state stays in force.
///
/// Every variant names the service and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A port that must be set is 0.
    #[error("service {service}: {field} is 0")]
    PortZero {
        /// The service at fault.
        service: ServiceName,
        /// Which port (e.g. `frontend 10.0.0.1:0/TCP`).
        field: String,
    },
    /// A NodePort outside the configured NodePort range.
    #[error("service {service}: nodePort {port} is outside the NodePort range {}-{}", range.start(), range.end())]
    NodePortOutOfRange {
        /// The service at fault.
        service: ServiceName,
        /// The offending port.
        port: u16,
        /// The configured range.
        range: RangeInclusive<u16>,
    },
    /// Two services (or one service twice) claim the same frontend.
    #[error("frontend {frontend} of service {second} is already used by service {first}")]
    DuplicateFrontend {
        /// The address both claim.
        frontend: L3n4Addr,
        /// The service that claimed it first.
        first: ServiceName,
        /// The service that claimed it again.
        second: ServiceName,
    },
    /// A service with no frontend at all.
    #[error("service {service}: no frontends")]
    NoFrontends {
        /// The service at fault.
        service: ServiceName,
    },
    /// A frontend address that cannot carry traffic for its type.
    #[error("service {service}: frontend {frontend} is not a valid {kind} address ({reason})")]
    InvalidFrontendAddress {
        /// The service at fault.
        service: ServiceName,
        /// The offending frontend.
        frontend: L3n4Addr,
        /// The frontend type.
        kind: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A backend whose address cannot be used.
    #[error("service {service}: backend {backend} is invalid ({reason})")]
    InvalidBackend {
        /// The service at fault.
        service: ServiceName,
        /// The offending backend.
        backend: L3n4Addr,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A Maglev table size Cilium does not accept.
    #[error("maglev table size {size} is not one of the accepted primes {accepted:?}")]
    InvalidMaglevTableSize {
        /// The rejected size.
        size: u32,
        /// The accepted sizes.
        accepted: &'static [u32],
    },
    /// NAT46/64 is on but the node lacks an IPv4 or an IPv6 address (the
    /// SNAT source of translated flows).
    #[error("NAT46/64 needs a node address of each family (IPv4 and IPv6)")]
    Nat46x64NeedsDualStackNode,
    /// A NodePort range that is empty or starts at 0.
    #[error("invalid NodePort range {}-{}", range.start(), range.end())]
    InvalidNodePortRange {
        /// The rejected range.
        range: RangeInclusive<u16>,
    },
    /// More backends for one frontend than the selection table or the
    /// dataplane's per-service slots can hold.
    #[error("service {service}: {count} backends for {frontend}, at most {max} allowed")]
    TooManyBackends {
        /// The service at fault.
        service: ServiceName,
        /// The frontend whose backend list is too long.
        frontend: L3n4Addr,
        /// How many backends it has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A session-affinity timeout outside 1..=86400 seconds (the Kubernetes limits).
    #[error("service {service}: sessionAffinity timeout {seconds}s is outside 1-86400")]
    InvalidAffinityTimeout {
        /// The service at fault.
        service: ServiceName,
        /// The rejected timeout.
        seconds: u32,
    },
    /// The same service name appears twice in one desired state.
    #[error("service {service} is defined twice")]
    DuplicateService {
        /// The repeated name.
        service: ServiceName,
    },
    /// A restored identifier is out of range or already held by another key.
    #[error("cannot restore {kind} ID {id}: out of range or already in use")]
    IdConflict {
        /// Which ID space.
        kind: &'static str,
        /// The identifier.
        id: u32,
    },
    /// No identifier is left to allocate.
    #[error("out of {kind} IDs (all {max} in use)")]
    IdsExhausted {
        /// Which ID space.
        kind: &'static str,
        /// Its size.
        max: u32,
    },
}

/// Why a dataplane refused a batch of operations. A dataplane returning an
/// error has applied none of the batch.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// A map or table is full.
    #[error("{table} is full: capacity {capacity}, {needed} entries needed")]
    CapacityExceeded {
        /// Which table.
        table: &'static str,
        /// Its capacity.
        capacity: usize,
        /// The entries the batch would need.
        needed: usize,
    },
    /// An operation would leave an entry pointing at something missing
    /// (a reconciler bug, or ops applied out of order).
    #[error("operation would dangle: {0}")]
    Dangling(String),
    /// A service ID the operation refers to is not programmed.
    #[error("service {0} is not programmed")]
    UnknownService(ServiceId),
    /// A backend ID the operation refers to is not programmed.
    #[error("backend {0} is not programmed")]
    UnknownBackend(BackendId),
    /// The operation is not supported by this dataplane.
    #[error("not supported by this dataplane: {0}")]
    Unsupported(String),
    /// The underlying system refused (map write, netlink, ...).
    #[error("{context}: {source}")]
    System {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
