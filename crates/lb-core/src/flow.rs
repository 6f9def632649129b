//! The per-flow decision, the oracle every dataplane must agree with:
//! a 5-tuple ([`FlowKey`]) and the programmed [`Tables`] in, a [`Verdict`] out.
//!
//! The order of checks follows Cilium's `bpf/lib/lb.h`:
//! frontend lookup (exact, then the wildcard for node-local destinations),
//! source ranges, the connection-tracking entry of an existing flow, ClientIP
//! affinity, and finally backend selection for a new flow.
//!
//! A [`Forward`] also says how the packet leaves the node
//! ([`crate::mode`]): rewritten to the backend with the client address kept
//! (local backends, traffic policy Local), additionally SNATed to the node
//! ([`Forward::snat`], SNAT mode), or unchanged inside an IPIP (IPv4) or
//! IPv6-in-IPv6 header to the backend ([`Forward::encap`], DSR), in which case the backend's side does
//! the translation to [`Forward::backend`] and answers the client directly.
//! A flow to a backend of the other IP family (NAT46/64,
//! [`crate::nat46x64`]) is always SNATed and leaves in the backend's family
//! ([`Forward::translation`], [`Forward::backend_key`]).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::select::select_backend;
use crate::{
    Backend, BackendId, Encap, Frontend, FrontendKey, L3n4Addr, L4Proto, NodeConfig, RevNatId,
    Scope, ServiceId, Tables, Translation,
};

/// A flow's 5-tuple as the client sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Client address.
    pub src: IpAddr,
    /// Destination (frontend) address.
    pub dst: IpAddr,
    /// Client port.
    pub sport: u16,
    /// Destination (frontend) port.
    pub dport: u16,
    /// Protocol.
    pub proto: L4Proto,
}

impl FlowKey {
    /// The seeded flow hash Maglev indexes its table with. The BPF datapath
    /// computes the same value: `jhash2` over the words
    /// `[src.., dst.., sport << 16 | dport, proto]`, where each IPv4 address
    /// is one word and each IPv6 address four, all in numeric (host) order.
    ///
    /// ```
    /// use lb_core::{FlowKey, L4Proto};
    /// let k = FlowKey { src: "10.0.0.1".parse().unwrap(), dst: "10.96.0.1".parse().unwrap(),
    ///                   sport: 40000, dport: 80, proto: L4Proto::Tcp };
    /// assert_eq!(k.hash(7), k.hash(7));
    /// assert_ne!(k.hash(7), k.hash(8));
    /// ```
    pub fn hash(&self, seed: u32) -> u32 {
        let mut words = [0u32; 10];
        let mut n = push_addr(&mut words, 0, self.src);
        n = push_addr(&mut words, n, self.dst);
        words[n] = (u32::from(self.sport) << 16) | u32::from(self.dport);
        words[n + 1] = u32::from(self.proto.number());
        crate::hash::jhash2(&words[..n + 2], seed)
    }

    /// The frontend address this flow targets.
    pub fn frontend(&self) -> L3n4Addr {
        L3n4Addr::new(self.dst, self.dport, self.proto)
    }

    /// The 5-tuple of the other direction (source and destination swapped).
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        }
    }
}

fn push_addr(words: &mut [u32; 10], at: usize, addr: IpAddr) -> usize {
    match addr {
        IpAddr::V4(a) => {
            words[at] = u32::from(a);
            at + 1
        }
        IpAddr::V6(a) => {
            for (i, c) in a.octets().chunks_exact(4).enumerate() {
                words[at + i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            }
            at + 4
        }
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The frontend has no backend that takes new flows.
    NoBackend,
    /// The frontend is under traffic policy Local (external or internal,
    /// [`crate::Frontend::local_only`]) and this node has no
    /// backend of it that takes new flows: the service may well have
    /// backends on other nodes. Cilium counts both as "Service backend not
    /// found"; kube-proxy drops both alike.
    NoLocalBackend,
    /// The client is outside the frontend's `loadBalancerSourceRanges`.
    SourceRangeDenied,
}

impl DropReason {
    /// The reason for a frontend without a selectable backend:
    /// [`DropReason::NoLocalBackend`] under traffic policy Local, else
    /// [`DropReason::NoBackend`].
    pub const fn no_backend(local_only: bool) -> Self {
        if local_only {
            DropReason::NoLocalBackend
        } else {
            DropReason::NoBackend
        }
    }

    /// A short name for counters and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::NoBackend => "no_backend",
            DropReason::NoLocalBackend => "no_local_backend",
            DropReason::SourceRangeDenied => "source_range_denied",
        }
    }
}

/// How the chosen backend was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Selection {
    /// The flow already had a backend (connection tracking).
    Established,
    /// The client's affinity entry named it.
    Affinity,
    /// Chosen now by the frontend's algorithm.
    New,
}

