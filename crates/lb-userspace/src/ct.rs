//! Connection tracking and ClientIP affinity of one packet-path worker.
//!
//! A [`FlowTable`] is owned by one worker thread (`&mut self`): no lock is
//! taken per packet. Its maps are allocated up front with room for
//! [`FlowTable::capacity`] flows, so steady-state inserts do not allocate;
//! when a map is full, new flows are still forwarded but not tracked, and
//! counted (`FlowTable::full`).
//!
//! Entries record when they were last used (and TCP flows whether a FIN or
//! RST was seen); [`FlowTable::expire`] removes idle ones incrementally
//! ([`CtTimeouts`], lb-ebpf's gc defaults; affinity by its service's
//! timeout), so the table does not fill with dead flows. Every flow's reply
//! tuple (backend → the source the backend sees) is its own, so every reply
//! maps back to its flow ([`FlowTable::alloc_port`]): SNATed flows get a
//! source port of their own ([`FlowTable::alloc_snat_port`], [`SnatPorts`]),
//! and a DNATed flow whose reply tuple another flow holds (one client port
//! to two frontends of one backend) gets another source port towards the
//! backend ([`FlowTable::alloc_remap_port`], [`RemapPorts`]; lb-ebpf's
//! `lb_ctport.h`), which replies get back. A closed TCP flow's reply tuple
//! stays reserved through the backend's TIME_WAIT
//! ([`CtTimeouts::time_wait`]): only a new connection of the same client
//! flow may take it over.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use lb_core::flow::AffinityEntry;
use lb_core::{BackendId, FlowKey, L3n4Addr, L4Proto, RevNatId};

/// A small, fast, non-cryptographic hasher (FxHash with a murmur3
/// finaliser). Flow keys come from the
/// network, so this is not DoS-resistant; the table is bounded instead.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(SEED);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn finish(&self) -> u64 {
        // murmur3's fmix64: spread every input bit over the low bits the
        // table indexes with.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// `HashMap` with [`FxHasher`].
pub type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The source ports SNATed flows get (like lb-ebpf's `lb_snat_alloc`): the
/// client's own port when its reply tuple is free, else up to `tries - 1`
/// pseudo-random ports in `min..=max`. The default range, 61000–65535,
/// stays out of Linux's ephemeral port range (32768–60999,
/// `net.ipv4.ip_local_port_range`), so SNATed flows do not collide with
/// the node's own connections to the same backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnatPorts {
    /// Lowest port.
    pub min: u16,
    /// Highest port.
    pub max: u16,
    /// Ports tried per new flow (the client's port first) before the flow
    /// is dropped ([`crate::DropKind::SnatPorts`]).
    pub tries: u32,
}

impl Default for SnatPorts {
    fn default() -> Self {
        SnatPorts {
            min: 61_000,
            max: 65_535,
            tries: 16,
        }
    }
}

/// The source ports a DNATed (not SNATed) flow gets towards its backend
/// when its own reply tuple (backend → client:port) is held by another flow
/// (lb-ebpf's `LB_PORTMAP_*`): ports of the client's address, probed in a
/// sequence hashed from the client flow (a reconnect of the same client
/// tuple finds the port it had). The default range, 1024–32767, lies below
/// Linux's ephemeral ports (32768–60999) and the IANA ones other systems
/// use (49152–65535), so a remapped port does not meet a port the client
/// picks for a direct connection of its own to the same pod (which the load
/// balancer does not track) nor the client's other load-balanced flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemapPorts {
    /// Lowest port.
    pub min: u16,
    /// Highest port.
    pub max: u16,
    /// Ports probed per new flow before it is dropped
    /// ([`crate::DropKind::SnatPorts`]).
    pub tries: u32,
}

impl Default for RemapPorts {
    fn default() -> Self {
        RemapPorts {
            min: 1024,
            max: 32_767,
            tries: 32,
        }
    }
}

/// Idle lifetimes of tracked flows, in seconds (lb-ebpf's gc defaults,
/// after Cilium's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtTimeouts {
    /// An open TCP connection (default 6 hours).
    pub tcp: u64,
    /// A TCP connection after a FIN or RST in either direction (default 10 s).
    pub tcp_closing: u64,
    /// UDP (default 60 s).
    pub other: u64,
    /// How long a closed TCP flow's reply tuple stays reserved after its
    /// last packet (default 65 s, above Linux's 60 s TIME_WAIT; lb-ebpf's
    /// `CtTimeouts::time_wait`): no other flow gets that tuple while the
    /// backend may still hold it in TIME_WAIT (the backend would answer the
    /// new SYN with an ACK and the client retransmit it a second later). A
    /// new connection of the same client flow takes its tuple over.
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
    /// How long after its last packet a closed TCP flow's reply tuple is
    /// reserved: [`CtTimeouts::time_wait`], at least the closing grace.
    pub fn reserved(&self) -> u64 {
        self.time_wait.max(self.tcp_closing)
    }

    /// The lifetime of an idle entry of protocol `proto`.
    pub fn for_entry(&self, proto: L4Proto, closing: bool) -> u64 {
        match (proto, closing) {
            (L4Proto::Tcp, false) => self.tcp,
            (L4Proto::Tcp, true) => self.tcp_closing,
            _ => self.other,
        }
    }
}

