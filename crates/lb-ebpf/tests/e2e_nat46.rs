//! End to end NAT46/64 through the tc programs (`bpf/lb_nat46.h`): real
//! TCP and UDP clients in the client namespace of an
//! `lb_testkit::Topology` reach echo servers in the backend namespaces
//! across IP families — an IPv4 client to an IPv4 ClusterIP and NodePort
//! served only by IPv6 backends (NAT46), and an IPv6 client to an IPv6
//! ClusterIP and NodePort served only by IPv4 backends (NAT64). The
//! programs are attached to the node's client-facing device and to its
//! backend-facing devices (the backends' replies to the node's address
//! arrive there). The backends see the node's address of their own
//! family (translated flows are always SNATed). A UDP client sending to a
//! NAT46 (NAT64) service whose backends do not listen gets ECONNREFUSED:
//! the backend's ICMPv6 (ICMPv4) port unreachable reaches it translated
//! (`bpf/lb_nat46_icmp.h`). Only addresses inside the test's namespaces.
//! Privileged (root).
//!
//! Bounded: one topology, 16 rounds of 8 requests, each with a 5 s
//! timeout (connect and every read/write), and at most 6 datagrams to the
//! closed ports (3 s timeout each).

mod common;

use common::Pins;
use lb_core::*;
use lb_ebpf::{EbpfDataplane, LoadOptions};
use lb_testkit::nat46x64_lab::{
    check_closed_ports_refused, check_nat46x64_clients, closed_services, Nat46x64Lab, NodePorts,
};
use lb_testkit::{BpffsGuard, Topology};

#[test]
fn ipv4_clients_reach_ipv6_backends_and_the_reverse_through_tc() {
    lb_testkit::require_privileges();
    let topo = Topology::new(2).expect("topology");
    let np = NodePorts {
        nat46: 30046,
        nat64: 30064,
    };
    let lab = Nat46x64Lab::new(&topo, Some(np));
    let node = &lab.node;

    let bpffs = BpffsGuard::new().expect("bpffs");
    let pin_dir = bpffs.pin_path("lb");
    let _pins = Pins(pin_dir.clone());
    let mut devs = vec![topo.node_client_dev.clone()];
    devs.extend(topo.backends.iter().map(|b| b.node_link.name.clone()));
    let devs: Vec<&str> = devs.iter().map(String::as_str).collect();
    let _loaded = topo
        .node
        .run_in(|| lb_ebpf::load(&LoadOptions::new(&pin_dir, &devs)))
        .unwrap()
        .expect("load and attach");
    let mut dp = EbpfDataplane::open(&pin_dir, node).expect("open dataplane");
    let mut services = lab.services.clone();
    services.extend(closed_services(&topo));
    let desired = DesiredState::build(node, &services).unwrap();
    Reconciler::new().apply(&mut dp, &desired).unwrap();

    check_nat46x64_clients(&topo, Some(np));
    // A backend's port unreachable reaches the client in its family
    // (bpf/lb_nat46_icmp.h).
    check_closed_ports_refused(&topo);

    let c = dp.counters().expect("counters");
    let new_flows: u64 = c.services.values().map(|s| s.new_flows).sum();
    assert!(new_flows >= 16 * 6, "{new_flows} new flows");
    for r in [
        lb_ebpf::abi::DropReason::Rewrite,
        lb_ebpf::abi::DropReason::FragNeeded,
        lb_ebpf::abi::DropReason::SnatPorts,
        lb_ebpf::abi::DropReason::Nat46x64Icmp,
    ] {
        assert_eq!(c.drops_for(r), 0, "{r:?}: {:?}", c.drops);
    }
    drop(lab);
}
