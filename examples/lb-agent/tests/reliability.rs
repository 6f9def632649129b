//! Reliability under change, bounded for CI (each test well under a
//! minute): the agent (eBPF dataplane) in an lb-testkit topology with the
//! `lb_testkit::load` client counting every request.
//!
//! - hostile manifests (huge, deeply nested, alias bombs, wrong kinds,
//!   duplicate names, invalid IPs, stolen NodePorts, binary garbage, a
//!   symlink to /dev/zero) leave the last good state serving, and a good
//!   change still applies afterwards;
//! - the agent refuses state and bpffs directories other users can write;
//! - `kill -9` under load, a manifest change while it is down, and a
//!   restart on the same pins: zero failed requests, no map flush;
//! - graceful termination: long-lived and streaming connections to a
//!   backend that becomes terminating complete without a reset, and no new
//!   connection lands on it.
//! - backend churn: a manifest write every 10 ms adds, removes and
//!   re-weights backends under load; requests on the backends that stay
//!   never fail, and no flow stays on a removed backend.
//!
//! Privileged: namespaces, bpffs and temp directories are the test's own and
//! removed by guards.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::agent::*;
use lb_testkit::load::{Load, LoadConfig, LoadStats};
use lb_testkit::{tcp_connect, EchoServer, NetNs, Topology};

fn load(topo: &Topology, target: &str) -> Load {
    let mut cfg = LoadConfig::new(target.parse().unwrap());
    cfg.pause = Duration::from_millis(2);
    Load::start(&topo.client, cfg).unwrap()
}

fn assert_no_failures(what: &str, s: &LoadStats) {
    eprintln!(
        "{what}: {} ok, {} failed, {:.0} req/s, {:?}, errors {:?}",
        s.ok,
        s.failed,
        s.rate(),
        s.by_backend,
        s.errors
    );
    assert_eq!(s.failed, 0, "{what}: failed requests: {:?}", s.errors);
    assert!(s.ok > 20, "{what}: too few requests ({})", s.ok);
}

