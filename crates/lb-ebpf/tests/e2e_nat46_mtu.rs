//! End to end NAT46/64 sizes through the tc programs (`bpf/lb_nat46.h`,
//! `bpf/lb_mss.h`): in the MTU lab (`lb_testkit::nat46x64_lab`: the
//! client's and the backend's own link ends at 9000 bytes, the node's at
//! 1500, TSO/GSO/GRO off on every veth), a real TCP client echoes 256 KiB
//! through a NAT46 and a NAT64 service. Without MSS clamping both would
//! stall (9000-byte segments the node's ends drop); the node clamps the
//! SYNs and SYN-ACKs for its 1500-byte routes and answers the IPv4 side's
//! full segments, 20 bytes too big as IPv6, with fragmentation needed
//! (counted as FragNeeded). The backends' kernels settle on a clamped
//! send MSS. Only addresses inside the test's namespaces. Privileged
//! (root); bounded: two transfers, every read and write with a 20 s
//! timeout.

mod common;

use common::Pins;
use lb_core::*;
use lb_ebpf::abi::DropReason;
use lb_ebpf::{EbpfDataplane, LoadOptions};
use lb_testkit::nat46x64_lab::{check_mtu_transfers, jumbo_ends, MtuLab};
use lb_testkit::{BpffsGuard, Topology};

#[test]
fn bulk_tcp_through_nat46_and_nat64_completes_with_clamped_mss() {
    lb_testkit::require_privileges();
    let topo = Topology::new(1).expect("topology");
    jumbo_ends(&topo).expect("jumbo ends, offloads off");
    let lab = MtuLab::new(&topo);

    let bpffs = BpffsGuard::new().expect("bpffs");
    let pin_dir = bpffs.pin_path("lb");
    let _pins = Pins(pin_dir.clone());
    let devs = [
        topo.node_client_dev.as_str(),
        topo.backends[0].node_link.name.as_str(),
    ];
    let _loaded = topo
        .node
        .run_in(|| lb_ebpf::load(&LoadOptions::new(&pin_dir, &devs)))
        .unwrap()
        .expect("load and attach");
    let mut dp = EbpfDataplane::open(&pin_dir, &lab.node).expect("open dataplane");
    let desired = DesiredState::build(&lab.node, &lab.services).unwrap();
    Reconciler::new().apply(&mut dp, &desired).unwrap();

    check_mtu_transfers(&topo, &lab);

    let c = dp.counters().expect("counters");
    // NAT46 uploads and NAT64 downloads: the IPv4 sender's first full
    // segments were answered with fragmentation needed.
    let frag = c.drops_for(DropReason::FragNeeded);
    println!("FragNeeded: {frag}, drops {:?}", c.drops);
    assert!(frag >= 2, "fragmentation needed answered: {frag}");
    assert_eq!(c.drops_for(DropReason::Rewrite), 0, "{:?}", c.drops);
}
