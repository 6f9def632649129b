//! End to end: `lb-agent run --acceleration native` (SNAT mode) in a node
//! namespace of lb-testkit's routed topology: TCP requests from the client
//! reach the remote backends through the LoadBalancer VIP and the NodePort,
//! forwarded at XDP (native, on the node's veth); `status --verbose` shows
//! `XDP Acceleration: Native [device]` with lb_xdp's counters; a restart
//! with `--acceleration disabled` detaches XDP and tc keeps serving. The
//! router's end of the node link runs a pass-through XDP program, without
//! which a veth drops what its peer sends with XDP_TX. Privileged; bounded
//! by 20 s of waiting for the first answer and 3 s socket timeouts.

mod common;

use common::dsr::{AgentDirs, Procs};

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lb_testkit::dsr_topology::{DsrTopology, VIP};
use lb_testkit::{tcp_request, EchoServer};

const BIN: &str = env!("CARGO_BIN_EXE_lb-agent");
const TIMEOUT: Duration = Duration::from_secs(3);

#[test]
fn agent_with_native_xdp_forwards_external_traffic_at_xdp() {
    lb_testkit::require_privileges();
    let topo = DsrTopology::new(1, 2).expect("topology");
    let backends: Vec<String> = topo.backends.iter().map(|b| b.v4.to_string()).collect();
    let dirs = AgentDirs::new(&backends);
    let (state, dir, pins) = (&dirs.state, &dirs.manifests, &dirs.pins);

    let mut servers = Vec::new();
    for (i, b) in topo.backends.iter().enumerate() {
        let tag = format!("be{}:", i + 1);
        servers
            .push(EchoServer::tcp(&b.ns, SocketAddr::from((b.v4, 8080)), tag.as_bytes()).unwrap());
    }
    // Complete checksums from the client, as from a wire (offloaded ones
    // reach XDP as the pseudo-header sum only).
    let st = topo
        .client
        .ns
        .command("ethtool")
        .args(["-K", &topo.client.link.name, "tx", "off"])
        .status()
        .expect("run ethtool");
    assert!(st.success(), "ethtool -K tx off: {st}");
    let node = &topo.nodes[0];
    let peer = node.router_link.name.clone();
    let _pass = topo
        .router
        .run_in(|| lb_ebpf::xdp::attach_pass(&peer))
        .unwrap()
        .expect("pass-through XDP on the router end");
    let start_agent = |accel: &str| -> Child {
        node.ns
            .command(BIN)
            .args(["run", "--acceleration", accel, "--manifests"])
            .arg(dir)
            .args(["--node-ip", &node.v4.to_string()])
            .args(["--device", &node.link.name])
            .args(["--node-name", "node-1", "--state-dir"])
            .arg(state)
            .arg("--bpffs")
            .arg(pins)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn lb-agent run")
    };
    let mut procs = Procs(vec![Some(start_agent("native"))]);

    let vip = SocketAddr::from((VIP, 80));
    wait_for_answer(&topo, vip);
    for dst in [vip, SocketAddr::from((node.v4, 30080))] {
        for _ in 0..5 {
            let r = tcp_request(&topo.client.ns, dst, b"again", TIMEOUT).expect("TCP via XDP");
            assert!(r.ends_with(b"again"), "{dst}: {r:?}");
        }
    }
    let link = node
        .ns
        .ip(&["-d", "link", "show", "dev", &node.link.name])
        .unwrap();
    assert!(link.contains("xdp "), "native XDP on the device: {link}");
    let text = status(state);
    let line = text
        .lines()
        .find(|l| l.contains("XDP Acceleration:"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(&format!("Native   [{}]   IPv4+IPv6", node.link.name)),
        "{line}"
    );
    let forwarded: u64 = line
        .split("forwarded ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    // 11 connections of at least 4 client packets each.
    assert!(forwarded >= 44, "{line}");
    println!("{line}");
    assert!(common::terminate(&mut procs.0[0]), "clean exit on SIGTERM");

    // Restarted without acceleration: XDP is detached, tc serves.
    // (The pinned programs serve meanwhile: wait for the new agent's API.)
    procs.0[0] = Some(start_agent("disabled"));
    let start = Instant::now();
    while !try_status(state).is_some_and(|t| {
        t.lines()
            .any(|l| l.contains("XDP Acceleration:") && l.contains("Disabled"))
    }) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "status never showed XDP Acceleration: Disabled"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let link = node
        .ns
        .ip(&["-d", "link", "show", "dev", &node.link.name])
        .unwrap();
    assert!(!link.contains("prog/xdp"), "XDP detached: {link}");
    wait_for_answer(&topo, vip);
    assert!(common::terminate(&mut procs.0[0]), "clean exit on SIGTERM");
    let _ = lb_ebpf::cleanup(pins);
}

fn wait_for_answer(topo: &DsrTopology, vip: SocketAddr) {
    let start = Instant::now();
    loop {
        match tcp_request(&topo.client.ns, vip, b"hi", TIMEOUT) {
            Ok(r) if r.ends_with(b"hi") => return,
            _ if start.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(200))
            }
            other => panic!("no answer through the VIP: {other:?}"),
        }
    }
}

fn try_status(state: &Path) -> Option<String> {
    let out = Command::new(BIN)
        .args(["status", "--verbose", "--state-dir"])
        .arg(state)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn status(state: &Path) -> String {
    let out = Command::new(BIN)
        .args(["status", "--verbose", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
