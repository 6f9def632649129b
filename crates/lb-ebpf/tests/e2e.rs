//! End-to-end: real sockets through the tc programs in namespaces built by
//! lb-testkit (client ns -> node ns with the programs on its client-facing
//! veth -> backend namespaces running echo servers that answer with their
//! name). Privileged (root); everything lives in the test's own namespaces
//! and private bpffs.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use lb_core::*;
use lb_ebpf::{EbpfDataplane, LoadOptions};
use lb_testkit::topology::VIP_V4;
use lb_testkit::{tcp_request, udp_request, BpffsGuard, EchoServer, Topology};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Detaches and unpins on drop, also when the test panics.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        if let Err(e) = lb_ebpf::cleanup(&self.0) {
            eprintln!("cleanup {}: {e}", self.0.display());
        }
    }
}

fn svc(name: &str, frontends: &[(String, FrontendType)], backends: Vec<String>) -> Service {
    let mut s = Service::new(name.parse().unwrap());
    for (a, t) in frontends {
        s.frontends
            .push(FrontendParams::new(a.parse().unwrap(), *t));
    }
    for b in backends {
        s.backends.push(BackendParams::new(b.parse().unwrap()));
    }
    s
}

fn tag(k: usize) -> Vec<u8> {
    format!("be{k}:").into_bytes()
}

/// Which backend answered (the reply starts with its tag).
fn who(reply: &[u8]) -> usize {
    let s = String::from_utf8_lossy(reply);
    let k = s
        .strip_prefix("be")
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("unexpected reply {s:?}"));
    k.parse().unwrap()
}

/// Sends one datagram from a socket bound to `src_port` in the client ns.
fn udp_from_port(topo: &Topology, src_port: u16, dst: SocketAddr) -> Vec<u8> {
    let sock = topo
        .client
        .run_in(|| UdpSocket::bind(("0.0.0.0", src_port)))
        .unwrap()
        .unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    sock.send_to(b"ping", dst).unwrap();
    let mut buf = [0u8; 512];
    let (n, from) = sock.recv_from(&mut buf).expect("UDP reply");
    assert_eq!(from, dst, "reply must come from the frontend");
    buf[..n].to_vec()
}

