//! Load-balancer modes DSR and hybrid, end to end with real TCP and UDP
//! sockets in lb-testkit's routed [`DsrTopology`] (client, router, node
//! namespaces with the tc programs, backend namespaces with the DSR backend
//! side), plus the multi-node property: nodes with the same services and
//! Maglev seed send a flow to the same backend, and a TCP connection
//! survives moving from one node to the other. Privileged (root); each test
//! is bounded by 10 s socket timeouts and a few dozen requests (about 30 s
//! each on a loaded 2-core machine). The lab and the checks shared with
//! `dsr6.rs` are in `common/dsr_lab.rs`.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

mod common;
#[path = "common/dsr_lab.rs"]
mod dsr_lab;

use dsr_lab::*;
use lb_core::*;
use lb_testkit::dsr_topology::{DsrTopology, Host, VIP};
use lb_testkit::{tcp_connect, tcp_request};

/// At most this many TCP segments retransmitted by the client for the two
/// 256 KiB echoes. The path is lossless veths: a handful at most under
/// load; GSO packets lost on the node (their FIB lookup used to fail the
/// MTU check with the whole super-packet's length, and the packet then died
/// in the node's stack as a martian) cost 300-750 retransmits per echo and
/// 11-20 s each, where the echo now takes a few ms.
const MAX_BULK_RETRANS: u64 = 64;

/// Node `n` (1-based) of the IPv4 tests.
fn node_config_n(n: usize, node: &Host, mode: LbMode) -> NodeConfig {
    node_config(&format!("node-{n}"), &Fam::V4.node_ips(node), mode)
}

#[test]
fn dsr_tcp_and_udp_reach_remote_backends_and_replies_bypass_the_node() {
    tcp_and_udp_reach_remote_backends_and_replies_bypass_the_node(
        Fam::V4,
        Some(MAX_BULK_RETRANS),
        |dp| {
            // No CT reply or SNAT entries.
            assert_eq!(dp.maps().snat.keys().count(), 0);
            for k in dp.maps().ct.keys() {
                assert_eq!(k.unwrap().dir, 0, "only client-direction CT entries");
            }
        },
    );
}

#[test]
fn hybrid_sends_tcp_with_dsr_and_udp_with_snat() {
    lb_testkit::require_privileges();
    let topo = DsrTopology::new(1, 2).expect("topology");
    let (_servers, sides) = start_backends(&topo, Fam::V4);
    let node = &topo.nodes[0];
    let cfg = node_config_n(1, node, LbMode::Hybrid);
    let mut lb = start_lb(node, &cfg, &services(&topo, Fam::V4));

    tcp_goes_through_dsr(&topo, Fam::V4, &sides);

    let d1 = decapsulated(&sides);
    let n = 20;
    let rx = node_rx_during_udp(&topo, node, SocketAddr::from((VIP, 53)), n);
    assert_eq!(decapsulated(&sides), d1, "UDP is not encapsulated");
    assert!(
        rx >= 2 * n,
        "SNAT replies return through the node ({rx} packets)"
    );
    assert!(lb.dp.maps().snat.keys().count() > 0, "UDP flows are SNATed");
}

fn exchange(conn: &mut TcpStream, msg: &[u8]) {
    conn.write_all(msg)
        .expect("send on the long-lived connection");
    let mut back = vec![0u8; msg.len()];
    conn.read_exact(&mut back)
        .expect("echo on the long-lived connection");
    assert_eq!(back, msg);
}