fn status(state: &std::path::Path) -> serde_json::Value {
    let out = cli(&["status", "-o", "json"], state);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn deep(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

/// The hostile directory: one file per kind of bad input.
fn hostile_files() -> Vec<(&'static str, Vec<u8>)> {
    let mut huge_ports = String::from(
        "kind: Service\nmetadata: {name: huge, namespace: default}\nspec:\n  clusterIP: 10.96.0.50\n  ports:\n",
    );
    // Thousands of ports, the last one invalid: left out as a whole.
    for p in 1..=3_000u32 {
        huge_ports.push_str(&format!("  - {{name: p{p}, port: {p}}}\n"));
    }
    huge_ports.push_str("  - {name: bad, port: 0}\n");
    let bomb = {
        let mut s = String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
        for (i, c) in ('b'..='j').enumerate() {
            let prev = (b'a' + i as u8) as char;
            s.push_str(&format!(
                "{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
        }
        s.push_str("kind: Service\nmetadata: {name: bomb}\nspec: {ports: *j}\n");
        s
    };
    vec![
        ("huge-ports.yaml", huge_ports.into_bytes()),
        ("huge-string.yaml", {
            let mut v = b"kind: Service\nmetadata: {name: big, annotations: {x: \"".to_vec();
            v.extend(std::iter::repeat_n(b'x', 17 << 20));
            v.extend(b"\"}}\n");
            v
        }),
        ("deep.yaml", deep(100_000).into_bytes()),
        (
            "deep.json",
            format!(
                "{{\"kind\":\"Service\",\"spec\":{}{}}}",
                "{\"a\":".repeat(50_000),
                "}".repeat(50_000)
            )
            .into_bytes(),
        ),
        ("bomb.yaml", bomb.into_bytes()),
        (
            "wrong-kinds.yaml",
            b"kind: Deployment\nmetadata: {name: web}\n---\nkind: 42\n---\nkind: [Service]\n---\napiVersion: v1\nmetadata: {name: nokind}\n---\nkind: Service\nmetadata: {name: web2}\nspec: {ports: \"80\"}\n---\nkind: EndpointSlice\nmetadata: {name: x}\naddressType: 7\n"
                .to_vec(),
        ),
        (
            "duplicates.yaml",
            b"apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {clusterIP: 10.96.0.99, ports: [{port: 81}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-x7k2p, namespace: default, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{name: http, port: 9}]\nendpoints: [{addresses: [10.200.3.2]}]\n"
                .to_vec(),
        ),
        (
            "invalid-ips.yaml",
            b"kind: Service\nmetadata: {name: badip}\nspec: {clusterIP: 999.1.1.1, ports: [{port: 80}]}\n---\nkind: Service\nmetadata: {name: badext}\nspec: {clusterIP: 10.96.0.60, externalIPs: ['::zz', 10.0.0.1/24], ports: [{port: 80}]}\n---\nkind: EndpointSlice\nmetadata: {name: badip-1, labels: {kubernetes.io/service-name: badip}}\naddressType: IPv4\nports: [{port: 8080}]\nendpoints: [{addresses: [not-an-ip, 10.200.1.2/24, 300.1.1.1]}]\n"
                .to_vec(),
        ),
        (
            "steal.yaml",
            b"kind: Service\nmetadata: {name: aaa-thief, namespace: aaa}\nspec: {type: NodePort, clusterIP: 10.96.0.10, ports: [{port: 80, nodePort: 30080}]}\n---\nkind: Service\nmetadata: {name: range}\nspec: {type: NodePort, clusterIP: 10.96.0.61, ports: [{port: 80, nodePort: 80}, {port: 0}, {port: 70000}]}\n"
                .to_vec(),
        ),
        ("garbage.json", (0..=255u8).cycle().take(100_000).collect()),
        ("empty.yaml", Vec::new()),
    ]
}

/// Echo servers on `topo`'s backends and an agent serving `web` with
/// backends 1 and 2 active, once it has programmed them (20 s at most).
fn serving_web(topo: &Topology) -> (Vec<EchoServer>, Dirs, Agent) {
    let servers = tcp_echo_servers(topo);
    let dirs = Dirs::new();
    dirs.write("web.yaml", &web_active(&[1, 2]));
    let agent = Agent::start(topo, &dirs);
    within(Duration::from_secs(20), "web programmed", || {
        backends_of(&dirs.state, CLUSTER_IP) == Some(active(&[1, 2]))
    });
    (servers, dirs, agent)
}

#[test]
fn hostile_manifests_leave_the_last_good_state_serving() {
    lb_testkit::require_privileges();
    let topo = Topology::new(3).expect("topology");
    let (_servers, dirs, agent) = serving_web(&topo);
    let before = service_list(&dirs.state).unwrap();
    let (l1, l2) = (load(&topo, CLUSTER_IP), load(&topo, NODE_PORT));

    for (name, bytes) in hostile_files() {
        std::fs::write(dirs.manifests.join(name), bytes).unwrap();
    }
    std::os::unix::fs::symlink("/dev/zero", dirs.manifests.join("zero.yaml")).unwrap();
    // Two syncs after the files are in place, each naming every bad file.
    let count = status(&dirs.state)["sync"]["count"].as_u64().unwrap();
    within(
        Duration::from_secs(30),
        "two syncs over the hostile files",
        || status(&dirs.state)["sync"]["count"].as_u64().unwrap() >= count + 2,
    );
    let st = status(&dirs.state);
    let problems = st["sync"]["problems"].to_string();
    for name in [
        "huge-ports.yaml",
        "huge-string.yaml",
        "deep.yaml",
        "deep.json",
        "bomb.yaml",
        "wrong-kinds.yaml",
        "duplicates.yaml",
        "invalid-ips.yaml",
        "steal.yaml",
        "garbage.json",
    ] {
        assert!(problems.contains(name), "{name} not named in {problems}");
    }
    assert!(st["sync"]["error"].is_null(), "{st}");
    assert_eq!(service_list(&dirs.state).unwrap(), before, "state changed");
    std::thread::sleep(Duration::from_secs(1));
    assert_no_failures("ClusterIP", &l1.stop());
    assert_no_failures("NodePort", &l2.stop());

    // The agent still follows good changes next to the hostile files.
    dirs.write("web.yaml", &web_active(&[1, 2, 3]));
    within(Duration::from_secs(10), "backend 3 added", || {
        backends_of(&dirs.state, CLUSTER_IP) == Some(active(&[1, 2, 3]))
    });
    drop(agent);
}

#[test]
fn agent_refuses_directories_other_users_can_write() {
    lb_testkit::require_privileges();
    // In a namespace of its own, so a run that wrongly got further would
    // attach nothing outside it.
    let ns = NetNs::with_label("refuse").unwrap();
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    let t = tempfile::tempdir().unwrap();
    let manifests = t.path().join("m");
    std::fs::create_dir(&manifests).unwrap();
    let run = |state: &std::path::Path, bpffs: &std::path::Path| {
        let out = ns
            .command(BIN)
            .args(["run", "--node-ip", "192.168.10.1", "--device", "lo"])
            .arg("--manifests")
            .arg(&manifests)
            .arg("--state-dir")
            .arg(state)
            .arg("--bpffs")
            .arg(bpffs)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let mkdir = |name: &str, mode: u32| {
        let p = t.path().join(name);
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    };
    let good_pins = mkdir("pins-ok", 0o700).join("lb");
    let cases = [
        (
            mkdir("st-777", 0o777),
            good_pins.clone(),
            "writable by other users",
        ),
        (
            mkdir("st-770", 0o770),
            good_pins.clone(),
            "writable by other users",
        ),
        (
            mkdir("parent-775", 0o775).join("state"),
            good_pins.clone(),
            "group-writable",
        ),
        (
            mkdir("st-ok", 0o700),
            mkdir("pins-777", 0o777),
            "writable by other users",
        ),
        (
            t.path().join("st-ok2"),
            mkdir("pins-parent-777", 0o777).join("lb"),
            "world-writable",
        ),
    ];
    for (state, pins, want) in &cases {
        let (code, err) = run(state, pins);
        assert_eq!(code, Some(1), "{state:?} {pins:?}: {err}");
        assert!(
            err.contains("refusing") && err.contains(want),
            "{state:?} {pins:?}: {err}"
        );
    }
    // Owned by another user.
    let other = mkdir("st-other", 0o700);
    std::os::unix::fs::chown(&other, Some(65534), Some(65534)).unwrap();
    let (code, err) = run(&other, &good_pins);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
    let other_pins = mkdir("pins-other", 0o755);
    std::os::unix::fs::chown(&other_pins, Some(65534), Some(65534)).unwrap();
    let (code, err) = run(&t.path().join("st-ok3"), &other_pins.join("lb"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
}

#[test]
fn kill_9_under_load_then_restart_on_the_same_pins() {
    lb_testkit::require_privileges();
    let topo = Topology::new(3).expect("topology");
    let (_servers, dirs, mut agent) = serving_web(&topo);
    let before = service_list(&dirs.state).unwrap();
    let (l1, l2) = (load(&topo, CLUSTER_IP), load(&topo, NODE_PORT));
    std::thread::sleep(Duration::from_millis(500));

    agent.kill9();
    assert!(
        std::fs::read_dir(dirs.pins.join("maps"))
            .unwrap()
            .next()
            .is_some(),
        "pins stay after kill -9"
    );
    // Traffic keeps flowing with no agent; a change arrives meanwhile.
    std::thread::sleep(Duration::from_secs(2));
    let down = l1.snapshot();
    dirs.write("web.yaml", &web_active(&[1, 2, 3]));

    // The stale socket is replaced; the state is restored, not flushed:
    // the frontends keep their IDs, and backend 3 is added.
    let agent2 = Agent::start(&topo, &dirs);
    within(Duration::from_secs(20), "restart converged", || {
        backends_of(&dirs.state, CLUSTER_IP) == Some(active(&[1, 2, 3]))
    });
    let after = service_list(&dirs.state).unwrap();
    let ids = |rows: &[(u64, String, Vec<String>)]| -> BTreeSet<(u64, String)> {
        rows.iter().map(|r| (r.0, r.1.clone())).collect()
    };
    assert_eq!(ids(&after), ids(&before), "frontend IDs kept");
    let log = agent2.log();
    assert!(log.contains("restored the programmed state"), "{log}");
    std::thread::sleep(Duration::from_secs(1));
    let (s1, s2) = (l1.stop(), l2.stop());
    assert!(
        s1.ok > down.ok,
        "requests while the agent was down and after"
    );
    assert_no_failures("ClusterIP", &s1);
    assert_no_failures("NodePort", &s2);
    assert!(s1.by_backend.contains_key("be3"), "{:?}", s1.by_backend);
}

/// A long-lived echo connection: writes `chunk` bytes every `every` until
/// `stop`, reading the echo as it goes; then half-closes and reads to EOF.
/// Returns (backend tag, bytes sent, bytes echoed) or the error.
fn stream(
    mut s: std::net::TcpStream,
    chunk: usize,
    every: Duration,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(String, usize, usize), String> {
    // Generous: the CI machine is shared and can starve a thread for seconds.
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .and_then(|_| s.set_write_timeout(Some(Duration::from_secs(15))))
        .map_err(|e| e.to_string())?;
    let mut tag = [0u8; 4];
    s.read_exact(&mut tag).map_err(|e| format!("tag: {e}"))?;
    let reader = s.try_clone().map_err(|e| e.to_string())?;
    let echoed = std::thread::spawn(move || {
        let mut r = reader;
        let mut n = 0usize;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return Ok(n),
                Ok(k) => n += k,
                Err(e) => return Err(format!("read after {n} bytes: {e}")),
            }
        }
    });
    let data = vec![b'z'; chunk];
    let mut sent = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        s.write_all(&data)
            .map_err(|e| format!("write after {sent} bytes: {e}"))?;
        sent += chunk;
        std::thread::sleep(every);
    }
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let n = echoed.join().unwrap()?;
    Ok((String::from_utf8_lossy(&tag).into_owned(), sent, n))
}

/// Once found a stall: a new connection from the client port of a live
/// one, to the other frontend, landed on the same backend and took its reply
/// tuple (fixed in lb-ebpf, `lb_ctport.h`; regression test
/// `one_client_port_to_two_frontends_of_one_backend` in lb-ebpf's e2e).
#[test]
fn terminating_backend_finishes_live_connections_and_gets_no_new_ones() {
    lb_testkit::require_privileges();
    let topo = Topology::new(2).expect("topology");
    let (_servers, dirs, _agent) = serving_web(&topo);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let results = std::thread::scope(|sc| {
        // Long-lived connections, until some land on backend 1; plus
        // streaming ones (16 KiB every 10 ms).
        let mut handles = Vec::new();
        for i in 0..12 {
            let target = if i % 2 == 0 { CLUSTER_IP } else { NODE_PORT };
            let s = tcp_connect(
                &topo.client,
                target.parse().unwrap(),
                Duration::from_secs(3),
            )
            .unwrap();
            let (chunk, every) = if i < 4 {
                (16 << 10, Duration::from_millis(10))
            } else {
                (100, Duration::from_millis(20))
            };
            let stop = &stop;
            handles.push(sc.spawn(move || stream(s, chunk, every, stop)));
        }
        std::thread::sleep(Duration::from_millis(500));
        // Backend 1 becomes terminating.
        dirs.write("web.yaml", &web(&[(1, true), (2, false)]));
        within(Duration::from_secs(5), "backend 1 terminating", || {
            backends_of(&dirs.state, CLUSTER_IP)
                .is_some_and(|b| b.contains("10.200.1.2:8080 (terminating)"))
        });
        // New connections (ClusterIP and NodePort) all land on backend 2.
        let (l1, l2) = (load(&topo, CLUSTER_IP), load(&topo, NODE_PORT));
        std::thread::sleep(Duration::from_secs(3));
        let (s1, s2) = (l1.stop(), l2.stop());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (results, s1, s2)
    });
    let (results, s1, s2) = results;
    for (what, s) in [("ClusterIP", &s1), ("NodePort", &s2)] {
        assert_no_failures(what, s);
        assert_eq!(
            s.by_backend.keys().collect::<Vec<_>>(),
            ["be2"],
            "{what}: new connections on the terminating backend"
        );
    }
    let mut on_terminating = 0;
    for r in &results {
        let (tag, sent, echoed) = r.as_ref().unwrap_or_else(|e| panic!("connection: {e}"));
        assert_eq!(sent, echoed, "{tag}: every byte echoed before EOF");
        if tag == "be1:" {
            on_terminating += 1;
        }
    }
    eprintln!(
        "{on_terminating} of {} long-lived connections were on the terminating backend",
        results.len()
    );
    assert!(
        on_terminating > 0,
        "no connection landed on backend 1: {results:?}"
    );
}

/// The web service with backends `(K, weight)`, the weights in the
/// `lb-agent.io/backend-weights` annotation of the slice.
fn web_weighted(backends: &[(u8, u16)]) -> String {
    let text = web(&backends
        .iter()
        .map(|(k, _)| (*k, false))
        .collect::<Vec<_>>());
    let weights = backends
        .iter()
        .map(|(k, w)| format!("10.200.{k}.2={w}"))
        .collect::<Vec<_>>()
        .join(",");
    let labels = "  labels: {kubernetes.io/service-name: web}\n";
    assert!(text.contains(labels));
    text.replace(
        labels,
        &format!("{labels}  annotations: {{lb-agent.io/backend-weights: \"{weights}\"}}\n"),
    )
}

/// Backend churn under load: backends 1 and 2 stay (re-weighted), 3 and 4
/// are added, removed and re-weighted (weight 0 included) by a manifest
/// write every 10 ms, while new connections run on ClusterIP and NodePort.
/// The agent coalesces watch events for 100 ms, so it applies about ten
/// batches a second. Asserts: no request that reached backend 1 or 2
/// fails; once 3 and 4 are gone, every request succeeds on 1 and 2 (no flow
/// stuck on a removed backend). Failures of requests that reached 3 or 4
/// (a flow whose backend is removed is re-balanced and reset) and those
/// that failed before any tag arrived are printed. Bounded: 10 s of churn
/// (`LB_CHURN_SECS` overrides it; `examples/lb-agent/churn.sh` runs 60 s).
#[test]
fn backend_churn_under_load() {
    const WRITE_EVERY: Duration = Duration::from_millis(10);
    lb_testkit::require_privileges();
    let secs: u64 = std::env::var("LB_CHURN_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let topo = Topology::new(4).expect("topology");
    let (_servers, dirs, _agent) = serving_web(&topo);
    let syncs0 = status(&dirs.state)["sync"]["count"].as_u64().unwrap();
    let (l1, l2) = (load(&topo, CLUSTER_IP), load(&topo, NODE_PORT));
    // xorshift, seeded from the clock: every run churns differently.
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        | 1;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let started = std::time::Instant::now();
    let mut writes = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        let mut set = vec![
            (1u8, 1 + (rnd() % 200) as u16),
            (2, 1 + (rnd() % 200) as u16),
        ];
        for k in [3u8, 4] {
            if rnd() % 2 == 0 {
                set.push((k, (rnd() % 200) as u16));
            }
        }
        dirs.write("web.yaml", &web_weighted(&set));
        writes += 1;
        // A fixed schedule (100 writes a second), whatever a write costs.
        let next = started + WRITE_EVERY * u32::try_from(writes).unwrap_or(u32::MAX);
        std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
    }
    let churned = started.elapsed();
    // Backends 3 and 4 leave for good.
    dirs.write("web.yaml", &web_active(&[1, 2]));
    within(Duration::from_secs(20), "3 and 4 removed", || {
        backends_of(&dirs.state, CLUSTER_IP) == Some(active(&[1, 2]))
            && backends_of(&dirs.state, NODE_PORT) == Some(active(&[1, 2]))
    });
    let syncs = status(&dirs.state)["sync"]["count"].as_u64().unwrap() - syncs0;
    // Requests in flight at the removal finish (or fail) first.
    std::thread::sleep(Duration::from_millis(300));
    let (m1, m2) = (l1.snapshot(), l2.snapshot());
    std::thread::sleep(Duration::from_millis(1500));
    let (s1, s2) = (l1.stop(), l2.stop());
    eprintln!(
        "churn: {writes} manifest writes in {:.1} s ({:.0}/s), {syncs} agent syncs",
        churned.as_secs_f64(),
        writes as f64 / churned.as_secs_f64()
    );
    for (what, mid, end) in [("ClusterIP", &m1, &s1), ("NodePort", &m2, &s2)] {
        eprintln!(
            "{what}: {} ok, {} failed, {:.0} req/s, by backend {:?}, failed by backend {:?}, errors {:?}",
            end.ok,
            end.failed,
            end.rate(),
            end.by_backend,
            end.failed_by_backend,
            end.errors
        );
        for stay in ["be1", "be2"] {
            assert_eq!(
                end.failed_by_backend.get(stay),
                None,
                "{what}: requests on {stay}, which stays, failed: {:?}",
                end.errors
            );
            assert!(
                end.by_backend.get(stay).copied().unwrap_or(0) > 0,
                "{what}: {stay} unused"
            );
        }
        // After the removal: every request succeeds, on 1 and 2 only.
        assert_eq!(end.failed, mid.failed, "{what}: failures after the removal");
        assert!(
            end.ok > mid.ok + 10,
            "{what}: too few requests after the removal"
        );
        for gone in ["be3", "be4"] {
            assert_eq!(
                end.by_backend.get(gone),
                mid.by_backend.get(gone),
                "{what}: a new flow on removed {gone}"
            );
        }
    }
    assert!(
        s1.by_backend.contains_key("be3") || s2.by_backend.contains_key("be3"),
        "the churned backends took traffic: {:?} {:?}",
        s1.by_backend,
        s2.by_backend
    );
}
