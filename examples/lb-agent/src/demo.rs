//! `lb-agent demo`: a throw-away topology in network namespaces (lb-testkit's
//! [`Topology`]: a client, a node, three backend pods answering HTTP with
//! their names), the agent started in the node namespace on the bundled
//! manifests, `service list`, then requests to every frontend type from the
//! client namespace (tc programs) and from a cgroup in the node namespace
//! (socket LB: NodePort and HostPort via localhost, ClusterIP), showing
//! which backend answered. Everything is torn
//! down by guards, also on error, panic or Ctrl-C.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lb_testkit::{BpffsGuard, CgroupGuard, Topology};

use crate::api::{self, Request, Response};
use crate::cli::DemoArgs;
use crate::http::{self, Responder};
use crate::service_list::{self, ServiceRow};

/// The bundled manifests, for when the source tree is not around.
const BUNDLED: [(&str, &str); 2] = [
    ("web.yaml", include_str!("../manifests/web.yaml")),
    (
        "hostport-pod.yaml",
        include_str!("../manifests/hostport-pod.yaml"),
    ),
];
/// The node name the bundled manifests use.
const NODE_NAME: &str = "node-1";
const HTTP_PORT: u16 = 8080;
const TIMEOUT: Duration = Duration::from_secs(2);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

fn check_stop() -> Result<(), String> {
    if STOP.load(Ordering::SeqCst) {
        Err("interrupted; tearing down".into())
    } else {
        Ok(())
    }
}

/// The agent child: SIGTERM, then wait, on drop.
struct AgentChild {
    child: Child,
    log: PathBuf,
}

impl AgentChild {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for AgentChild {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Detaches and unpins on drop.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        if let Err(e) = lb_ebpf::cleanup(&self.0) {
            eprintln!("lb-agent demo: cleanup {}: {e}", self.0.display());
        }
    }
}

fn manifest_dir(a: &DemoArgs, scratch: &Path) -> Result<PathBuf, String> {
    if let Some(d) = &a.manifests {
        return Ok(d.clone());
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    if src.is_dir() {
        return Ok(src);
    }
    let d = scratch.join("manifests");
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    for (name, text) in BUNDLED {
        std::fs::write(d.join(name), text).map_err(|e| e.to_string())?;
    }
    Ok(d)
}

fn have_curl() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("curl").is_file()))
}

