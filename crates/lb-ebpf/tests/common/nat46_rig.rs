//! The NAT46/64 packet-level rig of `prog_run_nat46.rs` and
//! `prog_run_nat46_icmp.rs`: the tc programs loaded in a network namespace
//! of their own, whose routes send the remote backends (`10.0.0.0/8`,
//! `fd00:2::/32`) and the clients (`192.168.5.0/24`, `fd00:5::/64`)
//! through a veth end listed in `lb_devices` (test runs transmit nothing),
//! an `EbpfDataplane` with NAT46/64 on for a node with [`NODE4`] and
//! [`NODE6`], and lb-core's reconciler and flows. Included with
//! `#[path = "common/nat46_rig.rs"] mod nat46_rig;` next to `mod common;`.
#![allow(dead_code)]

use lb_core::*;
use lb_ebpf::{EbpfDataplane, LoadOptions, Loaded};
use lb_testkit::{BpffsGuard, NetNs};

use crate::common::{flow_key, ip, run};

/// The node's IPv4 address.
pub const NODE4: &str = "192.168.1.10";
/// The node's IPv6 address.
pub const NODE6: &str = "fd00:1::10";
/// `TC_ACT_REDIRECT`: the FIB redirect (`bpf_redirect_neigh`, the
/// namespace's neighbours are never resolved).
pub const TC_ACT_REDIRECT: u32 = 7;

/// The loaded programs, the dataplane and the model next to it.
pub struct NatRig {
    pub loaded: Loaded,
    pub dp: EbpfDataplane,
    pub rec: Reconciler,
    pub node: NodeConfig,
    pub flows: FlowState,
    pub netns: NetNs,
    _bpffs: BpffsGuard,
}

impl NatRig {
    /// Loads the programs in a new namespace labelled `label`.
    pub fn load(label: &str) -> Self {
        lb_testkit::require_privileges();
        let netns = NetNs::with_label(label).expect("netns");
        netns
            .ip(&[
                "link", "add", "lbn0", "type", "veth", "peer", "name", "lbn1",
            ])
            .expect("veth");
        netns.add_addr("lbn0", "172.31.255.1/30").expect("addr");
        netns
            .add_addr("lbn0", "fd00:ffff:ffff::1/64")
            .expect("addr6");
        netns.link_up("lbn1").expect("up");
        netns.link_up("lbn0").expect("up");
        for r in [
            "10.0.0.0/8 via 172.31.255.2 dev lbn0",
            "fd00:2::/32 via fd00:ffff:ffff::2 dev lbn0",
            // The clients, behind the same device.
            "192.168.5.0/24 via 172.31.255.2 dev lbn0",
            "fd00:5::/64 via fd00:ffff:ffff::2 dev lbn0",
        ] {
            netns.add_route(r).expect("route");
        }
        netns.set_sysctl("net.ipv4.ip_forward", "1").expect("fwd");
        netns
            .set_sysctl("net.ipv6.conf.all.forwarding", "1")
            .expect("fwd6");
        let bpffs = BpffsGuard::new().expect("bpffs");
        let opts = LoadOptions::new(bpffs.pin_path("lb"), &["lbn0"]);
        let loaded = netns
            .run_in(|| lb_ebpf::load(&opts))
            .expect("netns")
            .expect("load");
        let mut node = NodeConfig::new("node-1", vec![ip(NODE4), ip(NODE6)]);
        node.nat46x64 = true;
        let dp = EbpfDataplane::open(loaded.pin_dir(), &node).expect("open");
        NatRig {
            loaded,
            dp,
            rec: Reconciler::new(),
            node,
            flows: FlowState::new(),
            netns,
            _bpffs: bpffs,
        }
    }

    /// Reconciles the dataplane to `services`.
    pub fn apply(&mut self, services: &[Service]) {
        let desired = DesiredState::build(&self.node, services).expect("desired");
        self.rec.apply(&mut self.dp, &desired).expect("apply");
    }

    /// lb_tc_ingress on `frame`: (verdict, frame).
    pub fn ingress(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog = self.loaded.ingress();
        self.netns.run_in(|| run(prog, frame)).expect("netns")
    }

    /// lb-core's verdict for `frame` from outside the node.
    pub fn decide(&mut self, frame: &[u8]) -> Verdict {
        let ctx = FlowContext {
            now: 0,
            entropy: 0,
            scope: Scope::External,
        };
        flow::decide(
            self.rec.current(),
            &self.node,
            &mut self.flows,
            &flow_key(frame),
            ctx,
        )
    }
}

impl Drop for NatRig {
    fn drop(&mut self) {
        if let Err(e) = lb_ebpf::cleanup(self.loaded.pin_dir()) {
            eprintln!("cleanup: {e}");
        }
    }
}
