//! [`Op`]: one dataplane write, as the reconciler emits them.

use std::fmt;
use std::sync::Arc;

use crate::{Backend, BackendId, Frontend, FrontendKey, L3n4Addr, RevNatId, ServiceId};

/// One write a dataplane performs. The reconciler orders them so that
/// applying them one at a time never leaves a frontend, a Maglev table or a
/// reverse-NAT lookup pointing at something missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or update a backend.
    UpsertBackend(Backend),
    /// Create or update the reverse-NAT entry of a frontend.
    UpsertRevNat {
        /// The entry's ID (the frontend's service ID).
        id: RevNatId,
        /// The frontend address replies are rewritten back to.
        addr: L3n4Addr,
    },
    /// Create or replace a frontend's Maglev table (replacement must be
    /// atomic for the datapath: old or new table, never a mix).
    UpsertMaglev {
        /// The frontend.
        id: ServiceId,
        /// `M` backend IDs.
        table: Arc<[BackendId]>,
    },
    /// Create or update a frontend entry and its backend slots.
    UpsertFrontend(Frontend),
    /// Remove a frontend entry.
    DeleteFrontend {
        /// Its ID.
        id: ServiceId,
        /// Its lookup key.
        key: FrontendKey,
    },
    /// Remove a frontend's Maglev table.
    DeleteMaglev {
        /// The frontend.
        id: ServiceId,
    },
    /// Remove a reverse-NAT entry.
    DeleteRevNat {
        /// Its ID.
        id: RevNatId,
    },
    /// Remove a backend.
    DeleteBackend {
        /// Its ID.
        id: BackendId,
        /// Its address.
        addr: L3n4Addr,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::UpsertBackend(b) => write!(f, "upsert backend {} {}", b.id, b.addr),
            Op::UpsertRevNat { id, addr } => write!(f, "upsert rev-nat {id} {addr}"),
            Op::UpsertMaglev { id, table } => {
                write!(f, "upsert maglev {id} ({} entries)", table.len())
            }
            Op::UpsertFrontend(fe) => write!(
                f,
                "upsert frontend {} {} {:?} ({}/{} backends)",
                fe.id,
                fe.key.addr,
                fe.key.scope,
                fe.selectable,
                fe.backends.len()
            ),
            Op::DeleteFrontend { id, key } => {
                write!(f, "delete frontend {id} {} {:?}", key.addr, key.scope)
            }
            Op::DeleteMaglev { id } => write!(f, "delete maglev {id}"),
            Op::DeleteRevNat { id } => write!(f, "delete rev-nat {id}"),
            Op::DeleteBackend { id, addr } => write!(f, "delete backend {id} {addr}"),
        }
    }
}
