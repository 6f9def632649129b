//! An `lb-agent run` process in an lb-testkit topology, with its temp
//! directories and bpffs, for the end-to-end and reliability tests.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lb_testkit::{BpffsGuard, Topology};

/// The agent binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_lb-agent");
/// The web service's ClusterIP frontend.
pub const CLUSTER_IP: &str = "10.96.0.10:80";
/// The web service's NodePort on the node's client-facing address.
pub const NODE_PORT: &str = "192.168.10.1:30080";

/// Temp directories (manifests, state) and a bpffs; unpins on drop.
pub struct Dirs {
    pub scratch: tempfile::TempDir,
    pub manifests: PathBuf,
    pub state: PathBuf,
    pub pins: PathBuf,
    _bpffs: BpffsGuard,
}

impl Dirs {
    pub fn new() -> Dirs {
        let scratch = tempfile::tempdir().unwrap();
        let manifests = scratch.path().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        let bpffs = BpffsGuard::new().expect("bpffs");
        Dirs {
            manifests,
            state: scratch.path().join("state"),
            pins: bpffs.pin_path("lb"),
            scratch,
            _bpffs: bpffs,
        }
    }

    /// Writes a manifest atomically (temp file renamed over it).
    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.manifests.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.manifests.join(name)).unwrap();
    }

    /// Writes a manifest in place (the watcher sees it truncated, then written).
    pub fn write_in_place(&self, name: &str, text: &str) {
        std::fs::write(self.manifests.join(name), text).unwrap();
    }

    /// Replaces text in a manifest the way `sed -i` does: a temp file renamed
    /// over it.
    pub fn sed_i(&self, name: &str, from: &str, to: &str) {
        let path = self.manifests.join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from:?} not in {name}");
        let tmp = self.manifests.join(".sedAbC123");
        std::fs::write(&tmp, text.replace(from, to)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        if let Err(e) = lb_ebpf::cleanup(&self.pins) {
            eprintln!("cleanup {}: {e}", self.pins.display());
        }
    }
}

/// The agent process: SIGTERM and wait on drop; its log is printed when the
/// test fails.
pub struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    /// `lb-agent run` (eBPF dataplane) in the topology's node namespace.
    pub fn start(topo: &Topology, dirs: &Dirs) -> Agent {
        Agent::start_with(topo, dirs, &[])
    }

    /// [`Agent::start`] with `extra` arguments appended to `run`'s.
    pub fn start_with(topo: &Topology, dirs: &Dirs, extra: &[&OsStr]) -> Agent {
        let log = dirs.scratch.path().join(format!(
            "agent-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let f = std::fs::File::create(&log).unwrap();
        let child = topo
            .node
            .command(BIN)
            .args(["run", "--manifests"])
            .arg(&dirs.manifests)
            .args(["--node-ip", &topo.node_v4.to_string()])
            .args(["--device", &topo.node_client_dev])
            .args(["--node-name", "node-1", "--state-dir"])
            .arg(&dirs.state)
            .arg("--bpffs")
            .arg(&dirs.pins)
            .args(extra)
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
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }

    /// SIGTERM; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        super::terminate(&mut self.child)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.terminate();
        if std::thread::panicking() {
            eprintln!("--- lb-agent log ---\n{}", self.log());
        }
    }
}

/// The web Service (ClusterIP 10.96.0.10, NodePort 30080) and its slice
/// with backends `10.200.K.2:8080` for `(K, terminating)`.
pub fn web(backends: &[(u8, bool)]) -> String {
    let eps: String = backends
        .iter()
        .map(|(k, term)| {
            let c = if *term {
                "{ready: false, serving: true, terminating: true}"
            } else {
                "{ready: true, serving: true, terminating: false}"
            };
            format!("- addresses: [10.200.{k}.2]\n  conditions: {c}\n  nodeName: node-1\n")
        })
        .collect();
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  ports:
  - {{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30080}}
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

/// Active backends `ks`.
pub fn web_active(ks: &[u8]) -> String {
    web(&ks.iter().map(|k| (*k, false)).collect::<Vec<_>>())
}

pub fn cli(args: &[&str], state: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap()
}

/// `service list -o json` rows as (id, frontend, backends); `None` when no
/// agent answers.
pub fn service_list(state: &Path) -> Option<Vec<(u64, String, Vec<String>)>> {
    let out = cli(&["service", "list", "-o", "json"], state);
    if !out.status.success() {
        return None;
    }
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    Some(
        rows.iter()
            .map(|r| {
                (
                    r["id"].as_u64().unwrap_or(0),
                    r["frontend"].as_str().unwrap().to_string(),
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

/// The backend column entries (`ID => ADDR (state)`) of `frontend`.
pub fn backends_of(state: &Path, frontend: &str) -> Option<BTreeSet<String>> {
    let rows = service_list(state)?;
    let row = rows.into_iter().find(|r| r.1 == frontend)?;
    Some(
        row.2
            .iter()
            .map(|b| b.split_once(" => ").map_or(b.as_str(), |x| x.1).to_string())
            .collect(),
    )
}

/// `10.200.K.2:8080 (active)` for every K.
pub fn active(ks: &[u8]) -> BTreeSet<String> {
    ks.iter()
        .map(|k| format!("10.200.{k}.2:8080 (active)"))
        .collect()
}

/// Polls `f` until it holds; panics after `limit`.
pub fn within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// The backend tags (`beK`) that answered `n` TCP requests from the client
/// to `dst` (3 s timeout each), each echoing its message after the tag;
/// with `peer`, every answer must contain it (the address the backend saw).
pub fn tcp_answers(
    topo: &Topology,
    dst: std::net::SocketAddr,
    n: usize,
    peer: Option<&str>,
) -> BTreeSet<String> {
    (0..n)
        .map(|i| {
            let msg = format!("hi-{i}");
            let out =
                lb_testkit::tcp_request(&topo.client, dst, msg.as_bytes(), Duration::from_secs(3))
                    .unwrap_or_else(|e| panic!("{dst}: {e}"));
            let out = String::from_utf8(out).unwrap();
            assert!(out.ends_with(&msg), "{out:?}");
            if let Some(peer) = peer {
                assert!(
                    out.contains(peer),
                    "{dst}: backend saw another peer: {out:?}"
                );
            }
            out.split(':').next().unwrap().to_string()
        })
        .collect()
}

/// The backends of frontend `fe` in [`service_list`] rows, each without
/// its slot prefix (`N => `); panics if `fe` is not listed.
pub fn row_backends(rows: &[(u64, String, Vec<String>)], fe: &str) -> BTreeSet<String> {
    let row = rows
        .iter()
        .find(|r| r.1 == fe)
        .unwrap_or_else(|| panic!("{fe} in {rows:?}"));
    row.2
        .iter()
        .map(|b| b.split_once(" => ").map_or(b.as_str(), |x| x.1).to_string())
        .collect()
}

/// A TCP echo server on port 8080 of every backend of `topo`, tagging its
/// echoes `beK:` (K = the backend's index + 1).
pub fn tcp_echo_servers(topo: &Topology) -> Vec<lb_testkit::EchoServer> {
    topo.backends
        .iter()
        .map(|b| {
            let tag = format!("be{}:", b.index + 1);
            let addr = std::net::SocketAddr::from((b.v4, 8080));
            lb_testkit::EchoServer::tcp(&b.ns, addr, tag.as_bytes()).unwrap()
        })
        .collect()
}
