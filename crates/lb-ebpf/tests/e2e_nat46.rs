//! End to end NAT46/64 through the tc programs (`bpf/lb_nat46.h`): real
//! TCP and UDP clients in the client namespace of an
//! `lb_testkit::Topology` reach echo servers in the backend namespaces
//! across IP families — an IPv4 client to an IPv4 ClusterIP and NodePort
//! served only by IPv6 backends (NAT46), and an IPv6 client to an IPv6
//! ClusterIP and NodePort served only by IPv4 backends (NAT64). The
//! programs are attached to the node's client-facing device and to its
//! backend-facing devices (the backends' replies to the node's address
//! arrive there). The backends see the node's address of their own
//! family (translated flows are always SNATed). Only addresses inside the
//! test's namespaces. Privileged (root).
//!
//! Bounded: one topology, 16 rounds of 8 requests, each with a 5 s
//! timeout (connect and every read/write).

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::Pins;
use lb_core::*;
use lb_ebpf::{EbpfDataplane, LoadOptions};
use lb_testkit::topology::{VIP_V4, VIP_V6};
use lb_testkit::{tcp_request, udp_request, BpffsGuard, EchoServer, Topology};

const TIMEOUT: Duration = Duration::from_secs(5);

fn fe(addr: String, kind: FrontendType) -> FrontendParams {
    FrontendParams::new(addr.parse().expect("frontend"), kind)
}

fn be(addr: String) -> BackendParams {
    BackendParams::new(addr.parse().expect("backend")).on_node("node-1")
}

#[test]
fn ipv4_clients_reach_ipv6_backends_and_the_reverse_through_tc() {
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
        fe("0.0.0.0:30046".into(), FrontendType::NodePort),
    ];
    // NAT64: IPv6 frontends, IPv4 backends only.
    let mut s64 = Service::new("default/v4only".parse().unwrap());
    s64.frontends = vec![
        fe(format!("[{VIP_V6}]:80"), FrontendType::ClusterIp),
        fe(format!("[{VIP_V6}]:53/UDP"), FrontendType::ClusterIp),
        fe("[::]:30064".into(), FrontendType::NodePort),
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
    let mut dp = EbpfDataplane::open(&pin_dir, &node).expect("open dataplane");
    let desired = DesiredState::build(&node, &[s46, s64]).unwrap();
    Reconciler::new().apply(&mut dp, &desired).unwrap();

    let node4 = topo.node_v4.to_string();
    let node6 = topo.node_v6.to_string();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    let mut seen46 = BTreeSet::new();
    let mut seen64 = BTreeSet::new();
    // Random selection over two backends: with 16 rounds a family sees
    // only one backend with probability 2^-15.
    for i in 0..16 {
        let msg = format!("ping-{i}");
        for dst in [
            SocketAddr::from((VIP_V4, 80)),
            SocketAddr::from((topo.node_v4, 30046)),
        ] {
            // NAT46: the IPv6 backend sees the node's IPv6 address.
            let out = text(
                tcp_request(&topo.client, dst, msg.as_bytes(), TIMEOUT)
                    .unwrap_or_else(|e| panic!("TCP NAT46 to {dst}: {e}")),
            );
            assert!(out.ends_with(&msg), "{out}");
            assert!(
                out.contains(&format!("[[{node6}]:")),
                "not from the node's IPv6: {out}"
            );
            seen46.insert(out.split(':').next().unwrap().to_string());
        }
        let out = text(
            udp_request(
                &topo.client,
                SocketAddr::from((VIP_V4, 53)),
                b"u46",
                TIMEOUT,
            )
            .expect("UDP NAT46"),
        );
        assert!(
            out.contains(&format!("[[{node6}]:")) && out.ends_with("u46"),
            "{out}"
        );
        for dst in [
            SocketAddr::from((VIP_V6, 80)),
            SocketAddr::from((topo.node_v6, 30064)),
        ] {
            // NAT64: the IPv4 backend sees the node's IPv4 address.
            let out = text(
                tcp_request(&topo.client, dst, msg.as_bytes(), TIMEOUT)
                    .unwrap_or_else(|e| panic!("TCP NAT64 to {dst}: {e}")),
            );
            assert!(out.ends_with(&msg), "{out}");
            assert!(
                out.contains(&format!("[{node4}:")),
                "not from the node's IPv4: {out}"
            );
            seen64.insert(out.split(':').next().unwrap().to_string());
        }
        let out = text(
            udp_request(
                &topo.client,
                SocketAddr::from((VIP_V6, 53)),
                b"u64",
                TIMEOUT,
            )
            .expect("UDP NAT64"),
        );
        assert!(
            out.contains(&format!("[{node4}:")) && out.ends_with("u64"),
            "{out}"
        );
    }
    assert_eq!(seen46.len(), 2, "both IPv6 backends served: {seen46:?}");
    assert_eq!(seen64.len(), 2, "both IPv4 backends served: {seen64:?}");

    let c = dp.counters().expect("counters");
    let new_flows: u64 = c.services.values().map(|s| s.new_flows).sum();
    assert!(new_flows >= 16 * 6, "{new_flows} new flows");
    for r in [
        lb_ebpf::abi::DropReason::Rewrite,
        lb_ebpf::abi::DropReason::FragNeeded,
        lb_ebpf::abi::DropReason::SnatPorts,
    ] {
        assert_eq!(c.drops_for(r), 0, "{r:?}: {:?}", c.drops);
    }
    drop(servers);
}
