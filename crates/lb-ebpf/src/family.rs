//! The two address families the dataplane programs, as one trait over the
//! map layouts that differ between them (`lb4_*` and `lb6_*`): services
//! key, backend, reverse-NAT value and source-range key. Everything else
//! (the services map value, counters, metadata, Maglev tables) is shared;
//! lb-core allocates service and backend ids from one space for both
//! families, so an id lives in one family's maps at a time.
//!
//! The control plane (`dataplane.rs`, `shadow.rs`, `restore.rs`) is written
//! once, generic over [`Family`], and monomorphised for [`V4`] and [`V6`]:
//! the IPv4 path compiles to what it was before IPv6 existed.

use std::fmt::Debug;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{lpm_trie::Key, HashMap as BpfHashMap, LpmTrie, MapData};
use aya::Pod;

use crate::abi::*;
use crate::maps::{Maps, SrcRangeData, SrcRangeData6};
use crate::shadow::{FamPending, FamShadow, FamUndo, Pending, Shadow, Undo};

/// An address family: IPv4 ([`V4`]) or IPv6 ([`V6`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Fam {
    /// IPv4 (`lb4_*` maps).
    V4 = 0,
    /// IPv6 (`lb6_*` maps).
    V6 = 1,
}

impl Fam {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Fam {
        match ip {
            IpAddr::V4(_) => Fam::V4,
            IpAddr::V6(_) => Fam::V6,
        }
    }

    /// The index of per-family arrays (`[_; 2]`).
    pub fn idx(self) -> usize {
        self as usize
    }

    /// "IPv4" or "IPv6".
    pub fn name(self) -> &'static str {
        match self {
            Fam::V4 => "IPv4",
            Fam::V6 => "IPv6",
        }
    }
}

/// One family's map layouts and where its maps, shadow copy, queued writes
/// and undo records live.
pub(crate) trait Family: Sized + Debug + Clone + 'static {
    /// The other family (an id moving between families is removed there).
    type Other: Family;
    /// An address as the datapath stores it (network order).
    type Addr: Copy + Eq + Ord + Hash + Debug;
    /// The services map key (`struct lb4_key` / `struct lb6_key`).
    type Key: Pod + Copy + Eq + Hash + Debug;
    /// The backends map value.
    type Backend: Pod + Copy + PartialEq + Debug;
    /// The reverse-NAT map value.
    type RevNat: Pod + Copy + PartialEq + Debug;
    /// The source-range trie key's data (after `prefixlen`).
    type RangeData: Pod;

    /// This family.
    const FAM: Fam;
    /// Name of the services map.
    const SERVICES: &'static str;
    /// Name of the backends map.
    const BACKENDS: &'static str;
    /// Name of the reverse-NAT map.
    const REV_NAT: &'static str;
    /// Name of the source-range trie.
    const SRC_RANGE: &'static str;

    /// `ip` as stored, or `None` when it is of the other family.
    fn addr(ip: IpAddr) -> Option<Self::Addr>;
    /// The address a stored one stands for.
    fn ip(a: Self::Addr) -> IpAddr;

    /// A services key (`dport` in network order).
    fn key(address: Self::Addr, dport: u16, slot: u16, proto: u8, scope: u8) -> Self::Key;
    /// `(address, dport, proto, scope)` of a services key.
    fn key_parts(k: &Self::Key) -> (Self::Addr, u16, u8, u8);
    /// The backend slot of a services key.
    fn slot(k: &Self::Key) -> u16;
    /// `k` with another backend slot.
    fn with_slot(k: Self::Key, slot: u16) -> Self::Key;

    /// A backends map value (`port` in network order).
    fn backend(address: Self::Addr, port: u16, proto: u8, flags: u8) -> Self::Backend;
    /// `(address, port, proto, flags)` of a backends map value.
    fn backend_parts(b: &Self::Backend) -> (Self::Addr, u16, u8, u8);
    /// The counter slot of a backends map value.
    fn stats_slot(b: &Self::Backend) -> u32;
    /// Sets the counter slot of a backends map value.
    fn set_stats_slot(b: &mut Self::Backend, slot: u32);
    /// A reverse-NAT value (`port` in network order).
    fn rev_nat(address: Self::Addr, port: u16) -> Self::RevNat;

    /// The source-range trie key of frontend `id`'s prefix.
    fn range_key(id: u32, addr: Self::Addr, len: u8) -> Key<Self::RangeData>;
    /// `(frontend id, address, prefix length)` of a trie key.
    fn range_parts(k: &Key<Self::RangeData>) -> (u32, Self::Addr, u8);

    /// The services map.
    fn services(m: &Maps) -> &BpfHashMap<MapData, Self::Key, Lb4Service>;
    /// The services map, writable.
    fn services_mut(m: &mut Maps) -> &mut BpfHashMap<MapData, Self::Key, Lb4Service>;
    /// The backends map.
    fn backends(m: &Maps) -> &BpfHashMap<MapData, u32, Self::Backend>;
    /// The backends map, writable.
    fn backends_mut(m: &mut Maps) -> &mut BpfHashMap<MapData, u32, Self::Backend>;
    /// The reverse-NAT map.
    fn rev_nat_map(m: &Maps) -> &BpfHashMap<MapData, u32, Self::RevNat>;
    /// The reverse-NAT map, writable.
    fn rev_nat_mut(m: &mut Maps) -> &mut BpfHashMap<MapData, u32, Self::RevNat>;
    /// The source-range trie.
    fn src_range(m: &Maps) -> &LpmTrie<MapData, Self::RangeData, u8>;
    /// The source-range trie, writable.
    fn src_range_mut(m: &mut Maps) -> &mut LpmTrie<MapData, Self::RangeData, u8>;

    /// This family's part of the shadow copy.
    fn sh(s: &Shadow) -> &FamShadow<Self>;
    /// This family's part of the shadow copy, writable.
    fn sh_mut(s: &mut Shadow) -> &mut FamShadow<Self>;
    /// This family's queued writes.
    fn pending(q: &mut Pending) -> &mut FamPending<Self>;
    /// An undo record of this family.
    fn undo(u: FamUndo<Self>) -> Undo;
}

