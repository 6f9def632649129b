//! [`EbpfDataplane::gc`]: removes expired connection-tracking, SNAT,
//! affinity and socket-LB entries. The datapath stamps `last_seen` (seconds
//! of `CLOCK_MONOTONIC_COARSE`, [`crate::now_secs`]) and flags TCP flows
//! that saw a FIN or RST; the lifetimes live here, in userspace
//! ([`CtTimeouts`]), so changing them needs no reload. The LRU maps also
//! evict on their own when full; gc keeps them from filling with dead flows.
//! The `lb4_*` and `lb6_*` maps are collected by one generic pass per
//! family ([`CtFamily`]), with the same lifetimes and partner rules.

use std::collections::HashMap;
use std::hash::Hash;

use aya::maps::{HashMap as BpfHashMap, MapData, MapError};
use aya::Pod;
use lb_core::DataplaneError;

use crate::abi::*;
use crate::dataplane::{ignore_missing, sys, EbpfDataplane};
use crate::family::{Family, V4, V6};
use crate::maps::Maps;
use crate::nat46::{SnatKind, XlateSnat};

/// Idle lifetimes of tracked flows, in seconds (defaults after Cilium's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtTimeouts {
    /// An open TCP connection (default 6 hours).
    pub tcp: u64,
    /// A TCP connection after FIN or RST (default 10 seconds).
    pub tcp_closing: u64,
    /// UDP and other protocols (default 60 seconds).
    pub other: u64,
    /// How long a closed TCP flow's tuple towards its backend stays
    /// reserved after its last packet (default 65 seconds, above Linux's
    /// 60 s TIME_WAIT): its reply entry (DNATed flows) or SNAT entry
    /// (SNATed flows) is kept so that no other flow gets that tuple while
    /// the backend may still hold it in TIME_WAIT (the backend would answer
    /// the new SYN with an ACK, and the client retransmit it a second
    /// later). The same client flow may take its tuple over (`lb_ctport.h`,
    /// `lb_snat_alloc`); other flows get another source port.
    pub time_wait: u64,
}

impl Default for CtTimeouts {
    fn default() -> Self {
        CtTimeouts {
            tcp: 6 * 3600,
            tcp_closing: 10,
            other: 60,
            time_wait: 65,
        }
    }
}

impl CtTimeouts {
    /// The lifetime of the tuple reservation (reply or SNAT entry) of a
    /// flow with `flags` (`None`: the flow's entry is gone).
    fn reserved(&self, proto: u8, flags: Option<u16>) -> u64 {
        match flags {
            Some(f) if proto != 6 || f & CT_F_CLOSING == 0 => self.for_entry(proto, f),
            Some(_) => self.tcp_closing.max(self.time_wait),
            None if proto == 6 => SNAT_ORPHAN_GRACE.max(self.time_wait),
            None => SNAT_ORPHAN_GRACE,
        }
    }

    fn for_entry(&self, proto: u8, flags: u16) -> u64 {
        if proto != 6 {
            self.other
        } else if flags & CT_F_CLOSING != 0 {
            self.tcp_closing
        } else {
            self.tcp
        }
    }
}

/// What one [`EbpfDataplane::gc`] run removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Connection-tracking entries (both directions count).
    pub ct: usize,
    /// SNAT reverse entries.
    pub snat: usize,
    /// Affinity entries (expired, or their frontend lost affinity or is gone).
    pub affinity: usize,
    /// Socket-LB reverse entries of frontends that are gone.
    pub sock_rev: usize,
}

/// A SNAT entry whose flow has no CT entry is kept at least this long
/// (seconds), so a flow being set up (SNAT entry written just before its CT
/// entry) is never cut; TCP ones for [`CtTimeouts::time_wait`].
const SNAT_ORPHAN_GRACE: u64 = 2;

/// A CT key's fields (addresses and ports in network order).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuple<A> {
    saddr: A,
    daddr: A,
    sport: u16,
    dport: u16,
    proto: u8,
    dir: u8,
}

/// The fields of a CT entry gc reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CtInfo<A> {
    backend_id: u32,
    frontend_addr: A,
    frontend_port: u16,
    snat_port: u16,
    flags: u16,
    last_seen: u64,
}

