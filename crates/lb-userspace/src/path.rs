//! The packet path of one worker: classify a frame, decide (the same steps
//! as [`lb_core::flow::decide`], over the published snapshot and the
//! worker's own [`FlowTable`]), and rewrite the frame in place.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use lb_core::flow::{lookup_frontend, AffinityEntry};
use lb_core::select::select_backend;
use lb_core::{
    BackendId, DropReason, FlowKey, Forward, RevNatId, Scope, Selection, ServiceId, Verdict,
};

use crate::counters::{Counters, DropKind};
use crate::ct::{CtEntry, Expired, FlowTable};
use crate::packet::{self, End, PacketInfo, Parsed};
use crate::rng::FastRng;
use crate::tables::Snapshot;

mod dsr;
mod icmp;
mod xlate;

/// Which way a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a client towards a frontend (the BPF ingress program's job).
    ToFrontend,
    /// From a backend back to a client (the BPF egress program's job).
    Reply,
}

/// What the caller knows about a packet beyond its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketMeta {
    /// Monotonic time in seconds (affinity timeouts).
    pub now: u64,
    /// The random number for weighted random selection.
    pub entropy: u32,
    /// The lookup scope (a client-facing device carries external traffic).
    pub scope: Scope,
}

/// What the packet path did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not ours: the frame is untouched; let it through.
    Pass,
    /// DNATed (and maybe SNATed) in place towards a backend.
    Forwarded(Forward),
    /// A reply rewritten in place back to the frontend address.
    ReverseNated {
        /// The frontend's reverse-NAT ID.
        rev_nat: RevNatId,
    },
    /// DropKind the frame.
    Dropped(DropKind),
    /// Not sent on: the frame was turned into an answer to its sender (an
    /// ICMP error, counted as this kind); send the answer.
    Answered(DropKind),
}

impl Outcome {
    /// True when the frame should be sent on (possibly rewritten).
    pub fn keeps(&self) -> bool {
        !matches!(self, Outcome::Dropped(_))
    }
}

/// One worker's packet path. Not shared between threads: each worker owns
/// its connection-tracking table, and reads the tables through `arc-swap`.
#[derive(Debug)]
pub struct PacketPath {
    tables: Arc<ArcSwap<Snapshot>>,
    flows: FlowTable,
    counters: Arc<Counters>,
    rng: FastRng,
    /// The frame length after the current packet (a NAT46/64 translation
    /// changes it).
    out_len: usize,
    /// The MTU translated packets are sized for (MSS clamping, too-big
    /// answers: [`PacketPath::set_link_mtu`]).
    link_mtu: u32,
}

impl PacketPath {
    /// A worker over published `tables`, counting into `counters`.
    pub fn new(
        tables: Arc<ArcSwap<Snapshot>>,
        counters: Arc<Counters>,
        flows: FlowTable,
        rng: FastRng,
    ) -> Self {
        PacketPath {
            tables,
            flows,
            counters,
            rng,
            out_len: 0,
            link_mtu: lb_core::nat46x64::DEFAULT_ROUTE_MTU,
        }
    }

    /// Sets the MTU of the links translated (NAT46/64) packets leave by
    /// (default [`lb_core::nat46x64::DEFAULT_ROUTE_MTU`]): a translated
    /// SYN's MSS is clamped for it and an IPv4 packet over it once
    /// translated to IPv6 is answered with fragmentation needed
    /// ([`crate::nat46x64`]). The I/O loop sets its devices' smallest MTU.
    pub fn set_link_mtu(&mut self, mtu: u32) {
        self.link_mtu = mtu;
    }

    /// The worker's tracked flows.
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// Forgets every flow and affinity entry.
    pub fn reset_flows(&mut self) {
        self.flows.clear();
    }

