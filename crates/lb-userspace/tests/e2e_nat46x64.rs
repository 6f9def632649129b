//! End to end NAT46/64 in network namespaces: real TCP and UDP clients in
//! the client namespace of an `lb_testkit::Topology` reach echo servers in
//! the backend namespaces through lb-userspace's I/O loop in the node
//! namespace, across IP families — an IPv4 client to an IPv4 ClusterIP
//! served only by IPv6 backends (NAT46), and an IPv6 client to an IPv6
//! ClusterIP served only by IPv4 backends (NAT64), TCP and UDP. The
//! backends see the node's address of their own family (translated flows
//! are always SNATed). Privileged; bounded (every request has a 5 s timeout
//! and there are 24 of them).

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lb_core::*;
use lb_testkit::topology::{VIP_V4, VIP_V6};
use lb_testkit::{tcp_request, udp_request, EchoServer, Topology};
use lb_userspace::{Config, UserspaceDataplane};

use common::io_rig::{node_devices, with_io_loop};

fn fe(addr: String, kind: FrontendType) -> FrontendParams {
    FrontendParams::new(addr.parse().expect("frontend"), kind)
}

fn be(addr: String) -> BackendParams {
    BackendParams::new(addr.parse().expect("backend")).on_node("node-1")
}

#[test]
fn ipv4_clients_reach_ipv6_backends_and_the_reverse() {
    lb_testkit::require_privileges();
    let topo = Topology::new(2).expect("topology");
    let mut node = NodeConfig::new(
        "node-1",
        vec![IpAddr::V4(topo.node_v4), IpAddr::V6(topo.node_v6)],
    );
    node.nat46x64 = true;

    // NAT46: IPv4 frontends, IPv6 backends only.
    let mut s46 = Service::new("default/v6only".parse().unwrap());
    s46.frontends = vec![
        fe(format!("{VIP_V4}:80"), FrontendType::ClusterIp),
        fe(format!("{VIP_V4}:53/UDP"), FrontendType::ClusterIp),
    ];
    // NAT64: IPv6 frontends, IPv4 backends only.
    let mut s64 = Service::new("default/v4only".parse().unwrap());
    s64.frontends = vec![
        fe(format!("[{VIP_V6}]:80"), FrontendType::ClusterIp),
        fe(format!("[{VIP_V6}]:53/UDP"), FrontendType::ClusterIp),
    ];
    let mut servers = Vec::new();
    for b in &topo.backends {
        let tag = format!("backend-{}:", b.index + 1);
        for (svc, ip) in [(&mut s46, IpAddr::V6(b.v6)), (&mut s64, IpAddr::V4(b.v4))] {
            let tcp = SocketAddr::new(ip, 8080);
            servers.push(EchoServer::tcp_with_peer(&b.ns, tcp, tag.as_bytes()).unwrap());
            svc.backends.push(be(tcp.to_string()));
            let udp = SocketAddr::new(ip, 5353);
            servers.push(EchoServer::udp_with_peer(&b.ns, udp, tag.as_bytes()).unwrap());
            svc.backends.push(be(format!("{udp}/UDP")));
        }
    }
    let desired = DesiredState::build(&node, &[s46, s64]).unwrap();
    let mut dp = UserspaceDataplane::new(node, Config::default());
    Reconciler::new().apply(&mut dp, &desired).unwrap();

    let devices = node_devices(&topo, None);

    let node4 = topo.node_v4.to_string();
    let node6 = topo.node_v6.to_string();
    let (stats, ()) = with_io_loop(&topo, devices, dp.worker(), || {
        let t = Duration::from_secs(5);
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        let mut seen46 = BTreeSet::new();
        let mut seen64 = BTreeSet::new();
        // Random selection over two backends: with 16 requests a family
        // sees only one backend with probability 2^-15 (6 gave 3%).
        for i in 0..16 {
            let msg = format!("ping-{i}");
            // NAT46: the IPv6 backend sees the node's IPv6 address.
            let vip4 = SocketAddr::from((VIP_V4, 80));
            let out = text(tcp_request(&topo.client, vip4, msg.as_bytes(), t).expect("tcp NAT46"));
            assert!(out.ends_with(&msg), "{out}");
            assert!(
                out.contains(&format!("[[{node6}]:")),
                "not from the node's IPv6: {out}"
            );
            seen46.insert(out.split(':').next().unwrap().to_string());
            let out = text(
                udp_request(&topo.client, SocketAddr::from((VIP_V4, 53)), b"u46", t)
                    .expect("udp NAT46"),
            );
            assert!(
                out.contains(&format!("[[{node6}]:")) && out.ends_with("u46"),
                "{out}"
            );

            // NAT64: the IPv4 backend sees the node's IPv4 address.
            let vip6 = SocketAddr::from((VIP_V6, 80));
            let out = text(tcp_request(&topo.client, vip6, msg.as_bytes(), t).expect("tcp NAT64"));
            assert!(out.ends_with(&msg), "{out}");
            assert!(
                out.contains(&format!("[{node4}:")),
                "not from the node's IPv4: {out}"
            );
            seen64.insert(out.split(':').next().unwrap().to_string());
            let out = text(
                udp_request(&topo.client, SocketAddr::from((VIP_V6, 53)), b"u64", t)
                    .expect("udp NAT64"),
            );
            assert!(
                out.contains(&format!("[{node4}:")) && out.ends_with("u64"),
                "{out}"
            );
        }
        assert_eq!(seen46.len(), 2, "both IPv6 backends served: {seen46:?}");
        assert_eq!(seen64.len(), 2, "both IPv4 backends served: {seen64:?}");
    });
    println!("counters: {:?}", dp.counters().services());
    assert!(stats.sent > 0 && stats.send_errors == 0, "{stats:?}");
    drop(servers);
}
