//! End to end NAT46/64 in network namespaces: real TCP and UDP clients in
//! the client namespace of an `lb_testkit::Topology` reach echo servers in
//! the backend namespaces through lb-userspace's I/O loop in the node
//! namespace, across IP families — an IPv4 client to an IPv4 ClusterIP
//! served only by IPv6 backends (NAT46), and an IPv6 client to an IPv6
//! ClusterIP served only by IPv4 backends (NAT64), TCP and UDP. The
//! backends see the node's address of their own family (translated flows
//! are always SNATed). Privileged; bounded (16 rounds of 4 requests,
//! each with a 5 s timeout).

mod common;

use lb_core::*;
use lb_testkit::nat46x64_lab::{check_nat46x64_clients, Nat46x64Lab};
use lb_testkit::Topology;
use lb_userspace::{Config, UserspaceDataplane};

use common::io_rig::{node_devices, with_io_loop};

#[test]
fn ipv4_clients_reach_ipv6_backends_and_the_reverse() {
    lb_testkit::require_privileges();
    let topo = Topology::new(2).expect("topology");
    let lab = Nat46x64Lab::new(&topo, None);
    let desired = DesiredState::build(&lab.node, &lab.services).unwrap();
    let mut dp = UserspaceDataplane::new(lab.node.clone(), Config::default());
    Reconciler::new().apply(&mut dp, &desired).unwrap();

    let devices = node_devices(&topo, None);

    let (stats, ()) = with_io_loop(&topo, devices, dp.worker(), || {
        check_nat46x64_clients(&topo, None);
    });
    println!("counters: {:?}", dp.counters().services());
    assert!(stats.sent > 0 && stats.send_errors == 0, "{stats:?}");
    drop(lab);
}