    /// Removes flows and affinity entries idle past their lifetime at `now`
    /// ([`FlowTable::expire`]: at most `budget` slots of each table per
    /// call; affinity entries by their frontend's current timeout).
    pub fn expire(&mut self, now: u64, budget: usize) -> Expired {
        let snap = self.tables.load();
        self.flows.expire(now, budget, |r| {
            snap.tables
                .frontends
                .get(&ServiceId(r.0))
                .and_then(|fe| fe.affinity_timeout)
        })
    }

    /// Processes one frame at time `now` (seconds), drawing entropy from the
    /// worker's PRNG, in the external scope.
    pub fn process(&mut self, frame: &mut [u8], dir: Direction, now: u64) -> Outcome {
        let meta = PacketMeta {
            now,
            entropy: self.rng.next_u32(),
            scope: Scope::External,
        };
        self.process_with(frame, dir, meta)
    }

    /// Processes one frame with explicit time, entropy and scope. A
    /// NAT46/64 flow needs room past the frame: use
    /// [`PacketPath::process_in`] (here an IPv4 frame translated to IPv6 is
    /// dropped as [`DropKind::Nat46x64`], and an IPv6 frame translated to
    /// IPv4 ends where its new IPv4 total length says).
    pub fn process_with(&mut self, frame: &mut [u8], dir: Direction, meta: PacketMeta) -> Outcome {
        let len = frame.len();
        self.process_in(frame, len, dir, meta).0
    }

    /// [`PacketPath::process`] on the frame `buf[..len]` of a larger buffer;
    /// returns the outcome and the frame's new length (it changes when a
    /// NAT46/64 flow is translated, which needs
    /// [`crate::nat46x64::HEADROOM`] bytes past the frame).
    pub fn process_buf(
        &mut self,
        buf: &mut [u8],
        len: usize,
        dir: Direction,
        now: u64,
    ) -> (Outcome, usize) {
        let meta = PacketMeta {
            now,
            entropy: self.rng.next_u32(),
            scope: Scope::External,
        };
        self.process_in(buf, len, dir, meta)
    }

    /// [`PacketPath::process_with`] on the frame `buf[..len]` of a larger
    /// buffer; returns the outcome and the frame's new length.
    pub fn process_in(
        &mut self,
        buf: &mut [u8],
        len: usize,
        dir: Direction,
        meta: PacketMeta,
    ) -> (Outcome, usize) {
        let len = len.min(buf.len());
        self.out_len = len;
        let outcome = self.process_frame(buf, len, dir, meta);
        (outcome, self.out_len)
    }

    fn process_frame(
        &mut self,
        buf: &mut [u8],
        len: usize,
        dir: Direction,
        meta: PacketMeta,
    ) -> Outcome {
        let info = match packet::parse(&buf[..len]) {
            Parsed::Ok(info) => info,
            // An ICMP error about a flow goes back to its client translated.
            Parsed::Ignore if dir == Direction::Reply => return self.icmp_error(buf, len),
            Parsed::Ignore => return Outcome::Pass,
            Parsed::Malformed => {
                self.counters.count_drop(DropKind::Malformed);
                return Outcome::Dropped(DropKind::Malformed);
            }
        };
        let key = FlowKey {
            src: info.src,
            dst: info.dst,
            sport: info.sport,
            dport: info.dport,
            proto: info.proto,
        };
        match dir {
            Direction::ToFrontend => self.client_packet(buf, len, &info, &key, meta),
            Direction::Reply => self.reply(buf, len, &info, &key, meta.now),
        }
    }

