//! The XDP packet-level rig of `xdp.rs` and `xdp_dsr6.rs`: the node of a
//! one-node lb-testkit [`DsrTopology`] with the tc programs attached to its
//! link and `lb_xdp` loaded (not attached) over the same maps, so a frame
//! can be run through `lb_xdp` and through `lb_tc_ingress` and the outputs
//! compared. Included with `#[path = "common/xdp_rig.rs"] mod xdp_rig;`
//! next to `mod common;`.
#![allow(dead_code)]

use lb_core::*;
use lb_ebpf::abi::DropReason;
use lb_ebpf::xdp::{self, XdpLoaded, XdpStats};
use lb_ebpf::{EbpfDataplane, LoadOptions, MapCapacity};
use lb_testkit::dsr_topology::{DsrTopology, Host};
use lb_testkit::BpffsGuard;

use crate::common::{xdp_run, Fixture};

/// The loaded node: lb-core's reconciler over the dataplane (`fx`), the
/// XDP program (`xdp`) and the topology it lives in.
pub struct XdpRig {
    pub fx: Fixture,
    pub xdp: XdpLoaded,
    pub topo: DsrTopology,
}

impl XdpRig {
    /// Loads the tc programs on `topo`'s first node's link and `lb_xdp`
    /// over the same maps, in a private bpffs, for node config `cfg`.
    /// XDP cannot resolve a neighbour: the caller resolves the next hops.
    pub fn load(topo: DsrTopology, cfg: NodeConfig) -> Self {
        lb_testkit::require_privileges();
        let node = &topo.nodes[0];
        let bpffs = BpffsGuard::new().expect("bpffs");
        let dev = node.link.name.clone();
        let pin_dir = bpffs.pin_path("lb");
        let loaded = node
            .ns
            .run_in(|| lb_ebpf::load(&LoadOptions::new(&pin_dir, &[&dev])))
            .unwrap()
            .expect("load");
        let xdp = xdp::load_program(&pin_dir, &MapCapacity::default()).expect("load lb_xdp");
        let dp = EbpfDataplane::open(&pin_dir, &cfg).expect("open dataplane");
        let fx = Fixture {
            loaded,
            dp,
            rec: Reconciler::new(),
            node: cfg,
            flows: FlowState::new(),
            bpffs,
        };
        XdpRig { fx, xdp, topo }
    }

    /// The node.
    pub fn node(&self) -> &Host {
        &self.topo.nodes[0]
    }

    /// lb_xdp on `frame` arriving on the node link: (verdict, frame,
    /// metadata).
    pub fn xdp(&mut self, frame: &[u8]) -> (u32, Vec<u8>, Vec<u8>) {
        let ifindex = self.topo.nodes[0].link.ifindex;
        let prog = self.xdp.program();
        self.topo.nodes[0]
            .ns
            .run_in(|| xdp_run(prog, frame, ifindex))
            .unwrap()
    }

    /// lb_tc_ingress on `frame`: (verdict, frame).
    pub fn tc(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let fx = &mut self.fx;
        self.topo.nodes[0].ns.run_in(|| fx.ingress(frame)).unwrap()
    }

    /// Forgets every flow of both families (CT, SNAT), as if it never was.
    pub fn forget_flows(&mut self) {
        let m = self.fx.dp.maps();
        for k in m.ct.keys().collect::<Vec<_>>() {
            m.ct.remove(&k.unwrap()).unwrap();
        }
        for k in m.snat.keys().collect::<Vec<_>>() {
            m.snat.remove(&k.unwrap()).unwrap();
        }
        for k in m.ct6.keys().collect::<Vec<_>>() {
            m.ct6.remove(&k.unwrap()).unwrap();
        }
        for k in m.snat6.keys().collect::<Vec<_>>() {
            m.snat6.remove(&k.unwrap()).unwrap();
        }
    }

    /// The drop counter of `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        let c = self.fx.dp.counters().unwrap();
        c.drops.iter().find(|(r, _)| *r == reason).unwrap().1
    }

    /// lb_xdp's verdict counters.
    pub fn stats(&self) -> XdpStats {
        xdp::stats(self.fx.loaded.pin_dir()).unwrap()
    }
}
