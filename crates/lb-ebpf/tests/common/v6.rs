//! Test helper: writes IPv6 services into lb-ebpf's lb6 maps straight from
//! lb-core's realized tables, in the layout `EbpfDataplane` uses for IPv4
//! (slot 0 from `dataplane::frontend_entry`, slots 1..total, backends,
//! reverse NAT, source ranges), so the tc programs' IPv6 path can be tested
//! on its own. No Maglev tables.
#![allow(dead_code)]

use std::net::IpAddr;

use lb_core::*;
use lb_ebpf::abi::{
    Lb4Service, Lb6Backend, Lb6Key, Lb6ReverseNat, BE_F_LOCAL, BE_STATE_ACTIVE,
    BE_STATE_MAINTENANCE, BE_STATE_QUARANTINED, BE_STATE_TERMINATING,
};
use lb_ebpf::maps::SrcRangeData6;
use lb_ebpf::EbpfDataplane;

/// Writes the IPv6 frontends of lb-core's tables into the lb6 maps.
pub struct Programmer6 {
    /// The realized tables.
    pub tables: Tables,
    /// lb-core's flow state for [`Programmer6::decide`].
    pub flows: FlowState,
}

fn o6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => panic!("not IPv6: {a}"),
    }
}

fn state_code(s: BackendState) -> u16 {
    match s {
        BackendState::Active => BE_STATE_ACTIVE,
        BackendState::Terminating => BE_STATE_TERMINATING,
        BackendState::Quarantined => BE_STATE_QUARANTINED,
        BackendState::Maintenance => BE_STATE_MAINTENANCE,
    }
}

impl Programmer6 {
    /// Realizes `services` for the fixture's node and writes every IPv6
    /// frontend, its slots, backends, reverse NAT and source ranges.
    pub fn apply(dp: &mut EbpfDataplane, node: &NodeConfig, services: &[Service]) -> Programmer6 {
        let desired = DesiredState::build(node, services).expect("desired state");
        let tables = Tables::new().realize(&desired).expect("tables");
        let maps = dp.maps();
        for fe in tables.frontends.values() {
            let addr = fe.key.addr;
            if !addr.addr.is_ipv6() {
                continue;
            }
            assert!(
                fe.maglev.is_none() || fe.algorithm != LbAlgorithm::Maglev,
                "Maglev tables are not written here"
            );
            let key = Lb6Key {
                address: o6(addr.addr),
                dport: addr.port.to_be(),
                backend_slot: 0,
                proto: addr.proto.number(),
                scope: fe.key.scope as u8,
                pad: [0; 2],
            };
            for (i, b) in fe.backends.iter().enumerate() {
                let slot = Lb6Key {
                    backend_slot: (i + 1) as u16,
                    ..key
                };
                let v = Lb4Service {
                    backend_id: b.id.0,
                    weight: b.weight,
                    flags: state_code(b.state),
                    ..Lb4Service::default()
                };
                maps.services6.insert(slot, v, 0).unwrap();
            }
            maps.services6
                .insert(key, lb_ebpf::dataplane::frontend_entry(fe), 0)
                .unwrap();
            let rn = Lb6ReverseNat {
                address: o6(addr.addr),
                port: addr.port.to_be(),
                pad: 0,
            };
            maps.rev_nat6.insert(fe.id.0, rn, 0).unwrap();
            for (pos, net) in fe.source_ranges.iter().enumerate() {
                if let ipnet::IpNet::V6(n) = net {
                    let k = aya::maps::lpm_trie::Key::new(
                        32 + u32::from(n.prefix_len()),
                        SrcRangeData6 {
                            rev_nat_index: fe.id.0,
                            addr: n.network().octets(),
                        },
                    );
                    maps.src_range6.insert(&k, pos as u8, 0).unwrap();
                }
            }
        }
        for b in tables.backends.values() {
            if !b.addr.addr.is_ipv6() {
                continue;
            }
            let v = Lb6Backend {
                address: o6(b.addr.addr),
                port: b.addr.port.to_be(),
                proto: b.addr.proto.number(),
                flags: if b.local { BE_F_LOCAL } else { 0 },
                // One shared counter slot: these tests read no per-backend counters.
                stats_slot: 0,
            };
            maps.backends6.insert(b.id.0, v, 0).unwrap();
        }
        Programmer6 {
            tables,
            flows: FlowState::new(),
        }
    }

    /// lb-core's verdict for `frame` (external scope, time 0).
    pub fn decide(&mut self, node: &NodeConfig, frame: &[u8]) -> Verdict {
        let ctx = FlowContext {
            now: 0,
            entropy: 0,
            scope: Scope::External,
        };
        let p = lb_testkit::parse(frame).expect("parse");
        let key = FlowKey {
            src: p.src.ip(),
            dst: p.dst.ip(),
            sport: p.src.port(),
            dport: p.dst.port(),
            proto: L4Proto::try_from(p.proto.number()).expect("TCP or UDP"),
        };
        flow::decide(&self.tables, node, &mut self.flows, &key, ctx)
    }
}