/// A tracked flow, keyed by the 5-tuple the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtEntry {
    /// The backend the flow uses.
    pub backend_id: BackendId,
    /// The frontend it came through.
    pub rev_nat: RevNatId,
    /// The backend address at the time the flow was created.
    pub backend: L3n4Addr,
    /// The source address the client was SNATed to, if any.
    pub snat: Option<IpAddr>,
    /// The flow's source port towards the backend: the allocated SNAT port,
    /// or the client's port when the flow is not SNATed.
    pub port: u16,
    /// When a packet of the flow (either direction) was last seen (seconds).
    pub last_seen: u64,
    /// A TCP FIN or RST was seen (either direction).
    pub closing: bool,
    /// The flow goes to its backend inside IPIP (DSR, [`lb_core::Encap`]):
    /// the backend answers the client directly, so the flow has no reply
    /// tuple on this node (none is tracked or reserved) and its packets keep
    /// the client's port.
    pub dsr: bool,
}

impl CtEntry {
    /// True when the flow `key` goes to its backend from another port of
    /// the client's own address ([`FlowTable::alloc_remap_port`]).
    pub fn remapped(&self, key: &FlowKey) -> bool {
        self.snat.is_none() && self.port != key.sport
    }

    /// The 5-tuple of the backend's replies to the flow `key`.
    pub fn reply_key(&self, key: &FlowKey) -> FlowKey {
        FlowKey {
            src: self.backend.addr,
            sport: self.backend.port,
            dst: self.snat.unwrap_or(key.src),
            dport: self.port,
            proto: key.proto,
        }
    }
}

/// A map of at most `capacity` entries whose values sit in a preallocated
/// slot vector, so that [`FlowTable::expire`] can resume a scan where it
/// stopped (bounded work per call) and no insert allocates.
#[derive(Debug, Clone)]
struct Slab<K, V> {
    index: FxMap<K, u32>,
    slots: Vec<Option<(K, V)>>,
    free: Vec<u32>,
    capacity: usize,
}

impl<K: std::hash::Hash + Eq + Copy, V> Slab<K, V> {
    fn new(capacity: usize) -> Self {
        Slab {
            index: FxMap::with_capacity_and_hasher(capacity, Default::default()),
            slots: Vec::with_capacity(capacity),
            free: Vec::with_capacity(capacity),
            capacity,
        }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn get(&self, k: &K) -> Option<&V> {
        let i = *self.index.get(k)?;
        self.slots[i as usize].as_ref().map(|(_, v)| v)
    }

    fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let i = *self.index.get(k)?;
        self.slots[i as usize].as_mut().map(|(_, v)| v)
    }

    /// Inserts or replaces; false when full.
    fn insert(&mut self, k: K, v: V) -> bool {
        if let Some(&i) = self.index.get(&k) {
            self.slots[i as usize] = Some((k, v));
            return true;
        }
        let i = if let Some(i) = self.free.pop() {
            i
        } else if self.slots.len() < self.capacity {
            self.slots.push(None);
            (self.slots.len() - 1) as u32
        } else {
            return false;
        };
        self.slots[i as usize] = Some((k, v));
        self.index.insert(k, i);
        true
    }

    fn remove(&mut self, k: &K) -> Option<V> {
        let i = self.index.remove(k)?;
        self.free.push(i);
        self.slots[i as usize].take().map(|(_, v)| v)
    }

    fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.free.clear();
    }
}

/// What one [`FlowTable::expire`] call removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Flows (with their reply entries).
    pub flows: usize,
    /// Affinity entries.
    pub affinity: usize,
    /// Reply-tuple reservations of closed TCP flows past
    /// [`CtTimeouts::time_wait`].
    pub reserved: usize,
}

/// Connection tracking (both directions) and the affinity table.
#[derive(Debug, Clone)]
pub struct FlowTable {
    forward: Slab<FlowKey, CtEntry>,
    reply: FxMap<FlowKey, FlowKey>,
    /// Reply tuple -> the closed TCP flow that holds it through TIME_WAIT
    /// (and its last entry, so that late replies are still reverse-NATed).
    reserved: Slab<FlowKey, (FlowKey, CtEntry)>,
    affinity: Slab<(IpAddr, RevNatId), AffinityEntry>,
    capacity: usize,
    full: u64,
    unreserved: u64,
    snat_ports: SnatPorts,
    remap_ports: RemapPorts,
    timeouts: CtTimeouts,
    ct_cursor: usize,
    reserved_cursor: usize,
    affinity_cursor: usize,
}