/// IPv4: the `lb4_*` maps.
#[derive(Debug, Clone)]
pub(crate) struct V4;

/// IPv6: the `lb6_*` maps.
#[derive(Debug, Clone)]
pub(crate) struct V6;

/// The accessors of one family's maps, shadow, queue and undo variant.
macro_rules! storage {
    ($fam:ident, $services:ident, $backends:ident, $rev_nat:ident, $src_range:ident, $part:ident) => {
        fn services(m: &Maps) -> &BpfHashMap<MapData, Self::Key, Lb4Service> {
            &m.$services
        }
        fn services_mut(m: &mut Maps) -> &mut BpfHashMap<MapData, Self::Key, Lb4Service> {
            &mut m.$services
        }
        fn backends(m: &Maps) -> &BpfHashMap<MapData, u32, Self::Backend> {
            &m.$backends
        }
        fn backends_mut(m: &mut Maps) -> &mut BpfHashMap<MapData, u32, Self::Backend> {
            &mut m.$backends
        }
        fn rev_nat_map(m: &Maps) -> &BpfHashMap<MapData, u32, Self::RevNat> {
            &m.$rev_nat
        }
        fn rev_nat_mut(m: &mut Maps) -> &mut BpfHashMap<MapData, u32, Self::RevNat> {
            &mut m.$rev_nat
        }
        fn src_range(m: &Maps) -> &LpmTrie<MapData, Self::RangeData, u8> {
            &m.$src_range
        }
        fn src_range_mut(m: &mut Maps) -> &mut LpmTrie<MapData, Self::RangeData, u8> {
            &mut m.$src_range
        }
        fn sh(s: &Shadow) -> &FamShadow<Self> {
            &s.$part
        }
        fn sh_mut(s: &mut Shadow) -> &mut FamShadow<Self> {
            &mut s.$part
        }
        fn pending(q: &mut Pending) -> &mut FamPending<Self> {
            &mut q.$part
        }
        fn undo(u: FamUndo<Self>) -> Undo {
            Undo::$fam(u)
        }
    };
}

impl Family for V4 {
    type Other = V6;
    type Addr = u32;
    type Key = Lb4Key;
    type Backend = Lb4Backend;
    type RevNat = Lb4ReverseNat;
    type RangeData = SrcRangeData;

    const FAM: Fam = Fam::V4;
    const SERVICES: &'static str = MAP_SERVICES;
    const BACKENDS: &'static str = MAP_BACKENDS;
    const REV_NAT: &'static str = MAP_REV_NAT;
    const SRC_RANGE: &'static str = MAP_SRC_RANGE;

    fn addr(ip: IpAddr) -> Option<u32> {
        match ip {
            IpAddr::V4(a) => Some(u32::from_ne_bytes(a.octets())),
            IpAddr::V6(_) => None,
        }
    }

