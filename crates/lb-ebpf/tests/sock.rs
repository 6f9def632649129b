//! Socket LB end to end: `bpf/lb_sock.c` on a child cgroup inside the node
//! namespace. A client process (python3, moved into the cgroup before it
//! starts) connects to ClusterIP TCP/UDP, localhost:NodePort and
//! nodeIP:NodePort; it reaches a backend, getpeername/recvfrom show the
//! frontend, and no packet went through the tc NAT. Privileged (root);
//! everything lives in the test's namespaces, cgroup and private bpffs.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

mod common;

use common::{svc, Pins};
use lb_core::*;
use lb_ebpf::{EbpfDataplane, LoadError, LoadOptions};
use lb_testkit::topology::VIP_V4;
use lb_testkit::{cgroup2_mount, BpffsGuard, CgroupGuard, EchoServer, Topology};

/// The client: one line per request, `peer=<addr> reply=<text>` or
/// `error=<text>`. Requests: `tcp|udp|udp3|udpc HOST PORT` (udp: unconnected
/// sendto/recvfrom; udp3: three of them on one socket; udpc: connected UDP,
/// then getpeername).
const CLIENT: &str = r#"
import socket, sys
a = sys.argv[1:]
for i in range(0, len(a), 3):
    kind, host, port = a[i], a[i + 1], int(a[i + 2])
    try:
        if kind.startswith("tcp"):
            if "@" in kind:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.settimeout(5)
                s.bind((kind.split("@")[1], 0))
                s.connect((host, port))
            else:
                s = socket.create_connection((host, port), timeout=5)
            peer = s.getpeername()
            s.sendall(b"hi")
            s.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                d = s.recv(512)
                if not d:
                    break
                data += d
        elif kind in ("udp", "udp3"):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(5)
            for _ in range(3 if kind == "udp3" else 1):
                s.sendto(b"q", (host, port))
                data, peer = s.recvfrom(512)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(5)
            s.connect((host, port))
            s.send(b"q")
            data = s.recv(512)
            peer = s.getpeername()
        print("peer=%s:%d reply=%s" % (peer[0], peer[1], data.decode()), flush=True)
    except Exception as e:
        print("error=%s" % e, flush=True)
"#;