impl FlowTable {
    /// A table with room for `capacity` flows, reply-tuple reservations
    /// and affinity entries, the default [`SnatPorts`], [`RemapPorts`] and
    /// [`CtTimeouts`].
    ///
    /// ```
    /// let t = lb_userspace::ct::FlowTable::new(1024);
    /// assert_eq!(t.len(), 0);
    /// ```
    pub fn new(capacity: usize) -> Self {
        FlowTable {
            forward: Slab::new(capacity),
            reply: FxMap::with_capacity_and_hasher(capacity, Default::default()),
            reserved: Slab::new(capacity),
            affinity: Slab::new(capacity),
            capacity,
            full: 0,
            unreserved: 0,
            snat_ports: SnatPorts::default(),
            remap_ports: RemapPorts::default(),
            timeouts: CtTimeouts::default(),
            ct_cursor: 0,
            reserved_cursor: 0,
            affinity_cursor: 0,
        }
    }

    /// The table with another range of remapped ports.
    pub fn with_remap_ports(mut self, ports: RemapPorts) -> Self {
        self.remap_ports = RemapPorts {
            max: ports.max.max(ports.min),
            tries: ports.tries.max(1),
            ..ports
        };
        self
    }

    /// The range of remapped ports.
    pub fn remap_ports(&self) -> RemapPorts {
        self.remap_ports
    }

    /// Reply tuples reserved by closed TCP flows ([`CtTimeouts::time_wait`]).
    pub fn reserved_len(&self) -> usize {
        self.reserved.len()
    }

    /// Reservations not made because the reservation table was full (the
    /// tuple became free at once, as when lb-ebpf's LRU evicts it).
    pub fn unreserved(&self) -> u64 {
        self.unreserved
    }

    /// The table with another SNAT port range.
    pub fn with_snat_ports(mut self, ports: SnatPorts) -> Self {
        self.snat_ports = SnatPorts {
            max: ports.max.max(ports.min),
            tries: ports.tries.max(1),
            ..ports
        };
        self
    }

    /// The table with other idle lifetimes.
    pub fn with_timeouts(mut self, timeouts: CtTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The SNAT port range.
    pub fn snat_ports(&self) -> SnatPorts {
        self.snat_ports
    }

    /// The most flows tracked at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Tracked flows.
    pub fn len(&self) -> usize {
        self.forward.len()
    }

    /// True when no flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.forward.len() == 0
    }

    /// Affinity entries.
    pub fn affinity_len(&self) -> usize {
        self.affinity.len()
    }

    /// New flows or affinity entries not recorded because the table was full.
    pub fn full(&self) -> u64 {
        self.full
    }

    /// The entry of the flow the client sent as `key`.
    pub fn get(&self, key: &FlowKey) -> Option<&CtEntry> {
        self.forward.get(key)
    }

    /// Records a packet of the flow `key` at `now` (and a TCP FIN or RST).
    pub fn touch(&mut self, key: &FlowKey, now: u64, fin_or_rst: bool) {
        if let Some(e) = self.forward.get_mut(key) {
            e.last_seen = now;
            e.closing |= fin_or_rst;
        }
    }

    /// The client's flow key and entry for a reply `key` (backend → client):
    /// of a tracked flow, or of a closed TCP flow whose tuple is reserved
    /// (a late reply, e.g. the backend's ACK of a retransmitted FIN, still
    /// goes back through the frontend, as with lb-ebpf's reply entries).
    pub fn by_reply(&self, key: &FlowKey) -> Option<(&FlowKey, &CtEntry)> {
        if let Some(orig) = self.reply.get(key) {
            if let Some(e) = self.forward.get(orig) {
                return Some((orig, e));
            }
        }
        self.reserved.get(key).map(|(orig, e)| (orig, e))
    }

    /// [`FlowTable::by_reply`], recording the reply at `now` (and a TCP FIN
    /// or RST) in the flow's entry (a reserved tuple: in its reservation,
    /// which then lasts [`CtTimeouts::time_wait`] from `now`).
    pub fn reply_seen(
        &mut self,
        key: &FlowKey,
        now: u64,
        fin_or_rst: bool,
    ) -> Option<(FlowKey, CtEntry)> {
        if let Some(orig) = self.reply.get(key).copied() {
            if let Some(e) = self.forward.get_mut(&orig) {
                e.last_seen = now;
                e.closing |= fin_or_rst;
                return Some((orig, *e));
            }
        }
        let (orig, e) = self.reserved.get_mut(key)?;
        e.last_seen = now;
        e.closing |= fin_or_rst;
        Some((*orig, *e))
    }

    /// True when no flow but `key` holds the reply tuple `reply`: no other
    /// tracked flow uses it and no other closed flow reserves it.
    fn tuple_free(&self, reply: &FlowKey, key: &FlowKey) -> bool {
        let live = match self.reply.get(reply) {
            None => true,
            Some(owner) => owner == key || self.forward.get(owner).is_none(),
        };
        live && self
            .reserved
            .get(reply)
            .is_none_or(|(owner, _)| owner == key)
    }

