//! SNAT mode: a backend that lb-core marks remote (`Backend::local` false)
//! and whose route leaves through one of the devices the programs are
//! attached to gets the client SNATed to the node IP; the reply comes back
//! on the same device and is translated back to the client with the
//! frontend as its source. Packet-level (PROG_TEST_RUN inside a namespace
//! whose routes send the backend through the listed device) and end to end
//! (a remote "node" namespace behind the client link). Privileged (root).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use lb_core::*;
use lb_ebpf::abi::{CT_F_SNAT, SNAT_PORT_MAX, SNAT_PORT_MIN};
use lb_ebpf::{EbpfDataplane, LoadOptions};
use lb_testkit::topology::VIP_V4;
use lb_testkit::{tcp_request, udp_request, BpffsGuard, EchoServer, NetNs, Topology, VethPair};

const TIMEOUT: Duration = Duration::from_secs(5);
/// The remote node's pod subnet, routed through the client link.
const REMOTE_NET: &str = "10.99.0.0/24";
const REMOTE_BACKEND: &str = "10.99.0.2";
const REMOTE_GW: &str = "10.99.0.1";

/// A topology whose node routes [`REMOTE_NET`] through the client
/// namespace (a router), with a remote backend namespace behind it.
struct RemoteTopology {
    topo: Topology,
    remote: NetNs,
    _link: VethPair,
}

fn remote_topology() -> RemoteTopology {
    lb_testkit::require_privileges();
    let topo = Topology::new(0).expect("topology");
    let remote = NetNs::with_label("remote").expect("remote ns");
    let link = VethPair::builder(&topo.client, &remote)
        .name_a(lb_testkit::unique_name("rc"))
        .name_b(lb_testkit::unique_name("rr"))
        .addr_a(format!("{REMOTE_GW}/24"))
        .addr_b(format!("{REMOTE_BACKEND}/24"))
        .create()
        .expect("remote link");
    remote
        .add_route(&format!("default via {REMOTE_GW}"))
        .unwrap();
    topo.client.set_sysctl("net.ipv4.ip_forward", "1").unwrap();
    topo.node
        .add_route(&format!("{REMOTE_NET} via {}", topo.client_v4))
        .unwrap();
    RemoteTopology {
        topo,
        remote,
        _link: link,
    }
}

fn remote_service(name: &str, fe: &str, be: &str, node: &str) -> Service {
    let mut s = service(name, &[(fe, FrontendType::ClusterIp)], &[]);
    s.backends = vec![BackendParams::new(be.parse().unwrap()).on_node(node)];
    s
}

/// A fixture loaded in the node namespace with the programs on the
/// client-facing device (so routes through it count as remote).
fn node_fixture(rt: &RemoteTopology) -> Fixture {
    let node = NodeConfig::new("node-1", vec![rt.topo.node_v4.into()]);
    let bpffs = BpffsGuard::new().expect("bpffs");
    let dev = rt.topo.node_client_dev.clone();
    let loaded = rt
        .topo
        .node
        .run_in(|| lb_ebpf::load(&LoadOptions::new(bpffs.pin_path("lb"), &[&dev])))
        .unwrap()
        .expect("load");
    let dp = EbpfDataplane::open(loaded.pin_dir(), &node).expect("open dataplane");
    Fixture {
        loaded,
        dp,
        rec: Reconciler::new(),
        node,
        flows: FlowState::new(),
        bpffs,
    }
}

/// [`node_fixture`] with `default/web` (ClusterIP `10.96.0.10:80`) served
/// by the remote backend (`REMOTE_BACKEND:8080`, on node-2); returns the
/// fixture and the backend's `ADDR:PORT`.
fn remote_web(rt: &RemoteTopology) -> (Fixture, String) {
    let mut fx = node_fixture(rt);
    let be = format!("{REMOTE_BACKEND}:8080");
    fx.apply(&[remote_service(
        "default/web",
        "10.96.0.10:80",
        &be,
        "node-2",
    )]);
    (fx, be)
}

