//! Arbitrary flows against arbitrary programmed services: `decide` never
//! panics, and a forwarded new flow always lands on a selectable backend.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use lb_core::*;
use lb_fuzz::{node, SvcSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    |input: (Vec<SvcSpec>, Vec<(u8, u8, u16, u16, u8, u32, u64)>)| {
        let (specs, flows) = input;
        let node = node();
        let services: Vec<Service> = specs.iter().take(6).map(SvcSpec::to_service).collect();
        let Ok(desired) = DesiredState::build(&node, &services) else {
            return;
        };
        let mut dp = MemoryDataplane::new();
        if Reconciler::new().apply(&mut dp, &desired).is_err() {
            return;
        }
        let mut state = FlowState::new();
        for (s, d, sport, dport, proto, entropy, now) in flows.into_iter().take(32) {
            let key = FlowKey {
                src: IpAddr::V4(Ipv4Addr::new(192, 0, 2, s)),
                dst: IpAddr::V4(Ipv4Addr::new(10, 0, d / 64, d)),
                sport,
                dport,
                proto: L4Proto::ALL[proto as usize % 3],
            };
            let ctx = FlowContext {
                now,
                entropy,
                scope: if s % 2 == 0 {
                    Scope::External
                } else {
                    Scope::Internal
                },
            };
            if let Verdict::Forward(f) = decide(dp.tables(), &node, &mut state, &key, ctx) {
                if f.selection == Selection::New {
                    let fe = &dp.tables().frontends[&f.service];
                    assert!(fe
                        .selectable_backends()
                        .iter()
                        .any(|b| b.id == f.backend_id));
                }
            }
        }
    }
);