    /// The source port towards `backend` of a new flow `key`: with SNAT to
    /// `snat`, [`FlowTable::alloc_snat_port`]; without,
    /// [`FlowTable::alloc_remap_port`]. `None` when every try collided.
    pub fn alloc_port(
        &self,
        key: &FlowKey,
        backend: L3n4Addr,
        snat: Option<IpAddr>,
        entropy: u64,
    ) -> Option<u16> {
        match snat {
            Some(snat) => self.alloc_snat_port(key, backend, snat, entropy),
            None => self.alloc_remap_port(key, backend),
        }
    }

    /// The source port towards `backend` of a new DNATed flow `key`: the
    /// client's own port when its reply tuple (backend → client:port) is
    /// free or the flow's own (a reconnect of the same client tuple: its
    /// SYN is newer than what the backend saw), else the first port of the
    /// flow's probe sequence in [`RemapPorts`] that is free or the flow's
    /// own. The sequence is a hash of `key`, so a reconnect from the same
    /// client tuple finds the port it had and a client flow reserves about
    /// one port per backend. `None` when every try collided.
    pub fn alloc_remap_port(&self, key: &FlowKey, backend: L3n4Addr) -> Option<u16> {
        let reply = |port: u16| FlowKey {
            src: backend.addr,
            sport: backend.port,
            dst: key.src,
            dport: port,
            proto: key.proto,
        };
        if self.tuple_free(&reply(key.sport), key) {
            return Some(key.sport);
        }
        let RemapPorts { min, max, tries } = self.remap_ports;
        let span = u32::from(max) - u32::from(min) + 1;
        let h = {
            let mut h = FxHasher::default();
            std::hash::Hash::hash(key, &mut h);
            h.finish()
        };
        let (mut at, step) = ((h as u32) % span, ((h >> 32) as u32 % span) | 1);
        for _ in 0..tries {
            let port = min + at as u16;
            if self.tuple_free(&reply(port), key) {
                return Some(port);
            }
            at = (at + step) % span;
        }
        None
    }

    /// A source port for a new flow `key` SNATed to `snat` towards
    /// `backend` whose reply tuple no other tracked flow uses or reserves
    /// ([`CtTimeouts::time_wait`]; the same client flow takes its own
    /// reservation over): the client's port when free, else pseudo-random
    /// ports of the [`SnatPorts`] range drawn from `entropy`. `None` when
    /// every try collided.
    pub fn alloc_snat_port(
        &self,
        key: &FlowKey,
        backend: L3n4Addr,
        snat: IpAddr,
        entropy: u64,
    ) -> Option<u16> {
        let free = |port: u16| {
            let reply = FlowKey {
                src: backend.addr,
                sport: backend.port,
                dst: snat,
                dport: port,
                proto: key.proto,
            };
            self.tuple_free(&reply, key)
        };
        if free(key.sport) {
            return Some(key.sport);
        }
        let SnatPorts { min, max, tries } = self.snat_ports;
        let span = u32::from(max) - u32::from(min) + 1;
        let mut rng = crate::rng::FastRng::new(entropy);
        (1..tries)
            .map(|_| min + (rng.next_u32() % span) as u16)
            .find(|&p| free(p))
    }

    /// Records a flow (replacing any previous entry of `key`). Returns false
    /// (and counts it in [`FlowTable::full`]) when the table is full.
    ///
    /// The flow owns its reply tuple from then on (a reservation of it is
    /// taken over): give it a port from [`FlowTable::alloc_port`] so that
    /// no other flow's replies come to it.
    pub fn insert(&mut self, key: FlowKey, entry: CtEntry) -> bool {
        self.remove(&key);
        if self.forward.len() >= self.capacity || self.reply.len() >= self.capacity {
            self.full += 1;
            return false;
        }
        if !entry.dsr {
            let reply = entry.reply_key(&key);
            self.reserved.remove(&reply);
            self.reply.insert(reply, key);
        }
        self.forward.insert(key, entry)
    }

    /// Forgets a flow (a closed TCP flow's reply tuple stays reserved,
    /// [`CtTimeouts::time_wait`]).
    pub fn remove(&mut self, key: &FlowKey) {
        self.release(key, None);
    }

    /// Forgets a flow; a closed TCP flow whose reservation would still last
    /// at `now` (any time when `None`) keeps its reply tuple reserved.
    fn release(&mut self, key: &FlowKey, now: Option<u64>) {
        let Some(e) = self.forward.remove(key) else {
            return;
        };
        if e.dsr {
            return;
        }
        let reply = e.reply_key(key);
        if self.reply.get(&reply) == Some(key) {
            self.reply.remove(&reply);
        }
        let t = self.timeouts;
        let lasts = e.closing
            && key.proto == L4Proto::Tcp
            && t.time_wait > 0
            && now.is_none_or(|now| now.saturating_sub(e.last_seen) <= t.reserved());
        if lasts && !self.reserved.insert(reply, (*key, e)) {
            self.unreserved += 1;
        }
    }

    /// The affinity entry of `client` for a frontend.
    pub fn affinity(&self, client: IpAddr, rev_nat: RevNatId) -> Option<&AffinityEntry> {
        self.affinity.get(&(client, rev_nat))
    }