/// What to do with a packet of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not addressed to any frontend: leave it alone.
    Pass,
    /// Addressed to a frontend; drop it.
    Drop {
        /// The frontend.
        service: ServiceId,
        /// Why.
        reason: DropReason,
    },
    /// Rewrite it to a backend.
    Forward(Forward),
}

/// The translation of a forwarded flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// The frontend that matched.
    pub service: ServiceId,
    /// Its reverse-NAT entry (replies are rewritten back to `frontend`).
    pub rev_nat: RevNatId,
    /// The frontend address the client used.
    pub frontend: L3n4Addr,
    /// The chosen backend.
    pub backend_id: BackendId,
    /// Its address: the new destination.
    pub backend: L3n4Addr,
    /// The new source address when the client is SNATed to the node (the
    /// backend is remote and the traffic policy is Cluster), else `None`
    /// (the client address is preserved). The model knows no routes: a
    /// dataplane additionally SNATs only when the route to the backend leaves
    /// through one of its client-facing devices, and picks the source port.
    /// Always `None` when [`Forward::encap`] is set.
    pub snat: Option<IpAddr>,
    /// DSR ([`crate::LbMode`]): the packet leaves unchanged (destination
    /// still [`Forward::frontend`], source the client) inside this
    /// encapsulation to the backend, else `None`. Like [`Forward::snat`] it
    /// applies only when the route to the backend leaves through one of the
    /// dataplane's client-facing devices.
    pub encap: Option<Encap>,
    /// How the backend was found.
    pub selection: Selection,
}

impl Forward {
    /// Whether the flow crosses IP families ([`crate::nat46x64`]): then
    /// [`Forward::snat`] is always set, to the node address of the
    /// backend's family.
    pub const fn translation(&self) -> Translation {
        Translation::between(self.frontend.addr, self.backend.addr)
    }

    /// The 5-tuple a packet of `key` leaves towards the backend with in
    /// lb-core's model (a dataplane may SNAT to another source port):
    /// destination the backend, source the SNAT address or the client. For
    /// a translated flow every address is of the backend's family.
    pub fn backend_key(&self, key: &FlowKey) -> FlowKey {
        FlowKey {
            src: self.snat.unwrap_or(key.src),
            dst: self.backend.addr,
            sport: key.sport,
            dport: self.backend.port,
            proto: key.proto,
        }
    }

    /// What a reply from the backend to [`Forward::backend_key`]`(key)`
    /// becomes after reverse NAT (translated back to the frontend's family
    /// for a NAT46/64 flow): source the frontend the client used,
    /// destination the client — the client's tuple reversed.
    pub fn reply_to_client(&self, key: &FlowKey) -> FlowKey {
        FlowKey {
            src: self.frontend.addr,
            dst: key.src,
            sport: self.frontend.port,
            dport: key.sport,
            proto: key.proto,
        }
    }
}

/// What the caller knows about a packet beyond its 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowContext {
    /// Monotonic time in seconds (affinity timeouts).
    pub now: u64,
    /// A random number for random selection.
    pub entropy: u32,
    /// Which scope of a two-scope frontend applies (internal for traffic from
    /// the node and its pods, external otherwise).
    pub scope: Scope,
}

/// A flow's connection-tracking entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtEntry {
    /// The backend the flow uses.
    pub backend_id: BackendId,
    /// The frontend it came through.
    pub rev_nat: RevNatId,
}

/// A ClientIP affinity entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffinityEntry {
    /// The backend the client's last new flow went to.
    pub backend_id: BackendId,
    /// When that was (seconds, same clock as [`FlowContext::now`]).
    pub last_used: u64,
}

/// The per-flow memory of a dataplane: connection tracking and affinity.
#[derive(Debug, Clone, Default)]
pub struct FlowState {
    /// Backends of established flows.
    pub ct: HashMap<FlowKey, CtEntry>,
    /// Affinity by (client address, frontend).
    pub affinity: HashMap<(IpAddr, RevNatId), AffinityEntry>,
}

impl FlowState {
    /// Empty state.
    pub fn new() -> Self {
        FlowState::default()
    }

    /// Forgets a flow (connection closed).
    pub fn close(&mut self, key: &FlowKey) {
        self.ct.remove(key);
    }
}

