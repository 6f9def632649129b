//! Connection tracking and ClientIP affinity of one packet-path worker.
//!
//! A [`FlowTable`] is owned by one worker thread (`&mut self`): no lock is
//! taken per packet. Its maps are allocated up front with room for
//! [`FlowTable::capacity`] flows, so steady-state inserts do not allocate;
//! when a map is full, new flows are still forwarded but not tracked, and
//! counted (`FlowTable::full`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use lb_core::flow::AffinityEntry;
use lb_core::{BackendId, FlowKey, L3n4Addr, RevNatId};

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
}

impl CtEntry {
    /// The 5-tuple of the backend's replies to the flow `key`.
    pub fn reply_key(&self, key: &FlowKey) -> FlowKey {
        FlowKey {
            src: self.backend.addr,
            sport: self.backend.port,
            dst: self.snat.unwrap_or(key.src),
            dport: key.sport,
            proto: key.proto,
        }
    }
}

/// Connection tracking (both directions) and the affinity table.
#[derive(Debug, Clone)]
pub struct FlowTable {
    forward: FxMap<FlowKey, CtEntry>,
    reply: FxMap<FlowKey, FlowKey>,
    affinity: FxMap<(IpAddr, RevNatId), AffinityEntry>,
    capacity: usize,
    full: u64,
}

impl FlowTable {
    /// A table with room for `capacity` flows and affinity entries.
    ///
    /// ```
    /// let t = lb_userspace::ct::FlowTable::new(1024);
    /// assert_eq!(t.len(), 0);
    /// ```
    pub fn new(capacity: usize) -> Self {
        FlowTable {
            forward: FxMap::with_capacity_and_hasher(capacity, Default::default()),
            reply: FxMap::with_capacity_and_hasher(capacity, Default::default()),
            affinity: FxMap::with_capacity_and_hasher(capacity, Default::default()),
            capacity,
            full: 0,
        }
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
        self.forward.is_empty()
    }

    /// New flows or affinity entries not recorded because the table was full.
    pub fn full(&self) -> u64 {
        self.full
    }

    /// The entry of the flow the client sent as `key`.
    pub fn get(&self, key: &FlowKey) -> Option<&CtEntry> {
        self.forward.get(key)
    }

    /// The client's flow key and entry for a reply `key` (backend → client).
    pub fn by_reply(&self, key: &FlowKey) -> Option<(&FlowKey, &CtEntry)> {
        let orig = self.reply.get(key)?;
        self.forward.get(orig).map(|e| (orig, e))
    }

    /// Records a flow (replacing any previous entry of `key`).
    pub fn insert(&mut self, key: FlowKey, entry: CtEntry) {
        self.remove(&key);
        let reply = entry.reply_key(&key);
        if self.forward.len() >= self.capacity || self.reply.len() >= self.capacity {
            self.full += 1;
            return;
        }
        // Another flow may map to the same reply tuple (two clients SNATed
        // with the same port, or one client port to two frontends of one
        // backend): the newer flow owns the reply direction, as the BPF
        // reply CT entry is overwritten; the older keeps its forward entry.
        self.reply.insert(reply, key);
        self.forward.insert(key, entry);
    }

    /// Forgets a flow.
    pub fn remove(&mut self, key: &FlowKey) {
        if let Some(e) = self.forward.remove(key) {
            let reply = e.reply_key(key);
            if self.reply.get(&reply) == Some(key) {
                self.reply.remove(&reply);
            }
        }
    }

    /// The affinity entry of `client` for a frontend.
    pub fn affinity(&self, client: IpAddr, rev_nat: RevNatId) -> Option<&AffinityEntry> {
        self.affinity.get(&(client, rev_nat))
    }

    /// Records that `client`'s last new flow to a frontend went to `entry.backend_id`.
    pub fn set_affinity(&mut self, client: IpAddr, rev_nat: RevNatId, entry: AffinityEntry) {
        let k = (client, rev_nat);
        if !self.affinity.contains_key(&k) && self.affinity.len() >= self.capacity {
            self.full += 1;
            return;
        }
        self.affinity.insert(k, entry);
    }

    /// Forgets every flow and affinity entry (keeps the allocation).
    pub fn clear(&mut self) {
        self.forward.clear();
        self.reply.clear();
        self.affinity.clear();
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

    fn entry(snat: Option<&str>) -> CtEntry {
        CtEntry {
            backend_id: BackendId(1),
            rev_nat: RevNatId(1),
            backend: "10.1.0.5:8080".parse().unwrap(),
            snat: snat.map(|s| s.parse().unwrap()),
        }
    }

    #[test]
    fn both_directions_and_removal() {
        let mut t = FlowTable::new(4);
        t.insert(key(1), entry(None));
        let r = entry(None).reply_key(&key(1));
        assert_eq!(t.by_reply(&r).map(|(k, _)| *k), Some(key(1)));
        t.remove(&key(1));
        assert!(t.by_reply(&r).is_none() && t.is_empty());
    }

    #[test]
    fn reply_clash_gives_the_reply_to_the_newer_flow_and_full_tables_count() {
        let mut t = FlowTable::new(2);
        let mut other = key(1);
        other.src = "10.0.0.2".parse().unwrap();
        t.insert(key(1), entry(Some("192.168.1.1")));
        t.insert(other, entry(Some("192.168.1.1")));
        assert_eq!(t.len(), 2);
        let r = entry(Some("192.168.1.1")).reply_key(&key(1));
        assert_eq!(t.by_reply(&r).map(|(k, _)| *k), Some(other));
        // Removing the older flow leaves the newer one's reply entry.
        t.remove(&key(1));
        assert_eq!(t.by_reply(&r).map(|(k, _)| *k), Some(other));
        t.insert(key(2), entry(None));
        t.insert(key(3), entry(None));
        assert_eq!((t.len(), t.full()), (2, 1));
    }
}
