//! End to end, dual-stack, on both dataplanes (`--dataplane userspace` and
//! the default eBPF one): the built `lb-agent` binary runs in the node
//! namespace of an `lb_testkit::Topology` and reads a Service with
//! `ipFamilies: [IPv4, IPv6]` (a ClusterIP of each family, a NodePort) and
//! EndpointSlices of `addressType` IPv4 and IPv6. `service list` shows the
//! IPv6 frontends as `[ADDR]:PORT` with the IPv6 backends, and real TCP and
//! UDP clients in the client namespace reach both backends through the IPv6
//! ClusterIP, the IPv6 NodePort on the node's address, and the IPv4
//! ClusterIP of the same Service. On eBPF, `status --verbose` shows the
//! lb6_* maps' fill. Privileged; bounded (every request has a 3 s timeout,
//! the agent gets 15 s to sync).

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::time::Duration;

use common::agent::{cli, row_backends, service_list, tcp_answers, within, Agent, Dirs};
use lb_testkit::{udp_request, EchoServer, Topology};

const TIMEOUT: Duration = Duration::from_secs(3);

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00:96::10"]
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30080}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-v4
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
- addresses: [10.200.1.2]
  conditions: {ready: true}
  nodeName: node-1
- addresses: [10.200.2.2]
  conditions: {ready: true}
  nodeName: node-1
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-v6
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv6
ports: [{name: http, port: 8080, protocol: TCP}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
- addresses: ["fd00:200:1::2"]
  conditions: {ready: true}
  nodeName: node-1
- addresses: ["fd00:200:2::2"]
  conditions: {ready: true}
  nodeName: node-1
"#;

/// Starts the agent with `args` (plus `--node-ip` of the node's IPv6
/// address) in front of two dual-stack echo backends, checks `service list`
/// and real clients of both families, then runs `check` with the agent
/// still serving.
fn serves_a_dual_stack_service(args: &[&str], check: impl FnOnce(&Dirs, &mut Agent)) {
    lb_testkit::require_privileges();
    let topo = Topology::new(2).expect("topology");
    let mut servers = Vec::new();
    for b in &topo.backends {
        let tag = format!("be{}:", b.index + 1);
        for ip in [std::net::IpAddr::V4(b.v4), std::net::IpAddr::V6(b.v6)] {
            let tcp = SocketAddr::new(ip, 8080);
            servers.push(EchoServer::tcp(&b.ns, tcp, tag.as_bytes()).unwrap());
            let udp = SocketAddr::new(ip, 5353);
            servers.push(EchoServer::udp_with_peer(&b.ns, udp, tag.as_bytes()).unwrap());
        }
    }
    let dirs = Dirs::new();
    dirs.write("web.yaml", WEB);
    let node6 = topo.node_v6.to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--node-ip", &node6]);
    let mut agent = Agent::start_with(
        &topo,
        &dirs,
        &all.iter().map(OsStr::new).collect::<Vec<_>>(),
    );

    // `service list` shows both families once the first sync ran.
    let np6 = format!("[{node6}]:30080");
    let mut rows = Vec::new();
    within(Duration::from_secs(15), "dual-stack service list", || {
        rows = service_list(&dirs.state).unwrap_or_default();
        rows.iter().any(|r| r.1 == np6)
    });
    let frontends: BTreeSet<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    for want in [
        "10.96.0.10:80",
        "[fd00:96::10]:80",
        "[fd00:96::10]:53",
        "[::]:30080",
        np6.as_str(),
        "192.168.10.1:30080",
    ] {
        assert!(frontends.contains(want), "{want} in {frontends:?}");
    }
    assert_eq!(
        row_backends(&rows, "[fd00:96::10]:80"),
        BTreeSet::from([
            "[fd00:200:1::2]:8080 (active)".to_string(),
            "[fd00:200:2::2]:8080 (active)".to_string()
        ]),
        "{rows:?}"
    );

    let both = BTreeSet::from(["be1".to_string(), "be2".to_string()]);
    let vip6: SocketAddr = "[fd00:96::10]:80".parse().unwrap();
    assert_eq!(tcp_answers(&topo, vip6, 20, None), both, "IPv6 ClusterIP");
    let np6: SocketAddr = np6.parse().unwrap();
    assert!(
        tcp_answers(&topo, np6, 5, None).is_subset(&both),
        "IPv6 NodePort"
    );
    let vip4: SocketAddr = "10.96.0.10:80".parse().unwrap();
    assert_eq!(tcp_answers(&topo, vip4, 20, None), both, "IPv4 ClusterIP");
    // UDP over IPv6: the node-local backend sees the client's own address.
    let out = udp_request(
        &topo.client,
        "[fd00:96::10]:53".parse().unwrap(),
        b"q",
        TIMEOUT,
    )
    .expect("IPv6 UDP through the ClusterIP");
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains(&format!("[[{}]:", topo.client_v6)),
        "client address kept: {out}"
    );
    check(&dirs, &mut agent);
    drop(servers);
}

#[test]
fn userspace_agent_serves_a_dual_stack_service() {
    serves_a_dual_stack_service(&["--dataplane", "userspace"], |_, _| {});
}

#[test]
fn ebpf_agent_serves_a_dual_stack_service() {
    serves_a_dual_stack_service(&[], |dirs, agent| {
        // The lb6 maps hold the IPv6 half (4 IPv6 frontends of port
        // 80/53/30080 x 2 backends: ClusterIP TCP and UDP, NodePort on the
        // node address and on ::, each with 2 slots).
        let out = cli(&["status", "--verbose"], &dirs.state);
        assert!(out.status.success(), "{out:?}");
        let st = String::from_utf8(out.stdout).unwrap();
        let entries = |map: &str| -> u64 {
            let l = st
                .lines()
                .find(|l| l.split_whitespace().next() == Some(map))
                .unwrap_or_else(|| panic!("{map} in\n{st}"));
            l.split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{l}"))
        };
        entries("lb6_reverse_nat");
        assert_eq!(entries("lb6_backends"), 4, "2 pods x TCP/UDP ports\n{st}");
        assert!(entries("lb6_services") >= 12, "{st}");
        assert!(entries("lb6_ct") > 0, "IPv6 flows tracked\n{st}");
        assert_eq!(entries("lb4_backends"), 4, "{st}");
        assert!(agent.terminate(), "exit status on SIGTERM");
    });
}
