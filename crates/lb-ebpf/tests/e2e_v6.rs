//! End-to-end over IPv6: real TCP and UDP clients through the tc programs
//! in namespaces built by lb-testkit. The client namespace doubles as a
//! router to a "remote node" namespace (`fd00:99::/64`) whose backend the
//! node reaches through the client-facing device, so flows to it are
//! SNATed to the node's IPv6 address and redirected (bpf_fib_lookup
//! AF_INET6); a backend namespace behind the node's own link is a local
//! backend (DNAT only, replies reverse-NATed on egress). Only ULA addresses
//! inside the test's namespaces (DAD off, `nodad`). Privileged (root).
//!
//! Bounded: one topology, a fixed number of requests, each with a 5 s
//! timeout (connect and every read/write).

mod common;
#[path = "common/v6.rs"]
mod v6;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{service, Pins};
use lb_core::*;
use lb_ebpf::{EbpfDataplane, LoadOptions};
use lb_testkit::topology::VIP_V6;
use lb_testkit::{tcp_request, udp_request, BpffsGuard, EchoServer, NetNs, Topology, VethPair};

const TIMEOUT: Duration = Duration::from_secs(5);
const REMOTE_NET6: &str = "fd00:99::/64";
const REMOTE_BACKEND6: &str = "fd00:99::2";
const REMOTE_GW6: &str = "fd00:99::1";

#[test]
fn ipv6_clusterip_and_nodeport_to_remote_snat_and_local_backends() {
    lb_testkit::require_privileges();
    let topo = Topology::new(1).expect("topology");
    let remote = NetNs::with_label("remote6").expect("remote ns");
    remote
        .set_sysctl("net.ipv6.conf.all.accept_dad", "0")
        .unwrap();
    let _link = VethPair::builder(&topo.client, &remote)
        .name_a(lb_testkit::unique_name("rc"))
        .name_b(lb_testkit::unique_name("rr"))
        .addr_a(format!("{REMOTE_GW6}/64"))
        .addr_b(format!("{REMOTE_BACKEND6}/64"))
        .create()
        .expect("remote link");
    remote
        .add_route(&format!("default via {REMOTE_GW6}"))
        .unwrap();
    topo.client
        .set_sysctl("net.ipv6.conf.all.forwarding", "1")
        .unwrap();
    topo.node
        .add_route(&format!("{REMOTE_NET6} via {}", topo.client_v6))
        .unwrap();

    let bpffs = BpffsGuard::new().expect("bpffs");
    let pin_dir = bpffs.pin_path("lb");
    let _pins = Pins(pin_dir.clone());
    let dev = topo.node_client_dev.clone();
    let _loaded = topo
        .node
        .run_in(|| lb_ebpf::load(&LoadOptions::new(&pin_dir, &[&dev])))
        .unwrap()
        .expect("load and attach");
    let node = NodeConfig::new(
        "node-1",
        vec![topo.node_v4.into(), IpAddr::V6(topo.node_v6)],
    );
    let mut dp = EbpfDataplane::open(&pin_dir, &node).expect("open dataplane");

    let remote_ip: IpAddr = REMOTE_BACKEND6.parse().unwrap();
    let local_ip = IpAddr::V6(topo.backends[0].v6);
    let _servers = [
        EchoServer::tcp(&remote, SocketAddr::new(remote_ip, 8080), b"remote:").unwrap(),
        EchoServer::udp(&remote, SocketAddr::new(remote_ip, 5353), b"remote:").unwrap(),
        EchoServer::tcp(
            &topo.backends[0].ns,
            SocketAddr::new(local_ip, 8080),
            b"local:",
        )
        .unwrap(),
        EchoServer::udp(
            &topo.backends[0].ns,
            SocketAddr::new(local_ip, 5353),
            b"local:",
        )
        .unwrap(),
    ];
    let backend = |ip: IpAddr, port: &str, node: &str| {
        BackendParams::new(format!("[{ip}]:{port}").parse().unwrap()).on_node(node)
    };
    let (vip80, vip53) = (format!("[{VIP_V6}]:80"), format!("[{VIP_V6}]:53/UDP"));
    // ClusterIP-style VIP and NodePort, each to the remote backend (SNAT)...
    let mut web = service(
        "default/web",
        &[
            (vip80.as_str(), FrontendType::ClusterIp),
            ("[::]:30080", FrontendType::NodePort),
        ],
        &[],
    );
    web.backends = vec![backend(remote_ip, "8080", "node-2")];
    let mut dns = service(
        "default/dns",
        &[
            (vip53.as_str(), FrontendType::ClusterIp),
            ("[::]:30053/UDP", FrontendType::NodePort),
        ],
        &[],
    );
    dns.backends = vec![backend(remote_ip, "5353/UDP", "node-2")];
    // ... and to the local backend (DNAT, reverse NAT on egress).
    let mut web_local = service(
        "default/web-local",
        &[
            ("[fd00:ffff::11]:80", FrontendType::ClusterIp),
            ("[::]:30081", FrontendType::NodePort),
        ],
        &[],
    );
    web_local.backends = vec![backend(local_ip, "8080", "node-1")];
    let mut dns_local = service(
        "default/dns-local",
        &[
            ("[fd00:ffff::11]:53/UDP", FrontendType::ClusterIp),
            ("[::]:30054/UDP", FrontendType::NodePort),
        ],
        &[],
    );
    dns_local.backends = vec![backend(local_ip, "5353/UDP", "node-1")];
    v6::Programmer6::apply(&mut dp, &node, &[web, dns, web_local, dns_local]);

    let node6 = IpAddr::V6(topo.node_v6);
    let vip = IpAddr::V6(VIP_V6);
    let vip_local: IpAddr = "fd00:ffff::11".parse().unwrap();
    for (dst, tcp_port, udp_port, tag) in [
        (vip, 80, 53, "remote:"),
        (node6, 30080, 30053, "remote:"),
        (vip_local, 80, 53, "local:"),
        (node6, 30081, 30054, "local:"),
    ] {
        for i in 0..3 {
            let msg = format!("tcp{i}");
            let r = tcp_request(
                &topo.client,
                SocketAddr::new(dst, tcp_port),
                msg.as_bytes(),
                TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("TCP to [{dst}]:{tcp_port}: {e}"));
            assert_eq!(r, format!("{tag}{msg}").into_bytes(), "[{dst}]:{tcp_port}");
            let msg = format!("udp{i}");
            let r = udp_request(
                &topo.client,
                SocketAddr::new(dst, udp_port),
                msg.as_bytes(),
                TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("UDP to [{dst}]:{udp_port}: {e}"));
            assert_eq!(r, format!("{tag}{msg}").into_bytes(), "[{dst}]:{udp_port}");
        }
    }

    // The remote backend saw the node, not the client: every SNAT reverse
    // entry is keyed backend -> node IPv6 address.
    let keys: Vec<_> = dp.maps().snat6.keys().collect::<Result<_, _>>().unwrap();
    assert!(keys.len() >= 6, "{} SNAT entries", keys.len());
    assert!(keys.iter().all(|k| k.daddr == topo.node_v6.octets()));
    assert!(keys.iter().all(|k| k.saddr
        == REMOTE_BACKEND6
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets()));
    // The local backend's flows are DNATed only: they have reply entries.
    let ct: Vec<_> = dp.maps().ct6.keys().collect::<Result<_, _>>().unwrap();
    assert!(
        ct.iter()
            .any(|k| k.saddr == topo.backends[0].v6.octets() && k.dir == 1),
        "no reply entry of the local backend"
    );
}
