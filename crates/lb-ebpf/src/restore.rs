//! [`EbpfDataplane::restore`]: the pinned maps read back into lb-core
//! [`Tables`], so a restarted agent keeps every identifier and converges
//! without flushing.
//!
//! IPv4 frontends and backends come from the `lb4_*` maps, IPv6 ones from
//! the `lb6_*` maps, read by one generic pass per family.
//! Everything a [`Frontend`] holds is in the maps: the key and type (slot 0),
//! algorithm, affinity, traffic policy and scopes (slot-0 flags), backend
//! slots with their weight and state (slots `1..=total`, the first `count`
//! selectable), source ranges in their original order (the trie's value is
//! the position), the Maglev table (the inner array), and the service name
//! (`lb_svc_meta`, userspace only). A [`Backend`] comes from the backends
//! map (`BE_F_LOCAL`) and its zone from `lb_be_meta`.
//!
//! What cannot be rebuilt comes back different, and the reconciler's next
//! plan then rewrites just those entries in place (an `UpsertFrontend` or
//! `UpsertBackend` with the same ID, which the datapath sees as an ordinary
//! update, never a flush): a name or zone too long for its metadata field
//! (restored as `""` / `None`), source ranges of the other address family
//! than the frontend's (never programmed), duplicate source ranges (the trie holds one), and
//! the leftovers of an apply that failed half-way.

use std::collections::HashMap;
use std::sync::Arc;

use ipnet::IpNet;
use lb_core::{
    Backend, BackendId, BackendSlot, BackendState, DataplaneError, Frontend, FrontendKey,
    FrontendType, L3n4Addr, L4Proto, LbAlgorithm, Scope, ServiceId, ServiceName, Tables,
};

use crate::abi::*;
use crate::dataplane::{sys, EbpfDataplane};
use crate::family::{Family, V4, V6};

fn corrupt(what: String) -> DataplaneError {
    DataplaneError::System {
        context: "restoring from the pinned maps".into(),
        source: what.into(),
    }
}

/// An address as family `F` stores it (`port` in network order).
fn addr<F: Family>(address: F::Addr, port: u16, proto: u8) -> Result<L3n4Addr, DataplaneError> {
    let proto = L4Proto::try_from(proto)
        .map_err(|_| corrupt(format!("unknown protocol number {proto}")))?;
    Ok(L3n4Addr::new(F::ip(address), u16::from_be(port), proto))
}

fn fe_kind(code: u8) -> Result<FrontendType, DataplaneError> {
    Ok(match code {
        0 => FrontendType::ClusterIp,
        1 => FrontendType::NodePort,
        2 => FrontendType::LoadBalancer,
        3 => FrontendType::ExternalIp,
        4 => FrontendType::HostPort,
        other => return Err(corrupt(format!("unknown frontend type {other}"))),
    })
}

fn state(code: u16) -> BackendState {
    match code {
        BE_STATE_TERMINATING => BackendState::Terminating,
        BE_STATE_QUARANTINED => BackendState::Quarantined,
        BE_STATE_MAINTENANCE => BackendState::Maintenance,
        _ => BackendState::Active,
    }
}

fn service_name(stored: Option<String>) -> ServiceName {
    stored
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| ServiceName::new("", ""))
}

impl EbpfDataplane {
    /// Reads the programmed frontends and backends back from the maps and
    /// rebuilds lb-core [`Tables`] with their identifiers
    /// ([`Tables::restore`]). Hand the result to
    /// `Reconciler::with_tables`: planning the same desired state then
    /// yields no ops (see the module docs for what may be rewritten).
    pub fn restore(&self) -> Result<Tables, DataplaneError> {
        let (mut frontends, mut backends) = (Vec::new(), Vec::new());
        self.restore_family::<V4>(&mut frontends, &mut backends)?;
        self.restore_family::<V6>(&mut frontends, &mut backends)?;
        Tables::restore(frontends, backends, self.maglev).map_err(|e| DataplaneError::System {
            context: "restoring identifiers".into(),
            source: Box::new(e),
        })
    }