/// The fields of a SNAT entry gc reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SnatInfo<A> {
    client_addr: A,
    frontend_addr: A,
    client_port: u16,
    frontend_port: u16,
    last_seen: u64,
}

/// One family's flow maps (connection tracking, SNAT, affinity, socket-LB
/// reverse translation) and their layouts.
pub(crate) trait CtFamily: Family {
    /// `struct ct4_key` / `struct ct6_key`.
    type CtKey: Pod + Copy + Eq + Hash;
    /// `struct ct4_entry` / `struct ct6_entry`.
    type CtEntry: Pod + Copy;
    /// `struct lb4_snat_entry` / `struct lb6_snat_entry`.
    type SnatEntry: Pod + Copy;
    /// `struct lb4_affinity_key` / `struct lb6_affinity_key`.
    type AffinityKey: Pod + Copy;
    /// `struct lb4_sock_key` / `struct lb6_sock_key`.
    type SockKey: Pod + Copy;
    /// `struct lb4_sock_val` / `struct lb6_sock_val`.
    type SockVal: Pod + Copy;

    /// A CT key from its fields.
    fn ct_key(t: Tuple<Self::Addr>) -> Self::CtKey;
    /// A CT key's fields.
    fn tuple(k: &Self::CtKey) -> Tuple<Self::Addr>;
    /// A CT entry's fields.
    fn ct_info(v: &Self::CtEntry) -> CtInfo<Self::Addr>;
    /// A SNAT entry's fields.
    fn snat_info(v: &Self::SnatEntry) -> SnatInfo<Self::Addr>;
    /// The frontend an affinity entry belongs to.
    fn affinity_rev_nat(k: &Self::AffinityKey) -> u32;
    /// The frontend a socket-LB entry belongs to.
    fn sock_rev_nat(v: &Self::SockVal) -> u32;

    /// The CT map.
    fn ct(m: &mut Maps) -> &mut BpfHashMap<MapData, Self::CtKey, Self::CtEntry>;
    /// The SNAT map.
    fn snat(m: &mut Maps) -> &mut BpfHashMap<MapData, Self::CtKey, Self::SnatEntry>;
    /// The affinity map.
    fn affinity(m: &mut Maps) -> &mut BpfHashMap<MapData, Self::AffinityKey, LbAffinityVal>;
    /// The socket-LB reverse map.
    fn sock_rev(m: &mut Maps) -> &mut BpfHashMap<MapData, Self::SockKey, Self::SockVal>;
}

macro_rules! ct_family {
    ($fam:ty, $key:ident, $entry:ident, $snat_e:ident, $aff:ident, $sk:ident, $sv:ident,
     $ct:ident, $snat:ident, $affinity:ident, $sock_rev:ident) => {
        impl CtFamily for $fam {
            type CtKey = $key;
            type CtEntry = $entry;
            type SnatEntry = $snat_e;
            type AffinityKey = $aff;
            type SockKey = $sk;
            type SockVal = $sv;

            fn ct_key(t: Tuple<Self::Addr>) -> $key {
                $key {
                    saddr: t.saddr,
                    daddr: t.daddr,
                    sport: t.sport,
                    dport: t.dport,
                    proto: t.proto,
                    dir: t.dir,
                    pad: [0; 2],
                }
            }
            fn tuple(k: &$key) -> Tuple<Self::Addr> {
                Tuple {
                    saddr: k.saddr,
                    daddr: k.daddr,
                    sport: k.sport,
                    dport: k.dport,
                    proto: k.proto,
                    dir: k.dir,
                }
            }
            fn ct_info(v: &$entry) -> CtInfo<Self::Addr> {
                CtInfo {
                    backend_id: v.backend_id,
                    frontend_addr: v.frontend_addr,
                    frontend_port: v.frontend_port,
                    snat_port: v.snat_port,
                    flags: v.flags,
                    last_seen: v.last_seen,
                }
            }
            fn snat_info(v: &$snat_e) -> SnatInfo<Self::Addr> {
                SnatInfo {
                    client_addr: v.client_addr,
                    frontend_addr: v.frontend_addr,
                    client_port: v.client_port,
                    frontend_port: v.frontend_port,
                    last_seen: v.last_seen,
                }
            }
            fn affinity_rev_nat(k: &$aff) -> u32 {
                k.rev_nat_index
            }
            fn sock_rev_nat(v: &$sv) -> u32 {
                v.rev_nat_index
            }
            fn ct(m: &mut Maps) -> &mut BpfHashMap<MapData, $key, $entry> {
                &mut m.$ct
            }
            fn snat(m: &mut Maps) -> &mut BpfHashMap<MapData, $key, $snat_e> {
                &mut m.$snat
            }
            fn affinity(m: &mut Maps) -> &mut BpfHashMap<MapData, $aff, LbAffinityVal> {
                &mut m.$affinity
            }
            fn sock_rev(m: &mut Maps) -> &mut BpfHashMap<MapData, $sk, $sv> {
                &mut m.$sock_rev
            }
        }
    };
}