    fn client_packet(
        &mut self,
        buf: &mut [u8],
        len: usize,
        info: &PacketInfo,
        key: &FlowKey,
        meta: PacketMeta,
    ) -> Outcome {
        let frame = &mut buf[..len];
        let snap = self.tables.load();
        match decide(&mut self.flows, &snap, key, meta, info.fin_or_rst()) {
            Decision::Verdict(Verdict::Drop { service, reason }) => {
                if matches!(reason, DropReason::NoBackend | DropReason::NoLocalBackend) {
                    self.counters.service(service, frame.len(), false);
                }
                self.counters.count_drop(reason.into());
                Outcome::Dropped(reason.into())
            }
            Decision::Verdict(_) => Outcome::Pass,
            Decision::NoSnatPort(service) => {
                self.counters.service(service, frame.len(), false);
                self.counters.count_drop(DropKind::SnatPorts);
                Outcome::Dropped(DropKind::SnatPorts)
            }
            Decision::Forward(f, _) if f.encap.is_some() => self.forward_encapsulated(buf, len, f),
            Decision::Forward(f, sport) if f.translation().is_translated() => {
                self.forward_translated(buf, len, info, f, sport)
            }
            Decision::Forward(f, sport) => {
                let to = f.backend.addr;
                let src = f.snat.unwrap_or(info.src);
                if !same_family(to, info.dst) || !same_family(src, to) {
                    // A family change (NAT46/64) is not something lb-core plans.
                    self.counters.count_drop(DropKind::NoBackend);
                    return Outcome::Dropped(DropKind::NoBackend);
                }
                self.counters.service(
                    f.service,
                    frame.len(),
                    f.selection != Selection::Established,
                );
                packet::set_addr(frame, info, End::Dst, to);
                packet::set_port(frame, info, End::Dst, f.backend.port);
                packet::set_addr(frame, info, End::Src, src);
                packet::set_port(frame, info, End::Src, sport);
                Outcome::Forwarded(f)
            }
        }
    }

    fn reply(
        &mut self,
        buf: &mut [u8],
        len: usize,
        info: &PacketInfo,
        key: &FlowKey,
        now: u64,
    ) -> Outcome {
        let frame = &mut buf[..len];
        let Some((orig, entry)) = self.flows.reply_seen(key, now, info.fin_or_rst()) else {
            return Outcome::Pass;
        };
        let snap = self.tables.load();
        // The reverse-NAT entry names the frontend; a wildcard entry keeps
        // the node address the client used.
        let fe = match snap.rev_nat.get(&entry.rev_nat) {
            Some(a) if !a.addr.is_unspecified() => *a,
            _ => orig.frontend(),
        };
        let (fe_addr, client) = (fe.addr, orig.src);
        if entry.snat.is_some() && !same_family(fe_addr, info.src) && same_family(client, fe_addr) {
            let to = crate::nat46x64::Endpoint {
                addr: client,
                port: orig.sport,
            };
            return self.reply_translated(buf, len, info, fe, to, entry.rev_nat);
        }
        if !same_family(fe_addr, info.src) || !same_family(client, fe_addr) {
            return Outcome::Pass;
        }
        packet::set_addr(frame, info, End::Src, fe_addr);
        packet::set_port(frame, info, End::Src, fe.port);
        if entry.snat.is_some() {
            packet::set_addr(frame, info, End::Dst, client);
        }
        if entry.port != orig.sport {
            // SNATed, or remapped on a reply-tuple clash: the client's port.
            packet::set_port(frame, info, End::Dst, orig.sport);
        }
        Outcome::ReverseNated {
            rev_nat: entry.rev_nat,
        }
    }
}

/// What [`decide`] found for a client packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// lb-core's `Pass` or `Drop` verdict (never `Forward`).
    Verdict(Verdict),
    /// lb-core's `Forward`, and the flow's source port towards the backend
    /// (its SNAT port; without SNAT the client's port, or another port of
    /// the client's address when its reply tuple was taken,
    /// [`FlowTable::alloc_remap_port`]).
    Forward(Forward, u16),
    /// A new flow found no free source port ([`crate::ct::SnatPorts::tries`],
    /// [`crate::ct::RemapPorts::tries`]): drop it.
    NoSnatPort(ServiceId),
}