    /// Records that `client`'s last new flow to a frontend went to `entry.backend_id`.
    pub fn set_affinity(&mut self, client: IpAddr, rev_nat: RevNatId, entry: AffinityEntry) {
        if !self.affinity.insert((client, rev_nat), entry) {
            self.full += 1;
        }
    }

    /// Removes entries idle for longer than their lifetime at `now`: flows
    /// by [`CtTimeouts`] (a closed TCP flow's reply tuple then stays
    /// reserved until [`CtTimeouts::reserved`] after its last packet),
    /// affinity entries by their frontend's timeout
    /// (`affinity_timeout(rev_nat)`; `None` — the frontend is gone or has no
    /// affinity — removes them). Examines at most `budget` slots of each
    /// table, resuming where the previous call stopped, so a periodic call
    /// sweeps the whole table with bounded work per call.
    pub fn expire(
        &mut self,
        now: u64,
        budget: usize,
        affinity_timeout: impl Fn(RevNatId) -> Option<u32>,
    ) -> Expired {
        let mut out = Expired::default();
        let t = self.timeouts;
        let n = self.forward.slots.len();
        for _ in 0..budget.min(n) {
            self.ct_cursor %= n;
            let i = self.ct_cursor;
            self.ct_cursor += 1;
            let Some((k, e)) = self.forward.slots[i] else {
                continue;
            };
            if now.saturating_sub(e.last_seen) > t.for_entry(k.proto, e.closing) {
                self.release(&k, Some(now));
                out.flows += 1;
            }
        }
        let n = self.reserved.slots.len();
        for _ in 0..budget.min(n) {
            self.reserved_cursor %= n;
            let i = self.reserved_cursor;
            self.reserved_cursor += 1;
            let Some((k, (_, e))) = self.reserved.slots[i] else {
                continue;
            };
            if now.saturating_sub(e.last_seen) > t.reserved() {
                self.reserved.remove(&k);
                out.reserved += 1;
            }
        }
        let n = self.affinity.slots.len();
        for _ in 0..budget.min(n) {
            self.affinity_cursor %= n;
            let i = self.affinity_cursor;
            self.affinity_cursor += 1;
            let Some((k, a)) = self.affinity.slots[i] else {
                continue;
            };
            let keep = affinity_timeout(k.1)
                .is_some_and(|to| now.saturating_sub(a.last_used) <= u64::from(to));
            if !keep {
                self.affinity.remove(&k);
                out.affinity += 1;
            }
        }
        out
    }