ct_family!(
    V4,
    Ct4Key,
    Ct4Entry,
    Lb4SnatEntry,
    Lb4AffinityKey,
    Lb4SockKey,
    Lb4SockVal,
    ct,
    snat,
    affinity,
    sock_rev
);
ct_family!(
    V6,
    Ct6Key,
    Ct6Entry,
    Lb6SnatEntry,
    Lb6AffinityKey,
    Lb6SockKey,
    Lb6SockVal,
    ct6,
    snat6,
    affinity6,
    sock_rev6
);

/// The key of the other direction of the flow of CT entry `(k, v)`: the
/// reply entry (backend -> client) of a service entry, whose backend
/// `backend` looks up (address and port), or the service entry (client ->
/// frontend) of a reply entry. SNATed flows have no reply entry.
fn partner<A: Copy>(
    k: &Tuple<A>,
    v: &CtInfo<A>,
    backend: impl FnOnce(u32) -> Option<(A, u16)>,
) -> Option<Tuple<A>> {
    // A flow whose client port was remapped (CT_F_PORTMAP) has the other
    // side's port in snat_port.
    let remapped = v.flags & CT_F_PORTMAP != 0;
    if k.dir == CT_REPLY {
        return Some(Tuple {
            saddr: k.daddr,
            daddr: v.frontend_addr,
            sport: if remapped { v.snat_port } else { k.dport },
            dport: v.frontend_port,
            proto: k.proto,
            dir: CT_SERVICE,
        });
    }
    // SNAT flows have a reverse SNAT entry instead, DSR flows nothing.
    if v.flags & (CT_F_SNAT | CT_F_DSR) != 0 {
        return None;
    }
    let (address, port) = backend(v.backend_id)?;
    Some(Tuple {
        saddr: address,
        daddr: k.saddr,
        sport: port,
        dport: if remapped { v.snat_port } else { k.sport },
        proto: k.proto,
        dir: CT_REPLY,
    })
}

fn age(now: u64, then: u64) -> u64 {
    now.saturating_sub(then)
}

/// Collects a map iteration first: entries are deleted afterwards.
fn collect<K>(
    it: impl Iterator<Item = Result<K, MapError>>,
    ctx: &str,
) -> Result<Vec<K>, DataplaneError> {
    it.collect::<Result<Vec<_>, _>>()
        .map_err(sys(ctx.to_string()))
}

impl EbpfDataplane {
    /// Removes every entry idle for longer than its lifetime at `now`
    /// (seconds of [`crate::now_secs`]'s clock), using the default
    /// [`CtTimeouts`]. Call it periodically (Cilium: every few minutes).
    pub fn gc(&mut self, now: u64) -> Result<GcStats, DataplaneError> {
        self.gc_with(now, &CtTimeouts::default())
    }

    /// [`EbpfDataplane::gc`] with explicit lifetimes.
    pub fn gc_with(&mut self, now: u64, t: &CtTimeouts) -> Result<GcStats, DataplaneError> {
        let mut stats = GcStats::default();
        // IPv6 first: a NAT64 flow's marker in lb4_snat goes in the same
        // run as its real entry in lb6_snat (crate::nat46).
        self.gc_family::<V6>(now, t, &mut stats)?;
        self.gc_family::<V4>(now, t, &mut stats)?;
        Ok(stats)
    }