/// Finds the frontend entry a flow targets, or `None`: the exact address
/// first (internal scope before external when asked for internal), then the
/// wildcard NodePort/HostPort entry when the destination is a node address.
pub fn lookup_frontend<'t>(
    tables: &'t Tables,
    node: &NodeConfig,
    key: &FlowKey,
    scope: Scope,
) -> Option<&'t Frontend> {
    let exact = key.frontend();
    let by = |addr: L3n4Addr| {
        let internal = (scope == Scope::Internal)
            .then(|| {
                tables.frontend_by_key(&FrontendKey {
                    addr,
                    scope: Scope::Internal,
                })
            })
            .flatten();
        internal.or_else(|| {
            tables.frontend_by_key(&FrontendKey {
                addr,
                scope: Scope::External,
            })
        })
    };
    by(exact).or_else(|| {
        if node.is_local_addr(key.dst) && !key.dst.is_unspecified() {
            by(exact.wildcard()).filter(|fe| fe.kind.expands_on_node_ips())
        } else {
            None
        }
    })
}

/// How a packet of a `proto` flow through `fe` to `backend`, seen in
/// `scope`, leaves the node: the SNAT source ([`Forward::snat`]) or the DSR
/// encapsulation ([`Forward::encap`]); at most one is set, neither for a
/// local backend or under traffic policy Local — except for a flow that
/// crosses IP families ([`crate::nat46x64`]), which is always SNATed to the
/// node address of the backend's family and never uses DSR.
pub fn egress(
    node: &NodeConfig,
    fe: &Frontend,
    backend: &Backend,
    proto: L4Proto,
    scope: Scope,
) -> (Option<IpAddr>, Option<Encap>) {
    if Translation::between(fe.key.addr.addr, backend.addr.addr).is_translated() {
        return (node.node_ip_like(backend.addr.addr), None);
    }
    if backend.local || fe.local_only {
        return (None, None);
    }
    let node_ip = node.node_ip_like(backend.addr.addr);
    match node_ip {
        Some(src) if node.mode.dsr_applies(proto, fe.kind, scope) => {
            match Encap::between(src, backend.addr.addr) {
                Some(encap) => (None, Some(encap)),
                None => (node_ip, None),
            }
        }
        _ => (node_ip, None),
    }
}

/// Decides what happens to a packet of `key` and records new flows in `state`.
///
/// This is the oracle for every dataplane: given the same tables, state,
/// time and entropy, the BPF and userspace dataplanes must reach the same
/// verdict.
pub fn decide(
    tables: &Tables,
    node: &NodeConfig,
    state: &mut FlowState,
    key: &FlowKey,
    ctx: FlowContext,
) -> Verdict {
    let Some(fe) = lookup_frontend(tables, node, key, ctx.scope) else {
        return Verdict::Pass;
    };
    if fe.has_source_ranges() && !fe.source_ranges.iter().any(|n| n.contains(&key.src)) {
        return Verdict::Drop {
            service: fe.id,
            reason: DropReason::SourceRangeDenied,
        };
    }
    let rev_nat = fe.id.rev_nat();
    let forward = |backend_id: BackendId, selection| {
        let backend = tables.backends.get(&backend_id)?;
        let (snat, encap) = egress(node, fe, backend, key.proto, ctx.scope);
        Some(Verdict::Forward(Forward {
            service: fe.id,
            rev_nat,
            frontend: key.frontend(),
            backend_id,
            backend: backend.addr,
            snat,
            encap,
            selection,
        }))
    };

    // An established flow keeps its backend while the backend exists.
    if let Some(ct) = state.ct.get(key) {
        if ct.rev_nat == rev_nat {
            if let Some(v) = forward(ct.backend_id, Selection::Established) {
                return v;
            }
        }
        state.ct.remove(key);
    }

    let selectable = fe.selectable_backends();
    let mut chosen = None;
    if let Some(timeout) = fe.affinity_timeout {
        if let Some(a) = state.affinity.get(&(key.src, rev_nat)) {
            let fresh = ctx.now.saturating_sub(a.last_used) <= u64::from(timeout);
            if fresh && selectable.iter().any(|s| s.id == a.backend_id) {
                chosen = Some((a.backend_id, Selection::Affinity));
            }
        }
    }
    if chosen.is_none() {
        let hash = key.hash(node.maglev.seed());
        chosen = select_backend(fe, hash, ctx.entropy).map(|id| (id, Selection::New));
    }
    let Some((backend_id, selection)) = chosen else {
        return Verdict::Drop {
            service: fe.id,
            reason: DropReason::no_backend(fe.local_only),
        };
    };
    let Some(verdict) = forward(backend_id, selection) else {
        return Verdict::Drop {
            service: fe.id,
            reason: DropReason::NoBackend,
        };
    };
    state.ct.insert(
        *key,
        CtEntry {
            backend_id,
            rev_nat,
        },
    );
    if fe.affinity_timeout.is_some() {
        state.affinity.insert(
            (key.src, rev_nat),
            AffinityEntry {
                backend_id,
                last_used: ctx.now,
            },
        );
    }
    verdict
}
