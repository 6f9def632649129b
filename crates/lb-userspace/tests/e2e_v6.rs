//! End to end over IPv6 and dual-stack in network namespaces: real TCP and
//! UDP clients in the client namespace of an `lb_testkit::Topology` reach
//! echo servers in the backend namespaces through lb-userspace's I/O loop
//! in the node namespace — over an IPv6 ClusterIP (TCP and UDP), an IPv6
//! NodePort on the node's address, the IPv4 ClusterIP of the same
//! (dual-stack) service, and an IPv6 ClusterIP whose backend is on another
//! node, so the client is SNATed to the node's IPv6 address (the backend
//! sees the node as the peer). Privileged; bounded (a few seconds: every
//! request has a 5 s timeout and there are 30 of them).

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

fn be(addr: String, node: &str) -> BackendParams {
    BackendParams::new(addr.parse().expect("backend")).on_node(node)
}

#[test]
fn ipv6_and_dual_stack_clients_reach_backends_through_the_io_loop() {
    lb_testkit::require_privileges();
    let topo = Topology::new(2).expect("topology");
    let node = NodeConfig::new(
        "node-1",
        vec![IpAddr::V4(topo.node_v4), IpAddr::V6(topo.node_v6)],
    );

    // One dual-stack service with node-local backends of both families.
    let mut echo = Service::new("default/echo".parse().unwrap());
    echo.frontends = vec![
        fe(format!("{VIP_V4}:80"), FrontendType::ClusterIp),
        fe(format!("[{VIP_V6}]:80"), FrontendType::ClusterIp),
        fe(format!("[{VIP_V6}]:53/UDP"), FrontendType::ClusterIp),
        fe("[::]:30080".into(), FrontendType::NodePort),
    ];
    let mut servers = Vec::new();
    for b in &topo.backends {
        let tag = format!("backend-{}:", b.index + 1);
        for ip in [IpAddr::V4(b.v4), IpAddr::V6(b.v6)] {
            let tcp = SocketAddr::new(ip, 8080);
            servers.push(EchoServer::tcp_with_peer(&b.ns, tcp, tag.as_bytes()).unwrap());
            echo.backends.push(be(tcp.to_string(), "node-1"));
        }
        let udp = SocketAddr::new(IpAddr::V6(b.v6), 5353);
        servers.push(EchoServer::udp_with_peer(&b.ns, udp, tag.as_bytes()).unwrap());
        echo.backends.push(be(format!("{udp}/UDP"), "node-1"));
    }
    // An IPv6 service whose backend (its own address and port: placement
    // is per backend address) counts as remote: SNAT to the node.
    let far_addr = SocketAddr::new(IpAddr::V6(topo.backends[0].v6), 8081);
    servers.push(EchoServer::tcp_with_peer(&topo.backends[0].ns, far_addr, b"far-1:").unwrap());
    let mut far = Service::new("default/far".parse().unwrap());
    far.frontends = vec![fe(format!("[{VIP_V6}]:81"), FrontendType::ClusterIp)];
    far.backends = vec![be(far_addr.to_string(), "node-2")];
    let desired = DesiredState::build(&node, &[echo, far]).unwrap();
    let mut dp = UserspaceDataplane::new(node, Config::default());
    Reconciler::new().apply(&mut dp, &desired).unwrap();

    let devices = node_devices(&topo, None);

    let client6 = topo.client_v6.to_string();
    let node6 = topo.node_v6.to_string();
    let (stats, ()) = with_io_loop(&topo, devices, dp.worker(), || {
        let t = Duration::from_secs(5);
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        let mut seen = BTreeSet::new();
        for i in 0..8 {
            let msg = format!("ping-{i}");
            let vip6 = SocketAddr::from((VIP_V6, 80));
            let out = text(tcp_request(&topo.client, vip6, msg.as_bytes(), t).expect("tcp6 VIP"));
            assert!(out.ends_with(&msg), "{out}");
            // A node-local backend sees the client's own address.
            assert!(out.contains(&format!("[[{client6}]:")), "{out}");
            seen.insert(out.split(':').next().unwrap().to_string());

            let out = udp_request(&topo.client, SocketAddr::from((VIP_V6, 53)), b"u", t)
                .expect("udp6 VIP");
            assert!(text(out).contains(&format!("[[{client6}]:")));

            // The IPv4 ClusterIP of the same service reaches IPv4 backends.
            let out = text(
                tcp_request(&topo.client, SocketAddr::from((VIP_V4, 80)), b"v4", t)
                    .expect("tcp4 VIP"),
            );
            assert!(out.contains("[192.168.10.2:"), "{out}");
        }
        assert_eq!(seen.len(), 2, "both backends served over IPv6: {seen:?}");

        let np = SocketAddr::from((topo.node_v6, 30080));
        let out = text(tcp_request(&topo.client, np, b"np", t).expect("tcp6 NodePort"));
        assert!(out.ends_with("np"), "{out}");

        // Remote backend: the backend sees the node's IPv6 address.
        for _ in 0..3 {
            let far = SocketAddr::from((VIP_V6, 81));
            let out = text(tcp_request(&topo.client, far, b"far", t).expect("tcp6 SNAT"));
            assert!(out.starts_with("far-1:"), "{out}");
            assert!(out.contains(&format!("[[{node6}]:")), "not SNATed: {out}");
        }
    });
    println!("counters: {:?}", dp.counters().services());
    assert!(stats.sent > 0 && stats.send_errors == 0, "{stats:?}");
    drop(servers);
}