    /// One family's pass of [`EbpfDataplane::gc_with`].
    fn gc_family<F: CtFamily + XlateSnat>(
        &mut self,
        now: u64,
        t: &CtTimeouts,
        stats: &mut GcStats,
    ) -> Result<(), DataplaneError> {
        let maps = &mut self.maps;

        // Connection tracking: a flow's two directions by the later of
        // their last packets (a flow whose packets all go one way stays
        // whole), and closing when either saw a FIN or RST.
        let entries: Vec<(F::CtKey, F::CtEntry)> = collect(F::ct(maps).iter(), "listing CT")?;
        let by_key: HashMap<F::CtKey, CtInfo<F::Addr>> =
            entries.iter().map(|(k, v)| (*k, F::ct_info(v))).collect();
        for (k, v) in &entries {
            let (tuple, v) = (F::tuple(k), F::ct_info(v));
            let backend = |id| {
                let b = F::backends(maps).get(&id, 0).ok()?;
                let (address, port, _, _) = F::backend_parts(&b);
                Some((address, port))
            };
            let (last_seen, flags) =
                match partner(&tuple, &v, backend).and_then(|p| by_key.get(&F::ct_key(p))) {
                    Some(p) => (v.last_seen.max(p.last_seen), v.flags | p.flags),
                    None => (v.last_seen, v.flags),
                };
            // A reply entry reserves its tuple past the flow's end.
            let lifetime = if tuple.dir == CT_REPLY {
                t.reserved(tuple.proto, Some(flags))
            } else {
                t.for_entry(tuple.proto, flags)
            };
            if age(now, last_seen) > lifetime {
                ignore_missing(F::ct(maps).remove(k)).map_err(sys("deleting CT"))?;
                stats.ct += 1;
            }
        }

        // SNAT: expired by its own replies, or orphaned (its flow is gone).
        let entries: Vec<(F::CtKey, F::SnatEntry)> = collect(F::snat(maps).iter(), "listing SNAT")?;
        for (k, e) in &entries {
            let (proto, v) = (F::tuple(k).proto, F::snat_info(e));
            let flow = F::ct_key(Tuple {
                saddr: v.client_addr,
                daddr: v.frontend_addr,
                sport: v.client_port,
                dport: v.frontend_port,
                proto,
                dir: CT_SERVICE,
            });
            let a = age(now, v.last_seen);
            // Translated flows' entries (crate::nat46): the client's CT
            // entry is in the other family's map; a NAT64 marker lives as
            // long as its real entry.
            let flow_flags = match F::snat_kind(maps, k, e) {
                SnatKind::Plain => F::ct(maps)
                    .get(&flow, 0)
                    .ok()
                    .map(|ct| F::ct_info(&ct).flags),
                SnatKind::Nat46(flags) => flags,
                SnatKind::Nat64Marker(true) => continue,
                SnatKind::Nat64Marker(false) => None,
            };
            let expired = match flow_flags {
                Some(flags) => a > t.reserved(proto, Some(flags)),
                None => a >= t.reserved(proto, None),
            };
            if expired {
                ignore_missing(F::snat(maps).remove(k)).map_err(sys("deleting SNAT"))?;
                stats.snat += 1;
            }
        }

        // Affinity: by the frontend's timeout.
        let entries: Vec<(F::AffinityKey, LbAffinityVal)> =
            collect(F::affinity(&mut self.maps).iter(), "listing affinity")?;
        for (k, v) in &entries {
            let timeout = self.affinity_timeout(F::affinity_rev_nat(k)).map(u64::from);
            let keep = timeout.is_some_and(|to| age(now, v.last_used) <= to);
            if !keep {
                ignore_missing(F::affinity(&mut self.maps).remove(k))
                    .map_err(sys("deleting affinity"))?;
                stats.affinity += 1;
            }
        }

        // Socket LB: entries of frontends that are gone (the rest is LRU).
        let entries: Vec<(F::SockKey, F::SockVal)> =
            collect(F::sock_rev(&mut self.maps).iter(), "listing sock rev-NAT")?;
        for (k, v) in &entries {
            let id = F::sock_rev_nat(v);
            if F::rev_nat_map(&self.maps).get(&id, 0).is_err() {
                ignore_missing(F::sock_rev(&mut self.maps).remove(k))
                    .map_err(sys("deleting sock rev-NAT"))?;
                stats.sock_rev += 1;
            }
        }
        Ok(())
    }
}
