//! End to end: `lb-agent run --mode dsr` in a node namespace of lb-testkit's
//! routed DSR topology and `lb-agent dsr-backend` on each backend's device;
//! TCP requests from the client reach the remote backends through the
//! LoadBalancer VIP and the NodePort, `status --verbose` shows the mode, and
//! both processes exit cleanly on SIGTERM; once with the eBPF dataplane,
//! once with the userspace one (one-armed on the node's only link).
//! Privileged; bounded by 20 s of waiting for the first answer and 3 s
//! socket timeouts.

mod common;

use common::dsr::{AgentDirs, Procs};

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lb_testkit::dsr_topology::{DsrTopology, VIP};
use lb_testkit::{tcp_request, EchoServer};

const BIN: &str = env!("CARGO_BIN_EXE_lb-agent");
const TIMEOUT: Duration = Duration::from_secs(3);

#[test]
fn agent_in_dsr_mode_serves_remote_backends_directly() {
    dsr_mode_serves_remote_backends(Dataplane::Ebpf);
}

#[test]
fn userspace_agent_in_dsr_mode_serves_remote_backends_directly() {
    dsr_mode_serves_remote_backends(Dataplane::Userspace);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dataplane {
    Ebpf,
    Userspace,
}

fn dsr_mode_serves_remote_backends(dataplane: Dataplane) {
    lb_testkit::require_privileges();
    let topo = DsrTopology::new(1, 2).expect("topology");
    let backends: Vec<String> = topo.backends.iter().map(|b| b.v4.to_string()).collect();
    let dirs = AgentDirs::new(&backends);
    let (state, dir, pins) = (&dirs.state, &dirs.manifests, &dirs.pins);

    let mut servers = Vec::new();
    let mut procs = Procs(Vec::new());
    for (i, b) in topo.backends.iter().enumerate() {
        let tag = format!("be{}:", i + 1);
        servers
            .push(EchoServer::tcp(&b.ns, SocketAddr::from((b.v4, 8080)), tag.as_bytes()).unwrap());
        let child =
            b.ns.command(BIN)
                .args(["dsr-backend", "--device", &b.link.name])
                .args(["--lb-nodes", &topo.nodes[0].v4.to_string()])
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn lb-agent dsr-backend");
        procs.0.push(Some(child));
    }
    let node = &topo.nodes[0];
    let mut run = node.ns.command(BIN);
    run.args(["run", "--mode", "dsr", "--manifests"])
        .arg(dir)
        .args(["--node-ip", &node.v4.to_string()])
        .args(["--device", &node.link.name])
        .args(["--node-name", "node-1", "--state-dir"])
        .arg(state)
        .arg("--bpffs")
        .arg(pins)
        .stdin(Stdio::null());
    if dataplane == Dataplane::Userspace {
        // One link to the router carries clients and backends.
        run.args([
            "--dataplane",
            "userspace",
            "--backend-device",
            &node.link.name,
        ]);
    }
    let agent = run.spawn().expect("spawn lb-agent run");
    procs.0.push(Some(agent));

    let vip = SocketAddr::from((VIP, 80));
    let start = Instant::now();
    let first = loop {
        match tcp_request(&topo.client.ns, vip, b"hi", TIMEOUT) {
            Ok(r) if r.ends_with(b"hi") => break r,
            _ if start.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(200))
            }
            other => panic!("no answer through the VIP: {other:?}"),
        }
    };
    assert!(first.starts_with(b"be"), "{first:?}");
    for dst in [vip, SocketAddr::from((node.v4, 30080))] {
        for _ in 0..5 {
            let r = tcp_request(&topo.client.ns, dst, b"again", TIMEOUT).expect("DSR TCP");
            assert!(r.ends_with(b"again"), "{dst}: {r:?}");
        }
    }

    let out = Command::new(BIN)
        .args(["status", "--verbose", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.lines()
            .any(|l| l.contains("Mode") && l.contains("DSR")),
        "{text}"
    );

    for c in &mut procs.0 {
        assert!(common::terminate(c), "clean exit on SIGTERM");
    }
    let _ = lb_ebpf::cleanup(pins);
}
