//! End to end: the built `lb-agent run` binary in the node namespace of an
//! lb-testkit topology, manifests written by the test, TCP requests from the
//! client namespace while the files change (add a backend, `sed -i`-style
//! rename, bad files, a second service), `service list` and `status`
//! checked, SIGTERM (pins stay, traffic keeps flowing), a restart that
//! converges, and `cleanup`. Privileged: everything lives in the test's own
//! namespaces, bpffs and temp directories, removed by guards.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::agent::{cli, tcp_echo_servers, Agent, Dirs, BIN, CLUSTER_IP};
use lb_testkit::{tcp_connect, tcp_request, CgroupGuard, Topology};

const TIMEOUT: Duration = Duration::from_secs(3);
const OTHER_IP: &str = "10.96.0.11:80";
/// The agent's metrics address (inside the node namespace).
const METRICS: &str = "127.0.0.1:9962";

/// `lb-agent run` with socket LB on `cgroup` and metrics on [`METRICS`].
fn start_agent(topo: &Topology, dirs: &Dirs, cgroup: &CgroupGuard) -> Agent {
    let extra: [&OsStr; 4] = [
        "--cgroup".as_ref(),
        cgroup.path().as_os_str(),
        "--metrics-addr".as_ref(),
        METRICS.as_ref(),
    ];
    Agent::start_with(topo, dirs, &extra)
}

fn web(backends: &[u8]) -> String {
    let eps: String = backends
        .iter()
        .map(|k| {
            format!(
                "- addresses: [10.200.{k}.2]\n  conditions: {{ready: true, serving: true, terminating: false}}\n  nodeName: node-1\n"
            )
        })
        .collect();
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  ports:
  - {{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30080}}
status:
  loadBalancer:
    ingress: [{{ip: 198.51.100.10}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-x7k2p
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
{eps}"#
    )
}

const OTHER: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: other, namespace: default}
spec: {clusterIP: 10.96.0.11, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: other-1, namespace: default, labels: {kubernetes.io/service-name: other}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.200.3.2]}]
"#;

/// `service list -o json` as (frontend, type, backends) rows; `None` when no
/// agent answers.
fn service_list(state: &Path) -> Option<Vec<(String, String, Vec<String>)>> {
    let out = cli(&["service", "list", "-o", "json"], state);
    if !out.status.success() {
        return None;
    }
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    Some(
        rows.iter()
            .map(|r| {
                (
                    r["frontend"].as_str().unwrap().to_string(),
                    r["service_type"].as_str().unwrap().to_string(),
                    r["backends"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|b| b.as_str().unwrap().to_string())
                        .collect(),
                )
            })
            .collect(),
    )
}

/// The backend addresses of `frontend` in the service list.
fn backends_of(state: &Path, frontend: &str) -> Option<BTreeSet<String>> {
    let rows = service_list(state)?;
    let row = rows.into_iter().find(|r| r.0 == frontend)?;
    Some(
        row.2
            .iter()
            .map(|b| b.split(' ').nth(2).unwrap().to_string())
            .collect(),
    )
}

fn set(ks: &[u8]) -> BTreeSet<String> {
    ks.iter().map(|k| format!("10.200.{k}.2:8080")).collect()
}

/// Polls `f` until it holds; returns the time it took.
fn within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Which backend answered (the echo servers' tag is `beK:`).
fn who(reply: &[u8]) -> u8 {
    let s = String::from_utf8_lossy(reply);
    s.strip_prefix("be")
        .and_then(|r| r.split(':').next())
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("unexpected reply {s:?}"))
}

/// Scrapes the agent's metrics from inside the node namespace.
fn scrape(topo: &Topology) -> String {
    topo.node
        .run_in(|| {
            let mut s = std::net::TcpStream::connect(METRICS).expect("metrics endpoint");
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .unwrap()
}

/// The value of the first sample line that starts with `prefix`.
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} in\n{text}"))
}

fn answering(topo: &Topology, frontend: &str, n: usize) -> BTreeSet<u8> {
    let dst: SocketAddr = frontend.parse().unwrap();
    (0..n)
        .map(|_| who(&tcp_request(&topo.client, dst, b"hi", TIMEOUT).expect(frontend)))
        .collect()
}