#[test]
fn remote_backend_is_snated_and_the_reply_reverse_translated() {
    let rt = remote_topology();
    let (mut fx, be) = remote_web(&rt);
    let client = format!("{}:61500", rt.topo.client_v4);
    let node_ip = rt.topo.node_v4;

    let frame = tcp(&client, "10.96.0.10:80");
    let v = fx.decide(&flow_key(&frame), 0);
    let Verdict::Forward(f) = v else {
        panic!("{v:?}")
    };
    assert_eq!(f.snat, Some(node_ip.into()), "lb-core: remote => SNAT");
    let (_, out) = rt.topo.node.run_in(|| fx.ingress(&frame)).unwrap();
    let (src, dst) = endpoints(&out);
    assert_eq!(dst, sa(&be));
    assert_eq!(
        src.ip(),
        std::net::IpAddr::from(node_ip),
        "source is the node IP"
    );
    assert!((SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&src.port()));
    let snat_port = src.port();
    // The client's port was in range, so it is kept when free.
    assert_eq!(snat_port, 61500);
    assert_eq!(lb_testkit::parse(&out).unwrap().payload, b"hello");

    // Same flow again: same translation (connection tracking).
    let (_, again) = rt.topo.node.run_in(|| fx.ingress(&frame)).unwrap();
    assert_eq!(endpoints(&again), (src, dst));
    let ct: Vec<_> = fx.dp.maps().ct.iter().collect::<Result<_, _>>().unwrap();
    assert!(ct.iter().any(|(_, e)| e.flags & CT_F_SNAT != 0), "{ct:?}");

    // The reply arrives on the same device's ingress: back to the client,
    // from the frontend.
    let reply = tcp(&be, &format!("{node_ip}:{snat_port}"));
    let (_, back) = rt.topo.node.run_in(|| fx.ingress(&reply)).unwrap();
    assert_eq!(endpoints(&back), (sa("10.96.0.10:80"), sa(&client)));

    // A second client with the same port collides on the reverse key and
    // gets another port from the range.
    let other = tcp("192.168.10.3:61500", "10.96.0.10:80");
    let (_, out2) = rt.topo.node.run_in(|| fx.ingress(&other)).unwrap();
    let (src2, _) = endpoints(&out2);
    assert_eq!(src2.ip(), std::net::IpAddr::from(node_ip));
    assert_ne!(src2.port(), snat_port);
    assert!((SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&src2.port()));

    // gc: live SNAT entries stay; once their flows expire, they go too.
    let now = lb_ebpf::now_secs();
    assert_eq!(fx.dp.gc(now).unwrap().snat, 0);
    let stats = fx.dp.gc(now + 6 * 3600 + 2).unwrap();
    assert_eq!((stats.ct, stats.snat), (2, 2), "{stats:?}");
    assert_eq!(fx.dp.maps().snat.keys().count(), 0);
}

#[test]
fn local_backends_and_policy_local_keep_the_client_ip() {
    let rt = remote_topology();
    let mut fx = node_fixture(&rt);
    let be = format!("{REMOTE_BACKEND}:8080");
    // Marked local (on this node): never SNATed, even through our device.
    let local = remote_service("default/local", "10.96.0.20:80", &be, "node-1");
    // Traffic policy Local keeps the client address as well.
    let mut policy = service(
        "default/policy",
        &[("203.0.113.9:80", FrontendType::LoadBalancer)],
        &[],
    );
    policy.backends = vec![BackendParams::new(be.parse().unwrap()).on_node("node-1")];
    policy.ext_traffic_policy = TrafficPolicy::Local;
    fx.apply(&[local, policy]);
    // One client port per frontend: the two flows go to the same backend,
    // and one port to both would clash on the reply tuple (the second flow
    // would get another port, lb_ctport.h).
    for (fe, port) in [("10.96.0.20:80", 40001), ("203.0.113.9:80", 40002)] {
        let client = format!("{}:{port}", rt.topo.client_v4);
        let frame = tcp(&client, fe);
        let v = fx.decide(&flow_key(&frame), 0);
        assert!(
            matches!(v, Verdict::Forward(Forward { snat: None, .. })),
            "{v:?}"
        );
        let (rv, out) = rt.topo.node.run_in(|| fx.ingress(&frame)).unwrap();
        assert_eq!(rv, TC_ACT_OK);
        assert_eq!(endpoints(&out), (sa(&client), sa(&be)), "{fe}");
    }
}