#[test]
fn clusterip_nodeport_and_maglev_across_reload() {
    lb_testkit::require_privileges();
    let topo = Topology::new(3).expect("topology");
    let bpffs = BpffsGuard::new().expect("bpffs");
    let pin_dir = bpffs.pin_path("lb");
    let _pins = Pins(pin_dir.clone());
    let dev = topo.node_client_dev.clone();
    let opts = LoadOptions::new(&pin_dir, &[&dev]);
    let loaded = topo
        .node
        .run_in(|| lb_ebpf::load(&opts))
        .unwrap()
        .expect("load and attach");

    let mut servers = Vec::new();
    for b in &topo.backends {
        let k = b.index + 1;
        servers.push(EchoServer::tcp(&b.ns, SocketAddr::from((b.v4, 8080)), &tag(k)).unwrap());
        servers.push(EchoServer::udp(&b.ns, SocketAddr::from((b.v4, 5353)), &tag(k)).unwrap());
    }
    let tcp_backends: Vec<String> = topo
        .backends
        .iter()
        .map(|b| format!("{}:8080", b.v4))
        .collect();
    let udp_backends: Vec<String> = topo
        .backends
        .iter()
        .map(|b| format!("{}:5353/UDP", b.v4))
        .collect();
    let maglev_vip = "198.51.100.11";
    let web = svc(
        "default/web",
        &[
            (format!("{VIP_V4}:80"), FrontendType::ClusterIp),
            ("0.0.0.0:30080".into(), FrontendType::NodePort),
        ],
        tcp_backends,
    );
    let dns = svc(
        "default/dns",
        &[(format!("{VIP_V4}:53/UDP"), FrontendType::ClusterIp)],
        udp_backends.clone(),
    );
    let mut sticky = svc(
        "default/sticky",
        &[(format!("{maglev_vip}:53/UDP"), FrontendType::ClusterIp)],
        udp_backends,
    );
    sticky.algorithm = Some(LbAlgorithm::Maglev);
    let services = [web, dns, sticky];

    let mut node = NodeConfig::new("node-1", vec![topo.node_v4.into()]);
    node.maglev = MaglevConfig::new(251, 7).unwrap();
    let desired = DesiredState::build(&node, &services).unwrap();
    let mut dp = EbpfDataplane::open(&pin_dir, &node).expect("open dataplane");
    let mut rec = Reconciler::new();
    rec.apply(&mut dp, &desired).expect("reconcile");

    // ClusterIP TCP and UDP, NodePort on the node IP: every backend serves.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let r = tcp_request(&topo.client, SocketAddr::from((VIP_V4, 80)), b"hi", TIMEOUT)
            .expect("ClusterIP TCP");
        assert!(r.ends_with(b"hi"), "{r:?}");
        seen.insert(who(&r));
    }
    assert_eq!(seen.len(), 3, "random selection reached {seen:?}");
    let r = udp_request(&topo.client, SocketAddr::from((VIP_V4, 53)), b"q", TIMEOUT)
        .expect("ClusterIP UDP");
    assert!((1..=3).contains(&who(&r)) && r.ends_with(b"q"), "{r:?}");
    let r = tcp_request(
        &topo.client,
        SocketAddr::from((topo.node_v4, 30080)),
        b"np",
        TIMEOUT,
    )
    .expect("NodePort TCP");
    assert!((1..=3).contains(&who(&r)) && r.ends_with(b"np"), "{r:?}");

    // Maglev: the 5-tuple decides, as lb-core predicts.
    let dst = SocketAddr::new(maglev_vip.parse().unwrap(), 53);
    let key = FlowKey {
        src: topo.client_v4.into(),
        dst: dst.ip(),
        sport: 45000,
        dport: 53,
        proto: L4Proto::Udp,
    };
    let ctx = FlowContext {
        now: 0,
        entropy: 0,
        scope: Scope::External,
    };
    let verdict = flow::decide(rec.current(), &node, &mut FlowState::new(), &key, ctx);
    let Verdict::Forward(f) = verdict else {
        panic!("{verdict:?}")
    };
    let expected = topo
        .backends
        .iter()
        .position(|b| std::net::IpAddr::V4(b.v4) == f.backend.addr)
        .unwrap()
        + 1;
    assert_eq!(who(&udp_from_port(&topo, 45000, dst)), expected);

    // Restart: the agent goes away (programs stay attached through the
    // pinned links), connection tracking is flushed so only Maglev can
    // keep the flow on its backend, then a new loader re-opens the pins.
    drop(dp);
    drop(loaded);
    assert_eq!(
        who(&udp_from_port(&topo, 45000, dst)),
        expected,
        "without agent"
    );
    let loaded = topo
        .node
        .run_in(|| lb_ebpf::load(&opts))
        .unwrap()
        .expect("reload");
    let mut dp = EbpfDataplane::open(&pin_dir, &node).expect("reopen dataplane");
    let keys: Vec<_> = dp.maps().ct.keys().collect::<Result<_, _>>().unwrap();
    for k in keys {
        dp.maps().ct.remove(&k).unwrap();
    }
    assert_eq!(
        who(&udp_from_port(&topo, 45000, dst)),
        expected,
        "after reload"
    );
    // The reloaded dataplane knows the state: re-applying is a no-op diff.
    let mut rec2 = Reconciler::with_tables(rec.current().clone());
    assert_eq!(rec2.apply(&mut dp, &desired).unwrap(), 0);
    let counters = dp.counters().unwrap();
    assert!(counters.services.values().any(|s| s.new_flows > 0));
    drop(loaded);
}
