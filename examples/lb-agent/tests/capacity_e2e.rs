//! Map capacity through the agent (issue 9): with a services map of 12
//! entries (`--bpf-lb-service-map-max 12`), a service larger than the map
//! and one that no longer fits are left out alone, named in `status`; every
//! other service keeps serving traffic, a later change still applies, and
//! `status --verbose` shows the map's pressure. Privileged (namespaces,
//! bpffs); bounded: about 10 s, every wait capped at 30 s.

mod common;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::time::Duration;

use common::agent::*;
use lb_testkit::{tcp_request, Topology};

const OTHER: &str = "10.96.0.20:80";
const WAIT: Duration = Duration::from_secs(30);

/// A ClusterIP service `name` on `vip` with backends `10.200.K.2:8080`
/// (`ks`) plus `extra` backends that exist nowhere (`10.250.0.N`).
fn clusterip(name: &str, vip: &str, ks: &[u8], extra: usize) -> String {
    let mut eps: Vec<String> = ks
        .iter()
        .map(|k| format!("- addresses: [10.200.{k}.2]\n"))
        .collect();
    eps.extend((1..=extra).map(|n| format!("- addresses: [10.250.0.{n}]\n")));
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
spec: {{clusterIP: {vip}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\n\
addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n{}",
        eps.concat()
    )
}

fn status(state: &std::path::Path, verbose: bool) -> String {
    let args: &[&str] = if verbose {
        &["status", "--verbose"]
    } else {
        &["status", "-o", "json"]
    };
    let out = cli(args, state);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// (`sync.error` is null, the problem lines joined) of `status -o json`.
fn sync_state(state: &std::path::Path) -> (bool, String) {
    let v: serde_json::Value = serde_json::from_str(&status(state, false)).unwrap();
    let problems: Vec<String> = v["sync"]["problems"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    (v["sync"]["error"].is_null(), problems.join("\n"))
}

fn answers(topo: &Topology, dst: &str) -> bool {
    let dst: SocketAddr = dst.parse().unwrap();
    tcp_request(&topo.client, dst, b"hi", Duration::from_secs(5)).is_ok_and(|r| !r.is_empty())
}

#[test]
fn a_full_service_map_leaves_out_only_what_does_not_fit() {
    let topo = Topology::new(2).expect("topology");
    let _servers = tcp_echo_servers(&topo);
    let dirs = Dirs::new();
    dirs.write("web.yaml", &web_active(&[1]));
    dirs.write("other.yaml", &clusterip("other", "10.96.0.20", &[2], 0));
    // 20 backends: 21 entries, more than the whole map.
    dirs.write("big.yaml", &clusterip("big", "10.96.0.30", &[], 20));
    let extra: Vec<&OsStr> = ["--bpf-lb-service-map-max", "12"]
        .iter()
        .map(OsStr::new)
        .collect();
    let _agent = Agent::start_with(&topo, &dirs, &extra);

    within(WAIT, "web and other programmed", || {
        service_list(&dirs.state).is_some_and(|rows| {
            rows.iter().any(|r| r.1 == CLUSTER_IP) && rows.iter().any(|r| r.1 == OTHER)
        })
    });
    let rows = service_list(&dirs.state).unwrap();
    assert!(
        !rows.iter().any(|r| r.1 == "10.96.0.30:80"),
        "big programmed: {rows:?}"
    );
    assert!(answers(&topo, CLUSTER_IP), "web does not answer");
    assert!(answers(&topo, OTHER), "other does not answer");
    let (ok, s) = sync_state(&dirs.state);
    assert!(ok, "sync error; problems: {s}");
    assert!(
        s.contains("Service default/big: left out: map lb4_services too small: the service needs 21 entries, the map holds 12"),
        "{s}"
    );

    // 7 backends (8 entries) fit the map alone but not next to web and other.
    dirs.write("third.yaml", &clusterip("third", "10.96.0.40", &[], 7));
    within(WAIT, "third left out as the map is full", || {
        sync_state(&dirs.state)
            .1
            .contains("Service default/third: left out: map lb4_services is full")
    });
    // A later change still applies: web gets backend 2.
    dirs.write("web.yaml", &web_active(&[1, 2]));
    within(WAIT, "web's change applied", || {
        backends_of(&dirs.state, CLUSTER_IP).is_some_and(|b| b == active(&[1, 2]))
    });
    assert!(answers(&topo, CLUSTER_IP) && answers(&topo, OTHER));
    let (ok, s) = sync_state(&dirs.state);
    assert!(ok, "sync error; problems: {s}");

    // Map pressure: the services map's line shows entries of 12.
    let v = status(&dirs.state, true);
    let line = v
        .lines()
        .find(|l| l.trim_start().starts_with("lb4_services"))
        .unwrap_or_else(|| panic!("no lb4_services line in\n{v}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[2], "12", "{line}");
    let used: u64 = cols[1].parse().unwrap();
    assert!(used > 0 && used <= 12, "{line}");
    assert!(v.contains("BPF Maps:"), "{v}");
}
