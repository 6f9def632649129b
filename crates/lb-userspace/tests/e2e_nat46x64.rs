//! End to end NAT46/64 in network namespaces: real TCP and UDP clients in
//! the client namespace of an `lb_testkit::Topology` reach echo servers in
//! the backend namespaces through lb-userspace's I/O loop in the node
//! namespace, across IP families — an IPv4 client to an IPv4 ClusterIP
//! served only by IPv6 backends (NAT46), and an IPv6 client to an IPv6
//! ClusterIP served only by IPv4 backends (NAT64), TCP and UDP. The
//! backends see the node's address of their own family (translated flows
//! are always SNATed). A UDP client sending to a NAT46 (NAT64) service
//! whose backends do not listen gets ECONNREFUSED: the backend's ICMPv6
//! (ICMPv4) port unreachable reaches it translated (`nat46x64_icmp`).
//! Privileged; bounded (16 rounds of 4 requests, each with a 5 s timeout,
//! and at most 6 datagrams to the closed ports, 3 s timeout each).

mod common;

use lb_core::*;
use lb_testkit::nat46x64_lab::{
    check_closed_ports_refused, check_nat46x64_clients, closed_services, Nat46x64Lab,
};
use lb_testkit::Topology;
use lb_userspace::{Config, UserspaceDataplane};

use common::io_rig::{node_devices, with_io_loop};

#[test]
fn ipv4_clients_reach_ipv6_backends_and_the_reverse() {
    lb_testkit::require_privileges();
    let topo = Topology::new(2).expect("topology");
    let lab = Nat46x64Lab::new(&topo, None);
    let mut services = lab.services.clone();
    services.extend(closed_services(&topo));
    let desired = DesiredState::build(&lab.node, &services).unwrap();
    let mut dp = UserspaceDataplane::new(lab.node.clone(), Config::default());
    Reconciler::new().apply(&mut dp, &desired).unwrap();

    let devices = node_devices(&topo, None);

    let (stats, ()) = with_io_loop(&topo, devices, dp.worker(), || {
        check_nat46x64_clients(&topo, None);
        // A backend's port unreachable reaches the client in its family
        // (nat46x64_icmp).
        check_closed_ports_refused(&topo);
    });
    println!("counters: {:?}", dp.counters().services());
    assert!(stats.sent > 0 && stats.send_errors == 0, "{stats:?}");
    drop(lab);
}