#[test]
fn agent_follows_manifest_changes_restarts_and_cleans_up() {
    lb_testkit::require_privileges();
    let topo = Topology::new(3).expect("topology");
    let _servers = tcp_echo_servers(&topo);
    // Declared first so it is removed after the pins are cleaned up.
    let cgroup = CgroupGuard::new().expect("cgroup");
    let dirs = Dirs::new();
    dirs.write_in_place("web.yaml", &web(&[1, 2]));

    // Start: the API socket is up within 3 s, mode 0600.
    let mut agent = start_agent(&topo, &dirs, &cgroup);
    let sock = dirs.state.join("agent.sock");
    within(Duration::from_secs(3), "API socket", || sock.exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Loading the programs may take a few seconds on a busy machine.
    within(Duration::from_secs(15), "web programmed", || {
        backends_of(&dirs.state, CLUSTER_IP) == Some(set(&[1, 2]))
    });

    // The text table: header, every frontend type, NodePort on the node IP and 0.0.0.0.
    let out = cli(&["service", "list"], &dirs.state);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let header = text.lines().next().unwrap();
    let cols: Vec<&str> = header
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        cols,
        ["ID", "Frontend", "Service Type", "Protocol", "Backend"],
        "{text}"
    );
    for want in [
        "10.96.0.10:80",
        "192.168.10.1:30080",
        "0.0.0.0:30080",
        "198.51.100.10:80",
        "LoadBalancer",
        "=> 10.200.1.2:8080 (active)",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    assert_eq!(answering(&topo, CLUSTER_IP, 30), BTreeSet::from([1, 2]));
    assert!(answering(&topo, "192.168.10.1:30080", 5).is_subset(&BTreeSet::from([1, 2])));
    assert!(answering(&topo, "198.51.100.10:80", 5).is_subset(&BTreeSet::from([1, 2])));

    // Socket LB: NodePort via localhost from a process of the cgroup in the
    // node namespace (the tc programs never see these connects).
    let from_node = |addr: &str| -> u8 {
        let script = format!(
            "echo $$ > '{}/cgroup.procs' && exec '{BIN}' http-get {addr}",
            cgroup.path().display()
        );
        let out = topo
            .node
            .command("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        who(&out.stdout)
    };
    let seen: BTreeSet<u8> = (0..20).map(|_| from_node("127.0.0.1:30080")).collect();
    assert_eq!(seen, BTreeSet::from([1, 2]), "NodePort via localhost");
    assert!(BTreeSet::from([1, 2]).contains(&from_node(CLUSTER_IP)));

    // Requests run in the background while the files change; none may fail.
    let stop = AtomicBool::new(false);
    let (ok, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            let dst: SocketAddr = CLUSTER_IP.parse().unwrap();
            while !stop.load(Ordering::Relaxed) {
                match tcp_request(&topo.client, dst, b"bg", TIMEOUT) {
                    Ok(r) if r.ends_with(b"bg") => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        eprintln!("background request failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                };
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let checks = || {
            // Add backend 3 (a plain rewrite).
            dirs.write_in_place("web.yaml", &web(&[1, 2, 3]));
            let took = within(Duration::from_secs(1), "backend 3 added", || {
                backends_of(&dirs.state, CLUSTER_IP) == Some(set(&[1, 2, 3]))
            });
            eprintln!("add applied in {took:?}");
            assert_eq!(answering(&topo, CLUSTER_IP, 40), BTreeSet::from([1, 2, 3]));

            // Backend 1 terminates, then goes away, both `sed -i` style (as
            // Kubernetes does it: no new flows first, so none is cut).
            let be1 = "- addresses: [10.200.1.2]\n  conditions: {ready: true, serving: true, terminating: false}\n";
            let be1_term = "- addresses: [10.200.1.2]\n  conditions: {ready: false, serving: true, terminating: true}\n";
            dirs.sed_i("web.yaml", be1, be1_term);
            let took = within(Duration::from_secs(1), "backend 1 terminating", || {
                service_list(&dirs.state).is_some_and(|rows| {
                    rows.iter().any(|r| {
                        r.0 == CLUSTER_IP
                            && r.2
                                .iter()
                                .any(|b| b.ends_with("10.200.1.2:8080 (terminating)"))
                    })
                })
            });
            eprintln!("sed -i (terminating) applied in {took:?}");
            assert_eq!(answering(&topo, CLUSTER_IP, 40), BTreeSet::from([2, 3]));
            dirs.sed_i("web.yaml", &format!("{be1_term}  nodeName: node-1\n"), "");
            let took = within(Duration::from_secs(1), "backend 1 removed", || {
                backends_of(&dirs.state, CLUSTER_IP) == Some(set(&[2, 3]))
            });
            eprintln!("sed -i (removal) applied in {took:?}");
            assert_eq!(answering(&topo, CLUSTER_IP, 40), BTreeSet::from([2, 3]));

            // A new service in a new file applies next to a malformed file.
            dirs.write_in_place("broken.yaml", "kind: Service\nspec: [unclosed");
            dirs.write_in_place("other.yaml", OTHER);
            within(Duration::from_secs(1), "other added", || {
                backends_of(&dirs.state, OTHER_IP) == Some(set(&[3]))
            });
            assert_eq!(answering(&topo, OTHER_IP, 5), BTreeSet::from([3]));

            // web.yaml breaks: its last good state stays programmed.
            dirs.write_in_place("web.yaml", "apiVersion: v1\nkind: Service\nmetadata: [oops");
            std::thread::sleep(Duration::from_millis(500));
            assert_eq!(backends_of(&dirs.state, CLUSTER_IP), Some(set(&[2, 3])));
            dirs.write_in_place("web.yaml", &web(&[2, 3]));

            // Deleting a file removes its service.
            std::fs::remove_file(dirs.manifests.join("other.yaml")).unwrap();
            within(Duration::from_secs(1), "other removed", || {
                service_list(&dirs.state).is_some_and(|rows| rows.iter().all(|r| r.0 != OTHER_IP))
            });
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(checks));
        stop.store(true, Ordering::Relaxed);
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    });
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "background requests failed"
    );
    assert!(ok.load(Ordering::Relaxed) > 10);
    let log = agent.log();
    assert!(
        log.contains("broken.yaml: document 0"),
        "the bad file is named in the log:\n{log}"
    );

    // status --verbose.
    let out = cli(&["status", "--verbose"], &dirs.state);
    assert!(out.status.success());
    let st = String::from_utf8(out.stdout).unwrap();
    for want in [
        "KubeProxyReplacement:",
        "Socket LB:              Enabled (cgroup",
        "protocols TCP, UDP; IPv4, IPv6; hooks connect4, sendmsg4, recvmsg4, getpeername4, \
         connect6, sendmsg6, recvmsg6, getpeername6)",
        "lb4_services",
        "Backend Selection:      Random",
    ] {
        assert!(st.contains(want), "{want:?} in\n{st}");
    }

    // Metrics: per-frontend counters, drops, syncs, map fill.
    let m = scrape(&topo);
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    let fe = "lb_frontend_flows_total{frontend=\"10.96.0.10:80/TCP\",type=\"ClusterIP\",service=\"default/web\"}";
    assert!(sample(&m, fe) >= 100.0, "{m}");
    assert!(sample(&m, "lb_syncs_total") >= 5.0);
    assert_eq!(sample(&m, "lb_map_entries{map=\"lb4_backends\"}"), 2.0);
    assert_eq!(sample(&m, "lb_drops_total{reason=\"NoBackend\"}"), 0.0);

    // SIGTERM: exit 0, pins stay, traffic and an open connection keep flowing.
    let ids_before = service_list(&dirs.state).unwrap();
    let mut open = tcp_connect(&topo.client, CLUSTER_IP.parse().unwrap(), TIMEOUT).unwrap();
    assert!(agent.terminate(), "exit status on SIGTERM");
    assert!(!sock.exists(), "socket removed on exit");
    assert!(dirs.pins.join("maps").read_dir().unwrap().next().is_some());
    assert!(answering(&topo, CLUSTER_IP, 10).is_subset(&BTreeSet::from([2, 3])));
    let out = cli(&["service", "list"], &dirs.state);
    assert_eq!(out.status.code(), Some(1), "no agent: exit 1");

    // Restart: converges on the same state without flushing.
    let mut agent2 = start_agent(&topo, &dirs, &cgroup);
    within(Duration::from_secs(15), "API after restart", || {
        service_list(&dirs.state).is_some_and(|r| !r.is_empty())
    });
    assert_eq!(service_list(&dirs.state).unwrap(), ids_before);
    open.write_all(b"kept").unwrap();
    open.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    open.read_to_end(&mut reply).unwrap();
    assert!(reply.ends_with(b"kept"), "{reply:?}");
    assert!(
        agent2.log().contains("restored the programmed state"),
        "{}",
        agent2.log()
    );
    assert!(agent2.terminate());

    // cleanup: everything unpinned, idempotent.
    for _ in 0..2 {
        let out = Command::new(BIN)
            .args(["cleanup", "--state-dir"])
            .arg(&dirs.state)
            .arg("--bpffs")
            .arg(&dirs.pins)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    assert!(!dirs.pins.join("maps").exists());
}