/// [`lb_core::flow::decide`] over a snapshot and a worker's flows, plus
/// what lb-core's model leaves to a dataplane: the source port of a
/// new flow, and the flow's last-seen time and closing state
/// (`fin_or_rst`: the packet has a TCP FIN or RST).
pub fn decide(
    flows: &mut FlowTable,
    snap: &Snapshot,
    key: &FlowKey,
    meta: PacketMeta,
    fin_or_rst: bool,
) -> Decision {
    {
        let tables = &snap.tables;
        let node = &snap.node;
        let Some(fe) = lookup_frontend(tables, node, key, meta.scope) else {
            return Decision::Verdict(Verdict::Pass);
        };
        if fe.has_source_ranges() && !fe.source_ranges.iter().any(|n| n.contains(&key.src)) {
            return Decision::Verdict(Verdict::Drop {
                service: fe.id,
                reason: DropReason::SourceRangeDenied,
            });
        }
        let rev_nat = fe.id.rev_nat();
        let forward = |backend_id: BackendId, selection| {
            let backend = tables.backends.get(&backend_id)?;
            let (snat, encap) = lb_core::egress(node, fe, backend, key.proto, meta.scope);
            Some(Forward {
                service: fe.id,
                rev_nat,
                frontend: key.frontend(),
                backend_id,
                backend: backend.addr,
                snat,
                encap,
                selection,
            })
        };

        if let Some(ct) = flows.get(key).copied() {
            if ct.rev_nat == rev_nat {
                if let Some(f) = forward(ct.backend_id, Selection::Established) {
                    flows.touch(key, meta.now, fin_or_rst);
                    let sport = established_port(&ct, &f, key);
                    return Decision::Forward(f, sport);
                }
            }
            flows.remove(key);
        }

        let mut chosen = None;
        if let Some(timeout) = fe.affinity_timeout {
            if let Some(a) = flows.affinity(key.src, rev_nat) {
                let fresh = meta.now.saturating_sub(a.last_used) <= u64::from(timeout);
                if fresh
                    && fe
                        .selectable_backends()
                        .iter()
                        .any(|s| s.id == a.backend_id)
                {
                    chosen = Some((a.backend_id, Selection::Affinity));
                }
            }
        }
        if chosen.is_none() {
            let hash = key.hash(tables.maglev.seed());
            chosen = select_backend(fe, hash, meta.entropy).map(|id| (id, Selection::New));
        }
        let Some(f) = chosen.and_then(|(id, sel)| forward(id, sel)) else {
            return Decision::Verdict(Verdict::Drop {
                service: fe.id,
                reason: DropReason::no_backend(fe.local_only),
            });
        };
        let seed = u64::from(meta.entropy) << 32 | u64::from(key.sport) << 16 | meta.now;
        // A DSR flow's packets keep the client's port: its replies do not
        // come back through this node, so it holds no reply tuple here.
        let dsr = f.encap.is_some();
        let port = if dsr {
            Some(key.sport)
        } else {
            flows.alloc_port(key, f.backend, f.snat, seed)
        };
        let Some(port) = port else {
            return Decision::NoSnatPort(fe.id);
        };
        flows.insert(
            *key,
            CtEntry {
                backend_id: f.backend_id,
                rev_nat,
                backend: f.backend,
                snat: f.snat,
                port,
                last_seen: meta.now,
                closing: fin_or_rst,
                dsr,
            },
        );
        if fe.affinity_timeout.is_some() {
            flows.set_affinity(
                key.src,
                rev_nat,
                AffinityEntry {
                    backend_id: f.backend_id,
                    last_used: meta.now,
                },
            );
        }
        Decision::Forward(f, port)
    }
}

/// The source port towards the backend of the established flow `key` with
/// entry `ct`, forwarded as `f`: the port the flow was given (SNAT, or a
/// remap on a reply-tuple clash), the client's own when the flow's SNAT
/// changed since.
fn established_port(ct: &CtEntry, f: &Forward, key: &FlowKey) -> u16 {
    if f.snat.is_some() || ct.snat.is_none() {
        ct.port
    } else {
        key.sport
    }
}

/// True when both addresses are of one family.
fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}
