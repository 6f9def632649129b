//! NAT46/64 in the eBPF dataplane ([`lb_core::nat46x64`]): an IPv4
//! frontend served by IPv6 backends, or an IPv6 frontend served by IPv4
//! backends, translated by the tc datapath (`bpf/lb_nat46.h`).
//!
//! The control plane writes such a frontend like any other into its own
//! family's services map, with [`crate::abi::SVC_F_NAT46X64`] on slot 0: its
//! slots name backends of the other family's backends map (ids are unique
//! across families). [`crate::EbpfDataplane`] accepts it only when opened
//! with [`lb_core::NodeConfig::nat46x64`] on and a node address of each
//! family (the SNAT sources), and never a frontend that mixes families.
//!
//! The reverse SNAT entries of translated flows (documented in
//! `bpf/lb_nat46.h`) are told apart here for the garbage collector:
//! a NAT46 flow's `lb6_snat` entry holds its IPv4 client and frontend
//! IPv4-mapped (`::ffff:a.b.c.d`), so its client's CT entry is in `lb4_ct`;
//! a NAT64 flow has a marker in `lb4_snat` (client `0.0.0.0`) and its real
//! entry in `lb6_snat` under the IPv4-mapped reply tuple (whose client and
//! CT entry are IPv6, as any).

use std::net::Ipv4Addr;

use crate::abi::*;
use crate::family::{V4, V6};
use crate::maps::Maps;

/// What the garbage collector needs to know about a SNAT entry of one
/// family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SnatKind {
    /// An untranslated flow's entry (or a NAT64 entry in `lb6_snat`, whose
    /// client's CT entry is in `lb6_ct` as for any IPv6 flow).
    Plain,
    /// A NAT46 entry: the flags of its client's CT entry in `lb4_ct`
    /// (`None` when it is gone).
    Nat46(Option<u16>),
    /// A NAT64 marker in `lb4_snat`: whether its real entry still exists.
    Nat64Marker(bool),
}

/// The IPv4 address of an IPv4-mapped address (`::ffff:a.b.c.d`).
pub(crate) fn unmapped(a: [u8; 16]) -> Option<[u8; 4]> {
    std::net::Ipv6Addr::from(a)
        .to_ipv4_mapped()
        .map(|v4: Ipv4Addr| v4.octets())
}

/// `a` IPv4-mapped.
pub(crate) fn mapped(a: [u8; 4]) -> [u8; 16] {
    Ipv4Addr::from(a).to_ipv6_mapped().octets()
}

/// Per family: what kind of SNAT entry `(k, v)` is.
pub(crate) trait XlateSnat: crate::gc::CtFamily {
    /// See [`SnatKind`].
    fn snat_kind(maps: &mut Maps, k: &Self::CtKey, v: &Self::SnatEntry) -> SnatKind;
}

impl XlateSnat for V4 {
    fn snat_kind(maps: &mut Maps, k: &Ct4Key, v: &Lb4SnatEntry) -> SnatKind {
        if v.client_addr != 0 {
            return SnatKind::Plain;
        }
        let real = Ct6Key {
            saddr: mapped(k.saddr.to_ne_bytes()),
            daddr: mapped(k.daddr.to_ne_bytes()),
            sport: k.sport,
            dport: k.dport,
            proto: k.proto,
            dir: k.dir,
            pad: [0; 2],
        };
        SnatKind::Nat64Marker(maps.snat6.get(&real, 0).is_ok())
    }
}

impl XlateSnat for V6 {
    fn snat_kind(maps: &mut Maps, k: &Ct6Key, v: &Lb6SnatEntry) -> SnatKind {
        let (Some(client), Some(frontend)) = (unmapped(v.client_addr), unmapped(v.frontend_addr))
        else {
            return SnatKind::Plain;
        };
        let flow = Ct4Key {
            saddr: u32::from_ne_bytes(client),
            daddr: u32::from_ne_bytes(frontend),
            sport: v.client_port,
            dport: v.frontend_port,
            proto: k.proto,
            dir: CT_SERVICE,
            pad: [0; 2],
        };
        SnatKind::Nat46(maps.ct.get(&flow, 0).ok().map(|ct| ct.flags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_round_trip() {
        let a = [198, 51, 100, 10];
        let m = mapped(a);
        assert_eq!(
            std::net::Ipv6Addr::from(m).to_string(),
            "::ffff:198.51.100.10"
        );
        assert_eq!(unmapped(m), Some(a));
        assert_eq!(
            unmapped("fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets()),
            None
        );
    }
}