#[test]
fn remote_backend_end_to_end_through_the_client_link() {
    let rt = remote_topology();
    let mut fx = node_fixture(&rt);
    let tcp_be = SocketAddr::new(REMOTE_BACKEND.parse().unwrap(), 8080);
    let udp_be = SocketAddr::new(REMOTE_BACKEND.parse().unwrap(), 5353);
    let _servers = [
        EchoServer::tcp(&rt.remote, tcp_be, b"remote:").unwrap(),
        EchoServer::udp(&rt.remote, udp_be, b"remote:").unwrap(),
    ];
    let mut web = remote_service(
        "default/web",
        &format!("{VIP_V4}:80"),
        &tcp_be.to_string(),
        "node-2",
    );
    web.frontends.push(FrontendParams::new(
        "0.0.0.0:30080".parse().unwrap(),
        FrontendType::NodePort,
    ));
    let dns = remote_service(
        "default/dns",
        &format!("{VIP_V4}:53/UDP"),
        &format!("{udp_be}/UDP"),
        "node-2",
    );
    fx.apply(&[web, dns]);

    for _ in 0..3 {
        let r = tcp_request(
            &rt.topo.client,
            SocketAddr::from((VIP_V4, 80)),
            b"hi",
            TIMEOUT,
        )
        .expect("ClusterIP TCP to a remote backend");
        assert_eq!(r, b"remote:hi");
    }
    let r = tcp_request(
        &rt.topo.client,
        SocketAddr::from((rt.topo.node_v4, 30080)),
        b"np",
        TIMEOUT,
    )
    .expect("NodePort TCP to a remote backend");
    assert_eq!(r, b"remote:np");
    let r = udp_request(
        &rt.topo.client,
        SocketAddr::from((VIP_V4, 53)),
        b"q",
        TIMEOUT,
    )
    .expect("ClusterIP UDP to a remote backend");
    assert_eq!(r, b"remote:q");

    // The backend saw the node, not the client: every reverse entry is
    // keyed backend -> node IP.
    let node_be32 = u32::from_ne_bytes(rt.topo.node_v4.octets());
    let keys: Vec<_> = fx.dp.maps().snat.keys().collect::<Result<_, _>>().unwrap();
    assert!(keys.len() >= 5, "{keys:?}");
    assert!(keys.iter().all(|k| k.daddr == node_be32));
}

#[test]
fn a_new_snated_flow_opened_by_fin_or_rst_is_closing() {
    use lb_ebpf::abi::{CT_F_CLOSING, CT_SERVICE};
    let rt = remote_topology();
    let (mut fx, be) = remote_web(&rt);
    let client = format!("{}:61501", rt.topo.client_v4);
    let rst = lb_testkit::PacketBuilder::tcp(sa(&client), sa("10.96.0.10:80"))
        .rst()
        .build()
        .unwrap();
    let (_, out) = rt.topo.node.run_in(|| fx.ingress(&rst)).unwrap();
    assert_eq!(endpoints(&out).1, sa(&be));
    let ct: Vec<_> = fx.dp.maps().ct.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(ct.len(), 1, "SNATed flows track the service direction only");
    let (k, e) = &ct[0];
    assert_eq!(k.dir, CT_SERVICE);
    assert_eq!(e.flags & CT_F_SNAT, CT_F_SNAT, "{e:?}");
    assert_eq!(e.flags & CT_F_CLOSING, CT_F_CLOSING, "{e:?}");
    // So it goes with the short closing lifetime.
    let now = lb_ebpf::now_secs();
    assert_eq!(fx.dp.gc(now + 12).unwrap().ct, 1);
}
