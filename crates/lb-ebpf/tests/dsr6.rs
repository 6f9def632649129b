//! IPv6 direct server return end to end: real TCP and UDP sockets in
//! lb-testkit's routed [`DsrTopology`] (IPv6 addressing), the tc programs on
//! the node sending DSR flows to the backends in IPv6-in-IPv6
//! (`bpf/lb_dsr6.h`), the DSR backend side (`bpf/lb_dsr_backend.c`) on the
//! backends decapsulating and answering the client directly. Privileged
//! (root); each test is bounded by 10 s socket timeouts and a few dozen
//! requests. The lab and the checks shared with `dsr.rs` are in
//! `common/dsr_lab.rs`.

use std::net::SocketAddr;
use std::process::Command;

mod common;
#[path = "common/dsr_lab.rs"]
mod dsr_lab;

use dsr_lab::*;
use lb_core::*;
use lb_testkit::dsr_topology::{DsrTopology, Host, VIP6};
use lb_testkit::tcp_request;

/// A node with both its addresses (the IPv6 one is the outer source of
/// its IPv6-in-IPv6 packets).
fn node_config6(node: &Host, mode: LbMode) -> NodeConfig {
    node_config("node-1", &Fam::V6.node_ips(node), mode)
}

/// A counter of the client's `/proc/net/snmp6`.
fn snmp6(topo: &DsrTopology, name: &str) -> u64 {
    let out = topo.client.ns.exec_ok(&["cat", "/proc/net/snmp6"]).unwrap();
    out.lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(name)).then(|| it.next().unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("{name} not in snmp6"))
}

/// TCP (small and 256 KiB echoes) and UDP through the IPv6 LoadBalancer VIP
/// and the NodePort on the node's IPv6 address reach the backends in
/// IPv6-in-IPv6; replies come from the frontend and bypass the node, which
/// keeps no SNAT or reply state for them.
#[test]
fn dsr6_tcp_and_udp_reach_remote_backends_and_replies_bypass_the_node() {
    tcp_and_udp_reach_remote_backends_and_replies_bypass_the_node(Fam::V6, None, |dp| {
        assert_eq!(dp.maps().snat6.keys().count(), 0, "no IPv6 SNAT");
        for k in dp.maps().ct6.keys() {
            assert_eq!(k.unwrap().dir, 0, "only client-direction CT entries");
        }
    });
}

/// Over 1500-byte links everywhere, a full-sized IPv6 packet no longer fits
/// once encapsulated: the node counts it as `FragNeeded` and answers the
/// client with ICMPv6 Packet Too Big from the frontend (MTU 1500 - 40), so
/// the client's path MTU to the VIP becomes 1460 and smaller packets get
/// through. Then a large TCP request with the client's segmentation offload
/// off (every full-sized segment a packet of its own) is answered: its
/// first full-sized segments get Packet Too Big and TCP sends smaller ones.
/// Bounded: four UDP requests (2 s timeout for the dropped one) and one
/// 256 KiB echo.
#[test]
fn dsr6_packets_over_the_mtu_after_encapsulation_get_packet_too_big() {
    lb_testkit::require_privileges();
    let topo = DsrTopology::new(1, 1).expect("topology");
    let (_servers, _sides) = start_backends(&topo, Fam::V6);
    let node = &topo.nodes[0];
    let lb = start_lb(
        node,
        &node_config6(node, LbMode::Dsr),
        &services(&topo, Fam::V6),
    );
    client_link_1500(&topo);
    let dst = SocketAddr::from((VIP6, 53));
    let fits = vec![b'f'; 1400];
    assert!(udp_from(&topo, 0, dst, &fits).ends_with(&fits));
    assert_eq!(too_big(&lb), 0);

    // 1452 bytes of UDP payload: a 1500-byte IPv6 packet, 1540 encapsulated.
    let ptb0 = snmp6(&topo, "Icmp6InPktTooBigs");
    udp_unanswered(&topo, dst, &[b'b'; 1452]);
    assert_eq!(too_big(&lb), 1, "counted once as FragNeeded");
    assert_eq!(
        snmp6(&topo, "Icmp6InPktTooBigs") - ptb0,
        1,
        "the client got Packet Too Big"
    );
    let route = client_route(&topo, VIP6.into());
    assert!(route.contains("mtu 1460"), "path MTU to the VIP: {route}");
    assert!(udp_from(&topo, 0, dst, &fits).ends_with(&fits));

    // TCP to the NodePort (no path MTU learned for it yet), offloads off.
    let dev = topo.client.link.name.clone();
    let ethtool = Command::new("nsenter")
        .arg(format!("--net={}", topo.client.ns.path().display()))
        .args(["ethtool", "-K", &dev, "tso", "off", "gso", "off"])
        .status()
        .expect("run ethtool");
    assert!(ethtool.success(), "ethtool -K {dev} tso off gso off");
    let nodeport = SocketAddr::from((node.v6, 30080));
    assert!(
        !client_route(&topo, node.v6.into()).contains("mtu 1460"),
        "no path MTU to the node yet"
    );
    let big = vec![b'y'; 256 * 1024];
    let r = tcp_request(&topo.client.ns, nodeport, &big, TIMEOUT).expect("large TCP request");
    assert!(r.ends_with(&big), "echo of 256 KiB");
    let route = client_route(&topo, node.v6.into());
    assert!(
        route.contains("mtu 1460"),
        "path MTU to the node after a large request: {route}"
    );
    assert!(too_big(&lb) > 1, "the large request hit Packet Too Big");
}

/// A UDP request through IPv6 DSR to a backend port nobody listens on: the
/// backend's ICMPv6 port unreachable is translated back to the frontend on
/// its way out, so the client's connected socket sees the refusal.
/// Bounded: one request, 5 s read timeout.
#[test]
fn a_backends_icmpv6_port_unreachable_reaches_the_clients_socket_through_dsr() {
    a_backends_port_unreachable_reaches_the_clients_socket(Fam::V6, "default/void6");
}

/// Hybrid mode over IPv6: TCP goes in IPv6-in-IPv6, UDP is SNATed to the
/// node's IPv6 address (its replies return through the node). Bounded:
/// five TCP and five UDP requests.
#[test]
fn hybrid6_sends_tcp_with_dsr_and_udp_with_snat() {
    lb_testkit::require_privileges();
    let topo = DsrTopology::new(1, 2).expect("topology");
    let (_servers, sides) = start_backends(&topo, Fam::V6);
    let node = &topo.nodes[0];
    let mut lb = start_lb(
        node,
        &node_config6(node, LbMode::Hybrid),
        &services(&topo, Fam::V6),
    );
    tcp_goes_through_dsr(&topo, Fam::V6, &sides);
    let d1 = decapsulated(&sides);
    for i in 0..5 {
        let msg = format!("u{i}");
        let r = udp_from(&topo, 0, SocketAddr::from((VIP6, 53)), msg.as_bytes());
        assert!(r.ends_with(msg.as_bytes()), "{r:?}");
    }
    assert_eq!(decapsulated(&sides), d1, "UDP is not encapsulated");
    assert!(
        lb.dp.maps().snat6.keys().count() > 0,
        "UDP flows are SNATed"
    );
}