    /// Reads family `F`'s frontends and backends.
    fn restore_family<F: Family>(
        &self,
        frontends: &mut Vec<Frontend>,
        backends: &mut Vec<Backend>,
    ) -> Result<(), DataplaneError> {
        let maps = &self.maps;
        for item in F::backends(maps).iter() {
            let (id, v) = item.map_err(sys(format!("listing {}", F::BACKENDS)))?;
            let (address, port, proto, flags) = F::backend_parts(&v);
            backends.push(Backend {
                id: BackendId(id),
                addr: addr::<F>(address, port, proto)?,
                local: flags & BE_F_LOCAL != 0,
                zone: maps.be_meta.get(&id, 0).ok().map(|m| m.zone()),
            });
        }

        let mut ranges: HashMap<u32, Vec<(u8, IpNet)>> = HashMap::new();
        let trie = F::src_range(maps);
        for k in trie.keys() {
            let k = k.map_err(sys(format!("listing {}", F::SRC_RANGE)))?;
            let pos = trie.get(&k, 0).map_err(sys("reading a source range"))?;
            let (id, address, len) = F::range_parts(&k);
            let net = IpNet::new(F::ip(address), len)
                .map_err(|e| corrupt(format!("source range: {e}")))?;
            ranges.entry(id).or_default().push((pos, net));
        }

        let services = F::services(maps);
        for item in services.iter() {
            let (key, v) = item.map_err(sys(format!("listing {}", F::SERVICES)))?;
            if F::slot(&key) != 0 {
                continue;
            }
            let id = ServiceId(v.rev_nat_index);
            let mut slots = Vec::with_capacity(usize::from(v.total));
            for slot in 1..=v.total {
                // A missing slot (an apply that failed half-way) shortens
                // the list; the next plan rewrites the frontend.
                let Ok(s) = services.get(&F::with_slot(key, slot), 0) else {
                    break;
                };
                slots.push(BackendSlot {
                    id: BackendId(s.backend_id),
                    state: state(s.flags),
                    weight: s.weight,
                });
            }
            let mut source_ranges = ranges.remove(&v.rev_nat_index).unwrap_or_default();
            source_ranges.sort_by_key(|(pos, _)| *pos);
            let algorithm = if v.flags & SVC_F_MAGLEV != 0 {
                LbAlgorithm::Maglev
            } else {
                LbAlgorithm::Random
            };
            let maglev = match algorithm {
                LbAlgorithm::Maglev => Some(self.read_maglev(id)?),
                LbAlgorithm::Random => None,
            };
            let (address, dport, proto, scope) = F::key_parts(&key);
            frontends.push(Frontend {
                id,
                key: FrontendKey {
                    addr: addr::<F>(address, dport, proto)?,
                    scope: if scope == Scope::Internal as u8 {
                        Scope::Internal
                    } else {
                        Scope::External
                    },
                },
                kind: fe_kind(v.fe_type)?,
                service: service_name(maps.svc_meta.get(&id.0, 0).ok().map(|m| m.name())),
                selectable: usize::from(v.count).min(slots.len()),
                backends: slots,
                algorithm,
                affinity_timeout: (v.flags & SVC_F_AFFINITY != 0).then_some(v.affinity_timeout),
                source_ranges: source_ranges.into_iter().map(|(_, n)| n).collect(),
                local_only: v.flags & SVC_F_LOCAL_ONLY != 0,
                two_scopes: v.flags & SVC_F_TWO_SCOPES != 0,
                maglev,
            });
        }
        Ok(())
    }

    /// The Maglev table of `id` (empty when the frontend has none: no
    /// selectable backend).
    fn read_maglev(&self, id: ServiceId) -> Result<Arc<[BackendId]>, DataplaneError> {
        let ctx = || format!("reading maglev table {id}");
        let inner = match self.maps.maglev.get(&id.0, 0) {
            Ok(inner) => inner,
            Err(aya::maps::MapError::KeyNotFound) => return Ok(Arc::from(Vec::new())),
            Err(e) => return Err(sys(ctx())(e)),
        };
        let table = inner
            .iter()
            .map(|r| r.map(BackendId))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sys(ctx()))?;
        Ok(table.into())
    }
}