#[test]
fn two_nodes_agree_on_backends_and_a_tcp_flow_survives_a_node_switch() {
    lb_testkit::require_privileges();
    let topo = DsrTopology::new(2, 3).expect("topology");
    let (_servers, _sides) = start_backends(&topo, Fam::V4);
    let services = services(&topo, Fam::V4);
    let cfgs: Vec<NodeConfig> = topo
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| node_config_n(i + 1, n, LbMode::Dsr))
        .collect();
    let lbs: Vec<Lb> = topo
        .nodes
        .iter()
        .zip(&cfgs)
        .map(|(n, c)| start_lb(n, c, &services))
        .collect();

    // The same client 5-tuple lands on the same backend through either
    // node, the one lb-core predicts.
    let dst = SocketAddr::from((VIP, 53));
    let rec = {
        let mut r = Reconciler::new();
        r.apply(
            &mut MemoryDataplane::new(),
            &DesiredState::build(&cfgs[0], &services).unwrap(),
        )
        .unwrap();
        r
    };
    let mut seen = std::collections::BTreeSet::new();
    for sport in (0..12u16).map(|i| 40000 + i * 1237) {
        let key = FlowKey {
            src: topo.client.v4.into(),
            dst: dst.ip(),
            sport,
            dport: 53,
            proto: L4Proto::Udp,
        };
        let ctx = FlowContext {
            now: 0,
            entropy: 0,
            scope: Scope::External,
        };
        let Verdict::Forward(f) = decide(rec.current(), &cfgs[0], &mut FlowState::new(), &key, ctx)
        else {
            panic!("no forward for {key:?}")
        };
        let expected = topo
            .backends
            .iter()
            .position(|b| IpAddr::V4(b.v4) == f.backend.addr)
            .unwrap()
            + 1;
        for via in 0..2 {
            topo.route_vip_via(via).unwrap();
            let got = who(&udp_from(&topo, sport, dst, b"x"));
            assert_eq!(got, expected, "port {sport} via node {}", via + 1);
        }
        seen.insert(expected);
    }
    assert!(seen.len() > 1, "flows spread over backends: {seen:?}");

    // A long-lived TCP connection moves between the nodes mid-flow.
    topo.route_vip_via(0).unwrap();
    let mut conn = tcp_connect(&topo.client.ns, SocketAddr::from((VIP, 80)), TIMEOUT)
        .expect("connect via node 1");
    let mut t = [0u8; 4];
    conn.read_exact(&mut t).expect("tag");
    let serving = who(&t);
    exchange(&mut conn, b"via node 1");
    let before: Vec<u64> = lbs.iter().map(service_packets).collect();
    topo.route_vip_via(1).unwrap();
    for i in 0..5 {
        exchange(&mut conn, format!("via node 2, round {i}").as_bytes());
    }
    topo.route_vip_via(0).unwrap();
    exchange(&mut conn, b"back via node 1");
    let after: Vec<u64> = lbs.iter().map(service_packets).collect();
    assert!(
        after[1] > before[1],
        "node 2 carried the flow: {before:?} -> {after:?}"
    );
    assert!(
        after[0] > before[0],
        "node 1 carried it again: {before:?} -> {after:?}"
    );
    // Still the same backend (the echo server's connection never broke).
    drop(conn);
    let r = tcp_request(
        &topo.client.ns,
        SocketAddr::from((VIP, 80)),
        b"new",
        TIMEOUT,
    )
    .unwrap();
    assert!(r.ends_with(b"new"));
    assert!((1..=3).contains(&serving));
}

/// Packets the node's programs counted for any service.
fn service_packets(lb: &Lb) -> u64 {
    lb.dp
        .counters()
        .unwrap()
        .services
        .values()
        .map(|s| s.packets)
        .sum()
}

