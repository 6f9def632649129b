//! [`EbpfDataplane::gc`]: removes expired connection-tracking, SNAT,
//! affinity and socket-LB entries. The datapath stamps `last_seen` (seconds
//! of `CLOCK_MONOTONIC_COARSE`, [`crate::now_secs`]) and flags TCP flows
//! that saw a FIN or RST; the lifetimes live here, in userspace
//! ([`CtTimeouts`]), so changing them needs no reload. The LRU maps also
//! evict on their own when full; gc keeps them from filling with dead flows.

use std::collections::HashMap;

use aya::maps::MapError;
use lb_core::DataplaneError;

use crate::abi::*;
use crate::dataplane::{ignore_missing, sys, EbpfDataplane};

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

/// The key of the other direction of the flow of CT entry `(k, v)`: the
/// reply entry (backend -> client) of a service entry, whose backend
/// `backend` looks up, or the service entry (client -> frontend) of a
/// reply entry. SNATed flows have no reply entry.
fn partner(
    k: &Ct4Key,
    v: &Ct4Entry,
    backend: impl FnOnce(u32) -> Option<Lb4Backend>,
) -> Option<Ct4Key> {
    // A flow whose client port was remapped (CT_F_PORTMAP) has the other
    // side's port in snat_port.
    let remapped = v.flags & CT_F_PORTMAP != 0;
    if k.dir == CT_REPLY {
        return Some(Ct4Key {
            saddr: k.daddr,
            daddr: v.frontend_addr,
            sport: if remapped { v.snat_port } else { k.dport },
            dport: v.frontend_port,
            proto: k.proto,
            dir: CT_SERVICE,
            pad: [0; 2],
        });
    }
    // SNAT flows have a reverse SNAT entry instead, DSR flows nothing.
    if v.flags & (CT_F_SNAT | CT_F_DSR) != 0 {
        return None;
    }
    let be = backend(v.backend_id)?;
    Some(Ct4Key {
        saddr: be.address,
        daddr: k.saddr,
        sport: be.port,
        dport: if remapped { v.snat_port } else { k.sport },
        proto: k.proto,
        dir: CT_REPLY,
        pad: [0; 2],
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
        let maps = &mut self.maps;

        // Connection tracking: a flow's two directions by the later of
        // their last packets (a flow whose packets all go one way stays
        // whole), and closing when either saw a FIN or RST.
        let entries: Vec<(Ct4Key, Ct4Entry)> = collect(maps.ct.iter(), "listing CT")?;
        let by_key: HashMap<Ct4Key, &Ct4Entry> = entries.iter().map(|(k, v)| (*k, v)).collect();
        for (k, v) in &entries {
            let (last_seen, flags) = match partner(k, v, |id| maps.backends.get(&id, 0).ok())
                .and_then(|p| by_key.get(&p))
            {
                Some(p) => (v.last_seen.max(p.last_seen), v.flags | p.flags),
                None => (v.last_seen, v.flags),
            };
            // A reply entry reserves its tuple past the flow's end.
            let lifetime = if k.dir == CT_REPLY {
                t.reserved(k.proto, Some(flags))
            } else {
                t.for_entry(k.proto, flags)
            };
            if age(now, last_seen) > lifetime {
                ignore_missing(maps.ct.remove(k)).map_err(sys("deleting CT"))?;
                stats.ct += 1;
            }
        }

        // SNAT: expired by its own replies, or orphaned (its flow is gone).
        let entries: Vec<(Ct4Key, Lb4SnatEntry)> = collect(maps.snat.iter(), "listing SNAT")?;
        for (k, v) in &entries {
            let flow = Ct4Key {
                saddr: v.client_addr,
                daddr: v.frontend_addr,
                sport: v.client_port,
                dport: v.frontend_port,
                proto: k.proto,
                dir: CT_SERVICE,
                pad: [0; 2],
            };
            let a = age(now, v.last_seen);
            let flow_ct = maps.ct.get(&flow, 0).ok();
            let expired = match flow_ct {
                Some(ct) => a > t.reserved(k.proto, Some(ct.flags)),
                None => a >= t.reserved(k.proto, None),
            };
            if expired {
                ignore_missing(maps.snat.remove(k)).map_err(sys("deleting SNAT"))?;
                stats.snat += 1;
            }
        }

        // Affinity: by the frontend's timeout.
        let entries: Vec<(Lb4AffinityKey, LbAffinityVal)> =
            collect(maps.affinity.iter(), "listing affinity")?;
        for (k, v) in &entries {
            let timeout = self
                .shadow_frontend_key(k.rev_nat_index)
                .and_then(|key| self.maps.services.get(&key, 0).ok())
                .filter(|fe| fe.flags & SVC_F_AFFINITY != 0)
                .map(|fe| u64::from(fe.affinity_timeout));
            let keep = timeout.is_some_and(|to| age(now, v.last_used) <= to);
            if !keep {
                ignore_missing(self.maps.affinity.remove(k)).map_err(sys("deleting affinity"))?;
                stats.affinity += 1;
            }
        }

        // Socket LB: entries of frontends that are gone (the rest is LRU).
        let entries: Vec<(Lb4SockKey, Lb4SockVal)> =
            collect(self.maps.sock_rev.iter(), "listing sock rev-NAT")?;
        for (k, v) in &entries {
            if self.maps.rev_nat.get(&v.rev_nat_index, 0).is_err() {
                ignore_missing(self.maps.sock_rev.remove(k))
                    .map_err(sys("deleting sock rev-NAT"))?;
                stats.sock_rev += 1;
            }
        }
        Ok(stats)
    }
}
