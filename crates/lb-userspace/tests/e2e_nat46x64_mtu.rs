//! End to end NAT46/64 sizes through lb-userspace's I/O loop: in the MTU
//! lab (`lb_testkit::nat46x64_lab`: the client's and the backend's own
//! link ends at 9000 bytes, the node's at 1500, TSO/GSO/GRO off on every
//! veth), a real TCP client echoes 256 KiB through a NAT46 and a NAT64
//! service. Without MSS clamping both would stall; the loop sizes
//! translated packets for its devices' 1500-byte MTU (clamped SYNs and
//! SYN-ACKs, fragmentation needed for the IPv4 side's full segments, 20
//! bytes too big as IPv6). The backends' kernels settle on a clamped send
//! MSS. Privileged; bounded: two transfers, every read and write with a
//! 20 s timeout.

mod common;

use lb_core::*;
use lb_testkit::nat46x64_lab::{check_mtu_transfers, jumbo_ends, MtuLab};
use lb_testkit::Topology;
use lb_userspace::{Config, DropKind, UserspaceDataplane};

use common::io_rig::{node_devices, with_io_loop};

#[test]
fn bulk_tcp_through_nat46_and_nat64_completes_with_clamped_mss() {
    lb_testkit::require_privileges();
    let topo = Topology::new(1).expect("topology");
    jumbo_ends(&topo).expect("jumbo ends, offloads off");
    let lab = MtuLab::new(&topo);
    let desired = DesiredState::build(&lab.node, &lab.services).unwrap();
    let mut dp = UserspaceDataplane::new(lab.node.clone(), Config::default());
    Reconciler::new().apply(&mut dp, &desired).unwrap();

    let devices = node_devices(&topo, None);
    let (stats, ()) = with_io_loop(&topo, devices, dp.worker(), || {
        check_mtu_transfers(&topo, &lab);
    });
    let frag = dp.counters().drops(DropKind::FragNeeded);
    println!("io {stats:?}, FragNeeded {frag}");
    assert!(frag >= 2, "fragmentation needed answered: {frag}");
    assert!(stats.sent > 0, "{stats:?}");
}