/// A packet that no longer fits once encapsulated (the client link's MTU
/// raised to the node link's 1500, GSO off so the client's packets stay
/// single) is not forwarded: the node counts it as `FragNeeded` and
/// answers the client with ICMP fragmentation needed from the frontend
/// (`bpf/lb_dsr_icmp.h`), so the client learns a path MTU of 1480 to it;
/// a smaller packet still gets through. Bounded: three UDP requests, 2 s
/// read timeout for the unanswered one.
#[test]
fn dsr_packets_over_the_mtu_after_encapsulation_get_frag_needed() {
    lb_testkit::require_privileges();
    let topo = DsrTopology::new(1, 1).expect("topology");
    let (_servers, _sides) = start_backends(&topo, Fam::V4);
    let node = &topo.nodes[0];
    let cfg = node_config_n(1, node, LbMode::Dsr);
    let lb = start_lb(node, &cfg, &services(&topo, Fam::V4));
    client_link_1500(&topo);
    let dst = SocketAddr::from((VIP, 53));
    let fits = vec![b'f'; 1400];
    assert!(udp_from(&topo, 0, dst, &fits).ends_with(&fits));
    assert_eq!(too_big(&lb), 0);

    // 1472 bytes of UDP payload: a 1500-byte IPv4 packet, 1520 in IPIP.
    udp_unanswered(&topo, dst, &[b'b'; 1472]);
    assert_eq!(too_big(&lb), 1, "counted once as FragNeeded");
    let snmp = topo.client.ns.exec_ok(&["cat", "/proc/net/snmp"]).unwrap();
    let icmp: Vec<Vec<&str>> = snmp
        .lines()
        .filter(|l| l.starts_with("Icmp:"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let col = icmp[0].iter().position(|k| *k == "InDestUnreachs").unwrap();
    assert_eq!(icmp[1][col], "1", "the client got fragmentation needed");
    let route = client_route(&topo, VIP.into());
    assert!(route.contains("mtu 1480"), "path MTU to the VIP: {route}");
    assert!(udp_from(&topo, 0, dst, &fits).ends_with(&fits));
}

/// The backend side takes DSR traffic only from the nodes it was given:
/// with node 2 left out, requests through node 2 are dropped on the
/// backend and counted as from an unknown node, requests through node 1
/// are served. Bounded: five UDP requests, 2 s read timeout for the dropped
/// ones.
#[test]
fn backends_take_dsr_traffic_only_from_their_load_balancing_nodes() {
    lb_testkit::require_privileges();
    let topo = DsrTopology::new(2, 1).expect("topology");
    let (_servers, mut sides) = start_backends_for(&topo, Fam::V4, &[topo.nodes[0].v4]);
    let services = services(&topo, Fam::V4);
    let _lbs: Vec<Lb> = topo
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| start_lb(n, &node_config_n(i + 1, n, LbMode::Dsr), &services))
        .collect();
    let dst = SocketAddr::from((VIP, 53));

    assert!(udp_from(&topo, 0, dst, b"via 1").ends_with(b"via 1"));
    assert_eq!(sides[0].stats().unwrap().unknown_node, 0);

    topo.route_vip_via(1).unwrap();
    let sock = client_udp(&topo, Fam::V4, 0, Duration::from_secs(2));
    let mut buf = [0u8; 256];
    for _ in 0..2 {
        sock.send_to(b"via 2", dst).unwrap();
        assert!(sock.recv_from(&mut buf).is_err(), "served through node 2");
    }
    assert_eq!(
        sides[0].stats().unwrap().unknown_node,
        2,
        "both dropped as from an unknown node"
    );
    assert_eq!(sides[0].stats().unwrap().decapsulated, 1);

    // Allowing node 2 at run time lets it in.
    sides[0]
        .set_nodes(&[topo.nodes[0].v4, topo.nodes[1].v4])
        .unwrap();
    assert!(udp_from(&topo, 0, dst, b"via 2 now").ends_with(b"via 2 now"));
    assert_eq!(sides[0].stats().unwrap().unknown_node, 2);
}

/// A UDP request through DSR to a backend port nobody listens on: the
/// backend's port unreachable reaches the client's connected socket
/// translated back to the frontend. Bounded: one request, 5 s read timeout.
#[test]
fn a_backends_port_unreachable_reaches_the_clients_socket_through_dsr() {
    a_backends_port_unreachable_reaches_the_clients_socket(Fam::V4, "default/void");
}