/// One request from the client namespace; the body names the backend.
fn request(topo: &Topology, addr: SocketAddr, curl: bool) -> Result<String, String> {
    if !curl {
        return http::get(&topo.client, addr, TIMEOUT);
    }
    let out = topo
        .client
        .command("curl")
        .args(["-sS", "--max-time", "2", &format!("http://{addr}/")])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// One request from a process of `cgroup` in the node namespace (so the
/// socket LB sees it): a shell moves itself into the cgroup, then execs the
/// client.
fn request_from_node(
    topo: &Topology,
    cgroup: &Path,
    addr: SocketAddr,
    curl: bool,
) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let client = if curl {
        format!("exec curl -sS --max-time 2 http://{addr}/")
    } else {
        format!("exec '{}' http-get {addr}", exe.display())
    };
    let script = format!("echo $$ > '{}/cgroup.procs' && {client}", cgroup.display());
    let out = topo
        .node
        .command("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("sh: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Sends `n` requests with `send`, printing who answered; returns the failures.
fn probe(
    title: &str,
    n: usize,
    mut send: impl FnMut() -> Result<String, String>,
) -> Result<usize, String> {
    println!("\n==> {title}");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = 0usize;
    for i in 1..=n {
        check_stop()?;
        match send() {
            Ok(body) => {
                println!("    request {i}: {body}");
                *seen.entry(body).or_default() += 1;
            }
            Err(e) => {
                println!("    request {i}: FAILED: {e}");
                failures += 1;
            }
        }
    }
    let summary: Vec<String> = seen.iter().map(|(b, n)| format!("{b} x{n}")).collect();
    println!("    answered by: {}", summary.join(", "));
    Ok(failures)
}

fn wait_for_services(state_dir: &Path, agent: &mut AgentChild) -> Result<Vec<ServiceRow>, String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        check_stop()?;
        if let Ok(Some(st)) = agent.child.try_wait() {
            return Err(format!("the agent exited ({st}):\n{}", agent.log_tail()));
        }
        if let Ok(Response::ServiceList(rows)) = api::query(state_dir, &Request::ServiceList) {
            if !rows.is_empty() {
                return Ok(rows);
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the agent did not program any service:\n{}",
                agent.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the demo.
pub fn demo(a: &DemoArgs) -> Result<(), String> {
    if !crate::state::is_root() {
        return Err("lb-agent demo needs root: it creates network namespaces and loads BPF programs (try sudo)".into());
    }
    install_signal_handlers();
    lb_testkit::check_privileges().map_err(|e| format!("this machine cannot run the demo: {e}"))?;

    println!("==> Building the topology: client, node and 3 backend network namespaces");
    let topo = Topology::new(3).map_err(|e| format!("building the topology: {e}"))?;
    println!(
        "    client {} -> node {} (device {}) -> backends {}",
        topo.client_v4,
        topo.node_v4,
        topo.node_client_dev,
        topo.backends
            .iter()
            .map(|b| b.v4.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut responders = Vec::new();
    for b in &topo.backends {
        let name = format!("backend-{}", b.index + 1);
        responders.push(Responder::start(
            &b.ns,
            SocketAddr::from((b.v4, HTTP_PORT)),
            name,
        )?);
    }
    check_stop()?;

    let cgroup = CgroupGuard::new().map_err(|e| format!("creating a cgroup: {e}"))?;
    let bpffs = BpffsGuard::new().map_err(|e| format!("mounting a bpffs: {e}"))?;
    let scratch = tempfile::Builder::new()
        .prefix("lb-agent-demo-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let state_dir = scratch.path().join("state");
    let pin_dir = bpffs.pin_path("lb");
    let _pins = Pins(pin_dir.clone());
    let manifests = manifest_dir(a, scratch.path())?;
    let log = scratch.path().join("agent.log");

    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let args: Vec<String> = vec![
        "run".into(),
        "--manifests".into(),
        manifests.display().to_string(),
        "--node-ip".into(),
        topo.node_v4.to_string(),
        "--device".into(),
        topo.node_client_dev.clone(),
        "--node-name".into(),
        NODE_NAME.into(),
        "--state-dir".into(),
        state_dir.display().to_string(),
        "--bpffs".into(),
        pin_dir.display().to_string(),
        "--cgroup".into(),
        cgroup.path().display().to_string(),
    ];
    println!("\n==> Starting the agent in the node namespace:");
    println!(
        "    nsenter --net={} -- lb-agent {}",
        topo.node.path().display(),
        args.join(" ")
    );
    let logf = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let child = Command::new("nsenter")
        .arg(format!("--net={}", topo.node.path().display()))
        .arg("--")
        .arg(&exe)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(logf.try_clone().map_err(|e| e.to_string())?)
        .stderr(logf)
        .spawn()
        .map_err(|e| format!("starting the agent: {e}"))?;
    let mut agent = AgentChild { child, log };
    let rows = wait_for_services(&state_dir, &mut agent)?;

    println!("\n$ lb-agent service list");
    print!("{}", service_list::render(&rows));

    let curl = !a.no_curl && have_curl();
    let how = if curl {
        "curl --max-time 2"
    } else {
        "the built-in HTTP client"
    };
    let mut failures = 0usize;
    for r in rows.iter().filter(|r| r.protocol == "TCP") {
        let Ok(addr) = r.frontend.parse::<SocketAddr>() else {
            continue;
        };
        if addr.ip().is_unspecified() {
            continue; // the wildcard NodePort/HostPort entry; its node-IP twin is tested
        }
        let title = format!(
            "{} {} ({}): {} requests from the client namespace with {how}",
            r.service_type, r.frontend, r.service, a.requests
        );
        failures += probe(&title, a.requests, || request(&topo, addr, curl))?;
    }

    // From the node itself: the socket LB (cgroup hooks) balances connects
    // of the cgroup's processes, which the tc programs never see.
    let node_how = if curl { "curl" } else { "lb-agent http-get" };
    for r in rows.iter().filter(|r| r.protocol == "TCP") {
        let Ok(addr) = r.frontend.parse::<SocketAddr>() else {
            continue;
        };
        let (label, target) = match r.service_type.as_str() {
            "NodePort" if addr.ip().is_unspecified() => (
                "NodePort via localhost",
                SocketAddr::from(([127, 0, 0, 1], addr.port())),
            ),
            "HostPort" if addr.ip().is_unspecified() => (
                "HostPort via localhost",
                SocketAddr::from(([127, 0, 0, 1], addr.port())),
            ),
            "ClusterIP" => ("ClusterIP", addr),
            _ => continue,
        };
        let title = format!(
            "{label} {target} ({}): {} requests from the node namespace (cgroup {}) with {node_how}",
            r.service, a.requests, cgroup.path().display()
        );
        failures += probe(&title, a.requests, || {
            request_from_node(&topo, cgroup.path(), target, curl)
        })?;
    }

    if let Ok(Response::Status(s)) = api::query(&state_dir, &Request::Status) {
        println!("\n$ lb-agent status --verbose");
        print!("{}", crate::status::render(&s, true));
    }
    println!("\n==> Tearing down: stopping the agent, unpinning, deleting the namespaces");
    drop(agent);
    drop(responders);
    if failures > 0 {
        return Err(format!("{failures} requests failed"));
    }
    println!("==> Done.");
    Ok(())
}
