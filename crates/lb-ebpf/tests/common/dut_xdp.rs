//! The XDP variant of the lb-ebpf conformance adapter: a frame towards a
//! frontend runs `lb_xdp` first (`BPF_PROG_TEST_RUN`, arriving on the DUT's
//! device), then, when XDP passes it, the tc ingress program as in
//! [`Ebpf`]; replies take the tc path. The gateway's neighbour is resolved
//! so XDP can forward (it leaves unresolved next hops to tc); a forwarded
//! frame carries the next hop's MACs, which the oracle does not model, so
//! the adapter checks them and restores the input's. Privileged.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use lb_core::{DataplaneError, Op};
use lb_ebpf::xdp::{self, XdpLoaded, XdpStats};
use lb_ebpf::MapCapacity;
use lb_testkit::conformance::{
    DataplaneUnderTest, Direction, Drops, Features, PacketCtx, PacketResult, Scenario, Setup,
};

use crate::common::{xdp_run, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};
use crate::dut::{Ebpf, DEV, GATEWAY, GATEWAY6, PEER};

/// Frames lb_xdp forwarded itself (XDP_TX or XDP_REDIRECT), over every
/// adapter of the process.
pub static XDP_FORWARDED: AtomicU64 = AtomicU64::new(0);
/// The IPv6 frames among [`XDP_FORWARDED`].
pub static XDP_FORWARDED_V6: AtomicU64 = AtomicU64::new(0);
/// The IPv6 DSR frames (IPv6-in-IPv6) among [`XDP_FORWARDED_V6`].
pub static XDP_FORWARDED_V6_DSR: AtomicU64 = AtomicU64::new(0);
/// IPv6 frames towards a frontend that lb_xdp passed and tc sent in
/// IPv6-in-IPv6 (none while lb_xdp encapsulates IPv6 DSR flows itself).
pub static TC_FORWARDED_V6_DSR: AtomicU64 = AtomicU64::new(0);

/// An IPv6 frame sent on in IPv6-in-IPv6 (outer next header 41).
fn is_dsr6(input: &[u8], out: &[u8]) -> bool {
    input.get(12..14) == Some(&[0x86, 0xdd][..]) && out.get(14 + 6) == Some(&41)
}

/// lb-ebpf with XDP acceleration under test.
pub struct EbpfXdp {
    inner: Ebpf,
    xdp: XdpLoaded,
    ifindex: u32,
    gw_mac: [u8; 6],
}

impl EbpfXdp {
    /// [`Ebpf::new`], plus `lb_xdp` over the same maps and resolved
    /// gateways (IPv4 and IPv6).
    pub fn new(setup: &Setup) -> Self {
        let inner = Ebpf::new(setup);
        let ns = inner.netns();
        let gw_mac = ns.link(PEER).expect("peer").mac;
        ns.add_neighbor(DEV, GATEWAY.parse().unwrap(), gw_mac)
            .expect("gateway neighbour");
        ns.add_neighbor(DEV, GATEWAY6.parse().unwrap(), gw_mac)
            .expect("IPv6 gateway neighbour");
        let ifindex = ns.link(DEV).expect("device").ifindex;
        let xdp = xdp::load_program(inner.pin_dir(), &MapCapacity::default()).expect("lb_xdp");
        EbpfXdp {
            inner,
            xdp,
            ifindex,
            gw_mac,
        }
    }

    /// lb_xdp's counters.
    pub fn xdp_stats(&self) -> XdpStats {
        xdp::stats(self.inner.pin_dir()).expect("xdp stats")
    }

    /// A forwarded frame has the next hop's MACs: check and restore the input's.
    fn restore_l2(&self, input: &[u8], mut out: Vec<u8>) -> Vec<u8> {
        if out.len() >= 12 && input.len() >= 12 && out[0..6] == self.gw_mac {
            out[0..12].copy_from_slice(&input[0..12]);
        }
        out
    }
}

impl DataplaneUnderTest for EbpfXdp {
    fn name(&self) -> String {
        "lb-ebpf XDP + tc (BPF_PROG_TEST_RUN)".into()
    }

    fn features(&self) -> Features {
        self.inner.features()
    }

    fn unsupported(&self, scenario: Scenario) -> Option<String> {
        self.inner.unsupported(scenario)
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), DataplaneError> {
        self.inner.apply(ops)
    }

    fn process(&mut self, dir: Direction, frame: &[u8], ctx: PacketCtx) -> PacketResult {
        if dir == Direction::ToFrontend {
            let ifindex = self.ifindex;
            let prog = self.xdp.program();
            let (rv, out, _meta) = self
                .inner
                .netns()
                .run_in(|| xdp_run(prog, frame, ifindex))
                .expect("enter netns");
            match rv {
                XDP_PASS => {
                    assert_eq!(out, frame, "lb_xdp passes frames untouched");
                }
                XDP_TX | XDP_REDIRECT => {
                    assert_eq!(&out[0..6], &self.gw_mac, "next hop's MAC");
                    XDP_FORWARDED.fetch_add(1, Ordering::Relaxed);
                    if frame.get(12..14) == Some(&[0x86, 0xdd][..]) {
                        XDP_FORWARDED_V6.fetch_add(1, Ordering::Relaxed);
                    }
                    if is_dsr6(frame, &out) {
                        XDP_FORWARDED_V6_DSR.fetch_add(1, Ordering::Relaxed);
                    }
                    return PacketResult::Accept(self.restore_l2(frame, out));
                }
                XDP_DROP => return PacketResult::Drop,
                other => panic!("unexpected XDP verdict {other}"),
            }
        }
        match self.inner.process(dir, frame, ctx) {
            PacketResult::Accept(out) => {
                if dir == Direction::ToFrontend && is_dsr6(frame, &out) {
                    TC_FORWARDED_V6_DSR.fetch_add(1, Ordering::Relaxed);
                }
                PacketResult::Accept(self.restore_l2(frame, out))
            }
            drop => drop,
        }
    }

    fn reset_flows(&mut self) {
        self.inner.reset_flows()
    }

    fn drops(&self) -> Option<Drops> {
        self.inner.drops()
    }
}