/// Runs the client in `ns`, inside `cgroup` when given; returns its lines.
fn client(ns: &lb_testkit::NetNs, cgroup: Option<&Path>, requests: &[String]) -> Vec<String> {
    let join = match cgroup {
        Some(cg) => format!("echo $$ > {}/cgroup.procs && ", cg.display()),
        None => String::new(),
    };
    let out = ns
        .command("sh")
        .arg("-c")
        .arg(format!("{join}exec /usr/bin/python3 -c \"$0\" \"$@\""))
        .arg(CLIENT)
        .args(requests)
        .stdin(Stdio::null())
        .output()
        .expect("run the python client");
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn req(kind: &str, addr: SocketAddr) -> Vec<String> {
    vec![kind.into(), addr.ip().to_string(), addr.port().to_string()]
}

#[test]
fn local_processes_are_connected_straight_to_backends() {
    lb_testkit::require_privileges();
    let topo = Topology::new(2).expect("topology");
    let bpffs = BpffsGuard::new().expect("bpffs");
    let pin_dir = bpffs.pin_path("lb");
    let _pins = Pins(pin_dir.clone());
    let cg = CgroupGuard::with_label("sock").expect("child cgroup");
    let dev = topo.node_client_dev.clone();
    let opts = LoadOptions::new(&pin_dir, &[&dev]).with_cgroup(cg.path());
    let loaded = topo
        .node
        .run_in(|| lb_ebpf::load(&opts))
        .unwrap()
        .expect("load and attach");
    assert!(loaded.has_socket_lb());

    let mut servers = Vec::new();
    for b in &topo.backends {
        let tag = format!("be{}:", b.index + 1);
        let tag = tag.as_bytes();
        servers.push(EchoServer::tcp(&b.ns, SocketAddr::from((b.v4, 8080)), tag).unwrap());
        servers.push(EchoServer::udp(&b.ns, SocketAddr::from((b.v4, 5353)), tag).unwrap());
    }
    let tcp: Vec<String> = topo
        .backends
        .iter()
        .map(|b| format!("{}:8080", b.v4))
        .collect();
    let udp: Vec<String> = topo
        .backends
        .iter()
        .map(|b| format!("{}:5353/UDP", b.v4))
        .collect();
    let services = [
        svc(
            "default/web",
            &[
                (format!("{VIP_V4}:80"), FrontendType::ClusterIp),
                ("0.0.0.0:30080".into(), FrontendType::NodePort),
            ],
            tcp,
        ),
        svc(
            "default/dns",
            &[(format!("{VIP_V4}:53/UDP"), FrontendType::ClusterIp)],
            udp,
        ),
    ];
    let node = NodeConfig::new("node-1", vec![topo.node_v4.into()]);
    let desired = DesiredState::build(&node, &services).unwrap();
    let mut dp = EbpfDataplane::open(&pin_dir, &node).expect("open dataplane");
    Reconciler::new()
        .apply(&mut dp, &desired)
        .expect("reconcile");

    let targets = [
        ("tcp", SocketAddr::from((VIP_V4, 80)), "hi"),
        ("tcp", "127.0.0.1:30080".parse().unwrap(), "hi"),
        ("tcp", SocketAddr::from((topo.node_v4, 30080)), "hi"),
        ("udp", SocketAddr::from((VIP_V4, 53)), "q"),
        ("udpc", SocketAddr::from((VIP_V4, 53)), "q"),
    ];
    let requests: Vec<String> = targets.iter().flat_map(|(k, a, _)| req(k, *a)).collect();
    let lines = client(&topo.node, Some(cg.path()), &requests);
    assert_eq!(lines.len(), targets.len(), "{lines:?}");
    for ((kind, addr, msg), line) in targets.iter().zip(&lines) {
        // The application sees the frontend as its peer, and a backend's answer.
        let want = format!("peer={addr} reply=be");
        assert!(line.starts_with(&want), "{kind} {addr}: {line}");
        assert!(line.ends_with(msg), "{kind} {addr}: {line}");
    }

    // No per-packet NAT: the tc programs neither tracked nor counted any of
    // it, while the socket programs left reverse entries.
    assert_eq!(dp.maps().ct.keys().count(), 0, "no CT entries");
    let counters = dp.counters().unwrap();
    assert!(
        counters.services.values().all(|s| s.packets == 0),
        "{counters:?}"
    );
    assert!(dp.maps().sock_rev.keys().count() >= targets.len());
    // Per-backend counters: every translated socket is a new flow.
    let flows: u64 = counters.backends.values().map(|s| s.new_flows).sum();
    assert_eq!(flows, targets.len() as u64, "{counters:?}");
    // Several datagrams of one unconnected socket are one new flow.
    let lines = client(
        &topo.node,
        Some(cg.path()),
        &req("udp3", SocketAddr::from((VIP_V4, 53))),
    );
    assert!(
        lines[0].starts_with(&format!("peer={VIP_V4}:53 reply=be")),
        "{lines:?}"
    );
    let counters = dp.counters().unwrap();
    let flows: u64 = counters.backends.values().map(|s| s.new_flows).sum();
    assert_eq!(flows, targets.len() as u64 + 1, "{counters:?}");

    // Processes outside the cgroup are not balanced: the VIP is not routed.
    let outside = client(
        &topo.node,
        None,
        &req("tcp", SocketAddr::from((VIP_V4, 80))),
    );
    assert!(outside[0].starts_with("error="), "{outside:?}");

    // Reload: the cgroup links are swapped in place and keep working.
    drop(loaded);
    let loaded = topo
        .node
        .run_in(|| lb_ebpf::load(&opts))
        .unwrap()
        .expect("reload");
    let again = client(
        &topo.node,
        Some(cg.path()),
        &req("tcp", SocketAddr::from((VIP_V4, 80))),
    );
    assert!(
        again[0].starts_with(&format!("peer={VIP_V4}:80 reply=be")),
        "{again:?}"
    );
    drop(loaded);

    // Cleanup detaches: the cgroup's processes are no longer balanced.
    lb_ebpf::cleanup(&pin_dir).expect("cleanup");
    let after = client(
        &topo.node,
        Some(cg.path()),
        &req("tcp", SocketAddr::from((VIP_V4, 80))),
    );
    assert!(after[0].starts_with("error="), "{after:?}");
}

#[test]
fn the_root_cgroup_and_non_cgroups_are_refused() {
    lb_testkit::require_privileges();
    let bpffs = BpffsGuard::new().expect("bpffs");
    let pin_dir = bpffs.pin_path("lb");
    let _pins = Pins(pin_dir.clone());
    let root = cgroup2_mount().expect("cgroup2 mount");
    let err = lb_ebpf::load(&LoadOptions::new(&pin_dir, &[]).with_cgroup(&root)).unwrap_err();
    assert!(matches!(err, LoadError::RootCgroup(_)), "{err}");
    let err = lb_ebpf::load(&LoadOptions::new(&pin_dir, &[]).with_cgroup("/tmp")).unwrap_err();
    assert!(matches!(err, LoadError::NotACgroup(_)), "{err}");
    assert_eq!(
        std::fs::read_dir(pin_dir.join("maps"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "nothing loaded"
    );
}

/// loadBalancerSourceRanges on the socket path: the node's own processes
/// are the client, so an unbound socket counts as the node's first address
/// and a bound one as its bound address. Inside the ranges: connected
/// straight to a backend; outside: refused (EPERM) and counted as a
/// source-range drop; the verdicts equal lb-core's `decide` in the internal
/// scope. TCP and UDP (unconnected and connected). Bounded: a few requests
/// with 5 s timeouts.
#[test]
fn socket_lb_checks_load_balancer_source_ranges() {
    lb_testkit::require_privileges();
    let topo = Topology::new(1).expect("topology");
    let bpffs = BpffsGuard::new().expect("bpffs");
    let pin_dir = bpffs.pin_path("lb");
    let _pins = Pins(pin_dir.clone());
    let cg = CgroupGuard::with_label("sockrange").expect("child cgroup");
    let dev = topo.node_client_dev.clone();
    let opts = LoadOptions::new(&pin_dir, &[&dev]).with_cgroup(cg.path());
    let _loaded = topo
        .node
        .run_in(|| lb_ebpf::load(&opts))
        .unwrap()
        .expect("load and attach");
    let b = &topo.backends[0];
    let _tcp = EchoServer::tcp(&b.ns, SocketAddr::from((b.v4, 8080)), b"be1:").unwrap();
    let _udp = EchoServer::udp(&b.ns, SocketAddr::from((b.v4, 5353)), b"be1:").unwrap();
    let lb = |name: &str, vip: &str, range: String| {
        let mut s = svc(
            name,
            &[
                (format!("{vip}:80"), FrontendType::LoadBalancer),
                (format!("{vip}:53/UDP"), FrontendType::LoadBalancer),
            ],
            vec![format!("{}:8080", b.v4), format!("{}:5353/UDP", b.v4)],
        );
        s.source_ranges = vec![range.parse().unwrap()];
        s
    };
    let node_ip = topo.node_v4;
    let services = [
        lb("default/mine", "198.51.100.21", format!("{node_ip}/32")),
        lb("default/theirs", "198.51.100.22", "10.99.0.0/16".into()),
    ];
    let node = NodeConfig::new("node-1", vec![node_ip.into()]);
    let desired = DesiredState::build(&node, &services).unwrap();
    let mut dp = EbpfDataplane::open(&pin_dir, &node).expect("open dataplane");
    let mut rec = Reconciler::new();
    rec.apply(&mut dp, &desired).expect("reconcile");
    let before = dp.counters().unwrap().drops;

    let mine = |p: u16| SocketAddr::from(([198, 51, 100, 21], p));
    let theirs = |p: u16| SocketAddr::from(([198, 51, 100, 22], p));
    let other_src = format!("tcp@{}", b.node_v4);
    let cases: [(&str, SocketAddr, bool); 7] = [
        ("tcp", mine(80), true),
        ("udp", mine(53), true),
        ("udpc", mine(53), true),
        ("tcp", theirs(80), false),
        ("udp", theirs(53), false),
        ("udpc", theirs(53), false),
        // Bound to the node's other address: outside node_ip/32.
        (&other_src, mine(80), false),
    ];
    let requests: Vec<String> = cases.iter().flat_map(|(k, a, _)| req(k, *a)).collect();
    let lines = client(&topo.node, Some(cg.path()), &requests);
    assert_eq!(lines.len(), cases.len(), "{lines:?}");
    for ((kind, addr, allowed), line) in cases.iter().zip(&lines) {
        if *allowed {
            assert!(
                line.starts_with(&format!("peer={addr} reply=be1:")),
                "{kind} {addr}: {line}"
            );
        } else {
            assert!(line.starts_with("error="), "{kind} {addr}: {line}");
        }
        // lb-core agrees (the internal scope: the node is the client).
        let src: std::net::IpAddr = match kind.split_once('@') {
            Some((_, s)) => s.parse().unwrap(),
            None => node_ip.into(),
        };
        let key = FlowKey {
            src,
            dst: addr.ip(),
            sport: 40000,
            dport: addr.port(),
            proto: if kind.starts_with("tcp") {
                L4Proto::Tcp
            } else {
                L4Proto::Udp
            },
        };
        let ctx = FlowContext {
            now: 0,
            entropy: 0,
            scope: Scope::Internal,
        };
        let v = decide(rec.current(), &node, &mut FlowState::new(), &key, ctx);
        assert_eq!(
            matches!(v, Verdict::Forward(_)),
            *allowed,
            "{kind} {addr}: {v:?}"
        );
    }
    let after = dp.counters().unwrap().drops;
    let sr = |d: &[(lb_ebpf::abi::DropReason, u64)]| {
        d.iter()
            .find(|(r, _)| *r == lb_ebpf::abi::DropReason::SourceRange)
            .map_or(0, |(_, n)| *n)
    };
    assert!(sr(&after) >= sr(&before) + 4, "{before:?} -> {after:?}");
}