    fn ip(a: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a.to_ne_bytes()))
    }

    fn key(address: u32, dport: u16, backend_slot: u16, proto: u8, scope: u8) -> Lb4Key {
        Lb4Key {
            address,
            dport,
            backend_slot,
            proto,
            scope,
            pad: [0; 2],
        }
    }

    fn key_parts(k: &Lb4Key) -> (u32, u16, u8, u8) {
        (k.address, k.dport, k.proto, k.scope)
    }

    fn slot(k: &Lb4Key) -> u16 {
        k.backend_slot
    }

    fn with_slot(k: Lb4Key, backend_slot: u16) -> Lb4Key {
        Lb4Key { backend_slot, ..k }
    }

    fn backend(address: u32, port: u16, proto: u8, flags: u8) -> Lb4Backend {
        Lb4Backend {
            address,
            port,
            proto,
            flags,
            stats_slot: 0,
        }
    }

    fn backend_parts(b: &Lb4Backend) -> (u32, u16, u8, u8) {
        (b.address, b.port, b.proto, b.flags)
    }

    fn stats_slot(b: &Lb4Backend) -> u32 {
        b.stats_slot
    }

    fn set_stats_slot(b: &mut Lb4Backend, slot: u32) {
        b.stats_slot = slot;
    }

    fn rev_nat(address: u32, port: u16) -> Lb4ReverseNat {
        Lb4ReverseNat {
            address,
            port,
            pad: 0,
        }
    }

    fn range_key(rev_nat_index: u32, addr: u32, len: u8) -> Key<SrcRangeData> {
        Key::new(
            32 + u32::from(len),
            SrcRangeData {
                rev_nat_index,
                addr,
            },
        )
    }

    fn range_parts(k: &Key<SrcRangeData>) -> (u32, u32, u8) {
        let d = k.data();
        (
            d.rev_nat_index,
            d.addr,
            k.prefix_len().saturating_sub(32) as u8,
        )
    }

    storage!(V4, services, backends, rev_nat, src_range, v4);
}

impl Family for V6 {
    type Other = V4;
    type Addr = [u8; 16];
    type Key = Lb6Key;
    type Backend = Lb6Backend;
    type RevNat = Lb6ReverseNat;
    type RangeData = SrcRangeData6;

    const FAM: Fam = Fam::V6;
    const SERVICES: &'static str = MAP_SERVICES6;
    const BACKENDS: &'static str = MAP_BACKENDS6;
    const REV_NAT: &'static str = MAP_REV_NAT6;
    const SRC_RANGE: &'static str = MAP_SRC_RANGE6;

    fn addr(ip: IpAddr) -> Option<[u8; 16]> {
        match ip {
            IpAddr::V4(_) => None,
            IpAddr::V6(a) => Some(a.octets()),
        }
    }

    fn ip(a: [u8; 16]) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(a))
    }

    fn key(address: [u8; 16], dport: u16, backend_slot: u16, proto: u8, scope: u8) -> Lb6Key {
        Lb6Key {
            address,
            dport,
            backend_slot,
            proto,
            scope,
            pad: [0; 2],
        }
    }

    fn key_parts(k: &Lb6Key) -> ([u8; 16], u16, u8, u8) {
        (k.address, k.dport, k.proto, k.scope)
    }

    fn slot(k: &Lb6Key) -> u16 {
        k.backend_slot
    }

    fn with_slot(k: Lb6Key, backend_slot: u16) -> Lb6Key {
        Lb6Key { backend_slot, ..k }
    }

    fn backend(address: [u8; 16], port: u16, proto: u8, flags: u8) -> Lb6Backend {
        Lb6Backend {
            address,
            port,
            proto,
            flags,
            stats_slot: 0,
        }
    }

    fn backend_parts(b: &Lb6Backend) -> ([u8; 16], u16, u8, u8) {
        (b.address, b.port, b.proto, b.flags)
    }

    fn stats_slot(b: &Lb6Backend) -> u32 {
        b.stats_slot
    }

    fn set_stats_slot(b: &mut Lb6Backend, slot: u32) {
        b.stats_slot = slot;
    }

    fn rev_nat(address: [u8; 16], port: u16) -> Lb6ReverseNat {
        Lb6ReverseNat {
            address,
            port,
            pad: 0,
        }
    }

    fn range_key(rev_nat_index: u32, addr: [u8; 16], len: u8) -> Key<SrcRangeData6> {
        Key::new(
            32 + u32::from(len),
            SrcRangeData6 {
                rev_nat_index,
                addr,
            },
        )
    }

    fn range_parts(k: &Key<SrcRangeData6>) -> (u32, [u8; 16], u8) {
        let d = k.data();
        (
            d.rev_nat_index,
            d.addr,
            k.prefix_len().saturating_sub(32) as u8,
        )
    }

    storage!(V6, services6, backends6, rev_nat6, src_range6, v6);
}

impl Fam {
    /// The other family.
    pub fn other(self) -> Fam {
        match self {
            Fam::V4 => Fam::V6,
            Fam::V6 => Fam::V4,
        }
    }
}
