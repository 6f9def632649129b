//! End to end NAT46/64 with `--enable-nat46x64`, on `--dataplane userspace`
//! and on `--dataplane ebpf`: the built `lb-agent run` binary in the node
//! namespace of an lb-testkit topology, given a node address of each family, programs a single-stack
//! IPv4 Service whose EndpointSlice is of `addressType: IPv6` (NAT46) and a
//! single-stack IPv6 Service whose EndpointSlice is of `addressType: IPv4`
//! (NAT64). `service list` shows the mixed-family backends and marks the
//! frontends `NAT46` / `NAT64`; `status --verbose` shows `NAT46/64
//! Support`; real TCP and UDP clients reach both backends across families,
//! and the backends see the node's address of their own family.
//! Privileged; bounded (every request has a 3 s timeout, the agent gets
//! 15 s to sync; two agents, one per dataplane).

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::agent::{cli, row_backends, service_list, tcp_answers, within, Agent, Dirs};
use lb_testkit::{udp_request, EchoServer, Topology};

const TIMEOUT: Duration = Duration::from_secs(3);

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: v6pods, namespace: default}
spec:
  type: NodePort
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv4]
  clusterIP: 10.96.0.46
  clusterIPs: [10.96.0.46]
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30046}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: v6pods-v6
  namespace: default
  labels: {kubernetes.io/service-name: v6pods}
addressType: IPv6
ports: [{name: http, port: 8080, protocol: TCP}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
- addresses: ["fd00:200:1::2"]
  conditions: {ready: true}
  nodeName: node-1
- addresses: ["fd00:200:2::2"]
  conditions: {ready: true}
  nodeName: node-1
---
apiVersion: v1
kind: Service
metadata: {name: v4pods, namespace: default}
spec:
  type: ClusterIP
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv6]
  clusterIP: "fd00:96::64"
  clusterIPs: ["fd00:96::64"]
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 8080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: v4pods-v4
  namespace: default
  labels: {kubernetes.io/service-name: v4pods}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.200.1.2]
  conditions: {ready: true}
  nodeName: node-1
- addresses: [10.200.2.2]
  conditions: {ready: true}
  nodeName: node-1
"#;

#[test]
fn userspace_agent_translates_between_families() {
    agent_translates_between_families("userspace");
}

/// The same with `--dataplane ebpf`: the tc programs translate
/// (`lb-ebpf`'s `bpf/lb_nat46.h`). They are attached to the backend-facing
/// devices too (a second `--device`): the backends' replies to the node's
/// address arrive there.
#[test]
fn ebpf_agent_translates_between_families() {
    agent_translates_between_families("ebpf");
}

fn agent_translates_between_families(dataplane: &str) {
    lb_testkit::require_privileges();
    let topo = Topology::new(2).expect("topology");
    let mut servers = Vec::new();
    for b in &topo.backends {
        let tag = format!("be{}:", b.index + 1);
        for ip in [IpAddr::V4(b.v4), IpAddr::V6(b.v6)] {
            let tcp = SocketAddr::new(ip, 8080);
            servers.push(EchoServer::tcp_with_peer(&b.ns, tcp, tag.as_bytes()).unwrap());
        }
        let udp = SocketAddr::new(IpAddr::V6(b.v6), 5353);
        servers.push(EchoServer::udp_with_peer(&b.ns, udp, tag.as_bytes()).unwrap());
    }
    let dirs = Dirs::new();
    dirs.write("services.yaml", SERVICES);
    let node6 = topo.node_v6.to_string();
    let node4 = topo.node_v4.to_string();
    let backend_devs: Vec<&str> = topo
        .backends
        .iter()
        .map(|b| b.node_link.name.as_str())
        .collect();
    let backend_devs = backend_devs.join(",");
    let mut extra = vec![
        "--dataplane",
        dataplane,
        "--node-ip",
        &node6,
        "--enable-nat46x64",
    ];
    if dataplane == "ebpf" {
        extra.extend(["--device", &backend_devs]);
    }
    let extra: Vec<&OsStr> = extra.into_iter().map(OsStr::new).collect();
    let agent = Agent::start_with(&topo, &dirs, &extra);

    let mut rows = Vec::new();
    within(Duration::from_secs(15), "NAT46/64 service list", || {
        rows = service_list(&dirs.state).unwrap_or_default();
        rows.iter()
            .any(|r| r.1 == "[fd00:96::64]:80" && r.2.len() == 2)
    });
    let backends = |fe: &str| row_backends(&rows, fe);
    let v6 = BTreeSet::from([
        "[fd00:200:1::2]:8080 (active)".to_string(),
        "[fd00:200:2::2]:8080 (active)".to_string(),
    ]);
    assert_eq!(backends("10.96.0.46:80"), v6, "{rows:?}");
    assert_eq!(backends(&format!("{node4}:30046")), v6, "{rows:?}");
    assert_eq!(
        backends("[fd00:96::64]:80"),
        BTreeSet::from([
            "10.200.1.2:8080 (active)".to_string(),
            "10.200.2.2:8080 (active)".to_string(),
        ])
    );
    let text = cli(&["service", "list"], &dirs.state);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("ClusterIP (NAT46)"), "{text}");
    assert!(text.contains("ClusterIP (NAT64)"), "{text}");
    let status = cli(&["status", "--verbose"], &dirs.state);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains("  NAT46/64 Support:\n"), "{status}");
    assert!(
        status.contains("Enabled (4 NAT46 frontends, 1 NAT64"),
        "{status}"
    );

    let both = BTreeSet::from(["be1".to_string(), "be2".to_string()]);
    let peer6 = format!("[[{node6}]:");
    let peer4 = format!("[{node4}:");
    let vip4: SocketAddr = "10.96.0.46:80".parse().unwrap();
    assert_eq!(
        tcp_answers(&topo, vip4, 16, Some(&peer6)),
        both,
        "NAT46 ClusterIP"
    );
    let np4: SocketAddr = format!("{node4}:30046").parse().unwrap();
    assert!(
        tcp_answers(&topo, np4, 4, Some(&peer6)).is_subset(&both),
        "NAT46 NodePort"
    );
    let vip6: SocketAddr = "[fd00:96::64]:80".parse().unwrap();
    assert_eq!(
        tcp_answers(&topo, vip6, 16, Some(&peer4)),
        both,
        "NAT64 ClusterIP"
    );
    let out = udp_request(
        &topo.client,
        "10.96.0.46:53".parse().unwrap(),
        b"q",
        TIMEOUT,
    )
    .expect("NAT46 UDP through the ClusterIP");
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains(&peer6) && out.ends_with('q'), "{out}");
    drop(agent);
    drop(servers);
}
