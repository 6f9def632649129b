//! End to end with `--dataplane userspace`: the built `lb-agent run` binary
//! in the node namespace of an lb-testkit topology drives lb-userspace's I/O
//! loop; a ClusterIP and a NodePort answer TCP requests from the client
//! namespace, `service list` and `status --verbose` report the userspace
//! dataplane, and SIGTERM stops the loop (exit 0). Privileged: everything
//! lives in the test's own namespaces and temp directories.

mod common;

use common::agent::{tcp_answers, tcp_echo_servers};

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lb_testkit::Topology;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const BIN: &str = env!("CARGO_BIN_EXE_lb-agent");
/// The agent's metrics address (inside the node namespace).
const METRICS: &str = "127.0.0.1:9963";

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
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

/// SIGTERMs (and, if need be, kills) the agent on drop; prints its log when
/// the test fails.
struct Agent {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Agent {
    /// SIGTERM; whether it exited with status 0 within 5 s.
    fn terminate(&mut self) -> bool {
        common::terminate(&mut self.child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.terminate();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- lb-agent log ---\n{log}");
        }
    }
}

fn cli(args: &[&str], state: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap()
}

#[test]
fn userspace_dataplane_serves_cluster_ip_and_node_port() {
    lb_testkit::require_privileges();
    let topo = Topology::new(2).expect("topology");
    let _servers = tcp_echo_servers(&topo);
    let scratch = tempfile::tempdir().unwrap();
    let manifests = scratch.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(manifests.join("web.yaml"), WEB).unwrap();
    let state = scratch.path().join("state");
    let backend_devs: Vec<String> = topo
        .backends
        .iter()
        .map(|b| b.node_link.name.clone())
        .collect();
    let spawn = |name: &str, extra: &[&str]| {
        let log = scratch.path().join(name);
        let f = std::fs::File::create(&log).unwrap();
        let child = topo
            .node
            .command(BIN)
            .args(["run", "--dataplane", "userspace", "--manifests"])
            .arg(&manifests)
            .args(["--node-ip", &topo.node_v4.to_string()])
            .args(["--device", &topo.node_client_dev])
            .args(extra)
            .args(["--node-name", "node-1", "--state-dir"])
            .arg(&state)
            .env("LB_AGENT_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn lb-agent run");
        Agent {
            child: Some(child),
            log,
        }
    };
    let mut agent = spawn(
        "agent.log",
        &[
            "--backend-device",
            &backend_devs.join(","),
            "--metrics-addr",
            METRICS,
        ],
    );

    // `service list` shows the frontends once the first sync ran.
    let start = Instant::now();
    let text = loop {
        let out = cli(&["service", "list"], &state);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.contains("10.200.2.2:8080") {
            break text;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "no service list");
        std::thread::sleep(Duration::from_millis(50));
    };
    for want in [
        "10.96.0.10:80",
        "ClusterIP",
        "0.0.0.0:30080",
        &format!("{}:30080", topo.node_v4),
        "NodePort",
        "=> 10.200.1.2:8080 (active)",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }

    let both = std::collections::BTreeSet::from(["be1".to_string(), "be2".to_string()]);
    assert_eq!(
        tcp_answers(&topo, sa("10.96.0.10:80"), 20, None),
        both,
        "ClusterIP"
    );
    let np = format!("{}:30080", topo.node_v4);
    assert!(
        tcp_answers(&topo, sa(&np), 5, None).is_subset(&both),
        "NodePort"
    );

    let out = cli(&["status", "--verbose"], &state);
    assert!(out.status.success(), "{out:?}");
    let st = String::from_utf8(out.stdout).unwrap();
    for want in [
        "KubeProxyReplacement:     True",
        "Dataplane:              userspace",
        "Socket LB:              Not available with the userspace dataplane",
        &format!("{} (backend)", backend_devs[0]),
        "NoBackend",
    ] {
        assert!(st.contains(want), "{want:?} in\n{st}");
    }
    assert!(!st.contains("BPF Maps"), "{st}");
    eprintln!("{st}");

    // Per-frontend counters come from lb-userspace's packet path.
    let m = topo
        .node
        .run_in(|| {
            let mut s = std::net::TcpStream::connect(METRICS).expect("metrics endpoint");
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .unwrap();
    let fe = "lb_frontend_flows_total{frontend=\"10.96.0.10:80/TCP\",type=\"ClusterIP\",service=\"default/web\"}";
    let flows: f64 = m
        .lines()
        .find(|l| l.starts_with(fe))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {fe} in\n{m}"));
    assert!(flows >= 20.0, "{m}");

    assert!(agent.terminate(), "exit status 0 on SIGTERM");
    assert!(!state.join("agent.sock").exists(), "socket removed on exit");
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(log.contains("userspace I/O loop stopped"), "{log}");

    // Without --backend-device the backend links are found by themselves.
    let mut agent = spawn("agent2.log", &[]);
    let start = Instant::now();
    while !String::from_utf8_lossy(&cli(&["service", "list"], &state).stdout)
        .contains("10.200.2.2:8080")
    {
        assert!(start.elapsed() < Duration::from_secs(15), "no agent");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        tcp_answers(&topo, sa("10.96.0.10:80"), 20, None),
        both,
        "ClusterIP"
    );
    let st = String::from_utf8(cli(&["status", "--verbose"], &state).stdout).unwrap();
    for d in &backend_devs {
        assert!(st.contains(&format!("{d} (backend)")), "{d} in\n{st}");
    }
    assert!(agent.terminate(), "exit status 0 on SIGTERM");
}
