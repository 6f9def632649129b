//! The generated kube-proxy rule sets work: each is loaded with
//! `iptables-restore` / `nft -f` into the node namespace of a throwaway
//! lb-testkit topology (never the root namespace), and TCP requests from
//! the client namespace reach the backends through a ClusterIP and a
//! NodePort; then one endpoint is replaced with kube-proxy's incremental
//! update and traffic follows. Privileged (root); bounded: a few dozen
//! requests with 5 s timeouts per test, normally well under 10 s.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use lb_benches::kubeproxy::{self, feed, iptables, nftables, ProxyConfig, ServicePort};
use lb_core::{
    BackendParams, FrontendParams, FrontendType, L3n4Addr, L4Proto, Service, ServiceName,
};
use lb_testkit::{tcp_request, EchoServer, Topology};

const TIMEOUT: Duration = Duration::from_secs(5);
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const NODE_PORT: u16 = 30080;

/// `default/other` (one unrelated service first, so the target is not the
/// first rule) and `default/web` with the given backends (topology numbers).
fn services(backends: &[u8]) -> Vec<Service> {
    let mut other = Service::new(ServiceName::new("default", "other"));
    other.frontends.push(FrontendParams::new(
        "10.96.0.9:80".parse().unwrap(),
        FrontendType::ClusterIp,
    ));
    other
        .backends
        .push(BackendParams::new("10.1.0.1:8080".parse().unwrap()));
    let mut web = Service::new(ServiceName::new("default", "web"));
    web.frontends.push(FrontendParams::new(
        L3n4Addr::new(CLUSTER_IP.into(), 80, L4Proto::Tcp),
        FrontendType::ClusterIp,
    ));
    web.frontends.push(FrontendParams::new(
        L3n4Addr::new(Ipv4Addr::UNSPECIFIED.into(), NODE_PORT, L4Proto::Tcp),
        FrontendType::NodePort,
    ));
    for k in backends {
        web.backends.push(BackendParams::new(L3n4Addr::new(
            lb_testkit::topology::backend_v4(*k).into(),
            8080,
            L4Proto::Tcp,
        )));
    }
    vec![other, web]
}

fn ports(backends: &[u8]) -> Vec<ServicePort> {
    kubeproxy::service_ports(&services(backends)).unwrap()
}

/// Which backends answered `n` requests to `addr` (tags `beK:`).
fn reached(topo: &Topology, addr: SocketAddr, n: usize) -> BTreeSet<u8> {
    (0..n)
        .map(|_| {
            let r = tcp_request(&topo.client, addr, b"hi", TIMEOUT)
                .unwrap_or_else(|e| panic!("request to {addr}: {e}"));
            assert!(r.ends_with(b"hi"), "{r:?}");
            let s = String::from_utf8_lossy(&r);
            s.strip_prefix("be")
                .and_then(|r| r.split(':').next())
                .and_then(|k| k.parse().ok())
                .unwrap_or_else(|| panic!("reply {s:?}"))
        })
        .collect()
}

struct Lab {
    _servers: Vec<EchoServer>,
    cfg: ProxyConfig,
    topo: Topology,
}

fn lab() -> Lab {
    lb_testkit::require_privileges();
    let topo = Topology::new(3).expect("topology");
    let servers = topo
        .backends
        .iter()
        .map(|b| {
            let tag = format!("be{}:", b.index + 1);
            EchoServer::tcp(&b.ns, SocketAddr::from((b.v4, 8080)), tag.as_bytes()).unwrap()
        })
        .collect();
    let cfg = ProxyConfig::new("10.0.0.0/8", "10.96.0.0/12", vec![topo.node_v4]);
    Lab {
        _servers: servers,
        cfg,
        topo,
    }
}

fn check(lab: &Lab, before: &BTreeSet<u8>) {
    let cip = SocketAddr::from((CLUSTER_IP, 80));
    let np = SocketAddr::from((lab.topo.node_v4, NODE_PORT));
    // 1 - 0.5^24: both backends are reached unless the spread is broken.
    assert_eq!(&reached(&lab.topo, cip, 24), before, "ClusterIP");
    assert!(before.is_superset(&reached(&lab.topo, np, 8)), "NodePort");
}

#[test]
fn iptables_mode_serves_clusterip_and_nodeport_and_follows_an_endpoint_change() {
    let lab = lab();
    let node = &lab.topo.node;
    let restore = || {
        let mut c = node.command("iptables-restore");
        c.args(["-w", "--noflush"]);
        c
    };
    feed(&mut restore(), &iptables::jump_rules()).expect("jump rules");
    let before = ports(&[1, 2]);
    feed(&mut restore(), &iptables::full_sync(&lab.cfg, &before)).expect("full sync");
    check(&lab, &BTreeSet::from([1, 2]));

    let after = ports(&[1, 3]);
    let stale = iptables::stale_chains(&before, &after);
    assert_eq!(stale.len(), 1, "{stale:?}");
    let partial = iptables::partial_sync(&lab.cfg, &after, &|i| i == 1, &stale);
    feed(&mut restore(), &partial).expect("partial sync");
    check(&lab, &BTreeSet::from([1, 3]));
    let listing = node.exec_ok(&["iptables-save", "-t", "nat"]).unwrap();
    assert!(!listing.contains(&stale[0]), "stale chain deleted");
    assert!(listing.contains("--probability 0.5"), "{listing}");
}

#[test]
fn nftables_mode_serves_clusterip_and_nodeport_and_follows_an_endpoint_change() {
    let lab = lab();
    let node = &lab.topo.node;
    let nft = || {
        let mut c = node.command("nft");
        c.args(["-f", "-"]);
        c
    };
    let before = ports(&[1, 2]);
    feed(&mut nft(), &nftables::full_sync(&lab.cfg, &before)).expect("full sync");
    check(&lab, &BTreeSet::from([1, 2]));

    let after = ports(&[1, 3]);
    feed(
        &mut nft(),
        &nftables::endpoint_change(&lab.cfg, &before[1], &after[1]),
    )
    .expect("endpoint change");
    check(&lab, &BTreeSet::from([1, 3]));
    let listing = node
        .exec_ok(&["nft", "list", "table", "ip", "kube-proxy"])
        .unwrap();
    assert!(listing.contains("numgen random mod 2 vmap"), "{listing}");
}