    /// Forgets every flow, reservation and affinity entry (keeps the
    /// allocation).
    pub fn clear(&mut self) {
        self.forward.clear();
        self.reply.clear();
        self.reserved.clear();
        self.affinity.clear();
        self.ct_cursor = 0;
        self.reserved_cursor = 0;
        self.affinity_cursor = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.96.0.1".parse().unwrap(),
            sport,
            dport: 80,
            proto: lb_core::L4Proto::Tcp,
        }
    }

    fn entry(snat: Option<&str>, port: u16) -> CtEntry {
        CtEntry {
            backend_id: BackendId(1),
            rev_nat: RevNatId(1),
            backend: "10.1.0.5:8080".parse().unwrap(),
            snat: snat.map(|s| s.parse().unwrap()),
            port,
            last_seen: 0,
            closing: false,
            dsr: false,
        }
    }

    #[test]
    fn dsr_flows_hold_no_reply_tuple() {
        let mut t = FlowTable::new(16);
        let dsr = CtEntry {
            dsr: true,
            closing: true,
            ..entry(None, 40_000)
        };
        assert!(t.insert(key(40_000), dsr));
        let reply = dsr.reply_key(&key(40_000));
        assert!(t.reply_seen(&reply, 0, false).is_none());
        // Another flow of the client's tuple to the backend keeps its port.
        let other = FlowKey {
            dport: 443,
            ..key(40_000)
        };
        assert_eq!(t.alloc_port(&other, backend(), None, 0), Some(40_000));
        // Closed and removed: nothing stays reserved.
        t.remove(&key(40_000));
        assert_eq!(t.reserved_len(), 0);
        assert!(t.get(&key(40_000)).is_none());
    }

    #[test]
    fn both_directions_and_removal() {
        let mut t = FlowTable::new(4);
        t.insert(key(1), entry(None, 1));
        let r = entry(None, 1).reply_key(&key(1));
        assert_eq!(t.by_reply(&r).map(|(k, _)| *k), Some(key(1)));
        t.remove(&key(1));
        assert!(t.by_reply(&r).is_none() && t.is_empty());
    }

    #[test]
    fn snat_ports_keep_reply_tuples_unique_and_full_tables_count() {
        let mut t = FlowTable::new(2);
        let node: IpAddr = "192.168.1.1".parse().unwrap();
        let backend: L3n4Addr = "10.1.0.5:8080".parse().unwrap();
        let mut other = key(1);
        other.src = "10.0.0.2".parse().unwrap();
        // The first client keeps its port.
        let p1 = t.alloc_snat_port(&key(1), backend, node, 1).unwrap();
        assert_eq!(p1, 1);
        t.insert(key(1), entry(Some("192.168.1.1"), p1));
        // Another client with the same port gets another one, in range.
        let p2 = t.alloc_snat_port(&other, backend, node, 2).unwrap();
        assert!((61_000..=65_535).contains(&p2), "{p2}");
        t.insert(other, entry(Some("192.168.1.1"), p2));
        assert_eq!(t.len(), 2);
        // Each flow gets its own replies.
        let r1 = entry(Some("192.168.1.1"), p1).reply_key(&key(1));
        let r2 = entry(Some("192.168.1.1"), p2).reply_key(&other);
        assert_eq!(t.by_reply(&r1).map(|(k, _)| *k), Some(key(1)));
        assert_eq!(t.by_reply(&r2).map(|(k, _)| *k), Some(other));
        // The same flow again may keep its own port.
        assert_eq!(t.alloc_snat_port(&key(1), backend, node, 3), Some(p1));
        // Removing one flow leaves the other's replies.
        t.remove(&key(1));
        assert_eq!(t.by_reply(&r2).map(|(k, _)| *k), Some(other));
        assert!(t.by_reply(&r1).is_none());
        t.insert(key(2), entry(None, 2));
        t.insert(key(3), entry(None, 3));
        assert_eq!((t.len(), t.full()), (2, 1));
    }

    #[test]
    fn snat_allocation_gives_up_after_its_tries() {
        // A range of one port: the client's port and that one, then nothing.
        let ports = SnatPorts {
            min: 61_000,
            max: 61_000,
            tries: 4,
        };
        let mut t = FlowTable::new(8).with_snat_ports(ports);
        let node: IpAddr = "192.168.1.1".parse().unwrap();
        let backend: L3n4Addr = "10.1.0.5:8080".parse().unwrap();
        let client = |i: u8| FlowKey {
            src: IpAddr::from([10, 0, 0, i]),
            ..key(1)
        };
        let mut got = Vec::new();
        for i in 1..=3 {
            let p = t.alloc_snat_port(&client(i), backend, node, u64::from(i));
            if let Some(p) = p {
                t.insert(client(i), entry(Some("192.168.1.1"), p));
            }
            got.push(p);
        }
        assert_eq!(got, vec![Some(1), Some(61_000), None]);
    }

    #[test]
    fn expiry_by_protocol_state_and_affinity_timeout() {
        let mut t = FlowTable::new(64);
        let udp = FlowKey {
            proto: lb_core::L4Proto::Udp,
            ..key(7)
        };
        t.insert(key(1), entry(None, 1)); // open TCP, seen at 0
        t.insert(key(2), entry(None, 2));
        t.touch(&key(2), 100, true); // closing at 100
        t.insert(udp, entry(None, 7));
        t.touch(&udp, 100, false);
        let client: IpAddr = "10.0.0.1".parse().unwrap();
        let aff = |last_used| AffinityEntry {
            backend_id: BackendId(1),
            last_used,
        };
        t.set_affinity(client, RevNatId(1), aff(100));
        t.set_affinity(client, RevNatId(2), aff(100));
        t.set_affinity(client, RevNatId(3), aff(100));
        let timeout = |r: RevNatId| match r.0 {
            1 => Some(30),
            2 => Some(3600),
            _ => None, // frontend gone or affinity off
        };
        // At 110 nothing flow-wise is over its lifetime yet.
        let e = t.expire(110, usize::MAX, timeout);
        assert_eq!(
            e,
            Expired {
                flows: 0,
                affinity: 1,
                reserved: 0,
            }
        );
        // Closing TCP after 10 s; affinity after its service timeout.
        let e = t.expire(111, usize::MAX, timeout);
        assert_eq!(
            e,
            Expired {
                flows: 1,
                affinity: 0,
                reserved: 0,
            }
        );
        assert!(t.get(&key(2)).is_none());
        let e = t.expire(131, usize::MAX, timeout);
        assert_eq!(
            e,
            Expired {
                flows: 0,
                affinity: 1,
                reserved: 0,
            }
        );
        assert!(t.affinity(client, RevNatId(1)).is_none());
        assert!(t.affinity(client, RevNatId(2)).is_some());
        // UDP after 60 s.
        assert_eq!(t.expire(161, usize::MAX, timeout).flows, 1);
        assert!(t.get(&udp).is_none() && t.get(&key(1)).is_some());
        // A reply keeps a flow alive; open TCP lives 6 h.
        let r = entry(None, 1).reply_key(&key(1));
        assert!(t.reply_seen(&r, 6 * 3600, false).is_some());
        assert_eq!(t.expire(2 * 6 * 3600, usize::MAX, timeout).flows, 0);
        assert_eq!(t.expire(2 * 6 * 3600 + 1, usize::MAX, timeout).flows, 1);
        assert!(t.is_empty() && t.by_reply(&r).is_none());
    }

    #[test]
    fn expiry_is_incremental_and_frees_room() {
        let mut t = FlowTable::new(100);
        for p in 0..100 {
            assert!(t.insert(key(p), entry(None, p)));
        }
        assert!(!t.insert(key(100), entry(None, 100)));
        assert_eq!(t.full(), 1);
        // A budget of 30 slots per call: four calls sweep all 100.
        let mut removed = Vec::new();
        for _ in 0..4 {
            let e = t.expire(10_000_000, 30, |_| None);
            assert!(e.flows <= 30);
            removed.push(e.flows);
        }
        assert_eq!(removed, vec![30, 30, 30, 10]);
        assert!(t.is_empty());
        for p in 0..100 {
            assert!(t.insert(key(p), entry(None, p)), "room again");
        }
    }

    /// The flow `key` to another frontend (the NodePort) of the same client.
    fn to_node_port(sport: u16) -> FlowKey {
        FlowKey {
            dst: "192.168.1.10".parse().unwrap(),
            dport: 30080,
            ..key(sport)
        }
    }

    fn backend() -> L3n4Addr {
        "10.1.0.5:8080".parse().unwrap()
    }

    /// Inserts the new DNATed flow `k` to [`backend`] with the port
    /// [`FlowTable::alloc_port`] gives it, last seen at `now`.
    fn open(t: &mut FlowTable, k: FlowKey, now: u64) -> Option<u16> {
        let port = t.alloc_port(&k, backend(), None, 0)?;
        let e = CtEntry {
            last_seen: now,
            ..entry(None, port)
        };
        assert!(t.insert(k, e));
        Some(port)
    }

    #[test]
    fn one_client_port_to_two_frontends_of_one_backend_gets_two_reply_tuples() {
        let mut t = FlowTable::new(16);
        let (a, b) = (key(40_000), to_node_port(40_000));
        assert_eq!(
            open(&mut t, a, 0),
            Some(40_000),
            "no clash: the client's port"
        );
        let pb = open(&mut t, b, 0).unwrap();
        let r = t.remap_ports();
        assert!((r.min..=r.max).contains(&pb), "{pb}");
        assert!(t.get(&b).unwrap().remapped(&b) && !t.get(&a).unwrap().remapped(&a));
        // Each reply tuple maps back to its own flow.
        let ra = t.get(&a).unwrap().reply_key(&a);
        let rb = t.get(&b).unwrap().reply_key(&b);
        assert_eq!((ra.dport, rb.dport), (40_000, pb));
        assert_eq!(t.by_reply(&ra).map(|(k, _)| *k), Some(a));
        assert_eq!(t.by_reply(&rb).map(|(k, _)| *k), Some(b));
        // The same flow again (a reconnect) gets the same port: its own.
        assert_eq!(t.alloc_port(&b, backend(), None, 0), Some(pb));
        // Removing either leaves the other's replies.
        t.remove(&a);
        assert_eq!(t.by_reply(&rb).map(|(k, _)| *k), Some(b));
        assert!(t.by_reply(&ra).is_none());
        // A third flow from that port to the ClusterIP keeps its port now.
        assert_eq!(open(&mut t, a, 1), Some(40_000));
    }

    #[test]
    fn remap_gives_up_after_its_tries() {
        let ports = RemapPorts {
            min: 2000,
            max: 2000,
            tries: 3,
        };
        let mut t = FlowTable::new(16).with_remap_ports(ports);
        let third = FlowKey {
            dport: 443,
            ..key(40_000)
        };
        assert_eq!(open(&mut t, key(40_000), 0), Some(40_000));
        assert_eq!(open(&mut t, to_node_port(40_000), 0), Some(2000));
        assert_eq!(t.alloc_port(&third, backend(), None, 0), None);
    }

    #[test]
    fn closed_tcp_flows_reserve_their_reply_tuple_through_time_wait() {
        let mut t = FlowTable::new(16);
        let (a, b) = (key(40_000), to_node_port(40_000));
        assert_eq!(open(&mut t, a, 100), Some(40_000));
        t.touch(&a, 100, true); // FIN
        let ra = t.get(&a).unwrap().reply_key(&a);
        // The flow expires after the closing grace; its tuple stays reserved.
        assert_eq!(t.expire(111, usize::MAX, |_| None).flows, 1);
        assert!(t.get(&a).is_none());
        assert_eq!(t.reserved_len(), 1);
        // Another client flow on that tuple gets another port...
        let pb = open(&mut t, b, 120).unwrap();
        assert_ne!(pb, 40_000);
        // ...a late reply of the closed flow still goes back through its
        // frontend (and refreshes the reservation)...
        assert_eq!(t.reply_seen(&ra, 130, false).map(|(k, _)| k), Some(a));
        // ...and a new connection of the same client flow takes it over.
        t.remove(&b);
        assert_eq!(open(&mut t, a, 140), Some(40_000));
        assert_eq!(t.reserved_len(), 0);
        // Closed again; TIME_WAIT (65 s from the last packet) then frees it.
        t.touch(&a, 150, true);
        assert_eq!(t.expire(161, usize::MAX, |_| None).flows, 1);
        assert_eq!(t.expire(215, usize::MAX, |_| None).reserved, 0);
        assert_ne!(t.alloc_port(&b, backend(), None, 0), Some(40_000));
        assert_eq!(t.expire(216, usize::MAX, |_| None).reserved, 1);
        assert_eq!(t.alloc_port(&b, backend(), None, 0), Some(40_000));
        // Open TCP and UDP flows reserve nothing; nor does time_wait 0.
        let udp = FlowKey {
            proto: L4Proto::Udp,
            ..a
        };
        open(&mut t, udp, 300);
        t.touch(&udp, 300, true);
        open(&mut t, a, 300);
        assert_eq!(t.expire(7 * 3600, usize::MAX, |_| None).flows, 2);
        assert_eq!(t.reserved_len(), 0);
        let mut t = FlowTable::new(16).with_timeouts(CtTimeouts {
            time_wait: 0,
            ..CtTimeouts::default()
        });
        open(&mut t, a, 0);
        t.touch(&a, 0, true);
        assert_eq!(t.expire(11, usize::MAX, |_| None).flows, 1);
        assert_eq!(
            (t.reserved_len(), t.alloc_port(&b, backend(), None, 0)),
            (0, Some(40_000))
        );
    }

    #[test]
    fn snat_ports_stay_reserved_through_time_wait() {
        let mut t = FlowTable::new(16);
        let node: IpAddr = "192.168.1.10".parse().unwrap();
        let other = FlowKey {
            src: "10.0.0.2".parse().unwrap(),
            ..key(40_000)
        };
        let p = t.alloc_snat_port(&key(40_000), backend(), node, 1).unwrap();
        let e = CtEntry {
            snat: Some(node),
            ..entry(None, p)
        };
        t.insert(key(40_000), e);
        t.touch(&key(40_000), 0, true);
        assert_eq!(t.expire(11, usize::MAX, |_| None).flows, 1);
        // Another client with that port must not get the reserved tuple.
        assert_ne!(t.alloc_snat_port(&other, backend(), node, 2), Some(p));
        // The same client flow may take it over.
        assert_eq!(t.alloc_snat_port(&key(40_000), backend(), node, 3), Some(p));
        t.expire(66, usize::MAX, |_| None);
        assert_eq!(t.alloc_snat_port(&other, backend(), node, 2), Some(p));
    }

    #[test]
    fn a_full_reservation_table_frees_the_tuple_and_counts_it() {
        let mut t = FlowTable::new(2);
        for p in [1, 2, 3] {
            open(&mut t, key(p), 0);
            t.touch(&key(p), 0, true);
            t.expire(11, usize::MAX, |_| None);
        }
        assert_eq!((t.reserved_len(), t.unreserved()), (2, 1));
        assert_eq!(t.alloc_port(&to_node_port(3), backend(), None, 0), Some(3));
    }

    proptest::proptest! {
        /// Whatever flows open and close (client ports and frontends drawn
        /// from a few, two backends, time going forward), no two tracked
        /// flows share a reply tuple, every tracked flow's replies map back
        /// to it, and no flow gets a tuple another client flow reserves.
        #[test]
        fn reply_tuples_stay_unique_and_reservations_hold(
            ops in proptest::collection::vec((0u8..4, 0u16..4, 0u8..2, 0u8..2, 0u64..30), 1..120)
        ) {
            let ports = RemapPorts { min: 2000, max: 2003, tries: 4 };
            let mut t = FlowTable::new(64).with_remap_ports(ports);
            let backends: [L3n4Addr; 2] =
                ["10.1.0.5:8080".parse().unwrap(), "10.1.0.6:8080".parse().unwrap()];
            let frontends: [FlowKey; 2] = [key(0), to_node_port(0)];
            let mut now = 0;
            for (op, port, fe, be, dt) in ops {
                now += dt;
                let k = FlowKey { sport: 40_000 + port, ..frontends[usize::from(fe)] };
                match op {
                    0 | 1 => {
                        let b = backends[usize::from(be)];
                        // Reserved by another client flow before this one.
                        let mine = |port: u16| FlowKey {
                            src: b.addr, sport: b.port, dst: k.src, dport: port, proto: k.proto,
                        };
                        if let Some(p) = t.alloc_port(&k, b, None, 0) {
                            let held = t.reserved.get(&mine(p)).map(|(o, _)| *o);
                            proptest::prop_assert!(held.is_none_or(|o| o == k));
                            let e = CtEntry { backend: b, last_seen: now, ..entry(None, p) };
                            t.insert(k, e);
                        }
                    }
                    2 => t.touch(&k, now, true),
                    _ => {
                        t.expire(now, usize::MAX, |_| None);
                    }
                }
                let mut seen = std::collections::HashSet::new();
                for (k, e) in t.forward.slots.iter().flatten() {
                    let r = e.reply_key(k);
                    proptest::prop_assert!(seen.insert(r), "{r:?} shared");
                    proptest::prop_assert_eq!(t.by_reply(&r).map(|(o, _)| *o), Some(*k));
                    proptest::prop_assert!(t.reserved.get(&r).is_none());
                }
            }
        }
    }
}
